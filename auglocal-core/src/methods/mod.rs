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
//!
//! Modifiers change how any method's local loss reads its module's output: `+man`
//! ([`man`]) and `+hpff` ([`hpff`]), one line each in [`MODIFIERS`].

mod auglocal;
mod dgl;
mod greedy;
pub mod hpff;
mod infopro;
mod loss;
pub mod man;
mod method;
mod modifier;
mod predsim;
pub mod resample;
mod table;

pub use auglocal::AugLocalAux;
pub use dgl::DglAux;
pub use greedy::GreedyAux;
pub use infopro::{supervised_contrastive, InfoProAux, InfoProWeights};
pub use loss::{Classifier, CrossEntropy, InputSpec, LocalLoss, LocalLossBuilder, LossSite};
pub use method::{Method, MethodSettings};
pub use modifier::{MethodName, Modified, ModifierInfo, Modifiers, MODIFIERS};
pub use predsim::{similarity_matrix, PredSimAux};
pub use table::{names, BuildLoss, MethodInfo, ModuleRule, METHODS};
