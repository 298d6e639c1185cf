//! `auglocal train`: resolves the settings, opens the data, builds the engine and runs
//! `auglocal_core::Trainer` with a progress display, the run's metrics files and curves.

use std::fs;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use auglocal_core::checkpoint::{self, Coverage};
use auglocal_core::dist::Comm;
use auglocal_core::trainer::{
    CheckpointPolicy, EpochRecord, MetricsLog, Observer, Observers, Progress, Stage, StepEvent,
    Stop, Trainer, TrainerConfig, METRICS_FILE,
};
use auglocal_core::Schedule;
use auglocal_data::{Shard, Split};
use indicatif::{ProgressBar, ProgressStyle};

use crate::console::say;
use crate::launch::{self, Interrupted, Processes};
use crate::session::{self, CliState, RunMeta};
use crate::settings::{Settings, TrainConfig, RESUMABLE};

/// Flags of `auglocal train`: every setting, a config file, the run directory and resume.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    settings: Settings,
    /// TOML file with any of the settings above (snake_case keys); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Run directory to create (metrics.jsonl, config.json, checkpoint/; alias `--save_path`).
    #[arg(long, alias = "save_path")]
    out: Option<PathBuf>,
    /// Continue the run in this directory from its last checkpoint.
    #[arg(long, conflicts_with_all = ["config", "init_from"])]
    resume: Option<PathBuf>,
}

/// Resolves the run directory, the settings, and the checkpoint to resume from (if any).
fn resolve(args: &Args) -> Result<(PathBuf, TrainConfig, Option<CliState>)> {
    let flags = &args.settings;
    if let Some(dir) = &args.resume {
        if let Some(out) = &args.out {
            if out != dir {
                bail!(
                    "--out {} and --resume {} name different runs; pass only --resume",
                    out.display(),
                    dir.display()
                );
            }
        }
        let (_, state) = session::read_state(dir)?;
        if let Some(key) = flags
            .given()
            .into_iter()
            .find(|k| !RESUMABLE.contains(&k.as_str()))
        {
            bail!(
                "--{} cannot change when resuming (the run fixed it); only {} may be given with --resume",
                key.replace('_', "-"),
                RESUMABLE.iter().map(|k| format!("--{}", k.replace('_', "-"))).collect::<Vec<_>>().join(", ")
            );
        }
        // A step limit and the processes belong to one invocation: a run stopped by
        // --max-steps resumes to the end, and on one stage, unless told otherwise.
        let mut config = TrainConfig {
            max_steps: None,
            stages: 1,
            ..state.meta.config.clone()
        };
        config.apply(flags)?;
        config.validate()?;
        return Ok((dir.clone(), config, Some(state)));
    }
    let Some(out) = args.out.clone() else {
        bail!("--out DIR is required: the directory that receives metrics, config and checkpoints");
    };
    if checkpoint::resolve(&out).is_ok() {
        bail!(
            "--out {} already holds a training run; continue it with --resume {} or choose another directory",
            out.display(),
            out.display()
        );
    }
    // A run killed before its first checkpoint leaves an empty metrics.jsonl: nothing to
    // lose, so it may start again. Epoch metrics without any checkpoint are kept.
    let metrics = out.join(METRICS_FILE);
    if fs::metadata(&metrics).is_ok_and(|m| m.len() > 0) {
        bail!(
            "--out {} holds {} but no checkpoint to resume from; move it away or choose another directory",
            out.display(),
            metrics.display()
        );
    }
    let file = match &args.config {
        Some(path) => Settings::read_toml(path)?,
        None => Settings::default(),
    };
    Ok((out, TrainConfig::resolve(&file, flags)?, None))
}

/// SIGINT and SIGTERM ask the run to stop after the current step.
mod interrupt {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Once;

    static REQUESTED: AtomicBool = AtomicBool::new(false);

