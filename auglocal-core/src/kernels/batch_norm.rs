//! Training-mode batch normalisation on the CPU as one fused Candle custom op (and two for
//! its backward), instead of the ~15 elementwise and reduction ops it takes in Candle.
//!
//! Input viewed as (N, C, S). Forward: per channel, mean and biased variance over N·S (rows
//! summed in f64), then y = (x - mean) / sqrt(var + eps) · w + b. Backward, with x̂ the normalised
//! input and M = N·S:
//!
//! ```text
//! dw = Σ dy·x̂     db = Σ dy     dx = w / sqrt(var + eps) / M · (M·dy - db - x̂·dw)
//! ```
//!
//! Every per-channel sum runs sequentially inside its channel, so results do not depend on
//! the thread count.

use std::mem::MaybeUninit;
use std::sync::{Arc, Mutex};

use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

use super::contiguous_f32;
use super::elementwise::relu_grad;
use crate::parallel;

/// Per-channel batch statistics of one forward pass.
#[derive(Debug, Clone)]
pub(crate) struct BatchStats {
    pub mean: Vec<f32>,
    /// Biased variance.
    pub var: Vec<f32>,
    pub inv_std: Vec<f32>,
}

/// (N, C, S) of an input (N, C, ...): S is the product of the trailing dimensions (1 for
/// (N, C)). The ops take (N, C, H, W) as it is: a reshape around them would be two more
/// nodes in Candle's graph, each accumulating an activation-sized gradient.
fn dims3(layout: &Layout) -> Result<(usize, usize, usize)> {
    match layout.dims() {
        &[n, c, ref rest @ ..] => Ok((n, c, rest.iter().product())),
        d => bail!("batch norm expects (N, C, ...), got {d:?}"),
    }
}

/// Sums `f(v)` over one channel's values `v` in a fixed order: 4 x 8 f32 lanes within a row
/// (independent chains, so the loop vectorises and is not bound by one add's latency),
/// rows added in f64.
fn channel_sum(x: &[f32], n: usize, c: usize, s: usize, ch: usize, f: impl Fn(f32) -> f32) -> f64 {
    channel_sums(x, x, n, c, s, ch, |v, _| (f(v), 0.0)).0
}

/// Sums `f(a, b)` (two sums at once) over one channel's values of `a` and `b`, in the fixed
/// order of [`channel_sum`]; compiled for AVX2 where the CPU has it ([`super::vectorised`]).
fn channel_sums(
    a: &[f32],
    b: &[f32],
    n: usize,
    c: usize,
    s: usize,
    ch: usize,
    f: impl Fn(f32, f32) -> (f32, f32),
) -> (f64, f64) {
    const WIDTH: usize = 32;
    super::vectorised(
        #[inline(always)]
        || {
            let mut total = (0f64, 0f64);
            for image in 0..n {
                let start = (image * c + ch) * s;
                let (a, b) = (&a[start..start + s], &b[start..start + s]);
                let mut first = [0f32; WIDTH];
                let mut second = [0f32; WIDTH];
                let (whole, rest) = (s / WIDTH * WIDTH, s % WIDTH);
                for (a, b) in a[..whole]
                    .chunks_exact(WIDTH)
                    .zip(b[..whole].chunks_exact(WIDTH))
                {
                    for l in 0..WIDTH {
                        let (p, q) = f(a[l], b[l]);
                        first[l] += p;
                        second[l] += q;
                    }
                }
                for l in 0..rest {
                    let (p, q) = f(a[whole + l], b[whole + l]);
                    first[l] += p;
                    second[l] += q;
                }
                total.0 += first.iter().map(|&v| v as f64).sum::<f64>();
                total.1 += second.iter().map(|&v| v as f64).sum::<f64>();
            }
            total
        },
    )
}

/// Training forward; the statistics it computed are left in `stats` for the running
/// averages and for the backward pass.
pub(crate) struct BatchNormTrain {
    pub eps: f64,
    /// Apply a ReLU to the output (and mask the gradient by it).
    pub relu: bool,
    pub stats: Arc<Mutex<Option<BatchStats>>>,
}

impl BatchNormTrain {
    fn stats(&self) -> Result<BatchStats> {
        let guard = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        match guard.as_ref() {
            Some(s) => Ok(s.clone()),
            None => bail!("batch norm backward before its forward"),
        }
    }
}

