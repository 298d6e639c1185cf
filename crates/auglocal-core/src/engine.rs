//! The local-learning engine: one training step for BP and for local methods, and
//! evaluation. This is the only place that knows when to backward and when to detach.
//!
//! A step walks the plan's modules in order. Each module runs its units on the detached
//! output of the previous module, computes its loss (its auxiliary network's, or the output
//! cross-entropy for the last module), backwards immediately and steps its own parameters.
//! Its output is then detached, so the module's graph is freed before the next module runs:
//! only one module's activations are alive at a time. BP is the same walk with one module.

use std::ops::Range;

use candle_core::backprop::GradStore;
use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::local::{AugLocalAux, LocalLoss};
use crate::net::LocalNet;
use crate::nn::{correct_predictions, cross_entropy};
use crate::optim::Sgd;
use crate::params::{Entry, Owner, ParamBuilder, ParamStore, Role};
use crate::plan::AuxPlan;

/// A gradient-isolated module: consecutive units and the loss that trains them.
struct Module {
    units: Range<usize>,
    /// `None` for the last module, trained by the output cross-entropy.
    local: Option<Box<dyn LocalLoss>>,
    params: Vec<Entry>,
}

/// What one training step measured.
#[derive(Debug, Clone, PartialEq)]
pub struct StepReport {
    /// Output cross-entropy (the last module's loss).
    pub loss: f32,
    /// Correct predictions of the output layer in this batch.
    pub correct: usize,
    /// Images in the batch.
    pub images: usize,
    /// Loss of every module in order; the last is `loss`.
    pub module_losses: Vec<f32>,
}

/// Sums over an evaluation pass.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EvalTotals {
    pub loss_sum: f64,
    pub correct: usize,
    pub images: usize,
}

impl EvalTotals {
    pub fn add(&mut self, other: EvalTotals) {
        self.loss_sum += other.loss_sum;
        self.correct += other.correct;
        self.images += other.images;
    }
    pub fn mean_loss(&self) -> f64 {
        self.loss_sum / self.images.max(1) as f64
    }
    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.images.max(1) as f64
    }
}

/// Trains a backbone by the modules of an [`AuxPlan`].
pub struct Engine {
    net: Box<dyn LocalNet>,
    plan: AuxPlan,
    store: ParamStore,
    modules: Vec<Module>,
    optimizer: Sgd,
    step: u64,
}

impl Engine {
    /// Builds the auxiliary networks of `plan` for `net` (tensors under `aux.<unit>.`, from
    /// `pb`, which must be the builder `net` was created with) and groups parameters by module.
    pub fn new(
        net: Box<dyn LocalNet>,
        plan: AuxPlan,
        pb: &ParamBuilder,
        optimizer: Sgd,
    ) -> Result<Self> {
        if plan.units != net.units().len() {
            return Err(Error::InvalidSetting {
                setting: "plan",
                value: format!("{} units for model {}", plan.units, plan.model),
                valid: format!("{} units, as {} has", net.units().len(), net.name()),
            });
        }
        let store = pb.store().clone();
        let ranges = plan.module_units();
        let last = ranges.len() - 1;
        let mut modules = Vec::with_capacity(ranges.len());
        for (m, units) in ranges.into_iter().enumerate() {
            let mut owners: Vec<Owner> = units.clone().map(Owner::Unit).collect();
            let local: Option<Box<dyn LocalLoss>> = match plan.aux_of_module(m) {
                Some(aux) if m < last => {
                    let apb = pb.pp("aux").pp(aux.unit).owned_by(Owner::Aux(aux.unit));
                    owners.push(Owner::Aux(aux.unit));
                    Some(Box::new(AugLocalAux::new(net.as_ref(), aux, &apb)?))
                }
                _ => {
                    owners.push(Owner::Head);
                    None
                }
            };
            let params = store
                .owned_by(&owners)
                .into_iter()
                .filter(|e| e.role == Role::Param)
                .collect();
            modules.push(Module {
                units,
                local,
                params,
            });
        }
        Ok(Engine {
            net,
            plan,
            store,
            modules,
            optimizer,
            step: 0,
        })
    }

    /// One training step on `images` (N, 3, H, W) f32 and `labels` (N) u32 at rate `lr`.
    pub fn train_step(&mut self, images: &Tensor, labels: &Tensor, lr: f64) -> Result<StepReport> {
        self.train_step_observed(images, labels, lr, &mut |_, _| {})
    }

