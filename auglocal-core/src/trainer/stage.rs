//! This process's part of a run ([`Stage`]): which modules it trains, where its batches
//! come from and where its outputs go, sums over its replicas, and its share of evaluation
//! and checkpoints. A single process is the one stage and the one replica of its run, and
//! then nothing here leaves the process.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::time::{Duration, Instant};

use candle_core::backprop::GradStore;
use candle_core::Tensor;

use crate::dist::message::Message;
use crate::dist::partition::Partition;
use crate::dist::{Comm, CommSums, Single, Tag, Topology};
use crate::engine::{Engine, EvalTotals, NonFiniteValue, Replicas, StepReport};
use crate::error::{Error, Result};
use crate::optim;

use super::source::{Batch, BatchSource};

/// What a step of this stage starts from.
pub(super) struct StageInput {
    /// The images (first stage) or the previous stage's output.
    x: Tensor,
    labels: Tensor,
    /// The network's input images, where a loss of this or a later stage reads them.
    images: Option<Tensor>,
    /// Images of the whole batch, all replicas together.
    global: usize,
    /// Losses of the modules before this stage.
    losses: Vec<f32>,
    /// Correct predictions of the modules before this stage (`None`: no classifier).
    module_correct: Vec<Option<usize>>,
    /// A module before this stage found a non-finite value: nothing here is trained.
    skipped: Option<NonFiniteValue>,
    /// The first stage decided to stop after this batch.
    stop: bool,
}

/// What a step of this stage did, before it is passed on.
pub(super) struct StageStep {
    /// The whole step, on the last stage (losses of every module, output loss, correct
    /// predictions over all replicas).
    pub report: Option<StepReport>,
    output: Option<Tensor>,
    labels: Tensor,
    images: Option<Tensor>,
    global: usize,
    losses: Vec<f32>,
    module_correct: Vec<Option<usize>>,
    skipped: Option<NonFiniteValue>,
    /// The first stage's decision to stop after this batch, as it came.
    stop: bool,
}

/// This process's part of a run.
pub struct Stage {
    comm: Box<dyn Comm>,
    partition: Partition,
    /// Time spent training this stage's modules (not waiting for batches or sends).
    busy: Duration,
}

impl Stage {
    /// The one stage of a single-process run of `modules` modules.
    pub fn single(modules: usize) -> Self {
        Stage {
            comm: Box::new(Single),
            partition: Partition {
                stages: std::iter::once(0..modules).collect(),
                costs: vec![1.0],
            },
            busy: Duration::ZERO,
        }
    }

    /// This process's stage of `partition` in the run `comm` connects.
    pub fn new(comm: Box<dyn Comm>, partition: Partition) -> Result<Self> {
        let topology = comm.topology();
        if partition.stages.len() != topology.stages {
            return Err(Error::InvalidSetting {
                setting: "pipeline partition",
                value: format!("{} stages", partition.stages.len()),
                valid: format!("{} stages, as the run has", topology.stages),
            });
        }
        Ok(Stage {
            comm,
            partition,
            busy: Duration::ZERO,
        })
    }

    /// This process's place in the run: rank, stage and replica.
    pub fn topology(&self) -> Topology {
        self.comm.topology()
    }

    /// Which modules each stage of the run trains.
    pub fn partition(&self) -> &Partition {
        &self.partition
    }

    /// The modules this process trains.
    pub fn modules(&self) -> Range<usize> {
        self.partition.stages[self.topology().stage()].clone()
    }

    /// Readies the transport for tensors on `device` (NCCL on a GPU, where built in).
    pub(super) fn attach_device(&mut self, device: &candle_core::Device) -> Result<()> {
        self.comm.attach_device(device)
    }

    /// The writer's `value`, on every rank.
    pub(super) fn writer_value(&mut self, value: f64) -> Result<f64> {
        let mut buffer = [value];
        if self.topology().is_distributed() {
            let writer = self.topology().writer();
            self.comm.broadcast_f64(writer, &mut buffer)?;
        }
        Ok(buffer[0])
    }

    /// Bytes this process has sent to others.
    pub fn bytes_sent(&self) -> u64 {
        self.comm.bytes_sent()
    }

    /// Seconds this process has spent computing its modules (not waiting for batches,
    /// sends or the other replicas' gradients).
    pub fn busy_seconds(&self) -> f64 {
        self.busy.as_secs_f64()
    }

    /// Every rank's `fields`, in rank order, on the writer (`None` elsewhere): for figures
    /// that each process measures of itself.
    pub fn gather_fields(
        &mut self,
        fields: HashMap<String, String>,
    ) -> Result<Option<Vec<HashMap<String, String>>>> {
        let t = self.topology();
        if !t.is_writer() {
            let mut message = Message::new();
            message.fields = fields;
            self.comm.send(t.writer(), Tag::Report, message.encode()?)?;
            self.comm.flush()?;
            return Ok(None);
        }
        let mut all = Vec::with_capacity(t.world);
        for rank in 0..t.world {
            if rank == t.rank {
                all.push(fields.clone());
            } else {
                let bytes = self.comm.receive(rank, Tag::Report)?;
                all.push(Message::decode(&bytes, &candle_core::Device::Cpu)?.fields);
            }
        }
        Ok(Some(all))
    }

