use candle_core::Tensor;
use candle_nn::ModuleT;

use super::{Classifier, CrossEntropy, LocalLoss, LossSite};
use crate::nn::{global_avg_pool, Linear};
use crate::params::ParamBuilder;

/// The table's builder ([`super::METHODS`]).
pub(super) fn build(site: &LossSite<'_>, pb: &ParamBuilder) -> crate::Result<Box<dyn LocalLoss>> {
    Ok(Box::new(CrossEntropy(GreedyAux::new(site, pb)?)))
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
    /// The classifier of the unit at `site`: the unit's channels in, the network's classes
    /// out, its tensors created through `pb`.
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

impl Classifier for GreedyAux {
    fn logits_t(&self, features: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.fc.forward_t(&global_avg_pool(features)?, train)
    }
}
