//! VGG-19 and MobileNetV2 learn the embedded synthetic data well above chance (10%) with
//! AugLocal. VGG-19 runs at an eighth of its width (8-16-32-64-64 channels) and
//! MobileNetV2 at a quarter (8 to 320 channels) to fit the test budget; their real widths
//! are covered by the shape, parameter and one-step tests of `auglocal-models`.

use std::sync::Arc;

use auglocal_core::trainer::{Trainer, TrainerConfig};
use auglocal_core::{Engine, LocalNet, Method, ParamBuilder, ParamStore, Sgd, SgdConfig};
use auglocal_data::{synthetic, Loader, Split};
use auglocal_models::{MobileNetV2, Vgg};
use candle_core::Device;

/// Trains `net` with AugLocal (depth `depth`, pyramid 0.5) for `epochs` epochs on the
/// first `train_size` synthetic images, cosine rate from `lr`; returns the test accuracy
/// of the backbone on 500 test images after each epoch.
fn auglocal_accuracy(
    build: impl Fn(&ParamBuilder) -> auglocal_core::Result<Box<dyn LocalNet>>,
    depth: usize,
    epochs: usize,
    train_size: usize,
    lr: f64,
) -> anyhow::Result<Vec<f64>> {
    let device = Device::Cpu;
    let store = ParamStore::new();
    let pb = ParamBuilder::new(&store, &device, 7);
    let net = build(&pb)?;
    let data = auglocal_data::spec("synthetic")?;
    let method = Method::auglocal(depth, 0.5)?;
    let sgd = Sgd::new(SgdConfig::default())?;
    let engine = Engine::new(net, method, data.input(32), &pb, sgd)?;
    let config = synthetic::SyntheticConfig {
        train_size,
        test_size: 500,
        seed: 0,
    };
    let train = Loader::new(
        Arc::new(synthetic::generate(&config, Split::Train)),
        data.train_loader(32, 1),
        device.clone(),
    )?;
    let test = Loader::new(
        Arc::new(synthetic::generate(&config, Split::Test)),
        data.eval_loader(250),
        device,
    )?;
    let name = engine.net().name().to_string();
    let schedule = TrainerConfig {
        epochs,
        lr,
        schedule: auglocal_core::Schedule::Cosine,
        ..TrainerConfig::default()
    };
    let fit = Trainer::new(engine, schedule)?.fit(&train, Some(&test), &mut ())?;
    let accuracy: Vec<f64> = fit
        .epochs
        .iter()
        .map(|e| e.eval.unwrap_or_default().accuracy())
        .collect();
    eprintln!("{name}: test accuracy by epoch {accuracy:?}");
    Ok(accuracy)
}

#[test]
fn vgg19_learns_synthetic_with_auglocal() -> anyhow::Result<()> {
    let acc = auglocal_accuracy(
        |pb| Ok(Box::new(Vgg::with_width(19, 10, 8, pb)?)),
        2,
        3,
        1024,
        0.05,
    )?;
    let last = *acc.last().unwrap();
    assert!(
        last > 0.2,
        "VGG-19/8 test accuracy by epoch {acc:?}; chance is 0.1"
    );
    Ok(())
}

#[test]
fn mobilenet_v2_learns_synthetic_with_auglocal() -> anyhow::Result<()> {
    let acc = auglocal_accuracy(
        |pb| Ok(Box::new(MobileNetV2::new(10, pb)?)),
        2,
        3,
        1024,
        0.05,
    )?;
    let last = *acc.last().unwrap();
    assert!(
        last > 0.2,
        "MobileNetV2 test accuracy by epoch {acc:?}; chance is 0.1"
    );
    Ok(())
}
