use candle_core::Tensor;
use candle_nn::ModuleT;

use super::{Classifier, CrossEntropy, LocalLoss, LossSite};
use crate::net::AuxHead;
use crate::nn::{adaptive_avg_pool1d, global_avg_pool, BatchNorm1d, BoxedLayer, Linear};
use crate::params::ParamBuilder;

/// The table's builder ([`super::METHODS`]).
pub(super) fn build(site: &LossSite<'_>, pb: &ParamBuilder) -> crate::Result<Box<dyn LocalLoss>> {
    Ok(Box::new(CrossEntropy(AugLocalAux::new(site, pb)?)))
}

/// Width of the reference's ImageNet VGG auxiliary head ([`AuxHead::Mlp`]).
const MLP_WIDTH: usize = 512;

/// The classifier after the auxiliary blocks.
enum Head {
    /// Global average pool, optional BatchNorm1d, Linear.
    Pooled { bn: Option<BatchNorm1d>, fc: Linear },
    /// Flatten, adaptive average pool to 512, two Linear-BatchNorm1d-ReLU, Linear.
    Mlp {
        hidden: Vec<(Linear, BatchNorm1d)>,
        fc: Linear,
    },
}

/// AugLocal's auxiliary network: fresh copies of uniformly sampled downstream units, then
/// a head ([`AuxHead`]: global average pooling, an optional BatchNorm1d (depth <= 1) and a
/// linear classifier, or VGG's MLP), trained with cross-entropy.
///
/// Tensor names under the builder's prefix: `blocks.<m>.…` and `head.{bn,fc}.…` (the MLP:
/// `head.{fc1,bn1,fc2,bn2,fc}.…`).
pub struct AugLocalAux {
    blocks: Vec<BoxedLayer>,
    head: Head,
}

impl AugLocalAux {
    /// Builds the auxiliary network the plan puts at `site`.
    pub fn new(site: &LossSite<'_>, pb: &ParamBuilder) -> crate::Result<Self> {
        let (net, aux) = (site.net, site.aux);
        let Some(head) = aux.head else {
            return Err(crate::Error::InvalidSetting {
                setting: "AugLocal head",
                value: format!("none in the plan for unit {}", aux.unit),
                valid: "a plan of method auglocal (AuxPlan::new), whose auxiliary networks end in a head".into(),
            });
        };
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
        let hp = pb.pp("head");
        let head = match head {
            AuxHead::Fc | AuxHead::BnFc => Head::Pooled {
                bn: match head {
                    AuxHead::BnFc => Some(BatchNorm1d::new(width, &hp.pp("bn"))?),
                    AuxHead::Fc | AuxHead::Mlp => None,
                },
                fc: Linear::new(width, net.classes(), true, &hp.pp("fc"))?,
            },
            AuxHead::Mlp => Head::Mlp {
                hidden: (1..=2)
                    .map(|i| {
                        Ok((
                            Linear::new(MLP_WIDTH, MLP_WIDTH, true, &hp.pp(format!("fc{i}")))?,
                            BatchNorm1d::new(MLP_WIDTH, &hp.pp(format!("bn{i}")))?,
                        ))
                    })
                    .collect::<crate::Result<Vec<_>>>()?,
                fc: Linear::new(MLP_WIDTH, net.classes(), true, &hp.pp("fc"))?,
            },
        };
        Ok(AugLocalAux { blocks, head })
    }
}

impl Classifier for AugLocalAux {
    fn logits_t(&self, features: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let mut h = features.clone();
        for block in &self.blocks {
            h = block.forward_t(&h, train)?;
        }
        match &self.head {
            Head::Pooled { bn, fc } => {
                let mut h = global_avg_pool(&h)?;
                if let Some(bn) = bn {
                    h = bn.forward_t(&h, train)?;
                }
                fc.forward_t(&h, train)
            }
            Head::Mlp { hidden, fc } => {
                let mut h = adaptive_avg_pool1d(&h.flatten_from(1)?, MLP_WIDTH)?;
                for (linear, bn) in hidden {
                    h = bn.forward_t(&linear.forward_t(&h, train)?, train)?.relu()?;
                }
                fc.forward_t(&h, train)
            }
        }
    }
}
