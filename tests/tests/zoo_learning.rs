//! VGG-19 and MobileNetV2 learn the embedded synthetic data well above chance (10%) with
//! AugLocal. VGG-19 runs at an eighth of its width (8-16-32-64-64 channels) and
//! MobileNetV2 at a quarter (8 to 320 channels) to fit the test budget; their real widths
//! are covered by the shape, parameter and one-step tests of `auglocal-models`.

use std::sync::Arc;

use auglocal_core::{AuxPlan, Engine, LocalNet, Method, ParamBuilder, ParamStore, Sgd, SgdConfig};
use auglocal_data::{synthetic, Augment, Loader, LoaderConfig, Split};
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
    let plan = AuxPlan::for_net(
        net.as_ref(),
        Method::AugLocal {
            depth,
            pyramid: 0.5,
        },
    )?;
    let mut engine = Engine::new(net, plan, &pb, Sgd::new(SgdConfig::default())?)?;
    let config = synthetic::SyntheticConfig {
        train_size,
        test_size: 500,
        seed: 0,
    };
    let (normalize, augment) = auglocal_data::recipe("synthetic")?;
    let train = Loader::new(
        Arc::new(synthetic::generate(&config, Split::Train)),
        LoaderConfig {
            batch_size: 32,
            shuffle: true,
            augment,
            normalize,
            seed: 1,
        },
        device.clone(),
    )?;
    let test = Loader::new(
        Arc::new(synthetic::generate(&config, Split::Test)),
        LoaderConfig {
            batch_size: 250,
            shuffle: false,
            augment: Augment::None,
            normalize,
            seed: 0,
        },
        device,
    )?;
    let mut accuracy = Vec::with_capacity(epochs);
    for epoch in 1..=epochs {
        let rate = auglocal_core::Schedule::Cosine.lr(lr, epoch, epochs);
        for batch in train.epoch(epoch, 0) {
            let batch = batch?;
            engine.train_step(&batch.images, &batch.labels, rate)?;
        }
        let mut totals = auglocal_core::EvalTotals::default();
        for batch in test.epoch(1, 0) {
            let batch = batch?;
            totals.add(engine.eval_batch(&batch.images, &batch.labels)?);
        }
        eprintln!(
            "{}: epoch {epoch}: test accuracy {:.3}",
            engine.net().name(),
            totals.accuracy()
        );
        accuracy.push(totals.accuracy());
    }
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