impl CustomOp3 for BatchNormTrain {
    fn name(&self) -> &'static str {
        "auglocal-batch-norm"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, c, s) = dims3(xl)?;
        let x = contiguous_f32("batch norm", xs, xl, "input")?;
        let w = contiguous_f32("batch norm", ws, wl, "weight")?;
        let b = contiguous_f32("batch norm", bs, bl, "bias")?;
        if w.len() != c || b.len() != c {
            bail!(
                "batch norm: {c} channels but weight {} and bias {}",
                w.len(),
                b.len()
            );
        }
        let count = (n * s) as f64;
        let moments: Vec<(f32, f32)> = parallel::map(c, |ch| {
            let mean = channel_sum(x, n, c, s, ch, |v| v) / count;
            let m = mean as f32;
            let var = channel_sum(x, n, c, s, ch, |v| (v - m) * (v - m)) / count;
            (mean as f32, var as f32)
        });
        let mean: Vec<f32> = moments.iter().map(|m| m.0).collect();
        let var: Vec<f32> = moments.iter().map(|m| m.1).collect();
        let inv_std: Vec<f32> = var
            .iter()
            .map(|v| 1.0 / ((*v as f64 + self.eps).sqrt() as f32))
            .collect();
        let normalise = |i: usize, yo: &mut [MaybeUninit<f32>]| {
            let ch = i % c;
            let scale = inv_std[ch] * w[ch];
            let shift = b[ch] - mean[ch] * scale;
            let pairs = yo.iter_mut().zip(&x[i * s..(i + 1) * s]);
            if self.relu {
                pairs.for_each(|(o, v)| _ = o.write((v * scale + shift).max(0.0)));
            } else {
                pairs.for_each(|(o, v)| _ = o.write(v * scale + shift));
            }
        };
        // SAFETY: `normalise` writes every element of its chunk (a channel plane, as long as
        // the matching slice of `x`).
        let y = unsafe {
            parallel::written_chunks_init(x.len(), s, || (), |_, i, yo| normalise(i, yo))
        };
        *self.stats.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(BatchStats { mean, var, inv_std });
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        self.backward(x, w, y, dy, x.track_op())
    }
}

impl BatchNormTrain {
    /// The gradients (dx when `input_grad`, dw, db) for input `x`, weight `w`, output `y`
    /// and output gradient `dy`.
    pub(crate) fn backward(
        &self,
        x: &Tensor,
        w: &Tensor,
        y: &Tensor,
        dy: &Tensor,
        input_grad: bool,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let stats = Arc::new(self.stats()?);
        let dy = if self.relu {
            relu_grad(dy, y)?
        } else {
            dy.contiguous()?
        };
        let sums = dy.apply_op2_no_bwd(x, &ParamGrads(stats.clone()))?;
        let dw = sums.get(0)?;
        let db = sums.get(1)?;
        let dx = if input_grad {
            Some(dy.apply_op3_no_bwd(x, &Tensor::stack(&[w, &dw, &db], 0)?, &InputGrad(stats))?)
        } else {
            None
        };
        Ok((dx, Some(dw), Some(db)))
    }
}

/// (Σ dy·x̂, Σ dy) per channel as a (2, C) tensor.
struct ParamGrads(Arc<BatchStats>);

impl CustomOp2 for ParamGrads {
    fn name(&self) -> &'static str {
        "auglocal-batch-norm-param-grads"
    }

    fn cpu_fwd(
        &self,
        dys: &CpuStorage,
        dyl: &Layout,
        xs: &CpuStorage,
        xl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, c, s) = dims3(xl)?;
        let dy = contiguous_f32("batch norm", dys, dyl, "output gradient")?;
        let x = contiguous_f32("batch norm", xs, xl, "input")?;
        let st = &self.0;
        let sums: Vec<(f32, f32)> = parallel::map(c, |ch| {
            let (mean, inv) = (st.mean[ch], st.inv_std[ch]);
            let (dw, db) = channel_sums(x, dy, n, c, s, ch, |v, g| (g * (v - mean) * inv, g));
            (dw as f32, db as f32)
        });
        let mut out: Vec<f32> = sums.iter().map(|p| p.0).collect();
        out.extend(sums.iter().map(|p| p.1));
        Ok((CpuStorage::F32(out), Shape::from((2, c))))
    }
}

/// dx from (dy, x, [w; Σ dy·x̂; Σ dy]).
struct InputGrad(Arc<BatchStats>);

impl CustomOp3 for InputGrad {
    fn name(&self) -> &'static str {
        "auglocal-batch-norm-input-grad"
    }

    fn cpu_fwd(
        &self,
        dys: &CpuStorage,
        dyl: &Layout,
        xs: &CpuStorage,
        xl: &Layout,
        ps: &CpuStorage,
        pl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, c, s) = dims3(xl)?;
        let dy = contiguous_f32("batch norm", dys, dyl, "output gradient")?;
        let x = contiguous_f32("batch norm", xs, xl, "input")?;
        let p = contiguous_f32("batch norm", ps, pl, "packed parameters")?;
        if p.len() != 3 * c {
            bail!(
                "batch norm input gradient: expected 3x{c} packed values, got {}",
                p.len()
            );
        }
        let (w, dw, db) = (&p[..c], &p[c..2 * c], &p[2 * c..]);
        let st = &self.0;
        let m = (n * s) as f32;
        let backward = |i: usize, out: &mut [MaybeUninit<f32>]| {
            let ch = i % c;
            let (mean, inv) = (st.mean[ch], st.inv_std[ch]);
            let k = w[ch] * inv / m;
            let base = i * s;
            for (j, o) in out.iter_mut().enumerate() {
                let xhat = (x[base + j] - mean) * inv;
                o.write(k * (m * dy[base + j] - db[ch] - xhat * dw[ch]));
            }
        };
        // SAFETY: `backward` writes every element of its chunk.
        let dx = unsafe {
            parallel::written_chunks_init(x.len(), s, || (), |_, i, out| backward(i, out))
        };
        Ok((CpuStorage::F32(dx), xl.shape().clone()))
    }
}
