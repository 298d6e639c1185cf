//! The training methods: end-to-end backprop, AugLocal and the local-learning baselines the
//! paper compares with, in one table ([`METHODS`]).
//!
//! A method is a rule that cuts the backbone into gradient-isolated modules (its
//! [`ModuleRule`], which [`AuxPlan::new`](crate::AuxPlan::new) applies) and, for every module
//! but the last, a local loss: an auxiliary network that turns the module's output into a
//! scalar ([`LocalLoss`]), built by the table's [`BuildLoss`]. Adding a built-in method is
//! one file here holding its loss and one line in [`METHODS`]; the CLI's `--method` values,
//! `inspect`, `compare` and the README's table of methods all come from that line. A loss of
//! your own needs no table line: pass a [`LocalLossBuilder`] (a closure will do) to
//! [`Engine::with_losses`](crate::Engine::with_losses).

mod auglocal;
mod dgl;
mod greedy;
mod infopro;
mod predsim;
pub mod resample;

pub use auglocal::AugLocalAux;
pub use dgl::DglAux;
pub use greedy::GreedyAux;
pub use infopro::{supervised_contrastive, InfoProAux, InfoProWeights};
pub use predsim::{similarity_matrix, PredSimAux};

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::net::LocalNet;
use crate::params::ParamBuilder;
use crate::plan::UnitAux;

/// How a method cuts the backbone into modules (its K rule) and where the local losses sit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModuleRule {
    /// One module, K = 1: the output cross-entropy trains every unit.
    EndToEnd,
    /// K = units - d: after each of units 0..K-2 an auxiliary network of fresh copies of a
    /// uniform sample of the later units (d deep, pyramidal), closed by the backbone's
    /// auxiliary head ([`LocalNet::aux_head`]).
    AugLocal,
    /// K = `modules` (default: one per unit): the method's own head on the output of each of
    /// units 0..K-2, as the reference's split tables place them.
    SplitTable,
}

impl ModuleRule {
    /// How K is chosen, in words (for `--help` and the docs).
    pub fn describe(self) -> &'static str {
        match self {
            ModuleRule::EndToEnd => "K = 1",
            ModuleRule::AugLocal => "K = units - d",
            ModuleRule::SplitTable => "K = --modules, default one per unit",
        }
    }
}

/// Builds the local loss of one module (its auxiliary network's tensors through `pb`).
pub type BuildLoss = fn(&LossSite<'_>, &ParamBuilder) -> Result<Box<dyn LocalLoss>>;

/// One line of the table of methods.
#[derive(Debug, Clone, Copy)]
pub struct MethodInfo {
    /// What `--method` takes and checkpoints record.
    pub name: &'static str,
    /// One line for `--help` and the README: what trains each module.
    pub help: &'static str,
    /// How K is chosen and where the local losses sit.
    pub rule: ModuleRule,
    /// The local loss after each module but the last; `None` for end-to-end backprop.
    pub loss: Option<BuildLoss>,
}

/// Every built-in method, in the order `--help` lists them.
#[rustfmt::skip]
pub const METHODS: &[MethodInfo] = &[
    MethodInfo { name: "bp", help: "end-to-end backpropagation: one module, the output cross-entropy trains every unit", rule: ModuleRule::EndToEnd, loss: None },
    MethodInfo { name: "auglocal", help: "AugLocal: an auxiliary network of fresh copies of d later units (pyramidal depth), then global average pool, Linear; cross-entropy", rule: ModuleRule::AugLocal, loss: Some(auglocal::build) },
    MethodInfo { name: "dgl", help: "DGL: adaptive pool to ceil(s/4), 3 x (1x1 conv, BN, ReLU), pool to <= 2x2, 2 x (Linear, BN1d, ReLU), Linear; cross-entropy", rule: ModuleRule::SplitTable, loss: Some(dgl::build) },
    MethodInfo { name: "infopro", help: "InfoPro: ixx * BCE(decoder reconstructing the image) + ixy * CE(conv3x3, BN, ReLU, pool, Linear 128, ReLU, Linear)", rule: ModuleRule::SplitTable, loss: Some(infopro::build_softmax) },
    MethodInfo { name: "infopro-contrast", help: "InfoPro, contrastive form: the reconstruction plus a supervised contrastive loss (temperature 0.07) on a 128-d embedding", rule: ModuleRule::SplitTable, loss: Some(infopro::build_contrast) },
    MethodInfo { name: "predsim", help: "PredSim: 0.99 * MSE(similarity of conv3x3 features, similarity of the labels) + 0.01 * CE(Linear on <= 512 pooled values)", rule: ModuleRule::SplitTable, loss: Some(predsim::build) },
    MethodInfo { name: "greedy", help: "greedy supervised learning: global average pool, Linear; cross-entropy (the weakest baseline)", rule: ModuleRule::SplitTable, loss: Some(greedy::build) },
];

impl MethodInfo {
    /// The table's line for `name`.
    pub fn named(name: &str) -> Result<&'static MethodInfo> {
        METHODS
            .iter()
            .find(|m| m.name == name)
            .ok_or_else(|| Error::UnknownMethod {
                name: name.to_string(),
                known: names(),
            })
    }
}

