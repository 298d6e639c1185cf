//! The auxiliary plan: which units get which auxiliary blocks, as pure data.
//!
//! Everything the paper's rules decide (uniform selection of downstream units, pyramidal
//! depths, strides, projection shortcuts, head kind, the number of modules K) is computed
//! here without a single tensor, so it can be golden-tested and printed by `auglocal inspect`.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::net::LocalNet;

/// One block of an auxiliary network: a fresh copy of backbone unit `copy_of`, mapping
/// `in_channels` to `out_channels` at `stride`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuxBlock {
    pub copy_of: usize,
    #[serde(rename = "in")]
    pub in_channels: usize,
    #[serde(rename = "out")]
    pub out_channels: usize,
    pub stride: usize,
}

impl AuxBlock {
    /// A projection shortcut (1x1 conv + BN) is needed whenever the block changes the shape.
    pub fn needs_projection(&self) -> bool {
        self.stride != 1 || self.in_channels != self.out_channels
    }
}

/// The head that closes an auxiliary network, and so the local loss that trains it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeadKind {
    /// AugLocal: global average pool, then Linear.
    Fc,
    /// AugLocal: global average pool, BatchNorm1d, then Linear (auxiliary depth <= 1).
    BnFc,
    /// DGL: pooled 1x1-conv stack, then a 3-layer MLP classifier.
    Dgl,
    /// InfoPro, softmax form: reconstruction of the image plus a conv-MLP classifier.
    #[serde(rename = "infopro")]
    InfoPro,
    /// InfoPro, contrastive form: reconstruction plus a supervised contrastive loss.
    #[serde(rename = "infopro_contrast")]
    InfoProContrast,
    /// PredSim: similarity-matching loss plus a pooled linear classifier.
    #[serde(rename = "predsim")]
    PredSim,
    /// Greedy supervised learning: global average pool, then Linear.
    Linear,
    /// The reference's ImageNet VGG head: flatten, adaptive average pool to 512 features,
    /// two Linear(512, 512)-BatchNorm1d-ReLU, then Linear.
    Mlp,
}

impl HeadKind {
    /// The name the plan's JSON and `auglocal inspect` use.
    pub fn name(self) -> &'static str {
        match self {
            HeadKind::Fc => "fc",
            HeadKind::BnFc => "bn_fc",
            HeadKind::Dgl => "dgl",
            HeadKind::InfoPro => "infopro",
            HeadKind::InfoProContrast => "infopro_contrast",
            HeadKind::PredSim => "predsim",
            HeadKind::Linear => "linear",
            HeadKind::Mlp => "mlp",
        }
    }

    /// The head of the CIFAR recipe for an auxiliary network of depth `depth`.
    pub fn for_depth(depth: usize) -> Self {
        if depth <= 1 {
            HeadKind::BnFc
        } else {
            HeadKind::Fc
        }
    }
}

/// Where the blocks of an auxiliary network halve the resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Downsampling {
    /// The reference's counter: moving from the current unit to a copied unit of coarser
    /// resolution owes log2 of their ratio in halvings, paid at most one per block (stride
    /// 2), the rest carried to the next block. ResNets and MobileNetV2.
    #[default]
    Counter,
    /// VGG's rule: a block halves the resolution (a 2x2 max-pool before its convolution)
    /// exactly when it changes the channel count.
    ChannelChange,
}

/// The auxiliary network attached after one unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitAux {
    pub unit: usize,
    pub depth: usize,
    pub blocks: Vec<AuxBlock>,
    pub head: HeadKind,
}

impl UnitAux {
    /// Output channels of the last auxiliary block (the head's input width).
    pub fn head_channels(&self, unit_channels: usize) -> usize {
        self.blocks.last().map_or(unit_channels, |b| b.out_channels)
    }
}

/// The training method, as far as the plan is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum Method {
    /// End-to-end backpropagation: one module, K = 1.
    Bp,
    /// AugLocal: auxiliary depth `depth`, pyramid coefficient `pyramid` (0 = uniform depth).
    #[serde(rename = "auglocal")]
    AugLocal { depth: usize, pyramid: f64 },
    /// A baseline whose every auxiliary network is the fixed head `head` (one of
    /// [`HeadKind::Dgl`], [`HeadKind::InfoPro`], [`HeadKind::InfoProContrast`],
    /// [`HeadKind::PredSim`], [`HeadKind::Linear`]), on `modules` modules (None: one per unit).
    Baseline {
        head: HeadKind,
        modules: Option<usize>,
    },
}

/// The layout of a local-learning run. Serialises to the JSON of `auglocal inspect --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuxPlan {
    pub model: String,
    /// Number of units (local layers) of the backbone.
    pub units: usize,
    /// K: number of gradient-isolated modules.
    pub modules: usize,
    /// Auxiliary networks, ordered by unit.
    pub aux: Vec<UnitAux>,
}

impl AuxPlan {
    /// Builds the plan of `method` for a backbone whose units output `unit_channels`.
    pub fn new(model: &str, unit_channels: &[usize], method: Method) -> Result<Self> {
        match method {
            Method::Bp => Ok(Self::backprop(model, unit_channels.len())),
            Method::AugLocal { depth, pyramid } => {
                Self::auglocal(model, unit_channels, depth, pyramid)
            }
            Method::Baseline { head, modules } => {
                Self::baseline(model, unit_channels.len(), head, modules)
            }
        }
    }

