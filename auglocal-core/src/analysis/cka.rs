//! Linear centered kernel alignment (Kornblith et al., ICML 2019) between two sets of
//! features of the same images: 1 for representations equal up to a rotation and a scale,
//! near 0 for unrelated ones.
//!
//! With both feature matrices centered per column, linear CKA is
//! `<K, L>_F / (|K|_F |L|_F)` for the Gram matrices `K = X X^T` and `L = Y Y^T` (N x N):
//! working on Grams compares features of any widths, and each unit's Gram is computed once
//! however many units it is compared with.

use candle_core::{DType, Tensor};

/// The centered Gram matrix of features (N, D): `Xc Xc^T` with `Xc` the column-centered
/// features, in f64.
#[derive(Debug, Clone, PartialEq)]
pub struct Gram {
    n: usize,
    values: Vec<f64>,
    norm: f64,
}

impl Gram {
    /// From features (N, D), one row per image. The product runs in f32 on the features'
    /// device; the Gram is kept in f64.
    pub fn new(features: &Tensor) -> candle_core::Result<Self> {
        let (n, _) = features.dims2()?;
        let x = features.to_dtype(DType::F32)?;
        let centered = x.broadcast_sub(&x.mean_keepdim(0)?)?;
        let gram = centered.matmul(&centered.t()?)?;
        let values: Vec<f64> = gram.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
        let norm = values.iter().map(|v| v * v).sum::<f64>().sqrt();
        Ok(Gram { n, values, norm })
    }

    /// Number of images.
    pub fn images(&self) -> usize {
        self.n
    }
}

/// Linear CKA of two Grams of the same images; 0 when either representation is constant,
/// `None` when the Grams are of different numbers of images.
pub fn linear_cka(a: &Gram, b: &Gram) -> Option<f64> {
    if a.n != b.n {
        return None;
    }
    if a.norm == 0.0 || b.norm == 0.0 {
        return Some(0.0);
    }
    let dot: f64 = a.values.iter().zip(&b.values).map(|(x, y)| x * y).sum();
    Some(dot / (a.norm * b.norm))
}
