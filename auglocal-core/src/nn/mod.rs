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

/// Number of rows of `logits` whose label is among the `k` highest logits: fewer than `k`
/// logits of the row are strictly above the label's (a tie counts for the label).
pub fn correct_in_top_k(logits: &Tensor, labels: &Tensor, k: usize) -> Result<usize> {
    let logits = logits.to_dtype(candle_core::DType::F32)?;
    let label_logit = logits.gather(&labels.unsqueeze(1)?, 1)?;
    let above = logits
        .broadcast_gt(&label_logit)?
        .to_dtype(candle_core::DType::U32)?
        .sum(1)?;
    let hits = above.lt(k as u32)?.to_dtype(candle_core::DType::U32)?;
    Ok(hits.sum_all()?.to_scalar::<u32>()? as usize)
}

/// Number of rows of `logits` whose arg-max equals the label.
pub fn correct_predictions(logits: &Tensor, labels: &Tensor) -> Result<usize> {
    let predicted = logits.argmax(1)?;
    let hits = predicted.eq(labels)?.to_dtype(candle_core::DType::U32)?;
    Ok(hits.sum_all()?.to_scalar::<u32>()? as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn top_k_counts_labels_among_the_k_highest_logits() -> Result<()> {
        // Six classes. Row 0: label 2 is 3rd highest; row 1: label 0 is the highest;
        // row 2: label 5 is 6th (last); row 3: label 1 ties the highest.
        let logits = Tensor::new(
            &[
                [0.9f32, 0.8, 0.7, 0.1, 0.2, 0.3],
                [5.0, 1.0, 2.0, 3.0, 4.0, 0.0],
                [0.5, 0.4, 0.3, 0.2, 0.1, -1.0],
                [1.0, 1.0, 0.0, 0.0, 0.0, 0.0],
            ],
            &Device::Cpu,
        )?;
        let labels = Tensor::new(&[2u32, 0, 5, 1], &Device::Cpu)?;
        assert_eq!(
            correct_in_top_k(&logits, &labels, 1)?,
            2,
            "rows 1 and 3 (a tie)"
        );
        assert_eq!(correct_in_top_k(&logits, &labels, 2)?, 2);
        assert_eq!(correct_in_top_k(&logits, &labels, 3)?, 3, "row 0 joins");
        assert_eq!(correct_in_top_k(&logits, &labels, 5)?, 3);
        assert_eq!(correct_in_top_k(&logits, &labels, 6)?, 4, "every row");
        // Top-1 by arg-max agrees where there is no tie.
        assert_eq!(
            correct_predictions(&logits.narrow(0, 0, 3)?, &labels.narrow(0, 0, 3)?)?,
            1
        );
        Ok(())
    }
}
