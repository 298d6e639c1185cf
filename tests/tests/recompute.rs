//! Activation checkpointing (`--recompute`): the same gradients and step as the plain pass,
//! bit for bit, with a lower heap peak. One test in its own binary, so that no other test
//! allocates while the heap peak is measured.

mod common;

use auglocal_core::{Engine, Method};
use candle_core::{DType, Device, Tensor};

type Gradients = Vec<Vec<(String, Vec<f32>)>>;

/// One step of `engine`, returning each module's gradients and the heap peak above what was
/// live before the step.
fn step(
    engine: &mut Engine,
    images: &Tensor,
    labels: &Tensor,
) -> anyhow::Result<(Gradients, usize)> {
    let params: Vec<Vec<(String, candle_core::Var)>> = (0..engine.module_count())
        .map(|m| {
            engine
                .module_entries(m..m + 1)
                .into_iter()
                .filter(|e| e.role == auglocal_core::params::Role::Param)
                .map(|e| (e.name, e.var))
                .collect()
        })
        .collect();
    let mut gradients: Gradients = vec![Vec::new(); params.len()];
    let mut failure = None;
    let before = auglocal_cli::heap::reset_peak();
    engine.train_step_observed(images, labels, 0.05, &mut |m, grads| {
        for (name, var) in &params[m] {
            let g = grads
                .get(var.as_tensor())
                .map(|g| g.flatten_all()?.to_vec1::<f32>());
            match g {
                Some(Ok(values)) => gradients[m].push((name.clone(), values)),
                Some(Err(error)) => failure = Some(error),
                None => {}
            }
        }
    })?;
    let peak = auglocal_cli::heap::peak_bytes() - before;
    if let Some(error) = failure {
        return Err(error.into());
    }
    Ok((gradients, peak))
}

fn tensors(engine: &Engine) -> anyhow::Result<Vec<(String, Vec<f64>)>> {
    engine
        .store()
        .entries()
        .into_iter()
        .map(|e| {
            let values = e.var.as_tensor().flatten_all()?.to_dtype(DType::F64)?;
            Ok((e.name, values.to_vec1::<f64>()?))
        })
        .collect()
}

#[test]
fn recompute_takes_the_plain_step_bit_for_bit_with_a_lower_peak() -> anyhow::Result<()> {
    let device = Device::Cpu;
    let images = Tensor::randn(0f32, 1.0, (16, 3, 32, 32), &device)?;
    let labels = Tensor::from_vec((0..16u32).map(|i| i % 10).collect::<Vec<_>>(), 16, &device)?;
    for (method, model) in [
        (Method::named("bp")?, "resnet32"),
        (Method::auglocal(2, 0.5)?, "resnet20"),
    ] {
        let mut plain = common::engine(&device, model, method, 7)?;
        let mut recomputed = common::engine(&device, model, method, 7)?;
        recomputed.set_recompute(true);
        let mut peaks = (0, 0);
        for s in 0..2 {
            let (g_plain, peak_plain) = step(&mut plain, &images, &labels)?;
            let (g_recomputed, peak_recomputed) = step(&mut recomputed, &images, &labels)?;
            let count: usize = g_plain.iter().map(Vec::len).sum();
            assert!(count > 0 && g_plain.iter().all(|m| !m.is_empty()));
            assert!(
                g_plain == g_recomputed,
                "{} step {s}: gradients differ",
                method.name()
            );
            peaks = (peak_plain, peak_recomputed);
        }
        // Weights, BatchNorm averages and counters: BatchNorm moved once per step.
        assert!(
            tensors(&plain)? == tensors(&recomputed)?,
            "{}: tensors differ after two steps",
            method.name()
        );
        eprintln!(
            "{} {model}, batch 16: heap peak of a step {:.1} MiB plain, {:.1} MiB recomputed",
            method.name(),
            peaks.0 as f64 / (1 << 20) as f64,
            peaks.1 as f64 / (1 << 20) as f64
        );
        if method.name() == "bp" {
            assert!(
                (peaks.1 as f64) < 0.7 * peaks.0 as f64,
                "recompute peak {} not below 0.7 x plain {}",
                peaks.1,
                peaks.0
            );
        }
    }
    Ok(())
}
