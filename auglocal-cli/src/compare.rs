//! `auglocal compare`: trains several methods on the same data, seed and recipe and writes
//! one table of what each achieved and cost.

use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use auglocal_core::{checkpoint, flops};
use auglocal_data::{Dataset, Split};
use candle_core::Device;

use crate::config::{self, TrainConfig};
use crate::{heap, session, CompareArgs, MethodArg};

/// What one method achieved and cost.
#[derive(Debug, Clone)]
struct Outcome {
    method: &'static str,
    modules: usize,
    /// Test accuracy after each epoch.
    test_acc: Vec<f64>,
    /// Mean training loss (output cross-entropy) of each epoch.
    train_loss: Vec<f64>,
    /// Training seconds of each epoch (evaluation excluded).
    seconds: Vec<f64>,
    /// Most heap bytes live at once while training, above those live before the method
    /// started (CPU only).
    peak_bytes: Option<usize>,
    backbone_params: usize,
    aux_params: usize,
    /// Multiply-adds of one training step (a batch), auxiliary networks included.
    step_macs: flops::Macs,
}

impl Outcome {
    fn final_acc(&self) -> f64 {
        self.test_acc.last().copied().unwrap_or(0.0)
    }

    fn best_acc(&self) -> f64 {
        self.test_acc.iter().copied().fold(0.0, f64::max)
    }

    fn seconds_per_epoch(&self) -> f64 {
        self.seconds.iter().sum::<f64>() / self.seconds.len().max(1) as f64
    }

    fn peak_mib(&self) -> String {
        self.peak_bytes.map_or("n/a".into(), |b| {
            format!("{:.1}", b as f64 / (1024.0 * 1024.0))
        })
    }
}

/// The settings shared by every method: the dataset's recipe, then the flags.
fn base_config(args: &CompareArgs) -> TrainConfig {
    let recipe = TrainConfig::recipe(&args.dataset);
    TrainConfig {
        data_dir: args.data_dir.clone(),
        model: args.model.clone().unwrap_or(recipe.model.clone()),
        aux_depth: args.aux_depth.unwrap_or(recipe.aux_depth),
        pyramid: args.pyramid.unwrap_or(recipe.pyramid),
        epochs: args.epochs.unwrap_or(recipe.epochs),
        batch_size: args.batch_size.unwrap_or(recipe.batch_size),
        lr: args.lr.unwrap_or(recipe.lr),
        schedule: args.schedule.clone().unwrap_or(recipe.schedule.clone()),
        train_size: args.train_size.or(recipe.train_size),
        test_size: args.test_size.or(recipe.test_size),
        seed: args.seed.unwrap_or(recipe.seed),
        threads: args.threads.unwrap_or(recipe.threads),
        device: args.device.clone().unwrap_or(recipe.device.clone()),
        ..recipe
    }
}

/// The configuration of `method`: the shared one with the method (and, for the
/// baselines, K) set.
fn method_config(base: &TrainConfig, method: MethodArg, modules: Option<usize>) -> TrainConfig {
    let baseline = !matches!(method, MethodArg::Bp | MethodArg::Auglocal);
    TrainConfig {
        method: method.as_str().into(),
        modules: if baseline { modules } else { None },
        ..base.clone()
    }
}