    /// Installs the handler (once per process). A second signal while the first is being
    /// honoured ends the process at once.
    pub fn install() {
        static INSTALL: Once = Once::new();
        INSTALL.call_once(|| {
            let _ = ctrlc::set_handler(|| {
                if REQUESTED.swap(true, Ordering::SeqCst) {
                    eprintln!("interrupted twice: exiting without a checkpoint of the current step");
                    std::process::exit(130);
                }
                eprintln!("interrupt: finishing the current step, then writing a checkpoint (interrupt again to quit now)");
            });
        });
    }

    pub fn requested() -> bool {
        REQUESTED.load(Ordering::SeqCst)
    }
}

/// The terminal: a progress bar per epoch, a line per epoch, warnings for skipped batches,
/// and Ctrl-C.
struct Console {
    epochs: usize,
    batches: usize,
    bar: Option<ProgressBar>,
}

impl Observer for Console {
    fn started(&mut self, _progress: &Progress, batches: usize) -> auglocal_core::Result<()> {
        self.batches = batches;
        Ok(())
    }

    fn epoch_started(&mut self, epoch: usize, _lr: f64, start: usize) -> auglocal_core::Result<()> {
        let bar = ProgressBar::new(self.batches as u64)
            .with_prefix(format!("epoch {epoch}/{}", self.epochs));
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed})")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_position(start as u64);
        self.bar = Some(bar);
        Ok(())
    }

    fn step(&mut self, event: &StepEvent<'_>) -> auglocal_core::Result<()> {
        let Some(bar) = &self.bar else {
            return Ok(());
        };
        if let Some(skip) = &event.report.skipped {
            bar.suspend(|| {
                eprintln!(
                    "warning: non-finite {} ({}) at step {} in module {}: batch skipped (--on-nan skip)",
                    skip.what, skip.value, event.step, skip.module
                )
            });
        }
        let sums = event.sums;
        bar.set_position(event.batch as u64);
        bar.set_message(format!(
            "loss {:.3} acc {:.1}% {:.0} img/s",
            sums.mean_loss(),
            100.0 * sums.accuracy(),
            sums.images_per_second()
        ));
        Ok(())
    }

    fn epoch_trained(&mut self, _epoch: usize) -> auglocal_core::Result<()> {
        self.clear();
        Ok(())
    }

    fn epoch_ended(&mut self, r: &EpochRecord) -> auglocal_core::Result<()> {
        let test = r.eval.unwrap_or_default();
        let top5 = match test.top5_accuracy() {
            Some(top5) if test.classes > 10 => format!(" top-5 {:.2}%", 100.0 * top5),
            _ => String::new(),
        };
        say!(
            "epoch {}/{}: lr {:.4} train loss {:.4} acc {:.2}% | test loss {:.4} acc {:.2}%{top5} | {:.1}s, {:.0} img/s",
            r.epoch,
            r.epochs,
            r.lr,
            r.train.mean_loss(),
            100.0 * r.train.accuracy(),
            test.mean_loss(),
            100.0 * test.accuracy(),
            r.train.seconds,
            r.train.images_per_second()
        );
        Ok(())
    }

    fn stop_requested(&mut self) -> bool {
        interrupt::requested()
    }
}

impl Console {
    fn clear(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        self.clear();
    }
}

/// The run's curves.png, redrawn after every epoch from metrics.jsonl (which the metrics log,
/// told first, has written by then), so a long run can be watched. A failed picture is
/// reported once and never fails the run.
struct Curves {
    run: PathBuf,
    failed: bool,
}

impl Observer for Curves {
    fn epoch_ended(&mut self, _record: &EpochRecord) -> auglocal_core::Result<()> {
        if let Err(e) = crate::charts::write_curves(std::slice::from_ref(&self.run), &self.run) {
            if !self.failed {
                eprintln!("warning: no curves: {e:#}");
                self.failed = true;
            }
        }
        Ok(())
    }
}

/// On the ranks that are not the writer: asks only whether to stop (Ctrl-C reaches every
/// rank; the first stage's answer travels with the batch).
struct StopOnSignal;

impl Observer for StopOnSignal {
    fn stop_requested(&mut self) -> bool {
        interrupt::requested()
    }
}

