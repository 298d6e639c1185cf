//! Optimizer, BatchNorm, schedules and initialisation against hand computations.

use auglocal_core::nn::{BatchNorm2d, Conv2d, Linear};
use auglocal_core::params::{Init, ParamBuilder, ParamStore, Role};
use auglocal_core::{Optimizer, Schedule, Sgd, SgdConfig};
use candle_core::{DType, Device, Tensor};
use candle_nn::ModuleT;

/// The values of tensor `name` of `store`, flattened.
fn values(store: &ParamStore, name: &str) -> anyhow::Result<Vec<f32>> {
    let entry = store
        .get(name)
        .ok_or_else(|| anyhow::anyhow!("no tensor {name}"))?;
    Ok(entry.var.as_tensor().flatten_all()?.to_vec1::<f32>()?)
}

fn close(a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= tol, "{a:?} != {b:?}");
    }
}

#[test]
fn sgd_nesterov_two_steps_match_hand_computation() -> anyhow::Result<()> {
    let store = ParamStore::new();
    let pb = ParamBuilder::new(&store, &Device::Cpu, 0);
    let p = pb.param("p", &[2], Init::Const(0.0))?;
    p.set(&Tensor::new(&[1.0f32, -2.0], &Device::Cpu)?)?;
    let buffer = pb.buffer("running", &Tensor::new(&[7.0f32], &Device::Cpu)?)?;
    let c = Tensor::new(&[0.5f32, 1.0], &Device::Cpu)?;
    let mut sgd = Sgd::new(SgdConfig {
        momentum: 0.9,
        nesterov: true,
        weight_decay: 0.1,
    })?;
    let entries = store.entries();
    // loss = sum(p * c): gradient c.
    // Step 1: g = c + 0.1 p = [0.6, 0.8]; buf = g; g + 0.9 buf = [1.14, 1.52];
    //         p = p - 0.5 [1.14, 1.52] = [0.43, -2.76].
    let grads = (p.as_tensor() * &c)?.sum_all()?.backward()?;
    sgd.step(&entries, &grads, 0.5)?;
    close(&p.as_tensor().to_vec1::<f32>()?, &[0.43, -2.76], 1e-6);
    // Step 2: g = c + 0.1 p = [0.543, 0.724]; buf = 0.9 [0.6, 0.8] + g = [1.083, 1.444];
    //         g + 0.9 buf = [1.5177, 2.0236]; p = [0.43 - 0.75885, -2.76 - 1.0118].
    let grads = (p.as_tensor() * &c)?.sum_all()?.backward()?;
    sgd.step(&entries, &grads, 0.5)?;
    close(&p.as_tensor().to_vec1::<f32>()?, &[-0.32885, -3.7718], 1e-5);
    close(&sgd.state()["p"].to_vec1::<f32>()?, &[1.083, 1.444], 1e-6);
    // Buffers are never decayed or stepped.
    assert_eq!(buffer.as_tensor().to_vec1::<f32>()?, vec![7.0]);
    assert_eq!(entries.iter().filter(|e| e.role == Role::Buffer).count(), 1);
    Ok(())
}

#[test]
fn sgd_plain_momentum_and_skipped_parameters() -> anyhow::Result<()> {
    let store = ParamStore::new();
    let pb = ParamBuilder::new(&store, &Device::Cpu, 0);
    let p = pb.param("p", &[1], Init::Const(1.0))?;
    let untouched = pb.param("q", &[1], Init::Const(3.0))?;
    let mut sgd = Sgd::new(SgdConfig {
        momentum: 0.5,
        nesterov: false,
        weight_decay: 0.0,
    })?;
    let entries = store.entries();
    for _ in 0..2 {
        let grads = (p.as_tensor() * 2.0)?.sum_all()?.backward()?;
        sgd.step(&entries, &grads, 0.1)?;
    }
    // buf1 = 2, p = 0.8; buf2 = 0.5*2 + 2 = 3, p = 0.8 - 0.3 = 0.5.
    close(&p.as_tensor().to_vec1::<f32>()?, &[0.5], 1e-6);
    // No gradient: no update and no weight decay, as PyTorch skips a None grad.
    assert_eq!(untouched.as_tensor().to_vec1::<f32>()?, vec![3.0]);
    assert!(!sgd.state().contains_key("q"));
    Ok(())
}

#[test]
fn sgd_rejects_bad_settings() {
    let err = Sgd::new(SgdConfig {
        momentum: 1.5,
        nesterov: true,
        weight_decay: 0.0,
    })
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid momentum: 1.5 (valid: a number in [0, 1))"
    );
}

