use candle_core::Tensor;
use candle_nn::ModuleT;

use super::resample::{adaptive_avg, resample};
use super::{Classifier, CrossEntropy, LocalLoss, LossSite};
use crate::nn::{BatchNorm1d, BatchNorm2d, Conv2d, Linear};
use crate::params::ParamBuilder;

/// The table's builder ([`super::METHODS`]).
pub(super) fn build(site: &LossSite<'_>, pb: &ParamBuilder) -> crate::Result<Box<dyn LocalLoss>> {
    Ok(Box::new(CrossEntropy(DglAux::new(site, pb)?)))
}

/// DGL's auxiliary network (Belilovsky et al. 2020, as the AugLocal reference builds it)
/// on a unit of C channels and side s: adaptive average pooling to ceil(s/4), three
/// 1x1 conv (C -> C) + BN + ReLU, adaptive average pooling to m = min(ceil(s/4), 2), then an
/// MLP of width F = C*m*m: two (Linear without bias + BN1d + ReLU) and a Linear to the
/// classes; cross-entropy.
///
/// Tensor names under the builder's prefix: `head.conv.<i>.{conv,bn}`,
/// `head.mlp.<i>.{fc,bn}`, `head.fc`.
pub struct DglAux {
    /// Pooling maps s -> ceil(s/4) and ceil(s/4) -> m.
    pool_in: Tensor,
    pool_mid: Tensor,
    convs: Vec<(Conv2d, BatchNorm2d)>,
    mlp: Vec<(Linear, BatchNorm1d)>,
    fc: Linear,
}

impl DglAux {
    /// The head for `site`.
    pub fn new(site: &LossSite<'_>, pb: &ParamBuilder) -> crate::Result<Self> {
        let c = site.channels();
        let side = site.feature_size()?;
        let pooled = side.div_ceil(4);
        let mlp_side = pooled.min(2);
        let width = c * mlp_side * mlp_side;
        let head = pb.pp("head");
        let convs = (0..3)
            .map(|i| {
                let p = head.pp("conv").pp(i);
                Ok((
                    Conv2d::new(c, c, 1, 1, 0, &p.pp("conv"))?,
                    BatchNorm2d::new(c, &p.pp("bn"))?,
                ))
            })
            .collect::<crate::Result<Vec<_>>>()?;
        let mlp = (0..2)
            .map(|i| {
                let p = head.pp("mlp").pp(i);
                Ok((
                    Linear::new(width, width, false, &p.pp("fc"))?,
                    BatchNorm1d::new(width, &p.pp("bn"))?,
                ))
            })
            .collect::<crate::Result<Vec<_>>>()?;
        Ok(DglAux {
            pool_in: adaptive_avg(side, pooled, pb.device())?,
            pool_mid: adaptive_avg(pooled, mlp_side, pb.device())?,
            convs,
            mlp,
            fc: Linear::new(width, site.net.classes(), true, &head.pp("fc"))?,
        })
    }
}

impl Classifier for DglAux {
    fn logits_t(&self, features: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let mut h = resample(features, &self.pool_in, &self.pool_in)?;
        for (conv, bn) in &self.convs {
            h = bn.forward_relu(&conv.forward_t(&h, train)?, train)?;
        }
        let h = resample(&h, &self.pool_mid, &self.pool_mid)?;
        let mut h = h.flatten_from(1)?;
        for (fc, bn) in &self.mlp {
            h = bn.forward_t(&fc.forward_t(&h, train)?, train)?.relu()?;
        }
        self.fc.forward_t(&h, train)
    }
}