/// Resolves the settings (recipe, config file, flags; a resumed run's own), trains in the
/// run directory with checkpoints and metrics, and under `mpirun` runs this process's
/// stage and replica. Progress goes to the terminal.
pub fn run(args: Args) -> Result<()> {
    let (out, config, resumed) = resolve(&args)?;
    let Processes { comm, ending } = launch::start(config.stages)?;
    train(out, config, resumed, comm).map_err(|e| ending.fail(e))
}

fn train(
    out: PathBuf,
    config: TrainConfig,
    resumed: Option<CliState>,
    mut comm: Box<dyn Comm>,
) -> Result<()> {
    let topology = comm.topology();
    if config.batch_size < 2 * topology.replicas() {
        bail!(
            "--batch-size {} is too small for {} data-parallel replicas: each needs 2 images (BatchNorm); give at least {}",
            config.batch_size,
            topology.replicas(),
            2 * topology.replicas()
        );
    }
    let writer = topology.is_writer();
    interrupt::install();
    session::set_threads(config.threads)?;
    let device = config.device.open()?;

    let train_set = session::open_split(&config, Split::Train, config.train_size)?;
    let test_set = session::open_split(&config, Split::Test, config.test_size)?;
    if train_set.classes() != test_set.classes() {
        bail!(
            "train and test splits disagree on the number of classes ({} vs {})",
            train_set.classes(),
            test_set.classes()
        );
    }
    let (classes, image_size) = match &resumed {
        Some(state) => (state.meta.classes, state.meta.image_size()?),
        None => (train_set.classes(), train_set.shape().1),
    };
    if train_set.classes() != classes {
        bail!(
            "the run's model has {classes} classes but {} now has {}; resume it on the data it trained on",
            config.dataset,
            train_set.classes()
        );
    }

    let engine = session::build_engine(&config, classes, image_size, &device)?;
    if let (None, Some(path)) = (&resumed, &config.init_from) {
        checkpoint::load_weights(path, engine.store(), Coverage::Backbone)?;
        engine.backbone_loaded()?;
    }
    let ckpt_dir = out.join(checkpoint::CHECKPOINT_DIR);
    let trainer_config = TrainerConfig {
        epochs: config.epochs,
        lr: config.lr,
        schedule: config.schedule.clone(),
        max_steps: config.max_steps,
        checkpoint: CheckpointPolicy {
            dir: Some(ckpt_dir.clone()),
            every_steps: config.checkpoint_every,
            keep: config.keep,
            best: config
                .save_best
                .then(|| out.join(checkpoint::BEST_CHECKPOINT_DIR)),
        },
        on_non_finite: config.on_nan,
    };
    let meta = RunMeta {
        config: config.clone(),
        classes,
        image_size: Some(image_size),
    };
    let mut trainer = Trainer::new(engine, trainer_config)?.with_meta(&meta)?;
    if topology.is_distributed() {
        let partition = session::partition(
            comm.as_mut(),
            trainer.engine(),
            config.batch_size,
            image_size,
        )?;
        trainer = trainer.in_stage(Stage::new(comm, partition)?)?;
    }
    if resumed.is_some() {
        trainer.resume(&ckpt_dir)?;
    }

    let shard = Shard {
        replica: topology.replica(),
        replicas: topology.replicas(),
    };
    let loader = session::train_loader(&config, train_set.clone(), &device)?.with_shard(shard)?;
    let test_loader = session::eval_loader(
        test_set.clone(),
        &config.dataset,
        config.eval_batch_size,
        &device,
    )?
    .with_shard(shard)?;
    if writer {
        fs::create_dir_all(&out)
            .with_context(|| format!("cannot create run directory {}", out.display()))?;
        checkpoint::write_atomic(
            &out.join("config.json"),
            &serde_json::to_vec_pretty(&config)?,
        )?;
        let (backbone_params, aux_params) = trainer.engine().parameter_counts();
        say!(
            "training {} with {} on {} ({} train / {} test images, {} classes): {} modules, {} backbone + {} auxiliary parameters -> {}",
            config.model,
            config.method,
            config.dataset,
            train_set.len(),
            test_set.len(),
            classes,
            trainer.engine().plan().modules,
            backbone_params,
            aux_params,
            out.display()
        );
        for warning in schedule_warnings(&config, resumed.as_ref()) {
            eprintln!("warning: {warning}");
        }
        if topology.is_distributed() {
            say!("{}", describe_run(&trainer));
        }
    }
    let done = trainer.progress().epochs_done;
    if done >= config.epochs {
        if writer {
            say!(
                "the run is complete ({done} of {} epochs); raise --epochs to train further",
                config.epochs
            );
        }
        return Ok(());
    }

    let mut metrics = MetricsLog::new(&out, config.log_every);
    let mut console = Console {
        epochs: config.epochs,
        batches: 0,
        bar: None,
    };
    let mut curves = Curves {
        run: out.clone(),
        failed: false,
    };
    let mut others = StopOnSignal;
    let mut observers = match writer {
        true => Observers(vec![&mut metrics, &mut console, &mut curves]),
        false => Observers(vec![&mut others]),
    };
    let outcome = trainer.fit(&loader, Some(&test_loader), &mut observers)?;
    drop(observers);
    drop(console);
    let progress = trainer.progress().clone();
    // Every rank ends as the writer does; only the writer says so.
    drop(trainer);
    if !writer {
        if outcome.stop == Stop::Requested {
            return Err(Interrupted(None).into());
        }
        return Ok(());
    }
    let resume = format!("auglocal train --resume {}", out.display());
    match outcome.stop {
        Stop::Finished => {}
        Stop::Requested => {
            return Err(Interrupted(Some(format!(
                "interrupted after step {} (epoch {}, batch {}); the checkpoint is saved: continue with `{resume}`",
                progress.steps,
                progress.epochs_done + 1,
                progress.batches_done
            )))
            .into())
        }
        Stop::MaxSteps => match outcome.eval_at_stop {
            Some(test) => say!(
                "stopped after {} steps (--max-steps) in epoch {}, batch {}/{}: test acc {:.2}%; continue with `{resume}`",
                progress.steps,
                progress.epochs_done + 1,
                progress.batches_done,
                loader.len(),
                100.0 * test.accuracy(),
            ),
            None => say!(
                "stopped after {} steps (--max-steps); continue with `{resume}`",
                progress.steps
            ),
        },
    }
    if !outcome.epochs.is_empty() && !curves.failed {
        say!("wrote {}", out.join(crate::charts::CURVES_FILE).display());
    }
    Ok(())
}

