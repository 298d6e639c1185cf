//! The training loop: epochs of an [`Engine`]'s steps over a [`BatchSource`], the learning
//! rate schedule, evaluation after every epoch, checkpoints and exact resume, the NaN
//! policy, and [`Observer`]s for everything shown or written on the way.
//!
//! The engine knows one step; the trainer knows epochs and files. A run resumed from any of
//! its checkpoints (end of an epoch, every N steps, a stop by `max_steps` or by an
//! observer) gives on the CPU bit for bit the weights, momentum and metrics of the run
//! never stopped: the checkpoint holds the weights, the momentum and the [`Progress`], and
//! the batch source rebuilds any batch from (seed, epoch, index).
//!
//! ```no_run
//! # use auglocal_core::trainer::{BatchSource, CheckpointPolicy, Trainer, TrainerConfig};
//! # fn run(engine: auglocal_core::Engine, train: &dyn BatchSource, test: &dyn BatchSource) -> auglocal_core::Result<()> {
//! let config = TrainerConfig {
//!     epochs: 10,
//!     checkpoint: CheckpointPolicy::in_run("runs/r20"),
//!     ..TrainerConfig::default()
//! };
//! let mut trainer = Trainer::new(engine, config)?;
//! trainer.resume_if_saved("runs/r20")?; // a no-op on the first run
//! let outcome = trainer.fit(train, Some(test), &mut ())?;
//! # Ok(()) }
//! ```

mod metrics;
mod observer;
mod source;
mod stage;
mod state;

pub use metrics::{MetricsLog, METRICS_FILE, STEPS_FILE};
pub use observer::{EpochRecord, Observer, Observers, StepEvent};
pub use source::{evaluate, Batch, BatchSource};
pub use stage::Stage;
pub use state::{EpochSums, Progress, RunState, STATE_VERSION};

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::checkpoint::{self, Coverage};
use crate::engine::{Engine, EvalTotals, OnNonFinite};
use crate::error::{Error, Result};
use crate::memory;
use crate::optim::Schedule;

/// When and where checkpoints are written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointPolicy {
    /// The checkpoint directory (`None`: no checkpoints). A checkpoint is written at the
    /// end of every epoch and wherever the run stops early.
    pub dir: Option<PathBuf>,
    /// Also every N steps.
    pub every_steps: Option<u64>,
    /// Checkpoints kept, the newest included; older ones stay as `<dir>.old-<seq>`.
    pub keep: usize,
    /// Also keep the checkpoint of the best test accuracy so far here (written after each
    /// epoch whose evaluation beats every earlier one; needs an evaluation source).
    pub best: Option<PathBuf>,
}

impl CheckpointPolicy {
    /// No checkpoints.
    pub fn none() -> Self {
        CheckpointPolicy {
            dir: None,
            every_steps: None,
            keep: 1,
            best: None,
        }
    }

    /// Checkpoints into `checkpoint/` of run directory `run`, at the end of every epoch,
    /// keeping the newest.
    pub fn in_run(run: impl AsRef<Path>) -> Self {
        CheckpointPolicy {
            dir: Some(run.as_ref().join(checkpoint::CHECKPOINT_DIR)),
            ..Self::none()
        }
    }
}

/// What a [`Trainer`] does: a plain struct, `Default` giving a short cosine run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerConfig {
    /// Epochs to train in all (a resumed run counts the ones done).
    pub epochs: usize,
    /// The learning rate the schedule starts from.
    pub lr: f64,
    /// How the learning rate moves from `lr` over the epochs.
    pub schedule: Schedule,
    /// Stop after this many training steps in all, with a checkpoint there.
    pub max_steps: Option<u64>,
    /// When and where checkpoints are written ([`CheckpointPolicy::none`]: never).
    pub checkpoint: CheckpointPolicy,
    /// On a NaN or infinite loss or gradient: stop with an error, or skip the batch.
    pub on_non_finite: OnNonFinite,
}

