//! The README's library example: AugLocal on the embedded synthetic data in the library's
//! training loop, with checkpoints and exact resume. `tests/library.rs` runs it.
//! Run: `cargo run --release -p auglocal-tests --example library -- runs/library`.

use std::path::Path;
use std::sync::Arc;

use auglocal_core::trainer::{CheckpointPolicy, FitOutcome, MetricsLog, Trainer, TrainerConfig};
use auglocal_core::{Engine, Method, ParamBuilder, ParamStore, Schedule, Sgd, SgdConfig};
use auglocal_data::synthetic::{generate, SyntheticConfig};
use auglocal_data::{Loader, Split};
use candle_core::Device;

/// Trains ResNet-20 with AugLocal to `epochs` epochs in run directory `run`, continuing
/// from its last checkpoint if it has one.
pub fn train(run: &Path, epochs: usize) -> anyhow::Result<FitOutcome> {
    let (device, store) = (Device::Cpu, ParamStore::new());
    let pb = ParamBuilder::new(&store, &device, 0); // one seed initialises everything
    let net = auglocal_models::build("resnet20", 10, &pb)?;
    let data = auglocal_data::spec("synthetic")?; // normalisation, augmentation, image size
    let sgd = Sgd::new(SgdConfig::default())?; // Nesterov 0.9, weight decay 1e-4
    let engine = Engine::new(net, Method::auglocal(2, 0.5)?, data.input(32), &pb, sgd)?;
    let sizes = SyntheticConfig {
        train_size: 512,
        test_size: 200,
        seed: 0,
    };
    let train = Arc::new(generate(&sizes, Split::Train));
    let train = Loader::new(train, data.train_loader(64, 0), device.clone())?;
    let test = Loader::new(
        Arc::new(generate(&sizes, Split::Test)),
        data.eval_loader(200),
        device,
    )?;
    let config = TrainerConfig {
        epochs,
        lr: 0.05,
        schedule: Schedule::Cosine,
        checkpoint: CheckpointPolicy::in_run(run), // run/checkpoint/ after every epoch
        ..TrainerConfig::default()
    };
    let mut trainer = Trainer::new(engine, config)?;
    trainer.resume_if_saved(run)?; // same weights, momentum and data order as never stopped
    Ok(trainer.fit(&train, Some(&test), &mut MetricsLog::new(run, None))?)
}

fn main() -> anyhow::Result<()> {
    let run = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "runs/library".into());
    for epoch in train(Path::new(&run), 2)?.epochs {
        let test = epoch.eval.unwrap_or_default();
        println!(
            "epoch {}: train loss {:.3}, test accuracy {:.1}%",
            epoch.epoch,
            epoch.train.mean_loss(),
            100.0 * test.accuracy()
        );
    }
    Ok(())
}