    /// A baseline (DGL, InfoPro, PredSim, greedy SL) on K = `modules` modules, every unit
    /// by default, as the paper compares them.
    ///
    /// The module boundaries are those of the reference's split tables
    /// (`network_config[arch][K]` of the AugLocal code): auxiliary heads on units
    /// `0..=K-2`; the remaining units and the output layer form the last module.
    pub fn baseline(
        model: &str,
        units: usize,
        head: HeadKind,
        modules: Option<usize>,
    ) -> Result<Self> {
        if matches!(head, HeadKind::Fc | HeadKind::BnFc) {
            return Err(Error::InvalidSetting {
                setting: "baseline head",
                value: head.name().into(),
                valid: "dgl, infopro, infopro_contrast, predsim or linear (fc and bn_fc are AugLocal's, built from its plan)".into(),
            });
        }
        let k = modules.unwrap_or(units);
        if k < 2 || k > units {
            return Err(Error::InvalidSetting {
                setting: "number of modules",
                value: k.to_string(),
                valid: format!(
                    "2..={units} for {model} ({units} units; 1 module is end-to-end backprop: use --method bp)"
                ),
            });
        }
        let aux = (0..k - 1)
            .map(|unit| UnitAux {
                unit,
                depth: 0,
                blocks: Vec::new(),
                head,
            })
            .collect();
        Ok(AuxPlan {
            model: model.to_string(),
            units,
            modules: k,
            aux,
        })
    }

    /// The plan of `method` for a built backbone. The units are chosen as [`AuxPlan::new`]
    /// chooses them; strides follow the backbone's own resolutions
    /// ([`UnitSpec::reduction`](crate::UnitSpec)) under its [`LocalNet::aux_downsampling`]
    /// rule, and heads its [`LocalNet::aux_head`]. `new` counts channel ratios as the
    /// reference's `net_dim` does; the two agree wherever channels double exactly when the
    /// resolution halves (the CIFAR ResNets), and only the resolutions stay right where
    /// they do not (MobileNetV2's 16, 24, 32, 64, 96, 160, 320, 1280; a Bottleneck ResNet's
    /// 64-channel stem before 256-channel blocks).
    pub fn for_net(net: &dyn LocalNet, method: Method) -> Result<Self> {
        let channels = net.unit_channels();
        let mut plan = Self::new(net.name(), &channels, method)?;
        // The baselines' heads take the unit's output as it is: no blocks to place.
        if !matches!(method, Method::AugLocal { .. }) {
            return Ok(plan);
        }
        let reductions: Vec<usize> = net.units().iter().map(|u| u.reduction).collect();
        let rule = net.aux_downsampling();
        for aux in &mut plan.aux {
            let selected: Vec<usize> = aux.blocks.iter().map(|b| b.copy_of).collect();
            aux.blocks = aux_blocks(&channels, &reductions, rule, aux.unit, &selected);
            aux.head = net.aux_head(aux.depth);
        }
        Ok(plan)
    }

    /// End-to-end backprop: one module holding every unit, no auxiliary network.
    pub fn backprop(model: &str, units: usize) -> Self {
        AuxPlan {
            model: model.to_string(),
            units,
            modules: 1,
            aux: Vec::new(),
        }
    }

    /// AugLocal with maximum auxiliary depth `depth` and pyramid coefficient `pyramid`.
    ///
    /// K = n - depth; units `0..=K-2` each get an auxiliary network built from a uniform
    /// sample of the units after them; the last `depth + 1` units and the output layer form
    /// the last module.
    pub fn auglocal(
        model: &str,
        unit_channels: &[usize],
        depth: usize,
        pyramid: f64,
    ) -> Result<Self> {
        let n = unit_channels.len();
        if n < 3 {
            return Err(Error::InvalidSetting {
                setting: "model for AugLocal",
                value: format!("{model} with {n} units"),
                valid: "a backbone with at least 3 units".into(),
            });
        }
        if depth == 0 || depth > n - 2 {
            return Err(Error::InvalidSetting {
                setting: "auxiliary depth",
                value: depth.to_string(),
                valid: format!(
                    "1..={} for {model} ({n} units; K = {n} - depth must be >= 2)",
                    n - 2
                ),
            });
        }
        if !(0.0..=1.0).contains(&pyramid) {
            return Err(Error::InvalidSetting {
                setting: "pyramid coefficient",
                value: pyramid.to_string(),
                valid:
                    "a number in [0, 1] (0 keeps every auxiliary depth equal; 0.5 is the paper's)"
                        .into(),
            });
        }
        let modules = n - depth;
        let depths = pyramid_depths(depth, pyramid, modules);
        let aux = depths
            .iter()
            .enumerate()
            .map(|(unit, &d)| {
                let d = d.min(n - 1 - unit);
                let selected = uniform_selection(n, unit, d);
                let blocks = aux_blocks(
                    unit_channels,
                    unit_channels,
                    Downsampling::Counter,
                    unit,
                    &selected,
                );
                UnitAux {
                    unit,
                    depth: d,
                    head: HeadKind::for_depth(d),
                    blocks,
                }
            })
            .collect();
        Ok(AuxPlan {
            model: model.to_string(),
            units: n,
            modules,
            aux,
        })
    }

