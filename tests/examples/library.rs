//! The README's library example, compiled by `cargo test --workspace`.
//! Run: `cargo run --release -p auglocal-tests --example library`.

use std::sync::Arc;

use auglocal_core::{AuxPlan, Engine, Method, ParamBuilder, ParamStore, Schedule, Sgd, SgdConfig};
use auglocal_data::{synthetic, Loader, LoaderConfig, Split};
use candle_core::Device;

fn main() -> anyhow::Result<()> {
    let device = Device::Cpu;
    let store = ParamStore::new();
    let pb = ParamBuilder::new(&store, &device, 0); // seeded initialisation
    let net = auglocal_models::build("resnet32", 10, &pb)?;
    let plan = AuxPlan::for_net(
        net.as_ref(),
        Method::AugLocal {
            depth: 2,
            pyramid: 0.5,
        },
    )?;
    let mut engine = Engine::new(net, plan, &pb, Sgd::new(SgdConfig::default())?)?;

    let train = Arc::new(synthetic::generate(&Default::default(), Split::Train).subset(256));
    let (normalize, augment) = auglocal_data::recipe("synthetic")?;
    let config = LoaderConfig {
        batch_size: 64,
        shuffle: true,
        augment,
        normalize,
        seed: 0,
    };
    let loader = Loader::new(train, config, device)?;
    for epoch in 1..=2 {
        let lr = Schedule::Cosine.lr(0.05, epoch, 2);
        for batch in loader.epoch(epoch, 0) {
            let batch = batch?;
            let report = engine.train_step(&batch.images, &batch.labels, lr)?;
            println!(
                "loss {:.3}, module losses {:?}",
                report.loss, report.module_losses
            );
        }
    }
    Ok(())
}