#[test]
fn batch_norm_train_and_eval_match_hand_computation() -> anyhow::Result<()> {
    let store = ParamStore::new();
    let pb = ParamBuilder::new(&store, &Device::Cpu, 0);
    let bn = BatchNorm2d::new(1, &pb.pp("bn"))?;
    store
        .get("bn.weight")
        .unwrap()
        .var
        .set(&Tensor::new(&[2.0f32], &Device::Cpu)?)?;
    store
        .get("bn.bias")
        .unwrap()
        .var
        .set(&Tensor::new(&[0.5f32], &Device::Cpu)?)?;
    let x = Tensor::new(&[1.0f32, 2.0, 3.0, 4.0], &Device::Cpu)?.reshape((2, 1, 1, 2))?;

    // Batch mean 2.5, biased variance 1.25.
    let y = bn.forward_t(&x, true)?.flatten_all()?.to_vec1::<f32>()?;
    let s = (1.25f32 + 1e-5).sqrt();
    close(
        &y,
        &[
            -1.5 / s * 2.0 + 0.5,
            -0.5 / s * 2.0 + 0.5,
            0.5 / s * 2.0 + 0.5,
            1.5 / s * 2.0 + 0.5,
        ],
        1e-5,
    );
    // Running statistics: momentum 0.1, unbiased variance 1.25 * 4/3.
    let rm = values(&store, "bn.running_mean")?;
    let rv = values(&store, "bn.running_var")?;
    close(&rm, &[0.25], 1e-6);
    close(&rv, &[0.9 + 0.1 * 1.25 * 4.0 / 3.0], 1e-6);
    let tracked = store
        .get("bn.num_batches_tracked")
        .unwrap()
        .var
        .as_tensor()
        .to_scalar::<i64>()?;
    assert_eq!(tracked, 1);

    // Inference uses the running statistics and leaves them alone.
    let y = bn.forward_t(&x, false)?.flatten_all()?.to_vec1::<f32>()?;
    let s = (rv[0] + 1e-5).sqrt();
    let expected: Vec<f32> = [1.0f32, 2.0, 3.0, 4.0]
        .iter()
        .map(|v| (v - 0.25) / s * 2.0 + 0.5)
        .collect();
    close(&y, &expected, 1e-5);
    let rm_after = values(&store, "bn.running_mean")?;
    assert_eq!(rm_after, rm);
    Ok(())
}

#[test]
fn batch_norm_gradient_matches_finite_differences() -> anyhow::Result<()> {
    let store = ParamStore::new();
    let pb = ParamBuilder::new(&store, &Device::Cpu, 0);
    let bn = BatchNorm2d::new(2, &pb.pp("bn"))?;
    let x = candle_core::Var::from_tensor(
        &Tensor::new(
            &[
                0.3f32, -1.2, 2.0, 0.7, 1.1, -0.4, 0.9, 0.2, -0.8, 1.5, 0.1, -2.0,
            ],
            &Device::Cpu,
        )?
        .reshape((3, 2, 1, 2))?,
    )?;
    let w = Tensor::new(
        &[
            1.0f32, -0.5, 2.0, 0.3, 0.7, -1.1, 0.4, 0.9, -0.2, 1.3, 0.6, -0.7,
        ],
        &Device::Cpu,
    )?
    .reshape((3, 2, 1, 2))?;
    let loss = |x: &Tensor| -> anyhow::Result<f32> {
        Ok((bn.forward_t(x, true)? * &w)?
            .sum_all()?
            .to_scalar::<f32>()?)
    };
    let grads = (bn.forward_t(x.as_tensor(), true)? * &w)?
        .sum_all()?
        .backward()?;
    let analytic = grads
        .get(x.as_tensor())
        .unwrap()
        .flatten_all()?
        .to_vec1::<f32>()?;
    let base = x.as_tensor().flatten_all()?.to_vec1::<f32>()?;
    let h = 1e-2f32;
    for i in 0..base.len() {
        let mut plus = base.clone();
        plus[i] += h;
        let mut minus = base.clone();
        minus[i] -= h;
        let fp = loss(&Tensor::from_vec(plus, (3, 2, 1, 2), &Device::Cpu)?)?;
        let fm = loss(&Tensor::from_vec(minus, (3, 2, 1, 2), &Device::Cpu)?)?;
        let numeric = (fp - fm) / (2.0 * h);
        assert!(
            (numeric - analytic[i]).abs() < 2e-2,
            "element {i}: {numeric} vs {}",
            analytic[i]
        );
    }
    Ok(())
}

