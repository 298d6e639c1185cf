//! The layers every model uses, with the reference's initialisation. All implement
//! [`candle_nn::ModuleT`]: `train = true` uses batch statistics and updates BatchNorm
//! running statistics, `train = false` is inference. The custom ops and kernels they run
//! on live in the crate's private `kernels` module.

mod batch_norm;
mod conv;
mod conv_bn;
mod linear;
mod pool;
mod residual;

pub use batch_norm::{BatchNorm1d, BatchNorm2d};
pub use conv::Conv2d;
pub use conv_bn::conv_bn;
pub use linear::Linear;
pub use pool::{adaptive_avg_pool1d, adaptive_avg_pool2d, MaxPool2d};
pub use residual::{add_relu, residual_block};

use candle_core::{Result, Tensor};

/// A boxed layer, as models hand out their blocks.
pub type BoxedLayer = Box<dyn candle_nn::ModuleT + Send + Sync>;

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