/// The names of [`METHODS`], comma-separated.
pub fn names() -> String {
    METHODS
        .iter()
        .map(|m| m.name)
        .collect::<Vec<_>>()
        .join(", ")
}

impl PartialEq for MethodInfo {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Serialize for MethodInfo {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.name)
    }
}

impl<'de> Deserialize<'de> for &'static MethodInfo {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        MethodInfo::named(&name).map_err(serde::de::Error::custom)
    }
}

/// The settings a method reads: AugLocal's depth and pyramid, the split-table methods' K.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MethodSettings {
    /// AugLocal's maximum auxiliary depth d (K = units - d).
    pub aux_depth: usize,
    /// AugLocal's pyramid coefficient in [0, 1] (0: every auxiliary network d deep).
    pub pyramid: f64,
    /// K of the split-table methods (`None`: one module per unit).
    pub modules: Option<usize>,
}

impl Default for MethodSettings {
    /// The paper's: d = 2, pyramid 0.5, one module per unit.
    fn default() -> Self {
        MethodSettings {
            aux_depth: 2,
            pyramid: 0.5,
            modules: None,
        }
    }
}

/// A method of the table with its settings: what a plan is built from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Method {
    info: &'static MethodInfo,
    settings: MethodSettings,
}

impl Method {
    /// Method `name` of [`METHODS`] with `settings`. A K (`modules`) is refused for the
    /// methods that choose their own.
    pub fn new(name: &str, settings: MethodSettings) -> Result<Self> {
        let info = MethodInfo::named(name)?;
        if let (Some(k), ModuleRule::EndToEnd | ModuleRule::AugLocal) =
            (settings.modules, info.rule)
        {
            return Err(Error::InvalidSetting {
                setting: "number of modules",
                value: format!("{k} for method {name}"),
                valid: format!(
                    "no K for {name} ({}); a K for the methods with one head per unit: {}",
                    info.rule.describe(),
                    METHODS
                        .iter()
                        .filter(|m| m.rule == ModuleRule::SplitTable)
                        .map(|m| m.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        Ok(Method { info, settings })
    }

    /// Method `name` with the default settings.
    pub fn named(name: &str) -> Result<Self> {
        Self::new(name, MethodSettings::default())
    }

    /// AugLocal at depth `aux_depth` with pyramid coefficient `pyramid`.
    pub fn auglocal(aux_depth: usize, pyramid: f64) -> Result<Self> {
        Self::new(
            "auglocal",
            MethodSettings {
                aux_depth,
                pyramid,
                modules: None,
            },
        )
    }

    pub fn info(&self) -> &'static MethodInfo {
        self.info
    }

    pub fn name(&self) -> &'static str {
        self.info.name
    }

    pub fn settings(&self) -> &MethodSettings {
        &self.settings
    }
}

/// The loss that trains one gradient-isolated module.
pub trait LocalLoss: Send + Sync {
    /// The module's loss from its output `features` (N, C, H, W), the `labels` (N) and the
    /// network's input `images` (methods that reconstruct the input use it).
    fn loss(
        &self,
        features: &Tensor,
        labels: &Tensor,
        images: &Tensor,
    ) -> candle_core::Result<Tensor>;
}

/// What the built-in losses need to know about the input: the image side (DGL, PredSim
/// and InfoPro size their pooling and decoder from it) and the normalisation the loader
/// applied (InfoPro reconstructs the image as it was before normalisation). It comes from
/// the data's settings (`auglocal_data::DatasetSpec::input`); nothing here assumes CIFAR.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct InputSpec {
    /// Height and width of the (square) input images.
    pub image_size: usize,
    /// Channel means the images were normalised with, on the 0..1 scale.
    pub mean: [f32; 3],
    /// Channel standard deviations the images were normalised with.
    pub std: [f32; 3],
}

/// Where a local loss sits: everything a builder may need to size its auxiliary network.
pub struct LossSite<'a> {
    /// The backbone (unit channels and reductions, `classes`, `build_block`).
    pub net: &'a dyn LocalNet,
    /// The plan's entry for the unit the loss follows.
    pub aux: &'a UnitAux,
    /// Index of the module this loss trains, from 0.
    pub module: usize,
    /// K, the number of modules (the last one is trained by the output cross-entropy).
    pub modules: usize,
    /// The images the network is trained on.
    pub input: InputSpec,
}

impl LossSite<'_> {
    /// Output channels of the unit the loss follows.
    pub fn channels(&self) -> usize {
        self.net.units()[self.aux.unit].channels
    }

