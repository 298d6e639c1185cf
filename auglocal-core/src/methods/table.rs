//! The table of methods: one line per built-in method, with its K rule and local loss.

use serde::{Deserialize, Serialize};

use super::loss::{LocalLoss, LocalLossBuilder, LossSite};
use super::{auglocal, dgl, greedy, infopro, predsim};
use crate::error::{Error, Result};
use crate::params::ParamBuilder;

/// How a method cuts the backbone into modules (its K rule) and where the local losses sit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModuleRule {
    /// One module, K = 1: the output cross-entropy trains every unit.
    EndToEnd,
    /// K = units - d: after each of units 0..K-2 an auxiliary network of fresh copies of a
    /// uniform sample of the later units (d deep, pyramidal), closed by the backbone's
    /// auxiliary head ([`crate::LocalNet::aux_head`]).
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
            ModuleRule::SplitTable => "K given, one per unit by default",
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
    MethodInfo { name: "bp", help: "end-to-end backpropagation: the output cross-entropy trains every unit", rule: ModuleRule::EndToEnd, loss: None },
    MethodInfo { name: "auglocal", help: "AugLocal: fresh copies of d uniformly sampled later units (pyramidal depth), global average pool, [BN1d,] Linear; cross-entropy", rule: ModuleRule::AugLocal, loss: Some(auglocal::build) },
    MethodInfo { name: "dgl", help: "DGL: adaptive pool to ceil(s/4), 3 x (1x1 conv, BN, ReLU), pool to min(ceil(s/4), 2), 2 x (Linear without bias, BN1d, ReLU) of width C*2*2, Linear; cross-entropy", rule: ModuleRule::SplitTable, loss: Some(dgl::build) },
    MethodInfo { name: "infopro", help: "InfoPro: ixx * BCE(decoder(bilinear upsample to the image), image before normalisation) + ixy * CE(conv3x3, BN, ReLU, GAP, Linear 128, ReLU, Linear); ixx 5 -> 0.2, ixy 0.05 -> 0.5 across modules (ResNet-110: 5 -> 0.5, 0 -> 1)", rule: ModuleRule::SplitTable, loss: Some(infopro::build_softmax) },
    MethodInfo { name: "infopro-contrast", help: "InfoPro, contrastive: the same with a supervised contrastive loss (temperature 0.07) on a 128-d embedding instead of CE", rule: ModuleRule::SplitTable, loss: Some(infopro::build_contrast) },
    MethodInfo { name: "predsim", help: "PredSim: 0.99 * MSE(similarity matrix of per-channel std of conv3x3(h), that of the one-hot labels) + 0.01 * CE(Linear on h average-pooled to <= 512 values)", rule: ModuleRule::SplitTable, loss: Some(predsim::build) },
    MethodInfo { name: "greedy", help: "greedy supervised learning: global average pool, Linear; cross-entropy (the weakest)", rule: ModuleRule::SplitTable, loss: Some(greedy::build) },
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
