//! `auglocal probe`: layer-wise linear probing. The backbone is frozen (inference mode); each
//! unit's globally pooled output is extracted once for the training and test images, and a
//! ridge classifier ([`RidgeProbe`]) is fitted per unit. Prints a table, writes `probe.json`
//! and `probe.png` (unit vs accuracy, one colour per checkpoint).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use auglocal_core::analysis::{unit_features, Features, RidgeProbe};
use auglocal_core::Engine;
use auglocal_data::Split;
use candle_core::{Device, Tensor};
use plotters::prelude::SeriesLabelPosition;
use serde_json::json;

use crate::charts::{self as plot, Panel, Series};
use crate::session::{self, CliState};
use crate::settings::{DeviceName, TrainConfig};

/// Flags of `auglocal probe`: the checkpoints, the images and the ridge strength.
#[derive(clap::Args)]
pub struct Args {
    /// Run directory (or its checkpoint/ folder); repeat to compare runs on one plot.
    #[arg(long, required = true)]
    checkpoint: Vec<PathBuf>,
    #[command(flatten)]
    features: FeatureArgs,
    /// Training images for the probes (default: the run's --train-size; all when it had none).
    #[arg(long)]
    train_size: Option<usize>,
    /// Test images (default: the run's --test-size; all when it had none).
    #[arg(long)]
    test_size: Option<usize>,
    /// Ridge strength, relative to the number of training images.
    #[arg(long, default_value_t = 1e-3)]
    ridge: f64,
    /// Where probe.json and probe.png go (default: the first run's directory).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Where `probe` and `similarity` read images and how they run the backbones.
#[derive(clap::Args)]
pub struct FeatureArgs {
    /// Dataset of the images (default: the one the first run trained on).
    #[arg(long)]
    pub dataset: Option<String>,
    /// Directory holding the dataset's files (default: the one each run trained from).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Images per forward pass when extracting features.
    #[arg(long, default_value_t = 250)]
    pub batch_size: usize,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceName,
}

impl FeatureArgs {
    /// Starts the worker threads and opens the device.
    pub fn start(&self) -> Result<Device> {
        session::set_threads(self.threads.unwrap_or(0))?;
        self.device.open()
    }
}

/// A loaded checkpoint and the run directory it belongs to.
pub struct LoadedRun {
    /// The run directory (the checkpoint's parent when given its `checkpoint/` folder),
    /// where analyses are written.
    pub run_dir: PathBuf,
    /// The checkpoint's `state.json`: progress, settings and class count.
    pub state: CliState,
    /// The network rebuilt from the settings, every tensor loaded from the checkpoint.
    pub engine: Engine,
}

/// Loads the checkpoint at `path` (a run directory or its checkpoint/ folder).
pub fn load_run(path: &Path, device: &Device) -> Result<LoadedRun> {
    let (dir, state, engine) = session::load_checkpoint(path, device)?;
    // Analyses are written next to the run's metrics, not inside its checkpoint.
    let run_dir = match dir.file_name() {
        Some(n) if n == auglocal_core::checkpoint::CHECKPOINT_DIR => {
            dir.parent().map_or(dir.clone(), Path::to_path_buf)
        }
        _ => dir,
    };
    Ok(LoadedRun {
        run_dir,
        state,
        engine,
    })
}

/// Images of `split` for analysing `run`: the dataset it trained on unless `dataset` names
/// another; `limit` first images, else the run's own size limit for its dataset.
pub fn open_images(
    run: &LoadedRun,
    dataset: Option<&str>,
    data_dir: Option<&Path>,
    split: Split,
    limit: Option<usize>,
) -> Result<(String, std::sync::Arc<dyn auglocal_data::Dataset>)> {
    let config = &run.state.meta.config;
    let name = dataset.unwrap_or(&config.dataset).to_string();
    let data_dir = data_dir.or(config.data_dir.as_deref());
    let own_limit = match split {
        Split::Train => config.train_size,
        Split::Test => config.test_size,
    };
    let limit = limit.or(if name == config.dataset {
        own_limit
    } else {
        None
    });
    let source = TrainConfig {
        dataset: name.clone(),
        data_dir: data_dir.map(Path::to_path_buf),
        ..config.clone()
    };
    let data = session::open_split(&source, split, limit)?;
    if data.classes() != run.state.meta.classes {
        bail!(
            "the checkpoint {} has {} classes but {name} has {}; analyse it on a dataset with the same classes",
            run.run_dir.display(),
            run.state.meta.classes,
            data.classes()
        );
    }
    Ok((name, data))
}

/// Every unit's features over `data` (in dataset order) and the labels.
pub fn extract(
    run: &LoadedRun,
    dataset: &str,
    data: std::sync::Arc<dyn auglocal_data::Dataset>,
    features: Features,
    batch_size: usize,
    device: &Device,
) -> Result<(Vec<Tensor>, Vec<u32>)> {
    if batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let loader = session::eval_loader(data, dataset, batch_size, device)?;
    let units = run.engine.net().units().len();
    let mut per_unit: Vec<Vec<Tensor>> = vec![Vec::new(); units];
    let mut labels = Vec::new();
    for batch in loader.epoch(1, 0) {
        let batch = batch?;
        for (unit, f) in unit_features(run.engine.net(), &batch.images, features)?
            .into_iter()
            .enumerate()
        {
            per_unit[unit].push(f);
        }
        labels.extend(batch.labels.to_vec1::<u32>()?);
    }
    let per_unit = per_unit
        .iter()
        .map(|parts| Tensor::cat(parts, 0))
        .collect::<candle_core::Result<Vec<_>>>()?;
    Ok((per_unit, labels))
}

/// Probe accuracies of one unit.
struct UnitResult {
    unit: usize,
    channels: usize,
    train_acc: f64,
    test_acc: f64,
}

/// Fits a ridge probe on every unit's pooled output of every checkpoint, writes the
/// accuracy tables to `out`, and `probe.json` and `probe.png` to `--out`.
pub fn run(args: Args, out: &mut dyn Write) -> Result<()> {
    let device = args.features.start()?;
    let mut runs_json = Vec::new();
    let mut series = Vec::new();
    let mut header = None;
    let mut first_run_dir = None;
    for (i, path) in args.checkpoint.iter().enumerate() {
        let run = load_run(path, &device)?;
        let (dataset, train) = open_images(
            &run,
            args.features.dataset.as_deref(),
            args.features.data_dir.as_deref(),
            Split::Train,
            args.train_size,
        )?;
        let (_, test) = open_images(
            &run,
            args.features.dataset.as_deref(),
            args.features.data_dir.as_deref(),
            Split::Test,
            args.test_size,
        )?;
        let (train_n, test_n) = (train.len(), test.len());
        let extract_split = |data| {
            extract(
                &run,
                &dataset,
                data,
                Features::Pooled,
                args.features.batch_size,
                &device,
            )
        };
        let (train_features, train_labels) = extract_split(train)?;
        let (test_features, test_labels) = extract_split(test)?;
        let mut results = Vec::with_capacity(train_features.len());
        for (unit, (xtr, xte)) in train_features.iter().zip(&test_features).enumerate() {
            let probe = RidgeProbe::fit(xtr, &train_labels, run.state.meta.classes, args.ridge)?;
            results.push(UnitResult {
                unit,
                channels: xtr.dim(1)?,
                train_acc: probe.accuracy(xtr, &train_labels)?,
                test_acc: probe.accuracy(xte, &test_labels)?,
            });
        }

        let label = plot::run_label(&run.run_dir);
        first_run_dir.get_or_insert_with(|| run.run_dir.clone());
        if header.is_none() {
            let line = format!(
                "linear probes (ridge {}, pooled unit outputs) on {dataset}: {train_n} train / {test_n} test images",
                args.ridge
            );
            writeln!(out, "{line}")?;
            header = Some(json!({
                "dataset": dataset,
                "train_images": train_n,
                "test_images": test_n,
            }));
        }
        writeln!(out, "{label}")?;
        writeln!(
            out,
            "{:>5} {:>6} {:>8} {:>8}",
            "unit", "ch", "train%", "test%"
        )?;
        for r in &results {
            writeln!(
                out,
                "{:>5} {:>6} {:>8.2} {:>8.2}",
                r.unit,
                r.channels,
                100.0 * r.train_acc,
                100.0 * r.test_acc
            )?;
        }
        let points = |acc: &dyn Fn(&UnitResult) -> f64| -> Vec<(f64, f64)> {
            results
                .iter()
                .map(|r| (r.unit as f64, 100.0 * acc(r)))
                .collect()
        };
        series.push(Series {
            label: format!("{label} test"),
            points: points(&|r| r.test_acc),
            color: plot::color(i),
            dashed: false,
            markers: true,
        });
        series.push(Series {
            label: format!("{label} train"),
            points: points(&|r| r.train_acc),
            color: plot::color(i),
            dashed: true,
            markers: false,
        });
        runs_json.push(json!({
            "checkpoint": run.run_dir,
            "label": label,
            "model": run.state.meta.config.model,
            "method": run.state.meta.config.method.to_string(),
            "units": results.iter().map(|r| json!({
                "unit": r.unit,
                "channels": r.channels,
                "train_acc": r.train_acc,
                "test_acc": r.test_acc,
            })).collect::<Vec<_>>(),
        }));
    }

    let Some(out_dir) = args.out.clone().or(first_run_dir) else {
        bail!("give at least one --checkpoint");
    };
    let mut report = header.unwrap_or_default();
    report["ridge"] = json!(args.ridge);
    report["features"] = json!("pooled");
    report["runs"] = json!(runs_json);
    plot::write_report(&out_dir, "probe", &report, out, |png| {
        plot::line_charts(
            png,
            PROBE_SIZE,
            &[Panel {
                title: "Linear probe accuracy by unit".into(),
                x_label: "unit (0 = stem)".into(),
                y_label: "accuracy (%)".into(),
                series,
                y_range: Some((0.0, 100.0)),
                integer_x: true,
                legend: SeriesLabelPosition::UpperLeft,
            }],
        )
    })
}

/// Pixel size of `probe.png`.
pub const PROBE_SIZE: (u32, u32) = (1000, 640);
