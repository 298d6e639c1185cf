//! `auglocal train`: the epoch loop around the engine, with metrics, checkpoints and resume.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use auglocal_core::checkpoint::{self, Coverage};
use auglocal_core::memory;
use auglocal_data::Split;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::config::{self, TrainConfig};
use crate::session::{self, EpochSums, RunState, STATE_VERSION};
use crate::TrainArgs;

/// Settings that may change when a run is resumed; everything else is fixed by the run.
const RESUMABLE: &[&str] = &[
    "checkpoint_every",
    "keep",
    "on_nan",
    "precision",
    "epochs",
    "max_steps",
    "log_every",
    "threads",
    "device",
    "eval_batch_size",
    "offline",
];

/// The flags given on the command line, as a TOML table of config fields.
fn flag_table(args: &TrainArgs) -> toml::Table {
    let mut t = toml::Table::new();
    let mut put = |key: &str, value: Option<toml::Value>| {
        if let Some(v) = value {
            t.insert(key.to_string(), v);
        }
    };
    let path = |p: &Option<PathBuf>| {
        p.as_ref()
            .map(|p| toml::Value::String(p.display().to_string()))
    };
    let int = |v: Option<u64>| v.map(|v| toml::Value::Integer(v as i64));
    put("dataset", args.dataset.clone().map(toml::Value::String));
    put("data_dir", path(&args.data_dir));
    put("model", args.model.clone().map(toml::Value::String));
    put(
        "method",
        args.method.map(|m| toml::Value::String(m.as_str().into())),
    );
    put("modules", int(args.modules.map(|v| v as u64)));
    put("aux_depth", int(args.aux_depth.map(|v| v as u64)));
    put("pyramid", args.pyramid.map(toml::Value::Float));
    put("epochs", int(args.epochs.map(|v| v as u64)));
    put("batch_size", int(args.batch_size.map(|v| v as u64)));
    put(
        "eval_batch_size",
        int(args.eval_batch_size.map(|v| v as u64)),
    );
    put("lr", args.lr.map(toml::Value::Float));
    put("momentum", args.momentum.map(toml::Value::Float));
    put("weight_decay", args.weight_decay.map(toml::Value::Float));
    put("schedule", args.schedule.clone().map(toml::Value::String));
    put("seed", int(args.seed));
    put("threads", int(args.threads.map(|v| v as u64)));
    put("device", args.device.clone().map(toml::Value::String));
    put("train_size", int(args.train_size.map(|v| v as u64)));
    put("test_size", int(args.test_size.map(|v| v as u64)));
    put("max_steps", int(args.max_steps));
    put("log_every", int(args.log_every));
    put("checkpoint_every", int(args.checkpoint_every));
    put("keep", int(args.keep.map(|v| v as u64)));
    put("on_nan", args.on_nan.clone().map(toml::Value::String));
    put("precision", args.precision.clone().map(toml::Value::String));
    put("init_from", path(&args.init_from));
    put("recipe", args.recipe.clone().map(toml::Value::String));
    put("image_size", int(args.image_size.map(|v| v as u64)));
    put(
        "label_column",
        args.label_column.clone().map(toml::Value::String),
    );
    if args.offline {
        put("offline", Some(toml::Value::Boolean(true)));
    }
    if args.skip_bad_images {
        put("skip_bad_images", Some(toml::Value::Boolean(true)));
    }
    if args.no_nesterov {
        put("nesterov", Some(toml::Value::Boolean(false)));
    }
    if args.no_augment {
        put("augment", Some(toml::Value::Boolean(false)));
    }
    if args.no_shuffle {
        put("shuffle", Some(toml::Value::Boolean(false)));
    }
    t
}

