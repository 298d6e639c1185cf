//! `auglocal compare`: trains several methods on the same data, seed and recipe and writes
//! one table of what each achieved and cost.

use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use auglocal_core::methods::ModuleRule;
use auglocal_core::trainer::{EpochRecord, Observer, Trainer, TrainerConfig};
use auglocal_core::{checkpoint, flops, MethodName};
use auglocal_data::{Dataset, Split};
use candle_core::Device;

use crate::settings::{model_parser, DeviceName, Settings, TrainConfig};
use crate::{charts, heap, session};

/// One entry of `--methods`: a method with its modifiers (`dgl+man`), and `+recompute`
/// (`bp+recompute`).
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    method: MethodName,
    /// `+recompute`: activation checkpointing (memory and time change, numbers do not).
    recompute: bool,
    /// As written, normalised: `dgl+man+hpff`, `bp+recompute`.
    label: String,
}

/// Parses `method[+modifier...]`: the method's own modifiers
/// ([`MODIFIERS`](auglocal_core::MODIFIERS)) and
/// `recompute`, in any order.
fn parse_entry(text: &str) -> std::result::Result<Entry, String> {
    let lower = text.trim().to_ascii_lowercase();
    let mut parts: Vec<&str> = lower.split('+').map(str::trim).collect();
    // The method comes first; `recompute` is one of the modifiers after it.
    let recomputes = parts[1..].iter().filter(|p| **p == "recompute").count();
    if recomputes > 1 {
        return Err(format!("`{text}` gives +recompute twice"));
    }
    let method = parts.remove(0);
    parts.retain(|p| *p != "recompute");
    parts.insert(0, method);
    let method = MethodName::parse(&parts.join("+")).map_err(|e| match e {
        auglocal_core::Error::UnknownMethod { name, known } => {
            format!("`{name}` is no method; the methods are {known}")
        }
        other => format!("{other}; compare also takes +recompute (activation checkpointing)"),
    })?;
    let recompute = recomputes == 1;
    let label = match recompute {
        true => format!("{method}+recompute"),
        false => method.to_string(),
    };
    Ok(Entry {
        method,
        recompute,
        label,
    })
}

/// Flags of `auglocal compare`: the methods, and the data and recipe they all share.
#[derive(clap::Args)]
pub struct Args {
    /// Methods to train, comma-separated, each with optional modifiers after `+` (`+man`,
    /// `+hpff`, and `+recompute`: activation checkpointing), e.g.
    /// `bp,bp+recompute,auglocal,dgl,dgl+man`.
    #[arg(
        long,
        value_parser = parse_entry,
        value_delimiter = ',',
        default_value = "bp,auglocal,dgl,infopro,predsim,greedy"
    )]
    methods: Vec<Entry>,
    /// Dataset: any `train --dataset` takes (synthetic, the default; cifar10, cifar100,
    /// svhn, svhn-extra, stl10, imagefolder, hub:...).
    #[arg(long, default_value = "synthetic")]
    dataset: String,
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// `imagefolder`: side of the square crops (default 224).
    #[arg(long)]
    image_size: Option<usize>,
    /// `imagefolder`: leave out files that are not JPEG/PNG images instead of failing.
    #[arg(long)]
    skip_bad_images: bool,
    /// `hub:` datasets: use the Hugging Face cache only.
    #[arg(long)]
    offline: bool,
    /// `hub:` datasets: the label column.
    #[arg(long)]
    label_column: Option<String>,
    /// Backbone (default: the dataset's recipe).
    #[arg(long, value_parser = model_parser())]
    model: Option<String>,
    /// K of the methods with one head per unit (default: one module per unit).
    #[arg(long)]
    modules: Option<usize>,
    /// AugLocal's auxiliary depth.
    #[arg(long)]
    aux_depth: Option<usize>,
    /// AugLocal's pyramid coefficient.
    #[arg(long)]
    pyramid: Option<f64>,
    #[arg(long)]
    epochs: Option<usize>,
    #[arg(long)]
    batch_size: Option<usize>,
    #[arg(long)]
    lr: Option<f64>,
    /// warmup-cosine, warmup-cosine:N, cosine, constant or step:E1,E2,...
    #[arg(long)]
    schedule: Option<auglocal_core::Schedule>,
    #[arg(long)]
    train_size: Option<usize>,
    #[arg(long)]
    test_size: Option<usize>,
    /// Seed of initialisation, shuffling and augmentation, the same for every method.
    #[arg(long)]
    seed: Option<u64>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// cpu, cuda or cuda:N.
    #[arg(long)]
    device: Option<DeviceName>,
    /// Directory to create for compare.md, compare.csv and each method's metrics.
    #[arg(long)]
    out: PathBuf,
}