impl Default for TrainerConfig {
    fn default() -> Self {
        TrainerConfig {
            epochs: 1,
            lr: 0.05,
            schedule: Schedule::Cosine,
            max_steps: None,
            checkpoint: CheckpointPolicy::none(),
            on_non_finite: OnNonFinite::Stop,
        }
    }
}

impl TrainerConfig {
    /// Fails on a setting no run can use, naming it and its valid range.
    pub fn validate(&self) -> Result<()> {
        let invalid = |setting: &'static str, value: String, valid: &str| {
            Err(Error::InvalidSetting {
                setting,
                value,
                valid: valid.into(),
            })
        };
        if self.epochs == 0 {
            return invalid("epochs", "0".into(), "at least 1");
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return invalid(
                "learning rate",
                self.lr.to_string(),
                "a positive finite number",
            );
        }
        if self.checkpoint.every_steps == Some(0) {
            return invalid("checkpoint interval", "0 steps".into(), "at least 1 step");
        }
        if self.checkpoint.keep == 0 {
            return invalid(
                "checkpoints kept",
                "0".into(),
                "at least 1 (the newest checkpoint is always kept)",
            );
        }
        Ok(())
    }
}

/// Why [`Trainer::fit`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Every epoch is trained (or was before this call).
    Finished,
    /// `max_steps` was reached; a checkpoint is written there.
    MaxSteps,
    /// An observer asked to stop; a checkpoint is written there.
    Requested,
}

/// What one call of [`Trainer::fit`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct FitOutcome {
    /// Why the call returned.
    pub stop: Stop,
    /// The epochs this call finished, in order.
    pub epochs: Vec<EpochRecord>,
    /// After a stop by `max_steps` in the middle of an epoch: the evaluation there.
    pub eval_at_stop: Option<EvalTotals>,
}

/// Trains an [`Engine`] epoch by epoch, alone or as one [`Stage`] of a run of several
/// processes.
pub struct Trainer {
    engine: Engine,
    config: TrainerConfig,
    progress: Progress,
    meta: serde_json::Map<String, serde_json::Value>,
    stage: Stage,
}

impl Trainer {
    /// A trainer at the start of training (`progress` zero), after checking `config`.
    pub fn new(engine: Engine, config: TrainerConfig) -> Result<Self> {
        config.validate()?;
        let stage = Stage::single(engine.module_count());
        Ok(Trainer {
            engine,
            config,
            progress: Progress::default(),
            meta: serde_json::Map::new(),
            stage,
        })
    }

    /// This trainer as `stage` of a run of several processes: it trains that stage's
    /// modules on its replica's slice of every batch; the writer (replica 0 of the last
    /// stage) tells the observers and writes checkpoints, gathered from every stage into
    /// the single-process format.
    pub fn in_stage(mut self, stage: Stage) -> Result<Self> {
        let modules = stage.partition().stages.last().map_or(0, |r| r.end);
        if modules != self.engine.module_count() {
            return Err(Error::InvalidSetting {
                setting: "pipeline partition",
                value: format!("{modules} modules"),
                valid: format!("{} modules, as the engine has", self.engine.module_count()),
            });
        }
        let plan = self.engine.plan();
        if stage.partition().stages.len() > 1 && plan.aux.iter().any(|a| a.man.is_some()) {
            return Err(Error::InvalidSetting {
                setting: "pipeline stages",
                value: format!("{} for {}", stage.partition().stages.len(), plan.method),
                valid: "1 with +man: MAN's moving average follows the first unit of the next module, which another stage would train".into(),
            });
        }
        self.stage = stage;
        self.stage.attach_device(self.engine.device())?;
        Ok(self)
    }

    /// This process's part of the run.
    pub fn stage(&self) -> &Stage {
        &self.stage
    }

