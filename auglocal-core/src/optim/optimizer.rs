//! What every optimizer provides: the step, and its state for checkpoints.

use std::collections::BTreeMap;

use candle_core::backprop::GradStore;
use candle_core::Tensor;

use crate::error::Result;
use crate::params::Entry;

/// Updates parameters from their gradients. The engine steps each module's parameters on
/// their own, right after that module's backward pass, so an optimizer keeps its state per
/// parameter and never assumes it sees every parameter in one call.
pub trait Optimizer: Send {
    /// Its name in messages and settings: `sgd`, `adamw`.
    fn name(&self) -> &'static str;

    /// Updates every parameter of `params` (role [`crate::params::Role::Param`]) that has a
    /// gradient in `grads`, at learning rate `lr`. Buffers are never touched.
    fn step(&mut self, params: &[Entry], grads: &GradStore, lr: f64) -> Result<()>;

    /// The state a checkpoint saves, keyed `<param>` or `<slot>/<param>` (see
    /// [`state_key`]).
    fn state(&self) -> BTreeMap<String, Tensor>;

    /// The shape slot `slot` (`""` for a key without a slot) has for a parameter of shape
    /// `param`, or `None` where this optimizer keeps no such slot. Checkpoints are checked
    /// against it before [`Optimizer::load_state`].
    fn slot_dims(&self, slot: &str, param: &[usize]) -> Option<Vec<usize>>;

    /// Replaces the state with one [`Optimizer::state`] returned.
    fn load_state(&mut self, state: BTreeMap<String, Tensor>) -> Result<()>;

    /// A copy with the same settings and state.
    fn boxed_clone(&self) -> Box<dyn Optimizer>;
}

/// The (slot, parameter) of a state key: `exp_avg/layer1.0.conv1.weight` is
/// (`exp_avg`, `layer1.0.conv1.weight`); a key without `/` is slot `""`. Parameter names
/// never hold `/`.
pub fn state_key(key: &str) -> (&str, &str) {
    key.split_once('/').unwrap_or(("", key))
}

impl Optimizer for Box<dyn Optimizer> {
    fn name(&self) -> &'static str {
        self.as_ref().name()
    }

    fn step(&mut self, params: &[Entry], grads: &GradStore, lr: f64) -> Result<()> {
        self.as_mut().step(params, grads, lr)
    }

    fn state(&self) -> BTreeMap<String, Tensor> {
        self.as_ref().state()
    }

    fn slot_dims(&self, slot: &str, param: &[usize]) -> Option<Vec<usize>> {
        self.as_ref().slot_dims(slot, param)
    }

    fn load_state(&mut self, state: BTreeMap<String, Tensor>) -> Result<()> {
        self.as_mut().load_state(state)
    }

    fn boxed_clone(&self) -> Box<dyn Optimizer> {
        self.as_ref().boxed_clone()
    }
}
