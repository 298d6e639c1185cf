//! A linear probe: how linearly decodable the labels are from a unit's features.
//!
//! The classifier is ridge regression onto one-hot targets, solved in closed form, predicting
//! the class with the largest output. Chosen over softmax regression trained by SGD because it
//! has no learning rate, epochs or initialisation to tune per unit, gives the same answer on
//! every run, and takes milliseconds for the widths of CNN units, so a whole network is probed
//! in the time its features take to extract. Features are standardised with the training
//! set's statistics first, so one regularisation strength suits every unit.

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};

/// A fitted linear classifier: `argmax(((x - mean) / scale) W + b)`.
#[derive(Debug, Clone)]
pub struct RidgeProbe {
    mean: Tensor,
    scale: Tensor,
    weights: Tensor,
    bias: Tensor,
}

impl RidgeProbe {
    /// Fits features (N, D) to `labels` (N values below `classes`) with ridge strength
    /// `lambda` relative to the sample count (the penalty is `lambda * N * |W|^2`).
    pub fn fit(features: &Tensor, labels: &[u32], classes: usize, lambda: f64) -> Result<Self> {
        let (n, d) = features.dims2()?;
        if n != labels.len() || n == 0 {
            return Err(Error::InvalidSetting {
                setting: "probe training set",
                value: format!("{n} feature rows for {} labels", labels.len()),
                valid: "one feature row per label, at least one".into(),
            });
        }
        if let Some(&bad) = labels.iter().find(|&&l| l as usize >= classes) {
            return Err(Error::InvalidSetting {
                setting: "probe label",
                value: bad.to_string(),
                valid: format!("below the number of classes, {classes}"),
            });
        }
        if !(lambda > 0.0 && lambda.is_finite()) {
            return Err(Error::InvalidSetting {
                setting: "ridge strength",
                value: lambda.to_string(),
                valid: "a positive number (1e-3 is a good start)".into(),
            });
        }
        let x = features.to_device(&Device::Cpu)?.to_dtype(DType::F64)?;
        let mean = x.mean_keepdim(0)?;
        let centered = x.broadcast_sub(&mean)?;
        let std: Vec<f64> = centered.sqr()?.mean(0)?.sqrt()?.to_vec1()?;
        // Constant features stay zero instead of being divided by zero.
        let std = std.into_iter().map(|s| if s > 1e-12 { s } else { 1.0 });
        let scale = Tensor::from_iter(std, &Device::Cpu)?.reshape((1, d))?;
        let z = centered.broadcast_div(&scale)?;

        let mut onehot = vec![0f64; n * classes];
        for (i, &l) in labels.iter().enumerate() {
            onehot[i * classes + l as usize] = 1.0;
        }
        let y = Tensor::from_vec(onehot, (n, classes), &Device::Cpu)?;
        let y_mean = y.mean_keepdim(0)?;
        let y = y.broadcast_sub(&y_mean)?;

        let zt = z.t()?.contiguous()?;
        let mut a: Vec<f64> = zt.matmul(&z)?.flatten_all()?.to_vec1()?;
        for i in 0..d {
            a[i * d + i] += lambda * n as f64;
        }
        let b: Vec<f64> = zt.matmul(&y)?.flatten_all()?.to_vec1()?;
        let w = solve_spd(&mut a, d, b, classes);
        Ok(RidgeProbe {
            mean,
            scale,
            weights: Tensor::from_vec(w, (d, classes), &Device::Cpu)?,
            bias: y_mean,
        })
    }

    /// The predicted class of each row of `features` (N, D).
    pub fn predict(&self, features: &Tensor) -> Result<Vec<u32>> {
        let x = features.to_device(&Device::Cpu)?.to_dtype(DType::F64)?;
        let z = x.broadcast_sub(&self.mean)?.broadcast_div(&self.scale)?;
        let scores = z.matmul(&self.weights)?.broadcast_add(&self.bias)?;
        Ok(scores.argmax(1)?.to_vec1::<u32>()?)
    }

    /// Fraction of rows of `features` predicted as their label.
    pub fn accuracy(&self, features: &Tensor, labels: &[u32]) -> Result<f64> {
        let predicted = self.predict(features)?;
        let hits = predicted.iter().zip(labels).filter(|(p, l)| p == l).count();
        Ok(hits as f64 / labels.len().max(1) as f64)
    }
}

/// Solves `A X = B` for a symmetric positive definite `A` (d x d, overwritten by its Cholesky
/// factor) and `B` (d x k), by Cholesky decomposition.
fn solve_spd(a: &mut [f64], d: usize, mut b: Vec<f64>, k: usize) -> Vec<f64> {
    // A = L L^T, L stored in the lower triangle of `a`.
    for j in 0..d {
        let mut diag = a[j * d + j];
        for p in 0..j {
            diag -= a[j * d + p] * a[j * d + p];
        }
        // The ridge term keeps A positive definite; guard against rounding anyway.
        let diag = diag.max(f64::MIN_POSITIVE).sqrt();
        a[j * d + j] = diag;
        for i in j + 1..d {
            let mut v = a[i * d + j];
            for p in 0..j {
                v -= a[i * d + p] * a[j * d + p];
            }
            a[i * d + j] = v / diag;
        }
    }
    for c in 0..k {
        // Forward substitution L y = b, then back substitution L^T x = y.
        for i in 0..d {
            let mut v = b[i * k + c];
            for p in 0..i {
                v -= a[i * d + p] * b[p * k + c];
            }
            b[i * k + c] = v / a[i * d + i];
        }
        for i in (0..d).rev() {
            let mut v = b[i * k + c];
            for p in i + 1..d {
                v -= a[p * d + i] * b[p * k + c];
            }
            b[i * k + c] = v / a[i * d + i];
        }
    }
    b
}
