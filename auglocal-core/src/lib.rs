#![warn(missing_docs)]
//! # auglocal-core
//!
//! Supervised local learning on [Candle](https://github.com/huggingface/candle): the
//! auxiliary plan of AugLocal (Ma et al., ICLR 2024) as pure data ([`plan`]), the training
//! methods and their local losses in one table ([`methods`]), the backbone contract
//! ([`net::LocalNet`]), one training step module by module ([`engine`]), the training loop
//! with checkpoints and exact resume ([`trainer`]), SGD and schedules ([`optim`]),
//! checkpoints ([`checkpoint`]), the layers ([`nn`]) and the CPU and cuDNN kernels behind
//! them.

pub mod analysis;
pub mod checkpoint;
pub mod dist;
pub mod engine;
pub mod error;
pub mod flops;
mod kernels;
pub mod macs;
pub mod memory;
pub mod methods;
pub mod net;
pub mod nn;
pub mod optim;
pub mod parallel;
pub mod params;
pub mod plan;
mod recompute;
pub mod trainer;

pub use engine::{Engine, EvalTotals, NonFiniteValue, OnNonFinite, Precision, StepReport};
pub use error::{Error, Result};
pub use methods::{InputSpec, Method, MethodInfo, MethodName, MethodSettings, METHODS, MODIFIERS};
pub use net::{AuxHead, LocalNet, UnitSpec};
pub use optim::{
    AdamW, AdamWConfig, Optimizer, OptimizerConfig, OptimizerKind, Schedule, Sgd, SgdConfig,
};
pub use params::{Owner, ParamBuilder, ParamStore};
pub use plan::AuxPlan;
pub use trainer::{CheckpointPolicy, Trainer, TrainerConfig};