/// What one method achieved and cost.
#[derive(Debug, Clone)]
struct Outcome {
    method: String,
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
fn base_config(args: &Args) -> Result<TrainConfig> {
    let flags = Settings {
        dataset: Some(args.dataset.clone()),
        data_dir: args.data_dir.clone(),
        model: args.model.clone(),
        aux_depth: args.aux_depth,
        pyramid: args.pyramid,
        epochs: args.epochs,
        batch_size: args.batch_size,
        lr: args.lr,
        schedule: args.schedule.clone(),
        train_size: args.train_size,
        test_size: args.test_size,
        seed: args.seed,
        threads: args.threads,
        device: args.device,
        image_size: args.image_size,
        skip_bad_images: args.skip_bad_images.then_some(true),
        offline: args.offline.then_some(true),
        label_column: args.label_column.clone(),
        ..Settings::default()
    };
    TrainConfig::resolve(&Settings::default(), &flags)
}

/// The configuration of `method`: the shared one with the method (and, for the methods
/// with one head per unit, K) set.
fn method_config(base: &TrainConfig, entry: &Entry, modules: Option<usize>) -> TrainConfig {
    TrainConfig {
        method: entry.method,
        modules: modules.filter(|_| entry.method.info.rule == ModuleRule::SplitTable),
        recompute: entry.recompute,
        ..base.clone()
    }
}

/// Trains every method of `--methods` in turn on the same data and seed, writes
/// `compare.md`, `compare.csv` and `epochs.csv` to `--out`, and the table to `out`. Fails
/// before training if `--out` already holds a comparison.
pub fn run(args: Args, out: &mut dyn Write) -> Result<()> {
    if args.methods.is_empty() {
        bail!(
            "--methods lists no method; give some of {}",
            auglocal_core::methods::names()
        );
    }
    for (i, m) in args.methods.iter().enumerate() {
        if args.methods[..i].contains(m) {
            bail!("--methods lists {} twice; list each method once", m.label);
        }
    }
    let base = base_config(&args)?;
    let configs: Vec<TrainConfig> = args
        .methods
        .iter()
        .map(|m| method_config(&base, m, args.modules))
        .collect();
    for (c, entry) in configs.iter().zip(&args.methods) {
        c.validate()
            .with_context(|| format!("method {}", entry.label))?;
    }
    let report_path = args.out.join("compare.md");
    if report_path.exists() {
        bail!(
            "--out {} already holds a comparison; choose another directory",
            args.out.display()
        );
    }
    session::set_threads(base.threads)?;
    let device = base.device.open()?;
    let train = session::open_split(&base, Split::Train, base.train_size)?;
    let test = session::open_split(&base, Split::Test, base.test_size)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    eprintln!(
        "comparing {} on {} {} ({} train / {} test images, {} epochs, seed {})",
        args.methods
            .iter()
            .map(|m| m.label.as_str())
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
    for (config, entry) in configs.iter().zip(&args.methods) {
        let outcome = train_one(config, &entry.label, &train, &test, &device)?;
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
    let figure = accuracy_memory_figure(&outcomes, &args.out.join(FIGURE_FILE))?;
    let table = markdown_table(&outcomes);
    let report = report(&base, train.as_ref(), test.as_ref(), &table);
    checkpoint::write_atomic(&report_path, report.as_bytes())?;
    write!(out, "{table}")?;
    if !figure {
        eprintln!("no {FIGURE_FILE}: peak heap is measured on the CPU only");
    }
    writeln!(out, "wrote {}", folder_files(&args.out, figure))?;
    Ok(())
}

fn folder_files(dir: &Path, figure: bool) -> String {
    ["compare.md", "compare.csv", "epochs.csv", FIGURE_FILE]
        .iter()
        .filter(|f| figure || **f != FIGURE_FILE)
        .map(|f| dir.join(f).display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Training's heap peak of every epoch, and a line per epoch on the terminal.
struct HeapPeak<'a> {
    method: &'a str,
    peak: usize,
}

impl Observer for HeapPeak<'_> {
    fn epoch_trained(&mut self, _epoch: usize) -> auglocal_core::Result<()> {
        // Training's peak only: evaluation runs larger batches through the backbone alone,
        // the same for every method, and would hide the differences.
        self.peak = self.peak.max(heap::peak_bytes());
        Ok(())
    }

    fn epoch_ended(&mut self, r: &EpochRecord) -> auglocal_core::Result<()> {
        heap::reset_peak();
        eprintln!(
            "{} epoch {}/{}: train loss {:.4} | test acc {:.2}% | {:.1}s",
            self.method,
            r.epoch,
            r.epochs,
            r.train.mean_loss(),
            100.0 * r.eval.unwrap_or_default().accuracy(),
            r.train.seconds
        );
        Ok(())
    }
}

/// Trains one method for `config.epochs` epochs, evaluating the backbone after each.
fn train_one(
    config: &TrainConfig,
    method: &str,
    train: &Arc<dyn Dataset>,
    test: &Arc<dyn Dataset>,
    device: &Device,
) -> Result<Outcome> {
    let heap_before = heap::reset_peak();
    let image_size = train.shape().1;
    let engine = session::build_engine(config, train.classes(), image_size, device)?;
    let loader = session::train_loader(config, train.clone(), device)?;
    let test_loader = session::eval_loader(
        test.clone(),
        &config.dataset,
        config.eval_batch_size,
        device,
    )?;
    let (backbone_params, aux_params) = engine.parameter_counts();
    let per_image = flops::step_flops(&engine, [3, image_size, image_size])?.step();
    let batch = config.batch_size as u64;
    let step_macs = flops::Macs {
        forward: per_image.forward * batch,
        input_grad: per_image.input_grad * batch,
        weight_grad: per_image.weight_grad * batch,
        layers: per_image.layers,
    };
    let modules = engine.plan().modules;
    let mut trainer = Trainer::new(
        engine,
        TrainerConfig {
            epochs: config.epochs,
            lr: config.lr,
            schedule: config.schedule.clone(),
            ..TrainerConfig::default()
        },
    )?;
    let mut peak = HeapPeak { method, peak: 0 };
    let fit = trainer
        .fit(&loader, Some(&test_loader), &mut peak)
        .with_context(|| format!("method {method}"))?;
    Ok(Outcome {
        method: method.to_string(),
        modules,
        test_acc: fit
            .epochs
            .iter()
            .map(|r| r.eval.unwrap_or_default().accuracy())
            .collect(),
        train_loss: fit.epochs.iter().map(|r| r.train.mean_loss()).collect(),
        seconds: fit.epochs.iter().map(|r| r.train.seconds).collect(),
        peak_bytes: device
            .is_cpu()
            .then(|| peak.peak.saturating_sub(heap_before)),
        backbone_params,
        aux_params,
        step_macs,
    })
}

/// The file [`accuracy_memory_figure`] writes.
const FIGURE_FILE: &str = "accuracy-memory.png";

/// One point per method: final test accuracy against peak heap. Returns false (and draws
/// nothing) where no peak was measured (GPU runs).
fn accuracy_memory_figure(outcomes: &[Outcome], path: &Path) -> Result<bool> {
    let series: Vec<charts::Series> = outcomes
        .iter()
        .enumerate()
        .filter_map(|(i, o)| {
            let mib = o.peak_bytes? as f64 / (1024.0 * 1024.0);
            Some(charts::Series {
                label: o.method.clone(),
                points: vec![(mib, 100.0 * o.final_acc())],
                color: charts::color(i),
                dashed: false,
                markers: true,
            })
        })
        .collect();
    if series.is_empty() {
        return Ok(false);
    }
    let panel = charts::Panel {
        title: "Final test accuracy against peak memory".into(),
        x_label: "peak heap (MiB)".into(),
        y_label: "test accuracy (%)".into(),
        series,
        y_range: Some((0.0, 100.0)),
        integer_x: false,
        legend: plotters::prelude::SeriesLabelPosition::LowerRight,
    };
    charts::line_charts(path, (800, 560), &[panel])?;
    Ok(true)
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