/// What a user may not expect of the learning rate: a run that ends inside its warm-up, and
/// a resumed run whose new `--epochs` stretches or shrinks a schedule that depends on the
/// total (the cosines), with the rate the next epoch gets against the old plan's.
fn schedule_warnings(config: &TrainConfig, resumed: Option<&CliState>) -> Vec<String> {
    let mut warnings = Vec::new();
    let schedule = &config.schedule;
    let warmup = schedule.warmup_epochs();
    if warmup > 0 && config.epochs <= warmup {
        warnings.push(format!(
            "--epochs {} ends within the {warmup}-epoch warm-up of {schedule}: the learning rate climbs from 0.01 and never follows the cosine from --lr {}; pass --warmup-epochs N (N < {}) or --schedule cosine",
            config.epochs, config.lr, config.epochs
        ));
    }
    let Some(state) = resumed else {
        return warnings;
    };
    let planned = state.meta.config.epochs;
    let spans_total = matches!(schedule, Schedule::Cosine | Schedule::WarmupCosine { .. });
    if config.epochs != planned && spans_total {
        let next = state.progress.epochs_done + 1;
        let now = schedule.lr(config.lr, next, config.epochs);
        let before = if next <= planned {
            format!(
                "{:.4} in the {planned}-epoch plan",
                schedule.lr(config.lr, next, planned)
            )
        } else {
            format!("the {planned}-epoch plan had ended")
        };
        warnings.push(format!(
            "--epochs {} (the run planned {planned}): {schedule} now spans {} epochs, so epoch {next} trains at lr {now:.4} ({before}) and the rate decays to 0 by epoch {}",
            config.epochs, config.epochs, config.epochs
        ));
    }
    warnings
}