    /// Ends every process of the run (after this one has said why).
    pub fn abort(&self, code: i32) -> ! {
        self.comm.abort(code)
    }

    fn neighbour(&self, offset: isize) -> usize {
        let t = self.topology();
        t.rank_of((t.stage() as isize + offset) as usize, t.replica())
    }

    /// The next training batch: from `source` on the first stage (`None` when it is
    /// exhausted), else from the previous stage.
    pub(super) fn input(
        &mut self,
        source: Option<&mut dyn Iterator<Item = Result<Batch>>>,
        engine: &Engine,
    ) -> Result<Option<StageInput>> {
        if self.topology().is_first_stage() {
            let Some(batch) = source.and_then(|s| s.next()) else {
                return Ok(None);
            };
            let batch = batch?;
            return Ok(Some(StageInput {
                images: Some(batch.images.clone()),
                x: batch.images,
                labels: batch.labels,
                global: batch.global_images,
                losses: Vec::new(),
                module_correct: Vec::new(),
                skipped: None,
                stop: false,
            }));
        }
        let from = self.neighbour(-1);
        let m = self
            .comm
            .receive_message(from, Tag::Train, engine.device())?;
        let skipped = match m.fields.get("skipped_module") {
            Some(_) => Some(NonFiniteValue {
                module: m.field("skipped_module")?,
                what: m.field("skipped_what")?,
                value: m.field("skipped_value")?,
            }),
            None => None,
        };
        let losses: String = m.field("losses")?;
        let losses = serde_json::from_str(&losses).map_err(Error::external)?;
        let module_correct: String = m.field("module_correct")?;
        let module_correct = serde_json::from_str(&module_correct).map_err(Error::external)?;
        Ok(Some(StageInput {
            x: match &skipped {
                Some(_) => m.tensor("labels")?.clone(),
                None => m.tensor("h")?.clone(),
            },
            labels: m.tensor("labels")?.clone(),
            images: m.tensors.get("images").cloned(),
            global: m.field("global")?,
            losses,
            module_correct,
            skipped,
            stop: m.field::<u8>("stop")? == 1,
        }))
    }

    /// Trains this stage's modules on `input` ([`Stage::pass_on`] sends the result on).
    pub(super) fn train(
        &mut self,
        engine: &mut Engine,
        input: StageInput,
        lr: f64,
        observe: &mut dyn FnMut(usize, &GradStore),
    ) -> Result<StageStep> {
        let t = self.topology();
        let mut losses = input.losses;
        let mut module_correct = input.module_correct;
        let mut skipped = input.skipped;
        let mut output = None;
        let mut correct = None;
        let started = Instant::now();
        let waited_before = self.comm.seconds_communicating();
        if skipped.is_none() {
            let share = input.x.dim(0)? as f64 / input.global.max(1) as f64;
            let comm = &mut self.comm;
            let mut sums = CommSums(comm.as_mut());
            let replicas = (t.replicas() > 1).then_some(Replicas {
                share,
                sums: &mut sums,
            });
            let images = input.images.as_ref().unwrap_or(&input.x);
            let report = engine.train_modules(
                self.partition.stages[t.stage()].clone(),
                &input.x,
                &input.labels,
                images,
                lr,
                replicas,
                observe,
            )?;
            losses.extend(&report.module_losses);
            module_correct.extend(&report.module_correct);
            skipped = report.skipped;
            output = report.output;
            correct = report.correct;
        }
        // Busy: computing, not waiting for the other replicas' gradients.
        let waited = self.comm.seconds_communicating() - waited_before;
        self.busy += started
            .elapsed()
            .saturating_sub(Duration::from_secs_f64(waited.max(0.0)));
        let report = t.is_last_stage().then(|| StepReport {
            loss: losses.last().copied().unwrap_or(f32::NAN),
            correct: correct.unwrap_or(0),
            images: input.global,
            module_losses: losses.clone(),
            module_correct: module_correct.clone(),
            skipped: skipped.clone(),
        });
        Ok(StageStep {
            report,
            output,
            labels: input.labels,
            images: input.images,
            global: input.global,
            losses,
            module_correct,
            skipped,
            stop: input.stop,
        })
    }

