use candle_core::{DType, Tensor};
use candle_nn::ModuleT;

use super::resample::{avg_pool, resample};
use super::{LocalLoss, LossSite};
use crate::nn::{cross_entropy, Conv2d, Linear};
use crate::params::ParamBuilder;

/// Weight of the similarity-matching loss; the prediction loss gets `1 - SIMILARITY`.
const SIMILARITY: f64 = 0.99;
/// The prediction branch pools the features to at most this many values.
const PREDICTION_FEATURES: usize = 512;

/// The table's builder ([`super::METHODS`]).
pub(super) fn build(site: &LossSite<'_>, pb: &ParamBuilder) -> crate::Result<Box<dyn LocalLoss>> {
    Ok(Box::new(PredSimAux::new(site, pb)?))
}

/// PredSim (Nøkland and Eidnes 2019): `0.99 * sim + 0.01 * pred`.
///
/// - sim: a 3x3 conv (C -> C, no bias) on the unit's output, then the mean squared error
///   between the [`similarity_matrix`] of its per-channel spatial standard deviations and
///   the one of the one-hot labels.
/// - pred: average pooling (window doubled on alternate axes until at most 512 values
///   remain), then a Linear to the classes, cross-entropy.
///
/// Tensor names under the builder's prefix: `sim.conv.weight`, `head.fc.{weight,bias}`.
pub struct PredSimAux {
    conv: Conv2d,
    pool_rows: Tensor,
    pool_cols: Tensor,
    fc: Linear,
    classes: usize,
}

/// PredSim's pooling (the reference's `get_pool_layer`): window `(kh, kw)`, padding
/// `(ph, pw)` and the flattened width, for C channels of side `side`.
fn pool_layout(channels: usize, side: usize) -> ((usize, usize), (usize, usize), usize) {
    let (mut kh, mut kw) = (1, 1);
    let (mut oh, mut ow) = (side, side);
    let mut width = channels * oh * ow;
    while width > PREDICTION_FEATURES && kh < side {
        kh *= 2;
        oh = side.div_ceil(kh);
        width = channels * oh * ow;
        if width > PREDICTION_FEATURES {
            kw *= 2;
            ow = side.div_ceil(kw);
            width = channels * oh * ow;
        }
    }
    let ph = (kh * (oh - side / kh)) / 2;
    let pw = (kw * (ow - side / kw)) / 2;
    ((kh, kw), (ph, pw), width)
}

impl PredSimAux {
    /// The head for `site`.
    pub fn new(site: &LossSite<'_>, pb: &ParamBuilder) -> crate::Result<Self> {
        let c = site.channels();
        let side = site.feature_size()?;
        let ((kh, kw), (ph, pw), width) = pool_layout(c, side);
        Ok(PredSimAux {
            conv: Conv2d::new(c, c, 3, 1, 1, &pb.pp("sim").pp("conv"))?,
            pool_rows: avg_pool(side, kh, ph, pb.device())?,
            pool_cols: avg_pool(side, kw, pw, pb.device())?,
            fc: Linear::new(width, site.net.classes(), true, &pb.pp("head").pp("fc"))?,
            classes: site.net.classes(),
        })
    }
}

/// Cosine similarities (N, N) between the rows of `x` after centring each row, clamped to
/// [-1, 1]. A 4-D input of more than 3 channels and more than one row is first reduced to
/// the standard deviation (unbiased) of each channel over its positions; other inputs are
/// flattened per sample.
pub fn similarity_matrix(x: &Tensor) -> candle_core::Result<Tensor> {
    let x = match x.dims() {
        &[n, c, h, w] if c > 3 && h > 1 => {
            let z = x.reshape((n, c, h * w))?;
            let centred = z.broadcast_sub(&z.mean_keepdim(2)?)?;
            let var = (centred.sqr()?.sum(2)? / (h * w - 1) as f64)?;
            var.sqrt()?
        }
        _ => x.flatten_from(1)?,
    };
    let centred = x.broadcast_sub(&x.mean_keepdim(1)?)?;
    let norm = (centred.sqr()?.sum_keepdim(1)?.sqrt()? + 1e-8)?;
    let unit = centred.broadcast_div(&norm)?;
    unit.matmul(&unit.t()?)?.clamp(-1f32, 1f32)
}

impl PredSimAux {
    /// The similarity-matching loss of the conv branch on `features`.
    pub fn similarity_loss(
        &self,
        features: &Tensor,
        labels: &Tensor,
    ) -> candle_core::Result<Tensor> {
        let h = self.conv.forward_t(features, true)?;
        let one_hot = candle_nn::encoding::one_hot(labels.clone(), self.classes, 1f32, 0f32)?;
        // The similarity statistics run in f32 whatever the features' precision.
        let h = h.to_dtype(DType::F32)?;
        let diff = (similarity_matrix(&h)? - similarity_matrix(&one_hot.to_dtype(DType::F32)?)?)?;
        diff.sqr()?.mean_all()
    }

    /// The prediction (cross-entropy) loss of the pooled linear branch on `features`.
    pub fn prediction_loss(
        &self,
        features: &Tensor,
        labels: &Tensor,
    ) -> candle_core::Result<Tensor> {
        Ok(self.prediction(features, labels)?.0)
    }

    /// [`PredSimAux::prediction_loss`] and the logits it was computed from.
    fn prediction(
        &self,
        features: &Tensor,
        labels: &Tensor,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let logits = self.prediction_logits(features, true)?;
        Ok((cross_entropy(&logits, labels)?, logits))
    }

    /// The prediction branch's logits (pooling and a linear layer: the same in both modes).
    fn prediction_logits(&self, features: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let pooled = resample(features, &self.pool_rows, &self.pool_cols)?;
        self.fc.forward_t(&pooled.flatten_from(1)?, train)
    }
}

impl LocalLoss for PredSimAux {
    fn loss(
        &self,
        features: &Tensor,
        labels: &Tensor,
        images: &Tensor,
    ) -> candle_core::Result<Tensor> {
        Ok(self.loss_and_logits(features, labels, images)?.0)
    }

    fn loss_and_logits(
        &self,
        features: &Tensor,
        labels: &Tensor,
        _images: &Tensor,
    ) -> candle_core::Result<(Tensor, Option<Tensor>)> {
        let sim = self.similarity_loss(features, labels)?;
        let (pred, logits) = self.prediction(features, labels)?;
        Ok((
            ((sim * SIMILARITY)? + (pred * (1.0 - SIMILARITY))?)?,
            Some(logits),
        ))
    }

    fn eval_logits(&self, features: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(self.prediction_logits(features, false)?))
    }
}

#[cfg(test)]
mod tests {
    use super::pool_layout;

    #[test]
    fn pooling_follows_the_reference_layout() {
        // CIFAR ResNet stages: 16x32x32, 32x16x16, 64x8x8 all end at 512 values.
        assert_eq!(pool_layout(16, 32), ((8, 4), (0, 0), 512));
        assert_eq!(pool_layout(32, 16), ((4, 4), (0, 0), 512));
        assert_eq!(pool_layout(64, 8), ((4, 2), (0, 0), 512));
        // Already small enough: no pooling.
        assert_eq!(pool_layout(8, 8), ((1, 1), (0, 0), 512));
        // A side the window does not divide: 7 -> ceil(7/2) = 4 with one padded row each side.
        assert_eq!(pool_layout(64, 7), ((4, 2), (2, 1), 512));
    }
}