pub fn run(args: CompareArgs, out: &mut dyn Write) -> Result<()> {
    if args.methods.is_empty() {
        bail!(
            "--methods lists no method; give some of {}",
            config::METHODS.join(",")
        );
    }
    for (i, m) in args.methods.iter().enumerate() {
        if args.methods[..i].contains(m) {
            bail!(
                "--methods lists {} twice; list each method once",
                m.as_str()
            );
        }
    }
    let base = base_config(&args);
    let configs: Vec<TrainConfig> = args
        .methods
        .iter()
        .map(|&m| method_config(&base, m, args.modules))
        .collect();
    for c in &configs {
        c.validate()
            .with_context(|| format!("method {}", c.method))?;
    }
    let report_path = args.out.join("compare.md");
    if report_path.exists() {
        bail!(
            "--out {} already holds a comparison; choose another directory",
            args.out.display()
        );
    }
    session::set_threads(base.threads)?;
    let device = config::parse_device(&base.device)?;
    let train = session::open_split(&base, Split::Train, base.train_size)?;
    let test = session::open_split(&base, Split::Test, base.test_size)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    eprintln!(
        "comparing {} on {} {} ({} train / {} test images, {} epochs, seed {})",
        configs
            .iter()
            .map(|c| c.method.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        base.model,
        base.dataset,
        train.len(),
        test.len(),
        base.epochs,
        base.seed
    );

    let mut outcomes = Vec::with_capacity(configs.len());
    for (config, &method) in configs.iter().zip(&args.methods) {
        let outcome = train_one(config, method.as_str(), &train, &test, &device)?;
        eprintln!(
            "{}: final test acc {:.2}%, best {:.2}%, {:.1} s/epoch, peak heap {} MiB",
            outcome.method,
            100.0 * outcome.final_acc(),
            100.0 * outcome.best_acc(),
            outcome.seconds_per_epoch(),
            outcome.peak_mib()
        );
        outcomes.push(outcome);
    }

    checkpoint::write_atomic(
        &args.out.join("compare.csv"),
        summary_csv(&outcomes).as_bytes(),
    )?;
    checkpoint::write_atomic(
        &args.out.join("epochs.csv"),
        epochs_csv(&outcomes).as_bytes(),
    )?;
    let table = markdown_table(&outcomes);
    let report = report(&base, train.as_ref(), test.as_ref(), &table);
    checkpoint::write_atomic(&report_path, report.as_bytes())?;
    write!(out, "{table}")?;
    eprintln!("wrote {}", folder_files(&args.out));
    Ok(())
}

fn folder_files(dir: &Path) -> String {
    ["compare.md", "compare.csv", "epochs.csv"]
        .iter()
        .map(|f| dir.join(f).display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Trains one method for `config.epochs` epochs, evaluating the backbone after each.
fn train_one(
    config: &TrainConfig,
    method: &'static str,
    train: &Arc<dyn Dataset>,
    test: &Arc<dyn Dataset>,
    device: &Device,
) -> Result<Outcome> {
    let heap_before = heap::reset_peak();
    let mut engine = session::build_engine(config, train.classes(), device)?;
    let loader = session::train_loader(config, train.clone(), device)?;
    let test_loader = session::eval_loader(
        test.clone(),
        &config.dataset,
        config.eval_batch_size,
        device,
    )?;
    let schedule = config.schedule()?;
    let (backbone_params, aux_params) = engine.parameter_counts();
    let size = config.input_size();
    let per_image = flops::step_flops(&engine, [3, size, size])?.step();
    let batch = config.batch_size as u64;
    let step_macs = flops::Macs {
        forward: per_image.forward * batch,
        input_grad: per_image.input_grad * batch,
        weight_grad: per_image.weight_grad * batch,
    };
    let mut outcome = Outcome {
        method,
        modules: engine.plan().modules,
        test_acc: Vec::new(),
        train_loss: Vec::new(),
        seconds: Vec::new(),
        peak_bytes: None,
        backbone_params,
        aux_params,
        step_macs,
    };
    let mut train_peak = 0;
    for epoch in 1..=config.epochs {
        let lr = schedule.lr(config.lr, epoch, config.epochs);
        let started = Instant::now();
        let (mut loss_sum, mut images) = (0.0, 0);
        for batch in loader.epoch(epoch, 0) {
            let batch = batch?;
            let report = engine
                .train_step(&batch.images, &batch.labels, lr)
                .with_context(|| format!("method {method}, epoch {epoch}"))?;
            loss_sum += report.loss as f64 * report.images as f64;
            images += report.images;
        }
        device.synchronize()?;
        outcome.seconds.push(started.elapsed().as_secs_f64());
        // Training's peak only: evaluation runs larger batches through the backbone alone,
        // the same for every method, and would hide the differences.
        train_peak = train_peak.max(heap::peak_bytes());
        outcome.train_loss.push(loss_sum / images.max(1) as f64);
        let test = session::evaluate(&engine, &test_loader)?;
        outcome.test_acc.push(test.accuracy());
        heap::reset_peak();
        eprintln!(
            "{method} epoch {epoch}/{}: train loss {:.4} | test acc {:.2}% | {:.1}s",
            config.epochs,
            loss_sum / images.max(1) as f64,
            100.0 * test.accuracy(),
            outcome.seconds.last().copied().unwrap_or(0.0)
        );
    }
    if device.is_cpu() {
        outcome.peak_bytes = Some(train_peak.saturating_sub(heap_before));
    }
    Ok(outcome)
}

fn summary_csv(outcomes: &[Outcome]) -> String {
    let mut csv = String::from(
        "method,modules,final_test_acc,best_test_acc,peak_heap_bytes,seconds_per_epoch,aux_parameters,backbone_parameters,forward_macs_per_step,backward_macs_per_step\n",
    );
    for o in outcomes {
        let _ = writeln!(
            csv,
            "{},{},{:.4},{:.4},{},{:.3},{},{},{},{}",
            o.method,
            o.modules,
            o.final_acc(),
            o.best_acc(),
            o.peak_bytes.map_or(String::new(), |b| b.to_string()),
            o.seconds_per_epoch(),
            o.aux_params,
            o.backbone_params,
            o.step_macs.forward,
            o.step_macs.backward()
        );
    }
    csv
}

fn epochs_csv(outcomes: &[Outcome]) -> String {
    let mut csv = String::from("method,epoch,train_loss,test_acc,seconds\n");
    for o in outcomes {
        for (e, ((loss, acc), secs)) in o
            .train_loss
            .iter()
            .zip(&o.test_acc)
            .zip(&o.seconds)
            .enumerate()
        {
            let _ = writeln!(csv, "{},{},{loss:.4},{acc:.4},{secs:.3}", o.method, e + 1);
        }
    }
    csv
}

fn markdown_table(outcomes: &[Outcome]) -> String {
    let mut t = String::from(
        "| method | K | final test acc (%) | best test acc (%) | peak heap (MiB) | s/epoch | aux parameters | multiply-adds per step (fwd + bwd) |\n|---|---|---|---|---|---|---|---|\n",
    );
    for o in outcomes {
        let _ = writeln!(
            t,
            "| {} | {} | {:.2} | {:.2} | {} | {:.1} | {} | {} + {} |",
            o.method,
            o.modules,
            100.0 * o.final_acc(),
            100.0 * o.best_acc(),
            o.peak_mib(),
            o.seconds_per_epoch(),
            o.aux_params,
            flops::human(o.step_macs.forward),
            flops::human(o.step_macs.backward())
        );
    }
    t
}

fn report(base: &TrainConfig, train: &dyn Dataset, test: &dyn Dataset, table: &str) -> String {
    format!(
        "# {} on {}\n\n\
         Every method: the same {} training and {} test images, seed {}, {} epochs, batch {}, \
         lr {} ({}), SGD momentum {} (Nesterov: {}), weight decay {}, {} threads on {}. \
         AugLocal: auxiliary depth {}, pyramid {}.\n\n{table}\n\
         K: gradient-isolated modules. Peak heap: the most bytes allocated at once while the \
         method was built and trained (evaluation excluded), above what was allocated before \
         it (model, optimizer state, activations, batches). s/epoch: training only, evaluation excluded. Auxiliary \
         parameters are dropped at inference; every method keeps the same backbone.\n",
        base.model,
        base.dataset,
        train.len(),
        test.len(),
        base.seed,
        base.epochs,
        base.batch_size,
        base.lr,
        base.schedule,
        base.momentum,
        base.nesterov,
        base.weight_decay,
        auglocal_core::parallel::threads(),
        base.device,
        base.aux_depth,
        base.pyramid,
    )
}
