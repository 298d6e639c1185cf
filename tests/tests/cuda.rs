//! The CUDA backend against the CPU: cuDNN convolutions and BatchNorm (forward, both
//! gradients, running averages, inference), whole training steps in f32 and bf16, and the
//! device memory counters.
//!
//! Compiled only with the `cuda` feature (`cargo test -p auglocal-tests --features cudnn
//! --test cuda`); there it needs a GPU and fails without one. f32 convolutions may use TF32
//! tensor cores (as PyTorch's do by default), so values agree to about 1e-3 relative. The
//! tests take turns on the GPU: the memory counters are per device.

#![cfg(feature = "cuda")]

mod common;

use std::sync::{Mutex, MutexGuard};

use auglocal_core::nn::{BatchNorm2d, Conv2d};
use auglocal_core::{memory, Engine, Method, ParamBuilder, ParamStore, Precision};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::ModuleT;

static GPU_TURN: Mutex<()> = Mutex::new(());

/// The GPU, held by the calling test until the guard drops.
fn gpu() -> anyhow::Result<(MutexGuard<'static, ()>, Device)> {
    let turn = GPU_TURN.lock().unwrap_or_else(|e| e.into_inner());
    Ok((turn, Device::new_cuda(0)?))
}

/// max |a - b| / max |a|, on the host in f32.
fn relative_gap(a: &Tensor, b: &Tensor) -> anyhow::Result<f32> {
    let a = a
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .flatten_all()?;
    let b = b
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .flatten_all()?;
    let gap = (&a - &b)?.abs()?.max(0)?.to_scalar::<f32>()?;
    let scale = a.abs()?.max(0)?.to_scalar::<f32>()?.max(1e-6);
    Ok(gap / scale)
}

fn assert_close(what: &str, a: &Tensor, b: &Tensor, tolerance: f32) -> anyhow::Result<()> {
    assert_eq!(a.dims(), b.dims(), "{what}");
    let gap = relative_gap(a, b)?;
    assert!(
        gap < tolerance,
        "{what}: relative gap {gap} (tolerance {tolerance})"
    );
    Ok(())
}

/// (y, dx, dw) of a convolution on `device` for loss = sum(y * r).
fn conv_pass(
    device: &Device,
    shape: (usize, usize, usize, usize, usize, usize, usize),
    x: &Tensor,
    r: &Tensor,
) -> anyhow::Result<(Tensor, Tensor, Tensor)> {
    let (c_in, c_out, k, stride, padding, groups, _) = shape;
    let store = ParamStore::new();
    let pb = ParamBuilder::new(&store, device, 5);
    let conv = Conv2d::grouped(c_in, c_out, k, stride, padding, groups, &pb)?;
    let x = Var::from_tensor(&x.to_device(device)?)?;
    let y = conv.forward_t(x.as_tensor(), true)?;
    let loss = (&y * r.to_device(device)?)?.sum_all()?;
    let grads = loss.backward()?;
    let dx = grads.get(x.as_tensor()).expect("input gradient").clone();
    let dw = grads.get(conv.weight()).expect("weight gradient").clone();
    Ok((y, dx, dw))
}

#[test]
fn convolutions_match_the_cpu() -> anyhow::Result<()> {
    let (_turn, gpu) = gpu()?;
    // (C_in, C_out, k, stride, padding, groups, side): every kind the models use.
    for shape in [
        (3, 16, 3, 1, 1, 1, 32),
        (16, 32, 3, 2, 1, 1, 32),
        (32, 64, 1, 2, 0, 1, 16),
        (64, 64, 1, 1, 0, 1, 8),
        (3, 64, 7, 2, 3, 1, 64),
        (96, 96, 3, 1, 1, 96, 16),
        (144, 144, 3, 2, 1, 144, 16),
        (32, 64, 3, 1, 1, 4, 8),
    ] {
        let (c_in, c_out, k, stride, padding, _, side) = shape;
        let out = (side + 2 * padding - k) / stride + 1;
        let x = Tensor::randn(0f32, 1.0, (4, c_in, side, side), &Device::Cpu)?;
        let r = Tensor::randn(0f32, 1.0, (4, c_out, out, out), &Device::Cpu)?;
        let cpu = conv_pass(&Device::Cpu, shape, &x, &r)?;
        let cuda = conv_pass(&gpu, shape, &x, &r)?;
        assert_close(&format!("{shape:?} forward"), &cpu.0, &cuda.0, 5e-3)?;
        assert_close(&format!("{shape:?} input gradient"), &cpu.1, &cuda.1, 5e-3)?;
        assert_close(&format!("{shape:?} weight gradient"), &cpu.2, &cuda.2, 5e-3)?;
    }
    Ok(())
}

/// BatchNorm on `device`: training output, dx, dw, db for loss = sum(y * r), the running
/// averages after the batch, and the inference output after it.
fn batch_norm_pass(device: &Device, x: &Tensor, r: &Tensor) -> anyhow::Result<Vec<Tensor>> {
    let c = x.dim(1)?;
    let store = ParamStore::new();
    let pb = ParamBuilder::new(&store, device, 5);
    let bn = BatchNorm2d::new(c, &pb)?;
    // Weights away from 1 and 0, so that a swapped gradient would show.
    let entry = |name: &str| {
        store
            .entries()
            .into_iter()
            .find(|e| e.name == name)
            .expect("batch norm tensor")
    };
    let ramp = Tensor::arange(0f32, c as f32, &Device::Cpu)?;
    entry("weight")
        .var
        .set(&ramp.affine(0.1, 0.5)?.to_device(device)?)?;
    entry("bias")
        .var
        .set(&ramp.affine(-0.05, 0.0)?.to_device(device)?)?;
    let x = Var::from_tensor(&x.to_device(device)?)?;
    let y = bn.forward_t(x.as_tensor(), true)?;
    let grads = (&y * r.to_device(device)?)?.sum_all()?.backward()?;
    let grad = |t: &Tensor| grads.get(t).expect("gradient").clone();
    let eval = bn.forward_t(x.as_tensor(), false)?;
    Ok(vec![
        y,
        grad(x.as_tensor()),
        grad(entry("weight").var.as_tensor()),
        grad(entry("bias").var.as_tensor()),
        entry("running_mean").var.as_tensor().clone(),
        entry("running_var").var.as_tensor().clone(),
        entry("num_batches_tracked")
            .var
            .as_tensor()
            .to_dtype(DType::F32)?,
        eval,
    ])
}