    /// Spatial side of the unit's output.
    pub fn feature_size(&self) -> Result<usize> {
        let reduction = self.net.units()[self.aux.unit].reduction.max(1);
        let side = self.input.image_size / reduction;
        if side == 0 {
            return Err(Error::InvalidSetting {
                setting: "image size",
                value: self.input.image_size.to_string(),
                valid: format!(
                    "at least {reduction} pixels: unit {} of {} downsamples by {reduction}",
                    self.aux.unit,
                    self.net.name()
                ),
            });
        }
        Ok(side)
    }
}

/// Builds the local loss of each module. The engine calls it once for every module but the
/// last, with a [`ParamBuilder`] that names tensors `aux.<unit>.…` and tags them with the
/// module, so their parameters are stepped with it and saved in checkpoints.
pub trait LocalLossBuilder {
    fn build(&self, site: &LossSite<'_>, pb: &ParamBuilder) -> Result<Box<dyn LocalLoss>>;
}

impl<F> LocalLossBuilder for F
where
    F: Fn(&LossSite<'_>, &ParamBuilder) -> Result<Box<dyn LocalLoss>>,
{
    fn build(&self, site: &LossSite<'_>, pb: &ParamBuilder) -> Result<Box<dyn LocalLoss>> {
        self(site, pb)
    }
}

/// The table's builder of a method: its line's [`BuildLoss`].
impl LocalLossBuilder for MethodInfo {
    fn build(&self, site: &LossSite<'_>, pb: &ParamBuilder) -> Result<Box<dyn LocalLoss>> {
        match self.loss {
            Some(build) => build(site, pb),
            None => Err(Error::InvalidSetting {
                setting: "local loss",
                value: format!("method {} after unit {}", self.name, site.aux.unit),
                valid: format!(
                    "a method with local losses ({})",
                    METHODS
                        .iter()
                        .filter(|m| m.loss.is_some())
                        .map(|m| m.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }),
        }
    }
}