#[test]
fn warmup_cosine_follows_the_spec_formula() {
    let s = Schedule::PAPER;
    // Epoch 1 starts at 0.01 whatever lr0.
    assert!((s.lr(0.8, 1, 400) - 0.01).abs() < 1e-12);
    // Epoch 5 of 400: 0.5*0.8*(1+cos(pi*5/400))*4/10 + 0.01*6/10.
    let e5 = 0.5 * 0.8 * (1.0 + (std::f64::consts::PI * 5.0 / 400.0).cos()) * 0.4 + 0.006;
    assert!((s.lr(0.8, 5, 400) - e5).abs() < 1e-12);
    // From epoch 11 on: plain cosine.
    let e11 = 0.5 * 0.8 * (1.0 + (std::f64::consts::PI * 11.0 / 400.0).cos());
    assert!((s.lr(0.8, 11, 400) - e11).abs() < 1e-12);
    assert!(s.lr(0.8, 400, 400).abs() < 1e-12);
}

#[test]
fn the_warm_up_length_is_a_setting() {
    // 4 warm-up epochs: epoch 3 of 20 = cosine(3) * 2/4 + 0.01 * 2/4.
    let s = Schedule::parse("warmup-cosine:4").unwrap();
    assert_eq!(s, Schedule::WarmupCosine { warmup: 4 });
    assert_eq!(s.warmup_epochs(), 4);
    let cosine = |e: f64| 0.5 * 0.8 * (1.0 + (std::f64::consts::PI * e / 20.0).cos());
    assert!((s.lr(0.8, 3, 20) - (cosine(3.0) * 0.5 + 0.005)).abs() < 1e-12);
    assert!((s.lr(0.8, 5, 20) - cosine(5.0)).abs() < 1e-12);
    // 0: no warm-up at all, the cosine from epoch 1.
    let none = Schedule::WarmupCosine { warmup: 0 };
    assert!((none.lr(0.8, 1, 20) - cosine(1.0)).abs() < 1e-12);
    // Written as read; the paper's 10 keeps its old name, so old runs read the same.
    assert_eq!(s.to_string(), "warmup-cosine:4");
    assert_eq!(Schedule::PAPER.to_string(), "warmup-cosine");
    assert_eq!(Schedule::parse("warmup-cosine").unwrap(), Schedule::PAPER);
    assert!(Schedule::parse("warmup-cosine:x").is_err());
}

#[test]
fn other_schedules() {
    assert_eq!(Schedule::Cosine.lr(0.1, 1, 10), 0.1);
    assert!((Schedule::Cosine.lr(0.1, 6, 10) - 0.05).abs() < 1e-12);
    let step = Schedule::parse("step:150,225").unwrap();
    assert_eq!(
        step,
        Schedule::Step {
            milestones: vec![150, 225]
        }
    );
    assert_eq!(step.lr(0.1, 149, 300), 0.1);
    assert!((step.lr(0.1, 150, 300) - 0.01).abs() < 1e-12);
    assert!((step.lr(0.1, 300, 300) - 0.001).abs() < 1e-12);
    assert_eq!(Schedule::Constant.lr(0.3, 7, 10), 0.3);
    assert_eq!(step.to_string(), "step:150,225");
    let err = Schedule::parse("linear").unwrap_err().to_string();
    assert!(
        err.contains("invalid schedule: linear (valid: warmup-cosine, warmup-cosine:N (N warm-up epochs), cosine, constant, or step:"),
        "{err}"
    );
}

#[test]
fn initialisation_follows_the_reference() -> anyhow::Result<()> {
    let store = ParamStore::new();
    let pb = ParamBuilder::new(&store, &Device::Cpu, 7);
    Conv2d::new(64, 64, 3, 1, 1, &pb.pp("conv"))?;
    Linear::new(64, 10, true, &pb.pp("fc"))?;
    BatchNorm2d::new(64, &pb.pp("bn"))?;
    let w = values(&store, "conv.weight")?;
    let mean = w.iter().sum::<f32>() / w.len() as f32;
    let std = (w.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / w.len() as f32).sqrt();
    let want = (2.0f32 / (9.0 * 64.0)).sqrt();
    assert!((std - want).abs() < 0.03 * want, "conv std {std} vs {want}");
    assert!(mean.abs() < 0.05 * want);
    for name in ["fc.weight", "fc.bias"] {
        let v = values(&store, name)?;
        assert!(
            v.iter().all(|x| x.abs() <= 0.125),
            "{name} outside 1/sqrt(64)"
        );
    }
    assert_eq!(values(&store, "bn.weight")?, vec![1.0; 64]);
    assert_eq!(values(&store, "bn.bias")?, vec![0.0; 64]);
    assert_eq!(
        store.get("bn.num_batches_tracked").unwrap().var.dtype(),
        DType::I64
    );

    // Same seed, same weights.
    let again = ParamStore::new();
    Conv2d::new(
        64,
        64,
        3,
        1,
        1,
        &ParamBuilder::new(&again, &Device::Cpu, 7).pp("conv"),
    )?;
    let w2 = values(&again, "conv.weight")?;
    assert_eq!(w, w2);
    Ok(())
}
