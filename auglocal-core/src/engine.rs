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
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::dist::{PendingSum, ReplicaSums};
use crate::error::{Error, Result};
use crate::methods::{InputSpec, LocalLoss, LocalLossBuilder, LossSite, Method, Modified};
use crate::net::LocalNet;
use crate::nn::{correct_in_top_k, correct_predictions, cross_entropy};
use crate::optim::{clip_grad_norm, Optimizer};
use crate::params::{Entry, Owner, ParamBuilder, ParamStore, Role};
use crate::plan::AuxPlan;
use crate::recompute::{recomputed_pass, Pass};

/// A gradient-isolated module: consecutive units and the loss that trains them.
struct Module {
    units: Range<usize>,
    /// `None` for the last module, trained by the output cross-entropy.
    local: Option<Box<dyn LocalLoss>>,
    params: Vec<Entry>,
}

/// The type activations are computed in. Parameters, gradients, optimizer state, BatchNorm
/// and the losses stay f32 whatever it is (mixed precision with f32 master weights).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// f32 activations and weights, the default.
    #[default]
    F32,
    /// bfloat16 activations and convolution/linear weights (cast from the f32 masters at
    /// every use). Meant for GPUs: on the CPU, convolutions cast to f32 and back around the
    /// f32 kernels, so bf16 is slower than f32 there.
    Bf16,
}

impl Precision {
    /// The element type of activations: `F32` or `BF16`.
    pub fn dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::Bf16 => DType::BF16,
        }
    }
}

/// What a training step does when a module's loss or one of its gradients is NaN or
/// infinite.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnNonFinite {
    /// Fail the step with [`Error::NonFinite`] naming the step, module and tensor.
    #[default]
    Stop,
    /// Leave the offending module and every module after it un-updated for this batch and
    /// go on with the next one. Modules before it keep their update: each module's update
    /// depends only on its own loss, so they are unaffected.
    Skip,
}

/// Where a skipped step found a non-finite value.
#[derive(Debug, Clone, PartialEq)]
pub struct NonFiniteValue {
    /// The module whose loss or gradient it was, counting from 0.
    pub module: usize,
    /// `loss`, or `gradient of <tensor name>`.
    pub what: String,
    /// The value found (NaN or an infinity).
    pub value: f32,
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
    /// Correct predictions of every module's classifier, in order (`None` for a local loss
    /// without one); the last is `correct`.
    pub module_correct: Vec<Option<usize>>,
    /// Set when [`OnNonFinite::Skip`] skipped (part of) this step; `loss`, `correct` and
    /// `module_losses` then cover only the modules before it.
    pub skipped: Option<NonFiniteValue>,
}

/// What [`Engine::train_modules`] did.
#[derive(Debug, Clone)]
pub struct ModulesReport {
    /// The detached output of the range's last module, the next range's input (`None` when
    /// the batch was skipped).
    pub output: Option<Tensor>,
    /// Loss of every module trained, in order.
    pub module_losses: Vec<f32>,
    /// Correct predictions of every module trained that has a classifier, in order.
    pub module_correct: Vec<Option<usize>>,
    /// Correct predictions of the output layer, when the range holds the last module.
    pub correct: Option<usize>,
    /// Set when [`OnNonFinite::Skip`] skipped the rest of the range.
    pub skipped: Option<NonFiniteValue>,
}

/// A data-parallel replica's part in a step: its `share` of the batch (its images over the
/// whole batch's) and the sums over all replicas (on the tensors' device: NCCL sums GPU
/// tensors where it is built in, MPI everything else).
pub struct Replicas<'a> {
    /// The fraction of the batch's images this replica holds; its gradients and loss are
    /// scaled by it before the sum.
    pub share: f64,
    /// The transport's sums over the stage's replicas.
    pub sums: &'a mut dyn ReplicaSums,
}