    /// [`Engine::train_step`], calling `observe(module, gradients)` after each module's
    /// backward pass and before its update (for gradient statistics, checks and tests).
    pub fn train_step_observed(
        &mut self,
        images: &Tensor,
        labels: &Tensor,
        lr: f64,
        observe: &mut dyn FnMut(usize, &GradStore),
    ) -> Result<StepReport> {
        let mut x = images.clone();
        let mut module_losses = Vec::with_capacity(self.modules.len());
        let mut correct = 0;
        for m in 0..self.modules.len() {
            let h = self.module_forward(m, &x)?;
            let (loss, last_correct) = self.module_loss(m, &h, labels, images)?;
            correct = last_correct.unwrap_or(correct);
            let value = loss.to_scalar::<f32>()?;
            if !value.is_finite() {
                return Err(Error::NonFinite {
                    what: "loss",
                    step: self.step + 1,
                    module: m,
                    value,
                });
            }
            module_losses.push(value);
            let grads = loss.backward()?;
            observe(m, &grads);
            self.optimizer.step(&self.modules[m].params, &grads, lr)?;
            // Dropping `grads` and detaching here frees this module's graph.
            x = h.detach();
        }
        self.step += 1;
        Ok(StepReport {
            loss: *module_losses.last().unwrap_or(&f32::NAN),
            correct,
            images: images.dim(0)?,
            module_losses,
        })
    }

    /// Number of gradient-isolated modules (K).
    pub fn module_count(&self) -> usize {
        self.modules.len()
    }

    fn module(&self, m: usize) -> candle_core::Result<&Module> {
        match self.modules.get(m) {
            Some(module) => Ok(module),
            None => candle_core::bail!(
                "module {m} asked of a plan with {} modules",
                self.modules.len()
            ),
        }
    }

    /// Runs the units of module `m` on `x` in training mode.
    pub fn module_forward(&self, m: usize, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut h = x.clone();
        for unit in self.module(m)?.units.clone() {
            h = self.net.forward_unit(unit, &h, true)?;
        }
        Ok(h)
    }

    /// The loss of module `m` on its output `h`: its local loss, or the output cross-entropy
    /// for the last module, which also gives the output layer's correct predictions.
    pub fn module_loss(
        &self,
        m: usize,
        h: &Tensor,
        labels: &Tensor,
        images: &Tensor,
    ) -> candle_core::Result<(Tensor, Option<usize>)> {
        match &self.module(m)?.local {
            Some(local) => Ok((local.loss(h, labels, images)?, None)),
            None => {
                let logits = self.net.head(h, true)?;
                let correct = correct_predictions(&logits, labels)?;
                Ok((cross_entropy(&logits, labels)?, Some(correct)))
            }
        }
    }

    /// Backbone-only inference on one batch: summed loss and correct predictions.
    /// Auxiliary networks are not run.
    pub fn eval_batch(&self, images: &Tensor, labels: &Tensor) -> Result<EvalTotals> {
        let logits = self.net.forward(images, false)?;
        let n = images.dim(0)?;
        let loss = cross_entropy(&logits, labels)?.to_scalar::<f32>()? as f64;
        Ok(EvalTotals {
            loss_sum: loss * n as f64,
            correct: correct_predictions(&logits, labels)?,
            images: n,
        })
    }

    pub fn net(&self) -> &dyn LocalNet {
        self.net.as_ref()
    }

    pub fn plan(&self) -> &AuxPlan {
        &self.plan
    }

    /// Every tensor: backbone, output layer and auxiliary networks.
    pub fn store(&self) -> &ParamStore {
        &self.store
    }

    pub fn optimizer(&self) -> &Sgd {
        &self.optimizer
    }

    pub fn optimizer_mut(&mut self) -> &mut Sgd {
        &mut self.optimizer
    }

    /// Training steps taken so far (restored on resume).
    pub fn steps(&self) -> u64 {
        self.step
    }

    pub fn set_steps(&mut self, steps: u64) {
        self.step = steps;
    }

    /// Trainable scalars of the backbone and of the auxiliary networks.
    pub fn parameter_counts(&self) -> (usize, usize) {
        let entries = self.store.entries();
        let (aux, backbone): (Vec<Entry>, Vec<Entry>) = entries
            .into_iter()
            .partition(|e| matches!(e.owner, Owner::Aux(_)));
        (
            ParamStore::count_params(&backbone),
            ParamStore::count_params(&aux),
        )
    }
}