    /// This process's part of the run, to talk to the other ranks after training (e.g. to
    /// gather their figures).
    pub fn stage_mut(&mut self) -> &mut Stage {
        &mut self.stage
    }

    /// Records `meta` (a struct or map) beside the progress in every checkpoint's
    /// `state.json` (see [`RunState`]): what the caller needs to rebuild the engine.
    pub fn with_meta(mut self, meta: &impl Serialize) -> Result<Self> {
        self.meta = match serde_json::to_value(meta) {
            Ok(serde_json::Value::Object(map)) => map,
            Ok(other) => {
                return Err(Error::InvalidSetting {
                    setting: "run metadata",
                    value: other.to_string(),
                    valid: "a struct or map (it is flattened into state.json)".into(),
                })
            }
            Err(e) => return Err(Error::external(e)),
        };
        Ok(self)
    }

    /// Continues from the newest complete checkpoint at `path` (a run directory or its
    /// checkpoint folder): every tensor, the momentum and the progress. The engine must be
    /// built as the checkpointed one was (same model, method and classes).
    pub fn resume(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let state = restore(path.as_ref(), &mut self.engine)?;
        self.progress = state.progress;
        Ok(())
    }

    /// [`Trainer::resume`] when `path` holds a checkpoint; `false` (nothing changed) when it
    /// holds none yet.
    pub fn resume_if_saved(&mut self, path: impl AsRef<Path>) -> Result<bool> {
        if checkpoint::resolve(path.as_ref()).is_err() {
            return Ok(false);
        }
        self.resume(path)?;
        Ok(true)
    }

    /// The engine being trained: network, plan, parameters and optimizer.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The engine being trained, to change between calls of [`Trainer::fit`].
    pub fn engine_mut(&mut self) -> &mut Engine {
        &mut self.engine
    }

    /// The trained engine, the trainer consumed (e.g. to evaluate or export it).
    pub fn into_engine(self) -> Engine {
        self.engine
    }

    /// The settings the trainer runs by, as checked by [`Trainer::new`].
    pub fn config(&self) -> &TrainerConfig {
        &self.config
    }