    /// Sends a trained step to the next stage. On the first stage `wants_stop` is this
    /// process's wish to stop after this batch (its replicas agree: one wish stops all);
    /// further on the first stage's decision travels with the batch. Returns the decision.
    pub(super) fn pass_on(
        &mut self,
        engine: &Engine,
        step: StageStep,
        wants_stop: bool,
    ) -> Result<bool> {
        let t = self.topology();
        let mut stop = step.stop;
        if t.is_first_stage() {
            stop = wants_stop;
            if t.replicas() > 1 {
                let mut votes = [stop as u8 as f64];
                self.comm.sum_over_replicas_f64(&mut votes)?;
                stop = votes[0] > 0.0;
            }
        }
        if t.is_last_stage() {
            return Ok(stop);
        }
        let later = self.partition.stages[t.stage()].end..engine.module_count();
        let losses = serde_json::to_string(&step.losses).map_err(Error::external)?;
        let module_correct =
            serde_json::to_string(&step.module_correct).map_err(Error::external)?;
        let mut message = Message::new()
            .with_tensor("labels", &step.labels)
            .with_field("global", step.global)
            .with_field("losses", losses)
            .with_field("module_correct", module_correct)
            .with_field("stop", stop as u8);
        if let Some(h) = &step.output {
            message = message.with_tensor("h", h);
        }
        if let (true, Some(images)) = (engine.needs_images(later), &step.images) {
            message = message.with_tensor("images", images);
        }
        if let Some(s) = &step.skipped {
            message = message
                .with_field("skipped_module", s.module)
                .with_field("skipped_what", &s.what)
                .with_field("skipped_value", s.value);
        }
        let next = self.neighbour(1);
        self.comm.send_message(next, Tag::Train, message)?;
        Ok(stop)
    }

    /// Backbone-only evaluation over one pass of `source`, this stage's units on its part of
    /// every batch. The totals (over all replicas) are meaningful on the last stage.
    pub(super) fn evaluate(
        &mut self,
        engine: &Engine,
        source: &dyn BatchSource,
    ) -> Result<EvalTotals> {
        let t = self.topology();
        if !t.is_distributed() {
            return super::source::evaluate(engine, source);
        }
        let modules = self.modules();
        let mut totals = EvalTotals::default();
        let mut batches = t.is_first_stage().then(|| source.batches(1, 0));
        for _ in 0..source.batches_per_epoch() {
            let (x, labels) = match batches.as_mut() {
                Some(batches) => match batches.next() {
                    Some(batch) => {
                        let batch = batch?;
                        (batch.images, batch.labels)
                    }
                    None => break,
                },
                None => {
                    let m = self.comm.receive_message(
                        self.neighbour(-1),
                        Tag::Eval,
                        engine.device(),
                    )?;
                    (m.tensor("h")?.clone(), m.tensor("labels")?.clone())
                }
            };
            // A replica's slice of a small last batch may hold no image.
            let empty = x.dim(0)? == 0;
            let h = if empty {
                x
            } else {
                engine.eval_modules(modules.clone(), &x)?
            };
            if t.is_last_stage() {
                if !empty {
                    totals.add(engine.eval_head(&h, &labels)?);
                }
            } else {
                let message = Message::new()
                    .with_tensor("h", &h)
                    .with_tensor("labels", &labels);
                let next = self.neighbour(1);
                self.comm.send_message(next, Tag::Eval, message)?;
            }
        }
        if t.is_last_stage() {
            let mut sums = [
                totals.loss_sum,
                totals.correct as f64,
                totals.correct_top5 as f64,
                totals.images as f64,
            ];
            self.comm.sum_over_replicas_f64(&mut sums)?;
            totals = EvalTotals {
                loss_sum: sums[0],
                correct: sums[1].round() as usize,
                correct_top5: sums[2].round() as usize,
                images: sums[3].round() as usize,
                classes: engine.net().classes(),
            };
        }
        Ok(totals)
    }

    /// For a checkpoint: on replica 0 of every stage but the last, sends this stage's
    /// tensors and optimizer state to the writer and returns `None`; on the writer, receives
    /// every other stage's into `engine`'s store and returns the optimizer state of all
    /// modules.
    /// Elsewhere `None`.
    pub(super) fn gather(&mut self, engine: &Engine) -> Result<Option<BTreeMap<String, Tensor>>> {
        let t = self.topology();
        let mut optimizer_state = engine.optimizer().state();
        if !t.is_distributed() {
            return Ok(Some(optimizer_state));
        }
        if !t.is_writer() {
            if t.replica() == 0 && !t.is_last_stage() {
                let mut message = Message::new();
                let entries = engine.module_entries(self.modules());
                for entry in &entries {
                    message =
                        message.with_tensor(&format!("p/{}", entry.name), entry.var.as_tensor());
                }
                for (key, state) in &optimizer_state {
                    let param = optim::state_key(key).1;
                    if entries.iter().any(|entry| entry.name == param) {
                        message = message.with_tensor(&format!("m/{key}"), state);
                    }
                }
                self.comm
                    .send(t.writer(), Tag::Checkpoint, message.encode()?)?;
            }
            return Ok(None);
        }
        for stage in 0..t.stages - 1 {
            let bytes = self.comm.receive(t.rank_of(stage, 0), Tag::Checkpoint)?;
            let m = Message::decode(&bytes, engine.device())?;
            for (name, tensor) in m.tensors {
                if let Some(param) = name.strip_prefix("p/") {
                    let entry = engine
                        .store()
                        .get(param)
                        .ok_or_else(|| Error::InvalidSetting {
                            setting: "checkpoint tensor from another stage",
                            value: param.to_string(),
                            valid: "a tensor of this network (every rank must build the same one)"
                                .into(),
                        })?;
                    entry.var.set(&tensor)?;
                } else if let Some(key) = name.strip_prefix("m/") {
                    optimizer_state.insert(key.to_string(), tensor);
                }
            }
        }
        Ok(Some(optimizer_state))
    }
}