    /// The units of each module, in order. A module ends at each unit with an auxiliary
    /// network; the last module runs to the end of the backbone and the output layer.
    pub fn module_units(&self) -> Vec<Range<usize>> {
        let mut ranges = Vec::with_capacity(self.modules);
        let mut start = 0;
        for a in &self.aux {
            ranges.push(start..a.unit + 1);
            start = a.unit + 1;
        }
        ranges.push(start..self.units);
        ranges
    }

    /// The auxiliary network that closes module `module`, if it is not the last one.
    pub fn aux_of_module(&self, module: usize) -> Option<&UnitAux> {
        self.aux.get(module)
    }
}

/// Auxiliary depth of each of the K-1 auxiliary networks: the pyramid shrinks the depth
/// linearly from `depth` at unit 0 towards 1 at unit K-2 (coefficient 1), ties to even,
/// never below 1. Computed in f64 in the reference's order of operations.
pub fn pyramid_depths(depth: usize, pyramid: f64, modules: usize) -> Vec<usize> {
    let count = modules.saturating_sub(1);
    if pyramid == 0.0 || modules <= 2 {
        return vec![depth; count];
    }
    let d = depth as f64;
    let span = (modules - 2) as f64;
    (0..count)
        .map(|i| {
            let t = (i as f64 * pyramid) / span;
            let v = (d * (1.0 - t) + t * 1.0).round_ties_even();
            (v as usize).max(1)
        })
        .collect()
}

/// The downstream units copied into unit `unit`'s auxiliary network of depth `depth`, for a
/// backbone of `n` units: a uniform sample whose last element is always unit n-1.
pub fn uniform_selection(n: usize, unit: usize, depth: usize) -> Vec<usize> {
    if depth >= n - 1 - unit {
        return (unit + 1..n).collect();
    }
    let j = unit as f64;
    let step = (n - unit - 1) as f64 / depth as f64;
    (1..=depth)
        .map(|i| (j + step * i as f64).round_ties_even() as usize)
        .collect()
}

/// Turns selected unit indices into blocks. Channels follow the copied units; strides
/// follow `rule`, where [`Downsampling::Counter`] counts the ratios of `scales` (each unit's
/// channel count for the reference's rule, or its resolution reduction): every doubling
/// owes one stride-2 block, paid at most once per block (a jump over two stages therefore
/// downsamples only once in that block).
fn aux_blocks(
    unit_channels: &[usize],
    scales: &[usize],
    rule: Downsampling,
    unit: usize,
    selected: &[usize],
) -> Vec<AuxBlock> {
    let mut channels = unit_channels[unit];
    let mut scale = scales[unit];
    let mut pending_downsamples = 0u32;
    selected
        .iter()
        .map(|&k| {
            let out = unit_channels[k];
            let stride = match rule {
                Downsampling::Counter => {
                    let ratio = scales[k] / scale;
                    if ratio >= 1 {
                        pending_downsamples += ratio.ilog2();
                    }
                    if pending_downsamples >= 1 {
                        pending_downsamples -= 1;
                        2
                    } else {
                        1
                    }
                }
                Downsampling::ChannelChange if out != channels => 2,
                Downsampling::ChannelChange => 1,
            };
            let block = AuxBlock {
                copy_of: k,
                in_channels: channels,
                out_channels: out,
                stride,
            };
            channels = out;
            scale = scales[k];
            block
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resnet_dims(per_stage: usize) -> Vec<usize> {
        let mut v = vec![16; per_stage + 1];
        v.extend(vec![32; per_stage]);
        v.extend(vec![64; per_stage]);
        v
    }

    #[test]
    fn selection_ties_round_to_even() {
        // j = 2, n = 16, d = 2: 2 + 6.5 = 8.5 -> 8.
        assert_eq!(uniform_selection(16, 2, 2), vec![8, 15]);
        assert_eq!(uniform_selection(16, 0, 2), vec![8, 15]);
        assert_eq!(uniform_selection(16, 13, 2), vec![14, 15]);
        assert_eq!(uniform_selection(16, 14, 3), vec![15]);
    }

    #[test]
    fn pyramid_without_coefficient_is_flat() {
        assert_eq!(pyramid_depths(3, 0.0, 13), vec![3; 12]);
    }

    #[test]
    fn module_ranges_cover_every_unit_once() {
        let plan = AuxPlan::auglocal("resnet32", &resnet_dims(5), 2, 0.5).unwrap();
        let ranges = plan.module_units();
        assert_eq!(ranges.len(), 14);
        assert_eq!(ranges[0], 0..1);
        assert_eq!(ranges[12], 12..13);
        assert_eq!(ranges[13], 13..16);
        let bp = AuxPlan::backprop("resnet32", 16);
        assert_eq!(bp.module_units(), vec![0..16]);
    }
}