/// A module whose gradients are being summed over the replicas while the next one computes.
struct Summing {
    module: usize,
    grads: GradStore,
    /// The parameters that have a gradient, in the order of the summed buffer.
    present: Vec<Entry>,
    has_correct: bool,
    pending: PendingSum,
}

impl Replicas<'_> {
    /// Starts summing `share * gradient` of each parameter of module `m` over the
    /// replicas, in one buffer on the gradients' device (the loss and the correct count
    /// ride along).
    fn start(
        &mut self,
        m: usize,
        params: &[Entry],
        grads: GradStore,
        loss: f32,
        correct: Option<usize>,
    ) -> Result<Summing> {
        let device = params
            .first()
            .map_or(Device::Cpu, |e| e.var.device().clone());
        let scale = Tensor::new(self.share, &device)?;
        let mut present = Vec::new();
        let mut parts = Vec::new();
        for e in params {
            if let Some(g) = grads.get(e.var.as_tensor()) {
                // Scaled in f64, then rounded once: the same f32 on every device.
                let g = g
                    .flatten_all()?
                    .to_dtype(DType::F64)?
                    .broadcast_mul(&scale)?;
                parts.push(g.to_dtype(DType::F32)?);
                present.push(e.clone());
            }
        }
        let tail = [
            (loss as f64 * self.share) as f32,
            correct.unwrap_or(0) as f32,
        ];
        parts.push(Tensor::new(&tail, &device)?);
        let pending = self.sums.start_sum(&Tensor::cat(&parts, 0)?)?;
        Ok(Summing {
            module: m,
            grads,
            present,
            has_correct: correct.is_some(),
            pending,
        })
    }

    /// Waits for a module's sum: its gradients replaced by the sums, and the summed loss
    /// and correct count.
    fn finish(&mut self, summing: Summing) -> Result<(GradStore, f32, Option<usize>)> {
        let Summing {
            mut grads,
            present,
            has_correct,
            pending,
            ..
        } = summing;
        let flat = self.sums.finish_sum(pending)?;
        let mut offset = 0;
        for e in present {
            let var = e.var.as_tensor();
            let n = var.elem_count();
            grads.insert(var, flat.narrow(0, offset, n)?.reshape(var.shape())?);
            offset += n;
        }
        let tail = flat.narrow(0, offset, 2)?.to_vec1::<f32>()?;
        let correct = has_correct.then(|| tail[1].round() as usize);
        Ok((grads, tail[0], correct))
    }
}

/// Summed cross-entropy, top-1 and top-5 correct predictions of `logits` (N, classes).
fn score(logits: &Tensor, labels: &Tensor) -> Result<EvalTotals> {
    let n = logits.dim(0)?;
    let loss = cross_entropy(logits, labels)?.to_scalar::<f32>()? as f64;
    Ok(EvalTotals {
        loss_sum: loss * n as f64,
        correct: correct_predictions(logits, labels)?,
        correct_top5: correct_in_top_k(logits, labels, 5)?,
        images: n,
        classes: logits.dim(1)?,
    })
}

/// Puts back buffers [`Engine::save_buffers`] copied.
fn restore_buffers(saved: Vec<(candle_core::Var, Tensor)>) -> Result<()> {
    for (var, tensor) in saved {
        var.set(&tensor)?;
    }
    Ok(())
}

/// Sums over an evaluation pass.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EvalTotals {
    /// Output cross-entropy summed over the images (the batch mean times its size, batch by
    /// batch).
    pub loss_sum: f64,
    /// Images whose highest logit is the label's (top-1).
    pub correct: usize,
    /// Images whose label is among the 5 highest logits.
    pub correct_top5: usize,
    /// Images evaluated.
    pub images: usize,
    /// Classes of the output layer.
    pub classes: usize,
}

