//! Candle custom ops and the CPU and cuDNN kernels behind them, for the layers of
//! [`crate::nn`]. Nothing here is a layer, and nothing here imports `nn`: the ops take
//! tensors and plain values, and the layers unpack themselves into those.
//!
//! ```text
//! conv/              the convolution ops; mod.rs only picks the kernel of each pass
//!   geometry.rs      the shapes of one convolution and their index helpers
//!   gemm.rs          im2col + GEMM: any convolution, the portable path
//!   direct.rs        (x86-64) direct AVX2 kernels: stride 2, other kernel sizes at stride 1
//!   depthwise.rs     one filter per channel, as direct loops
//!   winograd/        (x86-64) 3x3 stride 1 in F(4x4, 3x3) or F(2x2, 3x3): mod.rs (choice),
//!                    tiles, fill, transforms, gemm, outputs, forward, weight_grad
//! batch_norm.rs      training BatchNorm as one fused op, and its backward
//! conv_bn.rs         convolution + training BatchNorm (+ ReLU) as one op; ConvNorm, its steps
//! residual.rs        a whole residual block as one op, from ConvNorm steps and relu(a + b)
//! elementwise.rs     relu(a + b) and the ReLU gradient, one pass each
//! pool.rs            max pooling with padding, and its gradient
//! simd.rs            (x86-64) what the kernels share about the CPU: AVX2 + FMA, registers
//! cudnn/             (feature cudnn) the CUDA paths of the convolution and BatchNorm ops
//! ```

pub(crate) mod batch_norm;
pub(crate) mod conv;
pub(crate) mod conv_bn;
#[cfg(feature = "cudnn")]
pub(crate) mod cudnn;
pub(crate) mod elementwise;
pub(crate) mod pool;
pub(crate) mod residual;
#[cfg(target_arch = "x86_64")]
pub(crate) mod simd;

use candle_core::Result;

/// The f32 values of a contiguous CPU tensor handed to a custom op named `op`.
pub(crate) fn contiguous_f32<'a>(
    op: &str,
    storage: &'a candle_core::CpuStorage,
    layout: &candle_core::Layout,
    what: &str,
) -> Result<&'a [f32]> {
    let candle_core::CpuStorage::F32(data) = storage else {
        candle_core::bail!("{op}: {what} must be f32");
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op}: {what} must be contiguous"),
    }
}

/// Runs `f` compiled for AVX2 and FMA where the CPU has them. The crate builds for baseline
/// x86-64 (SSE2), which leaves plain loops (BatchNorm's channel sums use this) at half the
/// vector width; `f` is inlined into a function that enables both. (Rust never fuses a
/// multiply and an add on its own, so results are the same either way.)
#[inline(always)]
pub(crate) fn vectorised<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        // SAFETY: the CPU has AVX2 and FMA.
        return unsafe { avx2(f) };
    }
    f()
}
