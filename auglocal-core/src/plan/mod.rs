//! The auxiliary plan: which units get which auxiliary blocks, as pure data.
//!
//! Everything the paper's rules decide (uniform selection of downstream units, pyramidal
//! depths, strides, projection shortcuts, head kind, the number of modules K) is computed
//! here without a single tensor, so it can be golden-tested and printed by `auglocal inspect`.

use std::ops::Range;

use serde::{Deserialize, Serialize};

mod aux;

pub use aux::{AuxBlock, UnitAux};

use crate::error::{Error, Result};
use crate::methods::{Method, ModuleRule};
use crate::net::{Downsampling, LocalNet};

/// The layout of a local-learning run: which units end a module and what the auxiliary
/// network after each of them holds. Serialises to the JSON of `auglocal inspect --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuxPlan {
    /// The backbone's name ([`LocalNet::name`], e.g. `resnet32`).
    pub model: String,
    /// The method's name in [`METHODS`](crate::methods::METHODS).
    pub method: String,
    /// Number of units (local layers) of the backbone.
    pub units: usize,
    /// K: number of gradient-isolated modules.
    pub modules: usize,
    /// Auxiliary networks, ordered by unit.
    pub aux: Vec<UnitAux>,
}

impl AuxPlan {
    /// The plan of `method` for backbone `net`, by the method's [`ModuleRule`]:
    ///
    /// - [`ModuleRule::EndToEnd`]: one module holding every unit, no auxiliary network.
    /// - [`ModuleRule::AugLocal`]: K = n - d; units `0..=K-2` each get an auxiliary network
    ///   of fresh copies of a uniform sample of the units after them, d deep at unit 0 and
    ///   shrinking by the pyramid coefficient; the last `d + 1` units and the output layer
    ///   form the last module. Strides follow the backbone's resolutions
    ///   ([`UnitSpec::reduction`](crate::UnitSpec)) under its
    ///   [`LocalNet::aux_downsampling`] rule; heads are its [`LocalNet::aux_head`].
    /// - [`ModuleRule::SplitTable`]: K = `modules` (default: one per unit); a local loss
    ///   after units `0..=K-2`, as the reference's split tables (`network_config[arch][K]`)
    ///   place them; the remaining units and the output layer form the last module.
    pub fn new(net: &dyn LocalNet, method: &Method) -> Result<Self> {
        let model = net.name();
        let units = net.units().len();
        let settings = method.settings();
        let man = method.modifiers().man;
        let (modules, mut aux) = match method.info().rule {
            ModuleRule::EndToEnd => (1, Vec::new()),
            ModuleRule::AugLocal => {
                auglocal_layout(net, settings.aux_depth, settings.pyramid, man)?
            }
            ModuleRule::SplitTable => {
                let k = settings.modules.unwrap_or(units);
                if k < 2 || k > units {
                    return Err(Error::InvalidSetting {
                        setting: "number of modules",
                        value: k.to_string(),
                        valid: format!(
                            "2..={units} for {model} ({units} units; 1 module is end-to-end backprop, method bp)"
                        ),
                    });
                }
                let aux = (0..k - 1)
                    .map(|unit| UnitAux {
                        unit,
                        depth: 0,
                        blocks: Vec::new(),
                        head: None,
                        man: None,
                    })
                    .collect();
                (k, aux)
            }
        };
        if man {
            for a in &mut aux {
                a.man = Some(next_unit_block(net, a.unit));
            }
        }
        Ok(AuxPlan {
            model: model.to_string(),
            method: method.name(),
            units,
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

/// MAN's block after `unit`: a copy of the next unit, reading this unit's channels and
/// downsampling as that unit does.
fn next_unit_block(net: &dyn LocalNet, unit: usize) -> AuxBlock {
    let units = net.units();
    let (this, next) = (units[unit], units[unit + 1]);
    AuxBlock {
        copy_of: unit + 1,
        in_channels: this.channels,
        out_channels: next.channels,
        stride: (next.reduction / this.reduction.max(1)).max(1),
    }
}

/// AugLocal's modules and auxiliary networks for `net` at maximum depth `depth` and
/// pyramid coefficient `pyramid`; with `man`, each auxiliary network is the one AugLocal
/// would put after the next unit (MAN's blocks lead there).
fn auglocal_layout(
    net: &dyn LocalNet,
    depth: usize,
    pyramid: f64,
    man: bool,
) -> Result<(usize, Vec<UnitAux>)> {
    let model = net.name();
    let n = net.units().len();
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
            valid: "a number in [0, 1] (0 keeps every auxiliary depth equal; 0.5 is the paper's)"
                .into(),
        });
    }
    let channels = net.unit_channels();
    let reductions: Vec<usize> = net.units().iter().map(|u| u.reduction).collect();
    let rule = net.aux_downsampling();
    let modules = n - depth;
    let aux = pyramid_depths(depth, pyramid, modules)
        .iter()
        .enumerate()
        .map(|(unit, &d)| {
            // K <= n - 1, so the unit after the last local loss is still a unit with at
            // least `depth` >= 1 units after it.
            let at = if man { unit + 1 } else { unit };
            let d = d.min(n - 1 - at);
            let selected = uniform_selection(n, at, d);
            UnitAux {
                unit,
                depth: d,
                blocks: aux_blocks(&channels, &reductions, rule, at, &selected),
                head: Some(net.aux_head(d)),
                man: None,
            }
        })
        .collect();
    Ok((modules, aux))
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
/// resolution reduction): every doubling
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