impl EvalTotals {
    /// Adds the counts of another pass or batch to these (`classes` takes the larger).
    pub fn add(&mut self, other: EvalTotals) {
        self.loss_sum += other.loss_sum;
        self.correct += other.correct;
        self.correct_top5 += other.correct_top5;
        self.images += other.images;
        self.classes = self.classes.max(other.classes);
    }
    /// Mean output cross-entropy per image (0 when no image was evaluated).
    pub fn mean_loss(&self) -> f64 {
        self.loss_sum / self.images.max(1) as f64
    }
    /// Top-1 accuracy.
    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.images.max(1) as f64
    }
    /// Top-5 accuracy, where there are more than 5 classes (with 5 or fewer it is 1).
    pub fn top5_accuracy(&self) -> Option<f64> {
        (self.classes > 5).then(|| self.correct_top5 as f64 / self.images.max(1) as f64)
    }
}

/// Trains a backbone by the modules of an [`AuxPlan`].
pub struct Engine {
    net: Box<dyn LocalNet>,
    plan: AuxPlan,
    store: ParamStore,
    device: Device,
    modules: Vec<Module>,
    optimizer: Box<dyn Optimizer>,
    clip_grad_norm: Option<f64>,
    recompute: bool,
    step: u64,
    on_non_finite: OnNonFinite,
    precision: Precision,
}

impl Engine {
    /// Trains `net` by `method`: builds the method's plan for it ([`AuxPlan::new`]) and the
    /// table's local loss of every module but the last, for images described by `input`.
    /// Auxiliary tensors are named `aux.<unit>.` and come from `pb`, which must be the
    /// builder `net` was created with (so one seed initialises everything).
    pub fn new(
        net: Box<dyn LocalNet>,
        method: Method,
        input: InputSpec,
        pb: &ParamBuilder,
        optimizer: impl Optimizer + 'static,
    ) -> Result<Self> {
        Self::with_losses(net, method, input, pb, optimizer, method.info())
    }