/// Resolves the run directory, the settings, and the checkpoint to resume from (if any).
fn resolve(args: &TrainArgs) -> Result<(PathBuf, TrainConfig, Option<PathBuf>)> {
    let flags = flag_table(args);
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
        let ckpt = checkpoint::resolve(dir)?;
        let state: RunState = checkpoint::read_state(&ckpt)?;
        state.check(&ckpt)?;
        if let Some(key) = flags.keys().find(|k| !RESUMABLE.contains(&k.as_str())) {
            bail!(
                "--{} cannot change when resuming (the run fixed it); only {} may be given with --resume",
                key.replace('_', "-"),
                RESUMABLE.iter().map(|k| format!("--{}", k.replace('_', "-"))).collect::<Vec<_>>().join(", ")
            );
        }
        // A step limit belongs to one invocation: a run stopped by --max-steps resumes to
        // the end unless a new limit is given.
        let saved = TrainConfig {
            max_steps: None,
            ..state.config
        };
        let config = config::apply_table(&saved, &flags, "flags")?;
        config.validate()?;
        return Ok((dir.clone(), config, Some(ckpt)));
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
    let metrics = out.join("metrics.jsonl");
    if fs::metadata(&metrics).is_ok_and(|m| m.len() > 0) {
        bail!(
            "--out {} holds {} but no checkpoint to resume from; move it away or choose another directory",
            out.display(),
            metrics.display()
        );
    }
    let file = match &args.config {
        Some(path) => config::read_toml(path)?,
        None => toml::Table::new(),
    };
    let origin = args
        .config
        .as_ref()
        .map(|p| format!("config file {}", p.display()))
        .unwrap_or_default();
    let config = config::resolve_new(&file, &flags, &origin)?;
    Ok((out, config, None))
}

fn append_line(file: &mut File, value: &serde_json::Value, path: &Path) -> Result<()> {
    writeln!(file, "{value}").with_context(|| format!("cannot write {}", path.display()))
}

/// Keeps only the JSON lines of `path` whose `key` is at most `last` (no-op if absent).
fn trim_log(path: &Path, key: &str, last: u64) -> Result<()> {
    let Ok(text) = fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: Vec<&str> = text
        .lines()
        .filter(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v[key].as_u64())
                .is_some_and(|v| v <= last)
        })
        .collect();
    if kept.len() != text.lines().count() {
        let mut body = kept.join("\n");
        if !body.is_empty() {
            body.push('\n');
        }
        checkpoint::write_atomic(path, body.as_bytes())?;
    }
    Ok(())
}

fn open_append(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open {} for writing", path.display()))
}

/// Why a run stopped before its last epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    MaxSteps,
    Interrupted,
}