/// The run's processes and the stages' modules, units and predicted busy shares.
fn describe_run(trainer: &Trainer) -> String {
    let stage = trainer.stage();
    let t = stage.topology();
    let partition = stage.partition();
    let units = trainer.engine().plan().module_units();
    let mut lines = vec![format!(
        "{} processes: {} pipeline stages x {} data-parallel replicas (batch split over the replicas)",
        t.world,
        t.stages,
        t.replicas()
    )];
    for (s, (modules, busy)) in partition
        .stages
        .iter()
        .zip(partition.busy_shares())
        .enumerate()
    {
        let first = units[modules.start].start;
        let last = units[modules.end - 1].end - 1;
        lines.push(format!(
            "  stage {s}: modules {}..={} (units {first}..={last}), predicted busy {:.0}% (timed on rank 0)",
            modules.start,
            modules.end - 1,
            100.0 * busy
        ));
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use auglocal_core::trainer::{RunState, STATE_VERSION};

    fn state(config: &TrainConfig, epochs_done: usize) -> CliState {
        RunState {
            version: STATE_VERSION,
            progress: Progress {
                epochs_done,
                ..Progress::default()
            },
            meta: RunMeta {
                config: config.clone(),
                classes: 10,
                image_size: Some(32),
            },
        }
    }

    #[test]
    fn a_run_inside_its_warm_up_is_warned() -> anyhow::Result<()> {
        // The paper's CIFAR recipe: warmup-cosine with 10 warm-up epochs, lr 0.8.
        let short = TrainConfig {
            epochs: 4,
            ..TrainConfig::recipe("cifar10")?
        };
        assert_eq!(
            schedule_warnings(&short, None),
            ["--epochs 4 ends within the 10-epoch warm-up of warmup-cosine: the learning rate climbs from 0.01 and never follows the cosine from --lr 0.8; pass --warmup-epochs N (N < 4) or --schedule cosine"]
        );
        let fitted = TrainConfig {
            schedule: Schedule::WarmupCosine { warmup: 2 },
            ..short.clone()
        };
        assert!(schedule_warnings(&fitted, None).is_empty());
        assert!(schedule_warnings(&TrainConfig::recipe("cifar10")?, None).is_empty());
        Ok(())
    }

    #[test]
    fn a_resume_that_changes_the_length_says_what_the_rate_becomes() -> anyhow::Result<()> {
        // Cosine from lr 0.05 over 4 epochs, all done; 8 now.
        let planned = TrainConfig {
            epochs: 4,
            lr: 0.05,
            ..TrainConfig::recipe("synthetic")?
        };
        assert_eq!(planned.schedule, Schedule::Cosine);
        let longer = TrainConfig {
            epochs: 8,
            ..planned.clone()
        };
        // Epoch 5 of 8: 0.5 * 0.05 * (1 + cos(pi * 4/8)) = 0.025.
        assert_eq!(
            schedule_warnings(&longer, Some(&state(&planned, 4))),
            ["--epochs 8 (the run planned 4): cosine now spans 8 epochs, so epoch 5 trains at lr 0.0250 (the 4-epoch plan had ended) and the rate decays to 0 by epoch 8"]
        );
        // Stopped after epoch 2: epoch 3 of 8 = 0.5*0.05*(1+cos(pi/4)) = 0.0427, of 4 = 0.0250.
        assert_eq!(
            schedule_warnings(&longer, Some(&state(&planned, 2))),
            ["--epochs 8 (the run planned 4): cosine now spans 8 epochs, so epoch 3 trains at lr 0.0427 (0.0250 in the 4-epoch plan) and the rate decays to 0 by epoch 8"]
        );
        // The same length, or a schedule that ignores the total: nothing to say.
        assert!(schedule_warnings(&planned, Some(&state(&planned, 2))).is_empty());
        let constant = TrainConfig {
            schedule: Schedule::Constant,
            ..longer
        };
        assert!(schedule_warnings(&constant, Some(&state(&planned, 2))).is_empty());
        Ok(())
    }
}