    /// Where the run stands.
    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// Trains from where the run stands to `epochs` (or `max_steps`, or an observer's stop),
    /// evaluating the backbone on `eval` after every epoch and checkpointing by the policy.
    ///
    /// In a run of several processes every rank calls this with its own sources (replicas'
    /// loaders sharded); only the writer tells `observer` what happens, and the first stage
    /// asks it whether to stop.
    pub fn fit(
        &mut self,
        train: &dyn BatchSource,
        eval: Option<&dyn BatchSource>,
        observer: &mut dyn Observer,
    ) -> Result<FitOutcome> {
        self.engine.set_on_non_finite(self.config.on_non_finite);
        let batches = train.batches_per_epoch();
        let topology = self.stage.topology();
        let writer = topology.is_writer();
        if let (true, Some(dir)) = (writer, &self.config.checkpoint.dir) {
            // A kill inside the last save can leave one old checkpoint too many.
            checkpoint::prune(dir, self.config.checkpoint.keep)?;
        }
        if writer {
            observer.started(&self.progress, batches)?;
        }
        let mut outcome = FitOutcome {
            stop: Stop::Finished,
            epochs: Vec::new(),
            eval_at_stop: None,
        };
        let epochs = self.config.epochs;
        for epoch in self.progress.epochs_done + 1..=epochs {
            let lr = self.config.schedule.lr(self.config.lr, epoch, epochs);
            if writer {
                observer.epoch_started(epoch, lr, self.progress.batches_done)?;
            }
            let mut sums = self.progress.partial.clone();
            let started = Instant::now();
            let mut waited = Duration::ZERO;
            let mut stop = None;
            // GPU only: the largest per-step peak of device memory in this epoch.
            let mut device_peak: Option<u64> = None;
            let mut source = topology
                .is_first_stage()
                .then(|| train.batches(epoch, self.progress.batches_done));
            while self.progress.batches_done < batches {
                if self.max_steps_reached() {
                    stop = Some(Stop::MaxSteps);
                    break;
                }
                let asked = Instant::now();
                let source = source.as_mut().map(|s| s as &mut dyn Iterator<Item = _>);
                let Some(input) = self.stage.input(source, &self.engine)? else {
                    break;
                };
                waited += asked.elapsed();
                let device = self.engine.device().clone();
                memory::reset_device_peak(&device);
                let trained = self
                    .stage
                    .train(&mut self.engine, input, lr, &mut |_, _| {})?;
                let step_peak = memory::device_memory(&device).map(|m| m.peak);
                device_peak = device_peak.max(step_peak);
                self.progress.batches_done += 1;
                self.progress.steps += 1;
                self.engine.set_steps(self.progress.steps);
                if let Some(report) = &trained.report {
                    if report.skipped.is_some() {
                        sums.skipped += 1;
                    } else {
                        sums.loss_sum += report.loss as f64 * report.images as f64;
                        sums.correct += report.correct;
                        sums.images += report.images;
                        sums.add_modules(
                            &report.module_losses,
                            &report.module_correct,
                            report.images,
                        );
                    }
                }
                let so_far = EpochSums {
                    seconds: sums.seconds + started.elapsed().as_secs_f64(),
                    ..sums.clone()
                };
                if let (true, Some(report)) = (writer, &trained.report) {
                    observer.step(&StepEvent {
                        epoch,
                        epochs,
                        batch: self.progress.batches_done,
                        batches,
                        step: self.progress.steps,
                        lr,
                        report,
                        sums: &so_far,
                        peak_device_memory_bytes: step_peak,
                    })?;
                }
                // The first stage decides whether to stop after this batch (the writer's
                // observers have seen the step first where it is the same process).
                let wants_stop = topology.is_first_stage() && observer.stop_requested();
                if self.stage.pass_on(&self.engine, trained, wants_stop)? {
                    stop = Some(Stop::Requested);
                    break;
                }
                let epoch_ends = self.progress.batches_done == batches;
                let every = self.config.checkpoint.every_steps;
                if !epoch_ends && every.is_some_and(|n| self.progress.steps.is_multiple_of(n)) {
                    let snapshot = Progress {
                        partial: so_far,
                        ..self.progress.clone()
                    };
                    self.save(&snapshot, observer)?;
                }
            }
            drop(source);
            self.engine.device().synchronize()?;
            sums.seconds += started.elapsed().as_secs_f64();
            if let Some(stop) = stop.filter(|_| self.progress.batches_done < batches) {
                // Mid-epoch: the partial sums let the resumed epoch report all of it.
                self.progress.partial = sums;
                let progress = self.progress.clone();
                self.save(&progress, observer)?;
                if stop == Stop::MaxSteps {
                    if let Some(eval) = eval {
                        outcome.eval_at_stop = Some(self.stage.evaluate(&self.engine, eval)?);
                    }
                }
                outcome.stop = stop;
                return Ok(outcome);
            }
            if writer {
                observer.epoch_trained(epoch)?;
            }
            let evaluated = match eval {
                Some(e) => Some(self.stage.evaluate(&self.engine, e)?),
                None => None,
            };
            // Every rank must know whether to gather a best checkpoint; the writer knows the
            // accuracy.
            let improved = match (&self.config.checkpoint.best, evaluated) {
                (Some(_), Some(e)) => {
                    let accuracy = self.stage.writer_value(e.accuracy())?;
                    let improved = self
                        .progress
                        .best_test_acc
                        .is_none_or(|best| accuracy > best);
                    if improved {
                        self.progress.best_test_acc = Some(accuracy);
                    }
                    improved
                }
                _ => false,
            };
            let record = EpochRecord {
                epoch,
                epochs,
                lr,
                train: sums,
                eval: evaluated,
                peak_rss_bytes: memory::peak_rss_bytes(),
                peak_device_memory_bytes: device_peak,
                data_wait_seconds: waited.as_secs_f64(),
                steps: self.progress.steps,
            };
            // The epoch's line goes out before the checkpoint that covers it (see
            // `MetricsLog`).
            if writer {
                observer.epoch_ended(&record)?;
            }
            self.progress.epochs_done = epoch;
            self.progress.batches_done = 0;
            self.progress.partial = EpochSums::default();
            let progress = self.progress.clone();
            self.save(&progress, observer)?;
            if let (true, Some(best)) = (improved, self.config.checkpoint.best.clone()) {
                self.save_to(&best, 1, &progress, observer)?;
            }
            outcome.epochs.push(record);
            if stop.is_none() && epoch < epochs && self.max_steps_reached() {
                stop = Some(Stop::MaxSteps);
            }
            if let Some(stop) = stop {
                outcome.stop = stop;
                return Ok(outcome);
            }
        }
        Ok(outcome)
    }

