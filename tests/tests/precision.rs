//! Mixed precision (`--precision bf16`): bf16 activations, f32 master weights, BatchNorm and
//! losses in f32. On the CPU the bf16 path runs the same casts as on a GPU (convolutions
//! take bf16 in and give bf16 out, accumulating in f32), so it is checked here.

mod common;

use std::collections::HashMap;

use auglocal_core::{Engine, Method, Precision};
use candle_core::{DType, Device, Tensor};

fn engine(method: Method, precision: Precision) -> anyhow::Result<Engine> {
    let mut engine = common::engine(&Device::Cpu, "resnet8", method, 11)?;
    engine.set_precision(precision);
    Ok(engine)
}

fn batch(n: usize) -> anyhow::Result<(Tensor, Tensor)> {
    let images = Tensor::randn(0f32, 1.0, (n, 3, 32, 32), &Device::Cpu)?;
    let labels: Vec<u32> = (0..n as u32).map(|i| i % 10).collect();
    Ok((images, Tensor::from_vec(labels, n, &Device::Cpu)?))
}

fn values(engine: &Engine) -> anyhow::Result<HashMap<String, (DType, Vec<f32>)>> {
    engine
        .store()
        .entries()
        .into_iter()
        .map(|e| {
            let t = e.var.as_tensor();
            Ok((
                e.name.clone(),
                (
                    t.dtype(),
                    t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?,
                ),
            ))
        })
        .collect()
}

#[test]
fn a_bf16_step_follows_the_f32_step_and_keeps_f32_masters() -> anyhow::Result<()> {
    let mut full = engine(Method::auglocal(2, 0.5)?, Precision::F32)?;
    let mut mixed = engine(Method::auglocal(2, 0.5)?, Precision::Bf16)?;
    let before = values(&full)?;
    assert_eq!(before, values(&mixed)?, "same seed, same initial weights");
    let (images, labels) = batch(16)?;

    let a = full.train_step(&images, &labels, 0.1)?;
    let b = mixed.train_step(&images, &labels, 0.1)?;
    assert_eq!(a.module_losses.len(), 2);
    for (fa, fb) in a.module_losses.iter().zip(&b.module_losses) {
        // bf16 keeps 8 bits of mantissa: a loss near 2.3 moves by a few hundredths at most.
        assert!((fa - fb).abs() < 0.01, "f32 loss {fa} vs bf16 loss {fb}");
    }

    let after_full = values(&full)?;
    let after_mixed = values(&mixed)?;
    let (mut dot, mut norm_a, mut norm_b) = (0f64, 0f64, 0f64);
    for (name, (dtype, start)) in &before {
        let (dtype_a, va) = &after_full[name];
        let (dtype_b, vb) = &after_mixed[name];
        // Master weights, running averages and the batch counter keep their types.
        assert_eq!((dtype_a, dtype_b), (dtype, dtype), "{name}");
        if *dtype != DType::F32 {
            assert_eq!(va, vb, "{name}");
            continue;
        }
        for ((s, x), y) in start.iter().zip(va).zip(vb) {
            let (da, db) = ((x - s) as f64, (y - s) as f64);
            dot += da * db;
            norm_a += da * da;
            norm_b += db * db;
        }
    }
    // The whole update (every parameter and running average) points the same way.
    let cosine = dot / (norm_a.sqrt() * norm_b.sqrt());
    eprintln!(
        "f32 vs bf16: losses {:?} vs {:?}, update cosine {cosine:.5}",
        a.module_losses, b.module_losses
    );
    assert!(
        cosine > 0.999,
        "cosine between f32 and bf16 updates: {cosine}"
    );
    assert!(norm_b > 0.0);
    let tracked = &after_mixed["bn1.num_batches_tracked"];
    assert_eq!(tracked.0, DType::I64);
    assert_eq!(tracked.1, vec![1.0]);

    // Activations really are bf16: a module's output keeps the input's type.
    let h = mixed.module_forward(0, &images.to_dtype(DType::BF16)?)?;
    assert_eq!(h.dtype(), DType::BF16);
    Ok(())
}

#[test]
fn bf16_training_lowers_the_loss() -> anyhow::Result<()> {
    let mut mixed = engine(Method::named("bp")?, Precision::Bf16)?;
    let (images, labels) = batch(20)?;
    let first = mixed.train_step(&images, &labels, 0.05)?.loss;
    let mut last = first;
    for _ in 0..7 {
        last = mixed.train_step(&images, &labels, 0.05)?.loss;
    }
    assert!(last < first - 0.3, "bf16 loss went from {first} to {last}");
    let eval = mixed.eval_batch(&images, &labels)?;
    assert_eq!(eval.images, 20);
    assert!(eval.loss_sum.is_finite());
    Ok(())
}
