//! The layers every model uses, with the reference's initialisation. All implement
//! [`candle_nn::ModuleT`]: `train = true` uses batch statistics and updates BatchNorm
//! running statistics, `train = false` is inference.

mod batch_norm;
mod batch_norm_cpu;
#[cfg(feature = "cudnn")]
mod batch_norm_cudnn;
mod conv;
mod conv_bn;
mod conv_cpu;
#[cfg(target_arch = "x86_64")]
mod conv_direct;
#[cfg(feature = "cudnn")]
mod cudnn;
mod depthwise_cpu;
mod elementwise_cpu;
mod linear;
mod pool;
mod residual;
#[cfg(target_arch = "x86_64")]
mod winograd;

pub use batch_norm::{BatchNorm1d, BatchNorm2d};
pub use conv::Conv2d;
pub use conv_bn::conv_bn;
pub use linear::Linear;
pub use pool::{adaptive_avg_pool1d, adaptive_avg_pool2d, MaxPool2d};
pub use residual::residual_block;

use candle_core::{Result, Tensor};

/// A boxed layer, as models hand out their blocks.
pub type BoxedLayer = Box<dyn candle_nn::ModuleT + Send + Sync>;

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

/// `relu(a + b)`, the end of a residual block, fused into one pass on the CPU.
pub fn add_relu(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.device().is_cpu() && a.dtype() == candle_core::DType::F32 && a.dims() == b.dims() {
        a.contiguous()?
            .apply_op2(&b.contiguous()?, elementwise_cpu::AddRelu)
    } else {
        (a + b)?.relu()
    }
}

/// Global average pooling: (N, C, H, W) -> (N, C).
pub fn global_avg_pool(x: &Tensor) -> Result<Tensor> {
    x.mean((2, 3))
}

/// Mean cross-entropy of `logits` (N, classes) against `labels` (N) u32, computed in f32
/// whatever the logits' precision.
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    candle_nn::loss::cross_entropy(&logits.to_dtype(candle_core::DType::F32)?, labels)
}

/// Number of rows of `logits` whose arg-max equals the label.
pub fn correct_predictions(logits: &Tensor, labels: &Tensor) -> Result<usize> {
    let predicted = logits.argmax(1)?;
    let hits = predicted.eq(labels)?.to_dtype(candle_core::DType::U32)?;
    Ok(hits.sum_all()?.to_scalar::<u32>()? as usize)
}