fn interrupted(state: &RunState, out: &Path) -> anyhow::Error {
    anyhow::anyhow!(
        "interrupted after step {} (epoch {}, batch {}); the checkpoint is saved: continue with `auglocal train --resume {}`",
        state.steps,
        state.epochs_done + 1,
        state.batches_done,
        out.display()
    )
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

pub fn run(args: TrainArgs) -> Result<()> {
    let (out, config, resume_from) = resolve(&args)?;
    interrupt::install();
    session::set_threads(config.threads)?;
    let device = config::parse_device(&config.device)?;

    let train_set = session::open_split(&config, Split::Train, config.train_size)?;
    let test_set = session::open_split(&config, Split::Test, config.test_size)?;
    if train_set.classes() != test_set.classes() {
        bail!(
            "train and test splits disagree on the number of classes ({} vs {})",
            train_set.classes(),
            test_set.classes()
        );
    }
    let classes = train_set.classes();

    let (mut engine, mut state) = match &resume_from {
        Some(ckpt) => {
            let (_, state, engine) = session::load_checkpoint(ckpt, &device)?;
            (
                engine,
                RunState {
                    config: config.clone(),
                    ..state
                },
            )
        }
        None => {
            let engine = session::build_engine(&config, classes, &device)?;
            if let Some(path) = &config.init_from {
                checkpoint::load_weights(path, engine.store(), Coverage::Backbone)?;
            }
            let state = RunState {
                version: STATE_VERSION,
                config: config.clone(),
                classes,
                epochs_done: 0,
                batches_done: 0,
                steps: 0,
                partial: EpochSums::default(),
            };
            (engine, state)
        }
    };

    fs::create_dir_all(&out)
        .with_context(|| format!("cannot create run directory {}", out.display()))?;
    checkpoint::write_atomic(
        &out.join("config.json"),
        &serde_json::to_vec_pretty(&config)?,
    )?;

    let ckpt_dir = out.join(checkpoint::CHECKPOINT_DIR);
    let loader = session::train_loader(&config, train_set.clone(), &device)?;
    let test_loader = session::eval_loader(
        test_set.clone(),
        &config.dataset,
        config.eval_batch_size,
        &device,
    )?;
    let schedule = config.schedule()?;
    engine.set_on_non_finite(config.on_non_finite()?);
    let save = |engine: &auglocal_core::Engine, state: &RunState| {
        checkpoint::save_keeping(
            &ckpt_dir,
            engine.store(),
            engine.optimizer(),
            state,
            config.keep,
        )
    };
    let (backbone_params, aux_params) = engine.parameter_counts();
    println!(
        "training {} with {} on {} ({} train / {} test images, {} classes): {} modules, {} backbone + {} auxiliary parameters -> {}",
        config.model,
        config.method,
        config.dataset,
        train_set.len(),
        test_set.len(),
        classes,
        engine.plan().modules,
        backbone_params,
        aux_params,
        out.display()
    );

    let metrics_path = out.join("metrics.jsonl");
    let steps_path = out.join("steps.jsonl");
    // Lines written after the checkpoint (a crash between a log line and the next
    // checkpoint, or before the first one) would be written again by this run.
    trim_log(&metrics_path, "epoch", state.epochs_done as u64)?;
    trim_log(&steps_path, "step", state.steps)?;
    let mut metrics = open_append(&metrics_path)?;
    let mut steps_log = match config.log_every {
        Some(_) => Some(open_append(&steps_path)?),
        None => None,
    };

    // A kill inside the last save can leave one old checkpoint too many.
    checkpoint::prune(&ckpt_dir, config.keep)?;

    if state.epochs_done >= config.epochs {
        println!(
            "the run is complete ({} of {} epochs); raise --epochs to train further",
            state.epochs_done, config.epochs
        );
        return Ok(());
    }

    for epoch in state.epochs_done + 1..=config.epochs {
        let lr = schedule.lr(config.lr, epoch, config.epochs);
        let bar = ProgressBar::new(loader.len() as u64)
            .with_prefix(format!("epoch {epoch}/{}", config.epochs));
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed})")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_position(state.batches_done as u64);
        let mut sums = state.partial;
        let started = Instant::now();
        let mut stopped = None;
        let mut batches = loader.epoch(epoch, state.batches_done);
        // GPU only: the largest per-step peak of device memory in this epoch.
        let mut device_peak: Option<u64> = None;
        for batch in &mut batches {
            if config.max_steps.is_some_and(|max| engine.steps() >= max) {
                stopped = Some(Stop::MaxSteps);
                break;
            }
            let batch = batch?;
            memory::reset_device_peak(&device);
            let report = engine.train_step(&batch.images, &batch.labels, lr)?;
            let step_peak = memory::device_memory(&device).map(|m| m.peak);
            device_peak = device_peak.max(step_peak);
            state.batches_done += 1;
            state.steps = engine.steps();
            if let Some(skip) = &report.skipped {
                bar.suspend(|| {
                    eprintln!(
                        "warning: non-finite {} ({}) at step {} in module {}: batch skipped (--on-nan skip)",
                        skip.what, skip.value, state.steps, skip.module
                    )
                });
                sums.skipped += 1;
            } else {
                sums.loss_sum += report.loss as f64 * report.images as f64;
                sums.correct += report.correct;
                sums.images += report.images;
            }
            let seconds = sums.seconds + started.elapsed().as_secs_f64();
            if let (Some(every), Some(log)) = (config.log_every, steps_log.as_mut()) {
                if state.steps % every == 0 {
                    let line = json!({
                        "step": state.steps,
                        "epoch": epoch,
                        "batch": state.batches_done,
                        "lr": lr,
                        "loss": report.loss,
                        "accuracy": report.correct as f64 / report.images as f64,
                        "module_losses": report.module_losses,
                        "peak_device_memory_bytes": step_peak,
                    });
                    append_line(log, &line, &steps_path)?;
                }
            }
            bar.set_position(state.batches_done as u64);
            bar.set_message(format!(
                "loss {:.3} acc {:.1}% {:.0} img/s",
                sums.loss_sum / sums.images.max(1) as f64,
                100.0 * sums.correct as f64 / sums.images.max(1) as f64,
                sums.images as f64 / seconds.max(1e-9)
            ));
            let epoch_ends = state.batches_done == loader.len();
            if interrupt::requested() {
                stopped = Some(Stop::Interrupted);
                break;
            }
            if !epoch_ends
                && config
                    .checkpoint_every
                    .is_some_and(|n| state.steps % n == 0)
            {
                let partial = EpochSums { seconds, ..sums };
                let snapshot = RunState {
                    partial,
                    ..state.clone()
                };
                save(&engine, &snapshot)?;
            }
        }
        bar.finish_and_clear();
        // Time this invocation waited for decoding: zero when prefetching keeps up.
        let data_wait = batches.waited().as_secs_f64();
        drop(batches);
        sums.seconds += started.elapsed().as_secs_f64();
        if stopped.is_some() && state.batches_done < loader.len() {
            // Mid-epoch stop: keep the partial sums so the resumed epoch reports all of it.
            state.partial = sums;
            save(&engine, &state)?;
            if stopped == Some(Stop::Interrupted) {
                return Err(interrupted(&state, &out));
            }
            let test = session::evaluate(&engine, &test_loader)?;
            println!(
                "stopped after {} steps (--max-steps) in epoch {epoch}, batch {}/{}: test acc {:.2}%; continue with `auglocal train --resume {}`",
                state.steps,
                state.batches_done,
                loader.len(),
                100.0 * test.accuracy(),
                out.display()
            );
            write_curves(&out);
            return Ok(());
        }
        let test = session::evaluate(&engine, &test_loader)?;
        let train_loss = sums.loss_sum / sums.images.max(1) as f64;
        let train_acc = sums.correct as f64 / sums.images.max(1) as f64;
        let line = json!({
            "epoch": epoch,
            "lr": lr,
            "train_loss": train_loss,
            "train_acc": train_acc,
            "test_loss": test.mean_loss(),
            "test_acc": test.accuracy(),
            "seconds": sums.seconds,
            "images_per_second": sums.images as f64 / sums.seconds.max(1e-9),
            "peak_rss_bytes": memory::peak_rss_bytes(),
            "peak_device_memory_bytes": device_peak,
            "data_wait_seconds": data_wait,
            "steps": state.steps,
            "skipped_steps": sums.skipped,
        });
        append_line(&mut metrics, &line, &metrics_path)?;
        state.epochs_done = epoch;
        state.batches_done = 0;
        state.partial = EpochSums::default();
        save(&engine, &state)?;
        println!(
            "epoch {epoch}/{}: lr {lr:.4} train loss {train_loss:.4} acc {:.2}% | test loss {:.4} acc {:.2}% | {:.1}s, {:.0} img/s",
            config.epochs,
            100.0 * train_acc,
            test.mean_loss(),
            100.0 * test.accuracy(),
            sums.seconds,
            sums.images as f64 / sums.seconds.max(1e-9)
        );
        if stopped == Some(Stop::Interrupted) {
            return Err(interrupted(&state, &out));
        }
        if stopped.is_some() {
            println!(
                "stopped after {} steps (--max-steps); continue with `auglocal train --resume {}`",
                state.steps,
                out.display()
            );
            write_curves(&out);
            return Ok(());
        }
    }
    write_curves(&out);
    Ok(())
}

/// Draws the run's curves.png once it has epochs to show. A failed picture is reported
/// but does not fail a finished training run.
fn write_curves(run: &Path) {
    let has_epochs = std::fs::metadata(run.join("metrics.jsonl")).is_ok_and(|m| m.len() > 0);
    if !has_epochs {
        return;
    }
    match crate::plot::write_curves(&[run.to_path_buf()], run) {
        Ok(path) => println!("wrote {}", path.display()),
        Err(e) => eprintln!("warning: no curves: {e:#}"),
    }
}
