//! Optimizers (SGD and AdamW with PyTorch's semantics, behind one trait), gradient clipping
//! and the learning-rate schedules of the published recipes.

mod adamw;
mod clip;
mod optimizer;
mod schedule;
mod sgd;

use serde::{Deserialize, Serialize};

use crate::error::Result;

pub use adamw::{AdamW, AdamWConfig};
pub use clip::clip_grad_norm;
pub use optimizer::{state_key, Optimizer};
pub use schedule::{Schedule, WARMUP_EPOCHS};
pub use sgd::{Sgd, SgdConfig};

/// Which optimizer, by name (`sgd`, `adamw`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// [`Sgd`], the paper's.
    #[default]
    Sgd,
    /// [`AdamW`].
    AdamW,
}

impl OptimizerKind {
    /// The names settings use, in order.
    pub const NAMES: [&'static str; 2] = ["sgd", "adamw"];

    /// The kind named `name` (see [`OptimizerKind::NAMES`]).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "sgd" => Some(OptimizerKind::Sgd),
            "adamw" => Some(OptimizerKind::AdamW),
            _ => None,
        }
    }
}

/// An optimizer's settings, any kind: what a run's configuration holds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerConfig {
    /// SGD with momentum, the paper's optimizer.
    Sgd(SgdConfig),
    /// AdamW, weight decay decoupled from the gradient.
    AdamW(AdamWConfig),
}

impl OptimizerConfig {
    /// The optimizer, its settings checked.
    pub fn build(&self) -> Result<Box<dyn Optimizer>> {
        Ok(match *self {
            OptimizerConfig::Sgd(config) => Box::new(Sgd::new(config)?),
            OptimizerConfig::AdamW(config) => Box::new(AdamW::new(config)?),
        })
    }

    /// Fails on a setting PyTorch refuses too.
    pub fn validate(&self) -> Result<()> {
        match self {
            OptimizerConfig::Sgd(config) => config.validate(),
            OptimizerConfig::AdamW(config) => config.validate(),
        }
    }
}