    /// [`Engine::new`] with the local loss of every module but the last built by `losses`
    /// (your own loss) instead of the method's; the method still chooses the modules, and
    /// its modifiers (`+man`, `+hpff`) apply to your loss as to its own.
    pub fn with_losses(
        net: Box<dyn LocalNet>,
        method: Method,
        input: InputSpec,
        pb: &ParamBuilder,
        optimizer: impl Optimizer + 'static,
        losses: &dyn LocalLossBuilder,
    ) -> Result<Self> {
        let plan = AuxPlan::new(net.as_ref(), &method)?;
        let losses = Modified {
            losses,
            modifiers: method.modifiers(),
        };
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
                    let site = LossSite {
                        net: net.as_ref(),
                        aux,
                        module: m,
                        modules: plan.modules,
                        input,
                    };
                    Some(losses.build(&site, &apb)?)
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
        // A tensor no module owns would never be stepped (or, before owners were required,
        // silently be stepped with the output layer).
        if let Some(entry) = store.entries().iter().find(|e| e.owner.is_none()) {
            return Err(Error::UnownedTensor {
                name: entry.name.clone(),
            });
        }
        Ok(Engine {
            net,
            plan,
            store,
            device: pb.device().clone(),
            modules,
            optimizer: Box::new(optimizer),
            clip_grad_norm: None,
            recompute: false,
            step: 0,
            on_non_finite: OnNonFinite::Stop,
            precision: Precision::F32,
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
        let all = 0..self.modules.len();
        let report = self.train_modules(all, images, labels, images, lr, None, observe)?;
        // The batch is consumed even when skipped: the data position (and resume) moves on.
        self.step += 1;
        Ok(StepReport {
            loss: report.module_losses.last().copied().unwrap_or(f32::NAN),
            correct: report.correct.unwrap_or(0),
            images: images.dim(0)?,
            module_losses: report.module_losses,
            module_correct: report.module_correct,
            skipped: report.skipped,
        })
    }

    /// Trains modules `modules` (a contiguous range, as a pipeline stage holds them) on
    /// `input`: the images when the range starts at module 0, else the previous module's
    /// detached output. `images` are the network's input images (losses that reconstruct
    /// them read them). Does not count a step ([`Engine::set_steps`] does).
    ///
    /// With `replicas`, each module's gradients (and loss) are scaled by this replica's
    /// share of the batch and summed over the data-parallel replicas before the update, so
    /// every replica applies the gradient of the whole batch's mean loss, and every replica
    /// finds the same non-finite values.
    #[allow(clippy::too_many_arguments)]
    pub fn train_modules(
        &mut self,
        modules: Range<usize>,
        input: &Tensor,
        labels: &Tensor,
        images: &Tensor,
        lr: f64,
        mut replicas: Option<Replicas<'_>>,
        observe: &mut dyn FnMut(usize, &GradStore),
    ) -> Result<ModulesReport> {
        let mut x = input.to_dtype(self.precision.dtype())?;
        let mut report = ModulesReport {
            output: None,
            module_losses: Vec::with_capacity(modules.len()),
            module_correct: Vec::with_capacity(modules.len()),
            correct: None,
            skipped: None,
        };
        // With replicas, module m's gradients are summed while module m + 1 computes, and m
        // is updated after: m + 1 reads only m's detached output, made before m's update,
        // so the order changes nothing.
        let mut summing: Option<Summing> = None;
        for m in modules {
            // Should the sum running now turn out non-finite, this module's forward pass
            // must leave no trace (BatchNorm's running averages), as if it never ran.
            let saved = match summing {
                Some(_) => Some(self.save_buffers(m)?),
                None => None,
            };
            let pass = self.module_pass(m, &x, labels, images)?;
            let (grads, correct) = (pass.grads, pass.correct);
            let value = pass.loss.to_scalar::<f32>()?;
            let fault = match replicas.as_mut() {
                None if !value.is_finite() => Some((m, "loss".to_string(), value)),
                None => self
                    .update_or_fault(m, grads, value, correct, lr, &mut report, observe)?
                    .map(|(what, value)| (m, what, value)),
                Some(replicas) => {
                    let started =
                        replicas.start(m, &self.modules[m].params, grads, value, correct)?;
                    match summing.replace(started) {
                        None => None,
                        Some(previous) => {
                            let fault =
                                self.finish_module(replicas, previous, lr, &mut report, observe)?;
                            if fault.is_some() {
                                // Every replica started this module's sum: end it, unused.
                                if let Some(current) = summing.take() {
                                    replicas.finish(current)?;
                                }
                                if let Some(saved) = saved {
                                    restore_buffers(saved)?;
                                }
                            }
                            fault
                        }
                    }
                }
            };
            if let Some((m, what, value)) = fault {
                return self.non_finite(m, what, value, report);
            }
            // The gradients are dropped; detaching here frees this module's graph.
            x = pass.output.detach();
        }
        if let (Some(replicas), Some(last)) = (replicas.as_mut(), summing.take()) {
            if let Some((m, what, value)) =
                self.finish_module(replicas, last, lr, &mut report, observe)?
            {
                return self.non_finite(m, what, value, report);
            }
        }
        report.output = Some(x);
        Ok(report)
    }

    /// Finishes a module's sum over the replicas and steps it, unless the summed loss or a
    /// gradient is NaN or infinite (then returns the module and the value).
    fn finish_module(
        &mut self,
        replicas: &mut Replicas<'_>,
        summing: Summing,
        lr: f64,
        report: &mut ModulesReport,
        observe: &mut dyn FnMut(usize, &GradStore),
    ) -> Result<Option<(usize, String, f32)>> {
        let m = summing.module;
        let (grads, value, correct) = replicas.finish(summing)?;
        if !value.is_finite() {
            return Ok(Some((m, "loss".to_string(), value)));
        }
        Ok(self
            .update_or_fault(m, grads, value, correct, lr, report, observe)?
            .map(|(what, value)| (m, what, value)))
    }

    /// What a non-finite `value` in module `m` does: stops the run, or skips the rest of
    /// the step.
    fn non_finite(
        &self,
        m: usize,
        what: String,
        value: f32,
        mut report: ModulesReport,
    ) -> Result<ModulesReport> {
        if self.on_non_finite == OnNonFinite::Stop {
            return Err(Error::NonFinite {
                what,
                step: self.step + 1,
                module: m,
                value,
            });
        }
        report.skipped = Some(NonFiniteValue {
            module: m,
            what,
            value,
        });
        Ok(report)
    }

    /// Copies of module `m`'s buffers (BatchNorm's running averages and counters).
    fn save_buffers(&self, m: usize) -> Result<Vec<(candle_core::Var, Tensor)>> {
        self.module_entries(m..m + 1)
            .into_iter()
            .filter(|e| e.role == Role::Buffer)
            .map(|e| Ok((e.var.clone(), e.var.as_tensor().copy()?)))
            .collect()
    }

    /// Steps module `m` with `grads` unless one of them is NaN or infinite (then returns it).
    #[allow(clippy::too_many_arguments)]
    fn update_or_fault(
        &mut self,
        m: usize,
        mut grads: GradStore,
        value: f32,
        correct: Option<usize>,
        lr: f64,
        report: &mut ModulesReport,
        observe: &mut dyn FnMut(usize, &GradStore),
    ) -> Result<Option<(String, f32)>> {
        if let Some((name, v)) = first_non_finite_gradient(&self.modules[m].params, &grads)? {
            return Ok(Some((format!("gradient of `{name}`"), v)));
        }
        report.module_losses.push(value);
        report.module_correct.push(correct);
        if m + 1 == self.modules.len() {
            report.correct = correct;
        }
        if let Some(max_norm) = self.clip_grad_norm {
            clip_grad_norm(&self.modules[m].params, &mut grads, max_norm)?;
        }
        observe(m, &grads);
        self.optimizer.step(&self.modules[m].params, &grads, lr)?;
        if let Some(local) = &self.modules[m].local {
            local.after_update()?;
        }
        Ok(None)
    }

    /// Tells every local loss that the backbone's weights were replaced from a file while
    /// the auxiliary networks kept theirs (`train --init-from`): MAN's copies of units
    /// become copies of the loaded units.
    pub fn backbone_loaded(&self) -> Result<()> {
        for module in &self.modules {
            if let Some(local) = &module.local {
                local.after_backbone_loaded()?;
            }
        }
        Ok(())
    }

    /// Clips each module's gradients to this joint L2 norm before its update (None, the
    /// default: no clipping); see [`clip_grad_norm`].
    pub fn set_clip_grad_norm(&mut self, max_norm: Option<f64>) {
        self.clip_grad_norm = max_norm;
    }

    /// Drops each unit's activations in the forward pass and recomputes them in the
    /// backward pass (activation checkpointing; default off): the same gradients, one
    /// unit's graph in memory at a time, a second forward pass of every unit.
    pub fn set_recompute(&mut self, recompute: bool) {
        self.recompute = recompute;
    }

    /// Whether each unit's activations are recomputed in the backward pass.
    pub fn recomputes(&self) -> bool {
        self.recompute
    }

    /// What a step does on a NaN or infinite loss or gradient (default: stop).
    pub fn set_on_non_finite(&mut self, policy: OnNonFinite) {
        self.on_non_finite = policy;
    }

    /// The type activations are computed in (default f32).
    pub fn set_precision(&mut self, precision: Precision) {
        self.precision = precision;
    }

    /// The type activations are computed in.
    pub fn precision(&self) -> Precision {
        self.precision
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

    /// Module `m`'s forward pass on `x`, its loss (f32: a user's loss may come back in
    /// the activations' type) and the gradients; with recompute on, unit by unit
    /// ([`crate::recompute`]).
    fn module_pass(&self, m: usize, x: &Tensor, labels: &Tensor, images: &Tensor) -> Result<Pass> {
        let loss = |output: &Tensor| -> Result<(Tensor, Option<usize>)> {
            let (loss, correct) = self.module_loss(m, output, labels, images)?;
            Ok((loss.to_dtype(DType::F32)?, correct))
        };
        if self.recompute {
            let units: Vec<usize> = self.module(m)?.units.clone().collect();
            return recomputed_pass(self.net.as_ref(), &self.store, &units, x, loss);
        }
        let output = self.module_forward(m, x)?;
        let (loss, correct) = loss(&output)?;
        let grads = loss.backward()?;
        Ok(Pass {
            output,
            loss,
            correct,
            grads,
        })
    }

    /// Runs the units of module `m` on `x` in training mode.
    pub fn module_forward(&self, m: usize, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut h = x.clone();
        for unit in self.module(m)?.units.clone() {
            h = self.net.forward_unit(unit, &h, true)?;
        }
        Ok(h)
    }

    /// The loss of module `m` on its output `h` (its local loss, or the output cross-entropy
    /// for the last module) and the correct predictions of its classifier, where it has one.
    pub fn module_loss(
        &self,
        m: usize,
        h: &Tensor,
        labels: &Tensor,
        images: &Tensor,
    ) -> candle_core::Result<(Tensor, Option<usize>)> {
        match &self.module(m)?.local {
            Some(local) => {
                let (loss, logits) = local.loss_and_logits(h, labels, images)?;
                let correct = match logits {
                    Some(logits) => Some(correct_predictions(&logits.detach(), labels)?),
                    None => None,
                };
                Ok((loss, correct))
            }
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
        let last = self.modules.len();
        let h = self.eval_modules(0..last, images)?;
        self.eval_head(&h, labels)
    }

    /// Inference through the backbone units of modules `modules` (a pipeline stage's part
    /// of [`Engine::eval_batch`]): `x` is the images for a range from module 0, else the
    /// previous range's output.
    pub fn eval_modules(&self, modules: Range<usize>, x: &Tensor) -> Result<Tensor> {
        let mut h = x.to_dtype(self.precision.dtype())?;
        for m in modules {
            for unit in self.module(m)?.units.clone() {
                h = self.net.forward_unit(unit, &h, false)?;
            }
        }
        Ok(h)
    }

    /// The output layer in inference on the last unit's output `h`: summed loss and correct
    /// predictions.
    pub fn eval_head(&self, h: &Tensor, labels: &Tensor) -> Result<EvalTotals> {
        score(&self.net.head(h, false)?, labels)
    }

    /// Every module's classifier in inference on one batch: each auxiliary head on its
    /// module's output, the output layer on the last (`None` for a local loss without a
    /// classifier). The reference's per-module Prec@1 on a test set.
    pub fn eval_every_module(
        &self,
        images: &Tensor,
        labels: &Tensor,
    ) -> Result<Vec<Option<EvalTotals>>> {
        let mut h = images.clone();
        let mut totals = Vec::with_capacity(self.modules.len());
        for m in 0..self.modules.len() {
            h = self.eval_modules(m..m + 1, &h)?;
            totals.push(match &self.modules[m].local {
                None => Some(self.eval_head(&h, labels)?),
                Some(local) => match local.eval_logits(&h)? {
                    Some(logits) => Some(score(&logits, labels)?),
                    None => None,
                },
            });
        }
        Ok(totals)
    }

    /// Whether a local loss of modules `modules` reads the network's input images.
    pub fn needs_images(&self, modules: Range<usize>) -> bool {
        self.modules[modules]
            .iter()
            .any(|m| m.local.as_ref().is_some_and(|l| l.needs_images()))
    }

    /// The tensors of modules `modules` (their units, auxiliary networks and, for the last
    /// module, the output layer): parameters and buffers.
    pub fn module_entries(&self, modules: Range<usize>) -> Vec<Entry> {
        let owners: Vec<Owner> = modules
            .flat_map(|m| {
                let mut owners: Vec<Owner> =
                    self.modules[m].units.clone().map(Owner::Unit).collect();
                match self.plan.aux_of_module(m) {
                    Some(aux) if m + 1 < self.modules.len() => owners.push(Owner::Aux(aux.unit)),
                    _ => owners.push(Owner::Head),
                }
                owners
            })
            .collect();
        self.store.owned_by(&owners)
    }

    /// The backbone being trained.
    pub fn net(&self) -> &dyn LocalNet {
        self.net.as_ref()
    }

    /// The layout of the run: where modules end and what each auxiliary network holds.
    pub fn plan(&self) -> &AuxPlan {
        &self.plan
    }

    /// The device the network's tensors live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Every tensor: backbone, output layer and auxiliary networks.
    pub fn store(&self) -> &ParamStore {
        &self.store
    }

    /// The optimizer, with its per-parameter state (what a checkpoint saves).
    pub fn optimizer(&self) -> &dyn Optimizer {
        self.optimizer.as_ref()
    }

    /// The optimizer, e.g. to restore its state from a checkpoint.
    pub fn optimizer_mut(&mut self) -> &mut dyn Optimizer {
        self.optimizer.as_mut()
    }

    /// Training steps taken so far (restored on resume).
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// Sets the count of training steps taken, on resume and by callers that drive
    /// [`Engine::train_modules`] themselves (it numbers the step in [`Error::NonFinite`]).
    pub fn set_steps(&mut self, steps: u64) {
        self.step = steps;
    }

    /// Trainable scalars of the backbone and of the auxiliary networks.
    pub fn parameter_counts(&self) -> (usize, usize) {
        let entries = self.store.entries();
        let (aux, backbone): (Vec<Entry>, Vec<Entry>) = entries
            .into_iter()
            .partition(|e| matches!(e.owner, Some(Owner::Aux(_))));
        (
            ParamStore::count_params(&backbone),
            ParamStore::count_params(&aux),
        )
    }
}

/// The first parameter of `params` whose gradient holds a NaN or infinity, with the
/// gradient's sum. One reduction per tensor and a single read back, so the check costs a
/// pass over the parameters, not over the activations.
fn first_non_finite_gradient(params: &[Entry], grads: &GradStore) -> Result<Option<(String, f32)>> {
    let mut names = Vec::with_capacity(params.len());
    let mut sums = Vec::with_capacity(params.len());
    for entry in params {
        if let Some(g) = grads.get(entry.var.as_tensor()) {
            names.push(&entry.name);
            sums.push(g.sum_all()?.to_dtype(DType::F32)?);
        }
    }
    if sums.is_empty() {
        return Ok(None);
    }
    let sums = Tensor::stack(&sums, 0)?.to_vec1::<f32>()?;
    Ok(names
        .into_iter()
        .zip(sums)
        .find(|(_, v)| !v.is_finite())
        .map(|(name, v)| (name.clone(), v)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::Init;
    use candle_core::Device;

    #[test]
    fn a_non_finite_gradient_behind_a_finite_loss_is_named() -> Result<()> {
        let store = ParamStore::new();
        let pb = ParamBuilder::new(&store, &Device::Cpu, 0);
        let a = pb.param("a.weight", &[2], Init::Const(1.0))?;
        let b = pb.param("b.weight", &[2], Init::Const(1.0))?;
        b.set(&Tensor::new(&[0f32, 4.0], &Device::Cpu)?)?;
        // sqrt is finite at 0 but its derivative 1 / (2 sqrt(x)) is not.
        let loss = (a.as_tensor().sum_all()? + b.as_tensor().sqrt()?.sum_all()?)?;
        assert_eq!(loss.to_scalar::<f32>()?, 4.0);
        let grads = loss.backward()?;
        let found = first_non_finite_gradient(&store.entries(), &grads)?;
        assert_eq!(found, Some(("b.weight".to_string(), f32::INFINITY)));
        let finite = first_non_finite_gradient(&store.entries()[..1], &grads)?;
        assert_eq!(finite, None);
        Ok(())
    }
}
