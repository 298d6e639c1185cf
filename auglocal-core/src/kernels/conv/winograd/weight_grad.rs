//! The weight gradient through the same transforms as the forward pass, with the roles of
//! A and G swapped.

use std::cell::RefCell;

use super::fill::{at_least, fill_units};
use super::gemm::wgrad_gemm;
use super::tiles::{Chunk, Tiles};
use super::transforms::{grads_f2, grads_f4, inputs_f2, inputs_f4};
use super::{supports_weight_grad, transform_for, Transform, TILE_CHANNELS};
use crate::kernels::conv::gemm::sum_in_order;
use crate::kernels::conv::geometry::Geometry;
use crate::kernels::simd::Registers;

/// The weight gradient `dW[co][ci] = Σ_n Σ_pixels dy[n][co][pixel] · x[n][ci][pixel + tap]`
/// for output gradient `dy` and input `x`, through the same transforms:
///
/// ```text
/// dW = Gᵀ [ Σ_n Σ_tiles (A dy Aᵀ) ⊙ (Bᵀ d B) ] G
/// ```
///
/// (the forward identity with the roles of A and G swapped: each dy tile is an m x m
/// "kernel" correlated with its input tile into 3x3 outputs). The sum over tiles and
/// images runs in the transformed domain, one GEMM per position ξ whose reduction runs over
/// every tile of a group of `images_per_sum` images, 8 lanes per sum; the groups' sums are
/// then added in order and transformed once: results do not depend on the thread count.
pub(crate) fn weight_grad(g: &Geometry, dy: &[f32], x: &[f32], images_per_sum: usize) -> Vec<f32> {
    assert!(
        supports_weight_grad(g),
        "winograd::weight_grad called on {g:?}"
    );
    let Some(plan) = transform_for(g) else {
        unreachable!("checked by supports_weight_grad");
    };
    let transform = plan.0;
    let positions = transform.positions();
    let tiles = Tiles::new(g, plan);
    let regs = Registers::detect();
    let images_per_sum = images_per_sum.max(1);
    let (in_image, out_image) = (g.c_in * g.h * g.w, g.c_out * g.h * g.w);
    let pairs = g.c_out * g.c_in;
    let partials: Vec<Vec<f32>> = crate::parallel::map(g.batch.div_ceil(images_per_sum), |group| {
        WEIGHT_GRAD_BUFFERS.with_borrow_mut(|[padded_x, padded_dy, v, t]| {
            let first = group * images_per_sum;
            let images = images_per_sum.min(g.batch - first);
            // `fill` and the transforms write every float they later read, so the buffers
            // are reused as they are.
            let x = &x[first * in_image..(first + images) * in_image];
            let dy = &dy[first * out_image..(first + images) * out_image];
            let (x_unit, dy_unit) = (g.c_in * tiles.padded_plane, g.c_out * tiles.padded_plane);
            let units = fill_units(&tiles, x, in_image, padded_x, x_unit);
            fill_units(&tiles, dy, out_image, padded_dy, dy_unit);
            let (padded_x, padded_dy) =
                (&padded_x[..units * x_unit], &padded_dy[..units * dy_unit]);
            let chunk = Chunk::new(0, units * tiles.vectors_per_unit(), positions);
            let v = at_least(v, chunk.floats(g.c_in));
            let t = at_least(t, chunk.floats(g.c_out));
            assert!(
                g.c_in.is_multiple_of(regs.tile_width()) && g.c_out.is_multiple_of(TILE_CHANNELS)
            );
            // SAFETY: `supported` checked AVX2 and FMA, `regs` the rest; the buffers have
            // the sizes each function states.
            unsafe {
                match transform {
                    Transform::F2 => {
                        inputs_f2((&tiles, g.c_in, padded_x), chunk, v);
                        grads_f2((&tiles, g.c_out, padded_dy), chunk, t);
                    }
                    Transform::F4 => {
                        inputs_f4((&tiles, g.c_in, padded_x), chunk, v);
                        grads_f4((&tiles, g.c_out, padded_dy), chunk, t);
                    }
                }
                // M[ξ][co][ci], summed over every tile of the group; not zeroed first, as
                // the register tiles cover it (C_in is a multiple of their width).
                let mut m = Vec::with_capacity(positions * pairs);
                let spare = &mut m.spare_capacity_mut()[..positions * pairs];
                for xi in 0..positions {
                    for co in (0..g.c_out).step_by(TILE_CHANNELS) {
                        for ci in (0..g.c_in).step_by(regs.tile_width()) {
                            let sums = wgrad_gemm(regs, t, v, chunk, xi, (co, ci));
                            for (r, row) in sums.iter().enumerate() {
                                let at = (xi * g.c_out + co + r) * g.c_in + ci;
                                for (dst, value) in
                                    spare[at..at + regs.tile_width()].iter_mut().zip(row)
                                {
                                    dst.write(*value);
                                }
                            }
                        }
                    }
                }
                // SAFETY: every (ξ, co, ci) was written: the register tiles step through
                // whole multiples (asserted below the buffers' setup).
                m.set_len(positions * pairs);
                m
            }
        })
    });
    let m = sum_in_order(partials, positions * pairs);
    // dW = Gᵀ M G per pair of channels, in f64, output channels in parallel.
    let gm = transform.g();
    let alpha = transform.alpha();
    let rows: Vec<Vec<f32>> = crate::parallel::map(g.c_out, |co| {
        let mut out = vec![0f32; g.c_in * 9];
        let mut block = [0f64; 36];
        for (ci, out) in out.chunks_exact_mut(9).enumerate() {
            let pair = co * g.c_in + ci;
            for (xi, value) in block[..alpha * alpha].iter_mut().enumerate() {
                *value = m[xi * pairs + pair] as f64;
            }
            // Gᵀ M (3 x alpha), then times G.
            let mut left = [[0f64; 6]; 3];
            for (a, row) in left.iter_mut().enumerate() {
                for (j, value) in row[..alpha].iter_mut().enumerate() {
                    *value = (0..alpha).map(|i| gm[i][a] * block[alpha * i + j]).sum();
                }
            }
            for a in 0..3 {
                for b in 0..3 {
                    let sum: f64 = (0..alpha).map(|j| left[a][j] * gm[j][b]).sum();
                    out[3 * a + b] = sum as f32;
                }
            }
        }
        out
    });
    rows.concat()
}

thread_local! {
    /// [`weight_grad`]'s buffers (padded inputs and output gradients, V, T), kept between
    /// calls on each thread: a group's transformed tiles take megabytes, and zeroing fresh
    /// ones at every call was ~2% of a ResNet-32 step.
    static WEIGHT_GRAD_BUFFERS: RefCell<[Vec<f32>; 4]> =
        const { RefCell::new([Vec::new(), Vec::new(), Vec::new(), Vec::new()]) };
}
