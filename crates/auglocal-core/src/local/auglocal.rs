use candle_core::Tensor;
use candle_nn::ModuleT;

use super::LocalLoss;
use crate::net::LocalNet;
use crate::nn::{cross_entropy, global_avg_pool, BatchNorm1d, BoxedLayer, Linear};
use crate::params::ParamBuilder;
use crate::plan::{HeadKind, UnitAux};

/// AugLocal's auxiliary network: fresh copies of uniformly sampled downstream units, then
/// global average pooling, an optional BatchNorm1d (depth <= 1) and a linear classifier,
/// trained with cross-entropy.
///
/// Tensor names under the builder's prefix: `blocks.<m>.…` and `head.{bn,fc}.…`.
pub struct AugLocalAux {
    blocks: Vec<BoxedLayer>,
    bn: Option<BatchNorm1d>,
    fc: Linear,
}

impl AugLocalAux {
    /// Builds the auxiliary network `aux` of the plan for `net`.
    pub fn new(net: &dyn LocalNet, aux: &UnitAux, pb: &ParamBuilder) -> crate::Result<Self> {
        let blocks = aux
            .blocks
            .iter()
            .enumerate()
            .map(|(m, b)| {
                net.build_block(
                    b.copy_of,
                    b.in_channels,
                    b.out_channels,
                    b.stride,
                    &pb.pp("blocks").pp(m),
                )
            })
            .collect::<crate::Result<Vec<_>>>()?;
        let width = aux.head_channels(net.units()[aux.unit].channels);
        let head = pb.pp("head");
        let bn = match aux.head {
            HeadKind::BnFc => Some(BatchNorm1d::new(width, &head.pp("bn"))?),
            HeadKind::Fc => None,
            other => {
                return Err(crate::Error::InvalidSetting {
                    setting: "AugLocal head",
                    value: other.name().into(),
                    valid: "fc or bn_fc".into(),
                })
            }
        };
        let fc = Linear::new(width, net.classes(), true, &head.pp("fc"))?;
        Ok(AugLocalAux { blocks, bn, fc })
    }

    /// The auxiliary logits for a unit's output.
    pub fn logits(&self, features: &Tensor) -> candle_core::Result<Tensor> {
        let mut h = features.clone();
        for block in &self.blocks {
            h = block.forward_t(&h, true)?;
        }
        let mut h = global_avg_pool(&h)?;
        if let Some(bn) = &self.bn {
            h = bn.forward_t(&h, true)?;
        }
        self.fc.forward_t(&h, true)
    }
}

impl LocalLoss for AugLocalAux {
    fn loss(
        &self,
        features: &Tensor,
        labels: &Tensor,
        _images: &Tensor,
    ) -> candle_core::Result<Tensor> {
        cross_entropy(&self.logits(features)?, labels)
    }
}
