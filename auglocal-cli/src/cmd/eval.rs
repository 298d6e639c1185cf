//! `auglocal eval`: a checkpoint's backbone on a test set; one JSON line.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Result};
use auglocal_core::trainer::{evaluate, BatchSource};
use auglocal_core::EvalTotals;
use auglocal_data::Split;

use crate::session;
use crate::settings::{DeviceName, TrainConfig};

/// Flags of `auglocal eval`: the checkpoint, and the test data to score it on.
#[derive(clap::Args)]
pub struct Args {
    /// Run directory (or its checkpoint/ folder).
    #[arg(long)]
    checkpoint: PathBuf,
    /// Dataset to evaluate on (default: the one the run trained on).
    #[arg(long)]
    dataset: Option<String>,
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// hub: datasets: use the Hugging Face cache only (also HF_HUB_OFFLINE=1).
    #[arg(long)]
    offline: bool,
    /// imagefolder: leave out files that are not JPEG/PNG images.
    #[arg(long)]
    skip_bad_images: bool,
    /// Also score every auxiliary head (each module's classifier, in inference) on the test
    /// set: `modules` in the JSON line.
    #[arg(long)]
    aux: bool,
    /// Evaluate on the first N test images (default: the whole test split).
    #[arg(long)]
    test_size: Option<usize>,
    #[arg(long)]
    batch_size: Option<usize>,
    #[arg(long)]
    threads: Option<usize>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: DeviceName,
}

/// Loads the checkpoint, evaluates its backbone (and with `--aux` every module's
/// classifier) on the test split and writes the result to `out` as one JSON line.
pub fn run(args: Args, out: &mut dyn Write) -> Result<()> {
    session::set_threads(args.threads.unwrap_or(0))?;
    let device = args.device.open()?;
    let (dir, state, engine) = session::load_checkpoint(&args.checkpoint, &device)?;
    let trained = &state.meta.config;
    let dataset = args.dataset.unwrap_or_else(|| trained.dataset.clone());
    let source = TrainConfig {
        dataset: dataset.clone(),
        data_dir: args.data_dir.or_else(|| trained.data_dir.clone()),
        offline: args.offline || trained.offline,
        skip_bad_images: args.skip_bad_images || trained.skip_bad_images,
        ..trained.clone()
    };
    let data = session::open_split(&source, Split::Test, args.test_size)?;
    if data.classes() != state.meta.classes {
        bail!(
            "the checkpoint's model has {} classes but {dataset} has {}; evaluate it on a dataset with the same classes",
            state.meta.classes,
            data.classes()
        );
    }
    let batch_size = args.batch_size.unwrap_or(trained.eval_batch_size);
    let loader = session::eval_loader(data, &dataset, batch_size, &device)?;
    let totals = evaluate(&engine, &loader)?;
    let mut line = serde_json::json!({
        "checkpoint": dir,
        "dataset": dataset,
        "images": totals.images,
        "accuracy": totals.accuracy(),
        "top5_accuracy": totals.top5_accuracy(),
        "loss": totals.mean_loss(),
    });
    if args.aux {
        line["modules"] = every_module(&engine, &loader)?;
    }
    writeln!(out, "{line}")?;
    Ok(())
}

/// Each module's classifier scored over the whole source: one entry per module, `null` for a
/// local loss without a classifier; the last is the output layer.
fn every_module(
    engine: &auglocal_core::Engine,
    source: &dyn BatchSource,
) -> Result<serde_json::Value> {
    let units = engine.plan().module_units();
    let mut sums: Vec<Option<EvalTotals>> = vec![Some(EvalTotals::default()); units.len()];
    for batch in source.batches(1, 0) {
        let batch = batch?;
        let scored = engine.eval_every_module(&batch.images, &batch.labels)?;
        for (sum, batch) in sums.iter_mut().zip(scored) {
            *sum = match (sum.take(), batch) {
                (Some(mut sum), Some(batch)) => {
                    sum.add(batch);
                    Some(sum)
                }
                _ => None,
            };
        }
    }
    let modules = sums
        .iter()
        .zip(&units)
        .enumerate()
        .map(|(m, (totals, units))| {
            serde_json::json!({
                "module": m,
                "units": [units.start, units.end - 1],
                "accuracy": totals.map(|t| t.accuracy()),
                "top5_accuracy": totals.and_then(|t| t.top5_accuracy()),
                "loss": totals.map(|t| t.mean_loss()),
            })
        })
        .collect();
    Ok(serde_json::Value::Array(modules))
}
