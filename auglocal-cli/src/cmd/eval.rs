//! `auglocal eval`: a checkpoint's backbone on a test set; one JSON line.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Result};
use auglocal_core::trainer::evaluate;
use auglocal_data::Split;

use crate::session;
use crate::settings::{DeviceName, TrainConfig};

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
    let line = serde_json::json!({
        "checkpoint": dir,
        "dataset": dataset,
        "images": totals.images,
        "accuracy": totals.accuracy(),
        "top5_accuracy": totals.top5_accuracy(),
        "loss": totals.mean_loss(),
    });
    writeln!(out, "{line}")?;
    Ok(())
}