    fn max_steps_reached(&self) -> bool {
        self.config
            .max_steps
            .is_some_and(|max| self.engine.steps() >= max)
    }

    /// Writes a checkpoint of the engine at `progress`, if the policy has a directory: on
    /// the writer, with every other stage's tensors and momentum gathered in.
    fn save(&mut self, progress: &Progress, observer: &mut dyn Observer) -> Result<()> {
        let Some(dir) = self.config.checkpoint.dir.clone() else {
            return Ok(());
        };
        let keep = self.config.checkpoint.keep;
        self.save_to(&dir, keep, progress, observer)
    }

    /// [`Trainer::save`] into `dir`, keeping `keep` checkpoints there.
    fn save_to(
        &mut self,
        dir: &Path,
        keep: usize,
        progress: &Progress,
        observer: &mut dyn Observer,
    ) -> Result<()> {
        let Some(momentum) = self.stage.gather(&self.engine)? else {
            return Ok(());
        };
        let state = RunState {
            version: STATE_VERSION,
            progress: progress.clone(),
            meta: &self.meta,
        };
        let mut optimizer = self.engine.optimizer().boxed_clone();
        optimizer.load_state(momentum)?;
        checkpoint::save_keeping(dir, self.engine.store(), optimizer.as_ref(), &state, keep)?;
        observer.checkpoint_saved(dir, progress)
    }
}

/// Reads the state of the newest complete checkpoint at `path` (a run directory or its
/// checkpoint folder) with the caller's metadata typed as `M`, checking its layout
/// version. Returns the checkpoint directory found and the state.
pub fn read_run_state<M: serde::de::DeserializeOwned>(
    path: &Path,
) -> Result<(PathBuf, RunState<M>)> {
    let dir = checkpoint::resolve(path)?;
    let state: RunState<M> = checkpoint::read_state(&dir)?;
    if state.version != STATE_VERSION {
        return Err(Error::checkpoint(
            &dir,
            format!(
                "state version {}, this auglocal reads version {STATE_VERSION}; use the auglocal release that wrote it",
                state.version
            ),
        ));
    }
    Ok((dir, state))
}

/// Loads every tensor and the momentum of the newest complete checkpoint at `path` into
/// `engine` and sets its step count; returns the checkpoint's state.
pub fn restore(path: &Path, engine: &mut Engine) -> Result<RunState> {
    let (dir, state) = read_run_state(path)?;
    checkpoint::load_weights(
        &dir.join(checkpoint::WEIGHTS_FILE),
        engine.store(),
        Coverage::Everything,
    )?;
    let store = engine.store().clone();
    checkpoint::load_optimizer(
        &dir.join(checkpoint::OPTIMIZER_FILE),
        &store,
        engine.optimizer_mut(),
    )?;
    engine.set_steps(state.progress.steps);
    Ok(state)
}
