//! Pooling: max pooling with any kernel, stride and padding (VGG's 2x2 and the ImageNet
//! ResNet stem's 3x3 stride 2 padding 1), and adaptive average pooling.
//!
//! Candle's max pooling has no padding and no gradient when the kernel differs from the
//! stride, so the CPU path is our own custom op; its gradient goes to the first maximum of
//! each window, as PyTorch's does.

use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor};

use crate::parallel;

use super::contiguous_f32;

/// 2-D max pooling over (N, C, H, W); padding counts as minus infinity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxPool2d {
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl MaxPool2d {
    /// Non-overlapping `size` x `size` windows (VGG's 2x2 pool).
    pub fn square(size: usize) -> Self {
        MaxPool2d {
            kernel: size,
            stride: size,
            padding: 0,
        }
    }

    /// Output side for an input side of `size`.
    pub fn output_size(&self, size: usize) -> usize {
        (size + 2 * self.padding).saturating_sub(self.kernel) / self.stride + 1
    }

    fn check(&self, dims: &[usize]) -> Result<(usize, usize, usize, usize)> {
        let &[n, c, h, w] = dims else {
            bail!("max pool expects (N, C, H, W), got {dims:?}");
        };
        if self.kernel == 0 || self.stride == 0 || 2 * self.padding > self.kernel {
            bail!(
                "max pool: kernel {} stride {} padding {} (need kernel, stride >= 1 and padding <= kernel / 2)",
                self.kernel,
                self.stride,
                self.padding
            );
        }
        if h + 2 * self.padding < self.kernel || w + 2 * self.padding < self.kernel {
            bail!(
                "max pool: input {dims:?} is smaller than the {0}x{0} window",
                self.kernel
            );
        }
        Ok((n, c, h, w))
    }

    /// For output pixel (oy, ox) of a plane of `h` x `w`, the flat index of the first
    /// maximum of its window.
    #[inline]
    fn argmax(&self, plane: &[f32], h: usize, w: usize, oy: usize, ox: usize) -> usize {
        let y0 = (oy * self.stride).saturating_sub(self.padding);
        let y1 = (oy * self.stride + self.kernel - self.padding).min(h);
        let x0 = (ox * self.stride).saturating_sub(self.padding);
        let x1 = (ox * self.stride + self.kernel - self.padding).min(w);
        let mut best = y0 * w + x0;
        for iy in y0..y1 {
            for ix in x0..x1 {
                let i = iy * w + ix;
                if plane[i] > plane[best] || plane[i].is_nan() {
                    best = i;
                }
            }
        }
        best
    }
}

impl candle_nn::ModuleT for MaxPool2d {
    fn forward_t(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        if x.device().is_cpu() && x.dtype() == DType::F32 {
            return x.contiguous()?.apply_op1(*self);
        }
        if self.padding == 0 && self.kernel == self.stride {
            return x.max_pool2d(self.kernel);
        }
        bail!(
            "max pool {}x{} stride {} padding {} runs on the CPU only; Candle's own has no padding or gradient for it",
            self.kernel,
            self.kernel,
            self.stride,
            self.padding
        )
    }
}

impl CustomOp1 for MaxPool2d {
    fn name(&self) -> &'static str {
        "auglocal-max-pool2d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = self.check(l.dims())?;
        let x = contiguous_f32("max pool", s, l, "input")?;
        let (ho, wo) = (self.output_size(h), self.output_size(w));
        let y = parallel::zeroed_chunks(n * c * ho * wo, ho * wo, |p, out| {
            let plane = &x[p * h * w..(p + 1) * h * w];
            for oy in 0..ho {
                for ox in 0..wo {
                    out[oy * wo + ox] = plane[self.argmax(plane, h, w, oy, ox)];
                }
            }
        });
        Ok((CpuStorage::F32(y), Shape::from((n, c, ho, wo))))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            dy.contiguous()?
                .apply_op2_no_bwd(&x.contiguous()?, &MaxPoolGrad(*self))?,
        ))
    }
}

/// dx from (dy, x): each output gradient goes to the first maximum of its window.
struct MaxPoolGrad(MaxPool2d);

impl CustomOp2 for MaxPoolGrad {
    fn name(&self) -> &'static str {
        "auglocal-max-pool2d-grad"
    }

    fn cpu_fwd(
        &self,
        dys: &CpuStorage,
        dyl: &Layout,
        xs: &CpuStorage,
        xl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let pool = self.0;
        let (n, c, h, w) = pool.check(xl.dims())?;
        let (ho, wo) = (pool.output_size(h), pool.output_size(w));
        if dyl.dims() != [n, c, ho, wo] {
            bail!(
                "max pool gradient: output gradient {:?} does not fit input {:?}",
                dyl.dims(),
                xl.dims()
            );
        }
        let dy = contiguous_f32("max pool", dys, dyl, "output gradient")?;
        let x = contiguous_f32("max pool", xs, xl, "input")?;
        let dx = parallel::zeroed_chunks(n * c * h * w, h * w, |p, dst| {
            let plane = &x[p * h * w..(p + 1) * h * w];
            let grad = &dy[p * ho * wo..(p + 1) * ho * wo];
            for oy in 0..ho {
                for ox in 0..wo {
                    dst[pool.argmax(plane, h, w, oy, ox)] += grad[oy * wo + ox];
                }
            }
        });
        Ok((CpuStorage::F32(dx), Shape::from((n, c, h, w))))
    }
}

/// The `out` adaptive bins of an axis of `size`: bin i covers
/// `floor(i * size / out) .. ceil((i + 1) * size / out)`, as PyTorch's adaptive pools.
fn adaptive_bins(size: usize, out: usize) -> Vec<(usize, usize)> {
    (0..out)
        .map(|i| (i * size / out, ((i + 1) * size).div_ceil(out)))
        .collect()
}

/// Means of `x` over the adaptive bins of dimension `dim` (`out` bins). One reshape when
/// the bins tile the axis evenly; one narrow per bin otherwise.
fn adaptive_mean(x: &Tensor, dim: usize, out: usize) -> Result<Tensor> {
    let size = x.dim(dim)?;
    if size == out {
        return Ok(x.clone());
    }
    if size.is_multiple_of(out) {
        let mut dims = x.dims().to_vec();
        dims[dim] = out;
        dims.insert(dim + 1, size / out);
        return x.reshape(dims)?.mean(dim + 1);
    }
    let bins = adaptive_bins(size, out)
        .into_iter()
        .map(|(lo, hi)| x.narrow(dim, lo, hi - lo)?.mean_keepdim(dim))
        .collect::<Result<Vec<_>>>()?;
    Tensor::cat(&bins, dim)
}

/// Adaptive average pooling of (N, C, H, W) to (N, C, out, out), as PyTorch's
/// `AdaptiveAvgPool2d(out)` (torchvision's VGG pools to 7 x 7 before its classifier).
pub fn adaptive_avg_pool2d(x: &Tensor, out: usize) -> Result<Tensor> {
    adaptive_mean(&adaptive_mean(x, 2, out)?, 3, out)
}

/// Adaptive average pooling of (N, L) to (N, out) along L, as PyTorch's
/// `AdaptiveAvgPool1d(out)` on a flattened feature map.
pub fn adaptive_avg_pool1d(x: &Tensor, out: usize) -> Result<Tensor> {
    adaptive_mean(x, 1, out)
}