#[test]
fn batch_norm_matches_the_cpu() -> anyhow::Result<()> {
    let (_turn, gpu) = gpu()?;
    for (n, c, side) in [(8, 16, 32), (4, 64, 8), (32, 10, 1)] {
        let x = (Tensor::randn(0f32, 2.0, (n, c, side, side), &Device::Cpu)? + 0.7)?;
        let r = Tensor::randn(0f32, 1.0, (n, c, side, side), &Device::Cpu)?;
        let cpu = batch_norm_pass(&Device::Cpu, &x, &r)?;
        let cuda = batch_norm_pass(&gpu, &x, &r)?;
        let names = [
            "output",
            "dx",
            "dw",
            "db",
            "running mean",
            "running var",
            "batches",
            "eval",
        ];
        for ((name, a), b) in names.iter().zip(&cpu).zip(&cuda) {
            assert_close(&format!("({n}, {c}, {side}) {name}"), a, b, 1e-4)?;
        }
    }
    Ok(())
}

fn engine(device: &Device, method: Method, precision: Precision) -> anyhow::Result<Engine> {
    let mut engine = common::engine(device, "resnet20", method, 7)?;
    engine.set_precision(precision);
    Ok(engine)
}

/// One step on the CPU and one on the GPU from the same weights and batch: the losses and
/// every tensor afterwards (weights, running averages) agree.
#[test]
fn a_training_step_on_the_gpu_equals_the_cpu_step() -> anyhow::Result<()> {
    let (_turn, gpu) = gpu()?;
    let images = Tensor::randn(0f32, 1.0, (32, 3, 32, 32), &Device::Cpu)?;
    let labels = Tensor::from_vec((0..32u32).map(|i| i % 10).collect(), 32, &Device::Cpu)?;
    let methods = [Method::named("bp")?, Method::auglocal(2, 0.5)?];
    for method in methods {
        let mut cpu = engine(&Device::Cpu, method, Precision::F32)?;
        let mut cuda = engine(&gpu, method, Precision::F32)?;
        let before: Vec<Tensor> = cpu
            .store()
            .entries()
            .iter()
            .map(|e| e.var.as_tensor().copy())
            .collect::<candle_core::Result<_>>()?;
        let a = cpu.train_step(&images, &labels, 0.1)?;
        let b = cuda.train_step(&images.to_device(&gpu)?, &labels.to_device(&gpu)?, 0.1)?;
        for (la, lb) in a.module_losses.iter().zip(&b.module_losses) {
            assert!(
                (la - lb).abs() < 2e-3 * la.abs(),
                "{method:?}: loss {la} vs {lb}"
            );
        }
        // TF32 rounding may flip a near-tied prediction or two.
        assert!(
            a.correct.abs_diff(b.correct) <= 2,
            "{method:?}: {} vs {} correct",
            a.correct,
            b.correct
        );
        let entries = cpu
            .store()
            .entries()
            .into_iter()
            .zip(cuda.store().entries());
        for ((ea, eb), start) in entries.zip(&before) {
            assert_eq!(ea.name, eb.name);
            let (ta, tb) = (ea.var.as_tensor(), eb.var.as_tensor());
            assert_close(&ea.name, ta, tb, 1e-3)?;
            // What the step changed, compared on its own scale (zero-initialised tensors
            // such as BatchNorm biases hold nothing else).
            let (ua, ub) = ((ta - start)?, (tb.to_device(&Device::Cpu)? - start)?);
            assert_close(&format!("{} update", ea.name), &ua, &ub, 1e-2)?;
        }
        // bf16 on the GPU follows the f32 step to bf16's precision.
        let mut mixed = engine(&gpu, method, Precision::Bf16)?;
        let c = mixed.train_step(&images.to_device(&gpu)?, &labels.to_device(&gpu)?, 0.1)?;
        for (la, lc) in a.module_losses.iter().zip(&c.module_losses) {
            assert!(
                (la - lc).abs() < 0.02,
                "{method:?}: f32 loss {la} vs bf16 {lc}"
            );
        }
    }
    Ok(())
}

#[test]
fn device_memory_counts_live_tensors() -> anyhow::Result<()> {
    let (_turn, gpu) = gpu()?;
    let Some(start) = memory::device_memory(&gpu) else {
        panic!("this GPU reports no memory pool counters");
    };
    let mib = 1 << 20;
    let big = Tensor::zeros((64, mib / 4), DType::F32, &gpu)?; // 64 MiB
    gpu.synchronize()?;
    let held = memory::device_memory(&gpu).expect("counters");
    assert!(
        held.in_use >= start.in_use + 64 * mib as u64,
        "{start:?} -> {held:?}"
    );
    assert!(held.peak >= held.in_use);
    drop(big);
    gpu.synchronize()?;
    assert!(memory::reset_device_peak(&gpu));
    let after = memory::device_memory(&gpu).expect("counters");
    assert!(
        after.peak < held.in_use,
        "the peak restarts below the freed 64 MiB: {after:?}"
    );
    Ok(())
}
