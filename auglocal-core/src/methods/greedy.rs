use candle_core::Tensor;
use candle_nn::ModuleT;

use super::{LocalLoss, LossSite};
use crate::nn::{cross_entropy, global_avg_pool, Linear};
use crate::params::ParamBuilder;

/// The table's builder ([`super::METHODS`]).
pub(super) fn build(site: &LossSite<'_>, pb: &ParamBuilder) -> crate::Result<Box<dyn LocalLoss>> {
    Ok(Box::new(GreedyAux::new(site, pb)?))
}

/// Greedy supervised learning (InfoPro's `0c1f`): global average pooling and one linear
/// classifier on the unit's output, cross-entropy. The weakest baseline: the unit alone
/// has to make its features linearly separable.
///
/// Tensor names under the builder's prefix: `head.fc.{weight,bias}`.
pub struct GreedyAux {
    fc: Linear,
}

impl GreedyAux {
    pub fn new(site: &LossSite<'_>, pb: &ParamBuilder) -> crate::Result<Self> {
        let fc = Linear::new(
            site.channels(),
            site.net.classes(),
            true,
            &pb.pp("head").pp("fc"),
        )?;
        Ok(GreedyAux { fc })
    }
}

impl LocalLoss for GreedyAux {
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
        let logits = self.fc.forward_t(&global_avg_pool(features)?, true)?;
        Ok((cross_entropy(&logits, labels)?, Some(logits)))
    }

    fn eval_logits(&self, features: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(self.fc.forward_t(&global_avg_pool(features)?, false)?))
    }
}
