//! # auglocal-core
//!
//! Supervised local learning on [Candle](https://github.com/huggingface/candle): the
//! auxiliary plan of AugLocal (Ma et al., ICLR 2024) as pure data ([`plan`]), the layers and
//! their initialisation ([`nn`]), the backbone contract ([`net::LocalNet`]), local losses
//! ([`local`]), the training engine ([`engine`]), SGD and schedules ([`optim`]) and
//! checkpoints ([`checkpoint`]).

pub mod analysis;
pub mod checkpoint;
pub mod engine;
pub mod error;
pub mod flops;
mod kernels;
pub mod local;
pub mod memory;
pub mod net;
pub mod nn;
pub mod optim;
pub mod parallel;
pub mod params;
pub mod plan;

pub use engine::{Engine, EvalTotals, NonFiniteValue, OnNonFinite, Precision, StepReport};
pub use error::{Error, Result};
pub use net::{LocalNet, UnitSpec};
pub use optim::{Schedule, Sgd, SgdConfig};
pub use params::{Owner, ParamBuilder, ParamStore};
pub use plan::{AuxPlan, Method};
