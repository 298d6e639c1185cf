//! Writes what `bench/check_export.py` needs to check that an exported backbone loads into
//! PyTorch with `strict=True` and computes the same logits:
//! `<dir>/backbone.safetensors` (the export) and `<dir>/probe.safetensors` (normalised test
//! images and our inference logits for them).
//!
//! `cargo run --release -p auglocal-tests --example export_check -- <dir> [model]`

use std::sync::Arc;

use auglocal_core::{checkpoint, Engine, Method, ParamBuilder, ParamStore, Sgd, SgdConfig};
use auglocal_data::{synthetic, Loader, Split};
use candle_core::Device;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(
        args.next()
            .ok_or_else(|| anyhow::anyhow!("usage: export_check DIR [MODEL]"))?,
    );
    let model = args.next().unwrap_or_else(|| "resnet20".into());
    std::fs::create_dir_all(&dir)?;
    let device = Device::Cpu;
    let store = ParamStore::new();
    let pb = ParamBuilder::new(&store, &device, 1);
    let net = auglocal_models::build(&model, 10, &pb)?;
    let data = auglocal_data::spec("synthetic")?;
    let method = Method::auglocal(2, 0.5)?;
    let sgd = Sgd::new(SgdConfig::default())?;
    let mut engine = Engine::new(net, method, data.input(32), &pb, sgd)?;

    // A few steps, so that weights and BatchNorm running statistics are not their initial values.
    let train = Arc::new(synthetic::generate(&Default::default(), Split::Train).subset(128));
    let loader = Loader::new(train, data.train_loader(32, 0), device.clone())?;
    for batch in loader.epoch(1, 0) {
        let batch = batch?;
        engine.train_step(&batch.images, &batch.labels, 0.05)?;
    }

    checkpoint::export_backbone(engine.store(), &dir.join("backbone.safetensors"))?;
    let test = Arc::new(synthetic::generate(&Default::default(), Split::Test).subset(16));
    let eval = Loader::new(test, data.eval_loader(16), device)?;
    let batch = eval
        .epoch(1, 0)
        .next()
        .ok_or_else(|| anyhow::anyhow!("no test batch"))??;
    let logits = engine.net().forward(&batch.images, false)?;
    candle_core::safetensors::save(
        &[
            ("images".to_string(), batch.images),
            ("logits".to_string(), logits),
        ]
        .into_iter()
        .collect(),
        dir.join("probe.safetensors"),
    )?;
    println!(
        "wrote {} and {}",
        dir.join("backbone.safetensors").display(),
        dir.join("probe.safetensors").display()
    );
    Ok(())
}
