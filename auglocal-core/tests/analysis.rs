//! Linear CKA and the ridge probe against hand computations and planted structure.

use auglocal_core::analysis::{linear_cka, Gram, RidgeProbe};
use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

fn randn(rng: &mut ChaCha8Rng, rows: usize, cols: usize) -> Tensor {
    let v: Vec<f32> = (0..rows * cols)
        .map(|_| rng.sample(StandardNormal))
        .collect();
    Tensor::from_vec(v, (rows, cols), &Device::Cpu).unwrap()
}

fn cka(x: &Tensor, y: &Tensor) -> f64 {
    linear_cka(&Gram::new(x).unwrap(), &Gram::new(y).unwrap()).unwrap()
}

/// An orthogonal matrix: the Householder reflection I - 2 v v^T / |v|^2.
fn householder(rng: &mut ChaCha8Rng, p: usize) -> Tensor {
    let v: Vec<f64> = (0..p).map(|_| rng.sample(StandardNormal)).collect();
    let norm2: f64 = v.iter().map(|a| a * a).sum();
    let mut q = vec![0f32; p * p];
    for i in 0..p {
        for j in 0..p {
            let identity = if i == j { 1.0 } else { 0.0 };
            q[i * p + j] = (identity - 2.0 * v[i] * v[j] / norm2) as f32;
        }
    }
    Tensor::from_vec(q, (p, p), &Device::Cpu).unwrap()
}

#[test]
fn cka_of_a_representation_with_itself_is_one() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let x = randn(&mut rng, 40, 12);
    assert!((cka(&x, &x) - 1.0).abs() < 1e-6);
}

#[test]
fn cka_ignores_rotations_and_isotropic_scaling() -> anyhow::Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let x = randn(&mut rng, 50, 16);
    let y = randn(&mut rng, 50, 9);
    let q = householder(&mut rng, 16);
    // Q is orthogonal: Q Q^T = I.
    let qqt: Vec<f32> = q.matmul(&q.t()?)?.flatten_all()?.to_vec1()?;
    for (k, v) in qqt.iter().enumerate() {
        let identity = if k % 17 == 0 { 1.0 } else { 0.0 };
        assert!((v - identity).abs() < 1e-5, "Q Q^T[{k}] = {v}");
    }
    let rotated = x.matmul(&q)?;
    let scaled = (&x * 3.7)?;
    assert!((cka(&x, &rotated) - 1.0).abs() < 1e-5);
    assert!((cka(&x, &scaled) - 1.0).abs() < 1e-5);
    let base = cka(&x, &y);
    assert!((cka(&rotated, &y) - base).abs() < 1e-5);
    assert!((cka(&scaled, &(&y * 0.01)?) - base).abs() < 1e-5);
    // Unrelated random features are far from identical.
    assert!(base < 0.9, "CKA of independent features {base}");
    Ok(())
}

#[test]
fn cka_by_hand() -> anyhow::Result<()> {
    // Centered x = (-1, 0, 1), y = (0, -1, 1): <xx^T, yy^T> = (x.y)^2 = 1, |xx^T| = |x|^2 = 2,
    // |yy^T| = 2, so CKA = 1 / 4.
    let x = Tensor::new(&[[1f32], [2.], [3.]], &Device::Cpu)?;
    let y = Tensor::new(&[[1f32], [0.], [2.]], &Device::Cpu)?;
    assert!((cka(&x, &y) - 0.25).abs() < 1e-9);
    // A constant representation carries nothing: 0, not a division by zero.
    let constant = Tensor::new(&[[5f32], [5.], [5.]], &Device::Cpu)?;
    assert_eq!(cka(&x, &constant), 0.0);
    let four = Gram::new(&Tensor::zeros(
        (4, 2),
        candle_core::DType::F32,
        &Device::Cpu,
    )?)?;
    assert_eq!(linear_cka(&Gram::new(&x)?, &four), None);
    Ok(())
}

/// Features `class mean + noise` (a planted linear signal) or pure noise, with labels.
fn planted(rng: &mut ChaCha8Rng, means: &[Vec<f32>], n: usize, signal: bool) -> (Tensor, Vec<u32>) {
    let (k, p) = (means.len(), means[0].len());
    let labels: Vec<u32> = (0..n).map(|i| (i % k) as u32).collect();
    let mut x = Vec::with_capacity(n * p);
    for &l in &labels {
        for m in &means[l as usize] {
            let noise: f32 = rng.sample(StandardNormal);
            x.push(if signal { m + 0.7 * noise } else { noise });
        }
    }
    (Tensor::from_vec(x, (n, p), &Device::Cpu).unwrap(), labels)
}

#[test]
fn probe_finds_a_planted_linear_signal_and_nothing_in_noise() -> anyhow::Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let (k, p) = (4, 20);
    let means: Vec<Vec<f32>> = (0..k)
        .map(|_| {
            (0..p)
                .map(|_| rng.sample::<f32, _>(StandardNormal))
                .collect()
        })
        .collect();
    let (xtr, ytr) = planted(&mut rng, &means, 400, true);
    let (xte, yte) = planted(&mut rng, &means, 200, true);
    let probe = RidgeProbe::fit(&xtr, &ytr, k, 1e-3)?;
    let (train, test) = (probe.accuracy(&xtr, &ytr)?, probe.accuracy(&xte, &yte)?);
    assert!(train >= 0.98 && test >= 0.95, "train {train}, test {test}");

    let (ntr, nytr) = planted(&mut rng, &means, 400, false);
    let (nte, nyte) = planted(&mut rng, &means, 200, false);
    let probe = RidgeProbe::fit(&ntr, &nytr, k, 1e-3)?;
    let test = probe.accuracy(&nte, &nyte)?;
    // Chance is 25%; 200 test images put 40% far outside it.
    assert!(test < 0.4, "noise test accuracy {test}");
    Ok(())
}

#[test]
fn probe_separates_a_threshold_and_rejects_bad_input() -> anyhow::Result<()> {
    // One feature, a constant one (ignored, not a division by zero) and a threshold at 1.5.
    let x = Tensor::new(&[[0f32, 7.], [1., 7.], [2., 7.], [3., 7.]], &Device::Cpu)?;
    let labels = [0, 0, 1, 1];
    let probe = RidgeProbe::fit(&x, &labels, 2, 1e-3)?;
    assert_eq!(probe.predict(&x)?, vec![0, 0, 1, 1]);
    assert_eq!(
        probe.predict(&Tensor::new(&[[-5f32, 7.], [9., 7.]], &Device::Cpu)?)?,
        vec![0, 1]
    );

    let err = RidgeProbe::fit(&x, &[0, 0, 1], 2, 1e-3)
        .unwrap_err()
        .to_string();
    assert!(err.contains("4 feature rows for 3 labels"), "{err}");
    let err = RidgeProbe::fit(&x, &[0, 0, 1, 5], 2, 1e-3)
        .unwrap_err()
        .to_string();
    assert!(err.contains("probe label") && err.contains("5"), "{err}");
    let err = RidgeProbe::fit(&x, &labels, 2, 0.0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("ridge strength"), "{err}");
    Ok(())
}
