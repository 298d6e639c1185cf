//! The learning-rate schedules of the published recipes.

use std::f64::consts::PI;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Learning rate per epoch. Serialises as the text [`Schedule::parse`] reads
/// (`"warmup-cosine"`, `"step:150,225"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Schedule {
    /// The paper's cosine with a linear warm-up from 0.01 over the first `warmup` epochs
    /// (the paper's 10 by default; 0: none).
    WarmupCosine {
        /// Epochs of the warm-up (0: none).
        warmup: usize,
    },
    /// Cosine from `lr0` at epoch 1 towards 0, no warm-up.
    Cosine,
    /// `lr0` multiplied by 0.1 at each of the given epochs (1-based: the epoch that first
    /// uses the lower rate).
    Step {
        /// The epochs where the rate drops, 1-based.
        milestones: Vec<usize>,
    },
    /// `lr0` throughout.
    Constant,
}

/// Epochs of the paper's linear warm-up.
pub const WARMUP_EPOCHS: usize = 10;

impl Schedule {
    /// The paper's schedule: cosine after a 10-epoch warm-up.
    pub const PAPER: Schedule = Schedule::WarmupCosine {
        warmup: WARMUP_EPOCHS,
    };
}

impl Schedule {
    /// Learning rate of epoch `epoch` (counted from 1) of `epochs`, starting rate `lr0`.
    pub fn lr(&self, lr0: f64, epoch: usize, epochs: usize) -> f64 {
        let e = epoch as f64;
        let total = epochs.max(1) as f64;
        match self {
            Schedule::WarmupCosine { warmup } => {
                let cosine = 0.5 * lr0 * (1.0 + (PI * e / total).cos());
                if epoch <= *warmup {
                    let w = *warmup as f64;
                    cosine * (e - 1.0) / w + 0.01 * (w + 1.0 - e) / w
                } else {
                    cosine
                }
            }
            Schedule::Cosine => 0.5 * lr0 * (1.0 + (PI * (e - 1.0) / total).cos()),
            Schedule::Step { milestones } => {
                let drops = milestones.iter().filter(|&&m| epoch >= m).count();
                lr0 * 0.1f64.powi(drops as i32)
            }
            Schedule::Constant => lr0,
        }
    }

    /// The epochs of its warm-up (0 where it has none).
    pub fn warmup_epochs(&self) -> usize {
        match self {
            Schedule::WarmupCosine { warmup } => *warmup,
            _ => 0,
        }
    }

    /// Parses `warmup-cosine` (a 10-epoch warm-up), `warmup-cosine:N` (N epochs), `cosine`,
    /// `constant` or `step:150,225`.
    pub fn parse(text: &str) -> Result<Self> {
        let invalid = || {
            Error::InvalidSetting {
            setting: "schedule",
            value: text.to_string(),
            valid:
                "warmup-cosine, warmup-cosine:N (N warm-up epochs), cosine, constant, or step:E1,E2,... (epochs where lr drops x0.1)"
                    .into(),
        }
        };
        if let Some(n) = text.strip_prefix("warmup-cosine:") {
            let warmup = n.trim().parse::<usize>().map_err(|_| invalid())?;
            return Ok(Schedule::WarmupCosine { warmup });
        }
        match text {
            "warmup-cosine" => Ok(Schedule::PAPER),
            "cosine" => Ok(Schedule::Cosine),
            "constant" => Ok(Schedule::Constant),
            _ => {
                let list = text.strip_prefix("step:").ok_or_else(invalid)?;
                let milestones = list
                    .split(',')
                    .map(|m| m.trim().parse::<usize>().map_err(|_| invalid()))
                    .collect::<Result<Vec<_>>>()?;
                Ok(Schedule::Step { milestones })
            }
        }
    }
}

impl TryFrom<String> for Schedule {
    type Error = Error;

    fn try_from(text: String) -> Result<Self> {
        Schedule::parse(&text)
    }
}

impl From<Schedule> for String {
    fn from(schedule: Schedule) -> String {
        schedule.to_string()
    }
}

impl std::str::FromStr for Schedule {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        Schedule::parse(text)
    }
}

impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Schedule::WarmupCosine {
                warmup: WARMUP_EPOCHS,
            } => write!(f, "warmup-cosine"),
            Schedule::WarmupCosine { warmup } => write!(f, "warmup-cosine:{warmup}"),
            Schedule::Cosine => write!(f, "cosine"),
            Schedule::Constant => write!(f, "constant"),
            Schedule::Step { milestones } => {
                let list: Vec<String> = milestones.iter().map(|m| m.to_string()).collect();
                write!(f, "step:{}", list.join(","))
            }
        }
    }
}
