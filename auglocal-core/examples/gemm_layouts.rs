//! How fast the gemm crate runs the three GEMMs of a convolution, at the shapes of CIFAR
//! ResNet stages, for either layout of the destination. One thread, operands hot in cache.
//!
//! `cargo run --release -p auglocal-core --example gemm_layouts`
//!
//! The convolution ops pick their destination layouts from these figures (see
//! `src/kernels/conv/gemm.rs`): the weight gradient is written transposed, the forward pass is not.

use std::time::Instant;

/// GFLOP/s of `dst (m x n) = lhs (m x k) · rhs (k x n)` with the given (column, row)
/// strides of dst, lhs and rhs.
fn gflops(m: usize, n: usize, k: usize, strides: [isize; 6]) -> f64 {
    let [dst_cs, dst_rs, lhs_cs, lhs_rs, rhs_cs, rhs_rs] = strides;
    let lhs = vec![1.0f32; m * k];
    let rhs = vec![1.0f32; k * n];
    let mut dst = vec![0f32; m * n];
    let flops = 2.0 * (m * n * k) as f64;
    let reps = (2e9 / flops).max(1.0) as usize;
    let mut best = f64::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        for _ in 0..reps {
            // SAFETY: the strides describe dense m x k, k x n and m x n matrices, inside
            // the buffers allocated above.
            unsafe {
                gemm::gemm(
                    m,
                    n,
                    k,
                    dst.as_mut_ptr(),
                    dst_cs,
                    dst_rs,
                    false,
                    lhs.as_ptr(),
                    lhs_cs,
                    lhs_rs,
                    rhs.as_ptr(),
                    rhs_cs,
                    rhs_rs,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
        }
        best = best.min(start.elapsed().as_secs_f64() / reps as f64);
    }
    flops / best / 1e9
}

fn main() {
    println!("channels, positions, R: GFLOP/s with dst row-major | transposed");
    for (c, hw, r) in [
        (16usize, 1024usize, 144usize),
        (32, 256, 288),
        (64, 64, 576),
    ] {
        let (ci, hwi, ri) = (c as isize, hw as isize, r as isize);
        // forward: y (c x hw) = W (c x r) · cols (r x hw)
        let fwd = (
            gflops(c, hw, r, [1, hwi, 1, ri, 1, hwi]),
            gflops(c, hw, r, [ci, 1, 1, ri, 1, hwi]),
        );
        // weight gradient: dW (c x r) = dy (c x hw) · colsᵀ (hw x r)
        let wgrad = (
            gflops(c, r, hw, [1, ri, 1, hwi, hwi, 1]),
            gflops(c, r, hw, [ci, 1, 1, hwi, hwi, 1]),
        );
        // input gradient (col2im path): cols (r x hw) = Wᵀ (r x c) · dy (c x hw)
        let igrad = (
            gflops(r, hw, c, [1, hwi, ri, 1, 1, hwi]),
            gflops(r, hw, c, [ri, 1, ri, 1, 1, hwi]),
        );
        println!(
            "{c}, {hw}, {r}: forward {:.0} | {:.0}   weight grad {:.0} | {:.0}   input grad {:.0} | {:.0}",
            fwd.0, fwd.1, wgrad.0, wgrad.1, igrad.0, igrad.1
        );
    }
}
