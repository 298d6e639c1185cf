//! Max pooling on the CPU as a Candle custom op, any kernel, stride and padding, with its
//! gradient.
//!
//! Candle's max pooling has no padding and no gradient when the kernel differs from the
//! stride, so the CPU path is our own custom op; its gradient goes to the first maximum of
//! each window, as PyTorch's does.

use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};

use super::contiguous_f32;
use crate::parallel;

/// 2-D max pooling over (N, C, H, W), `kernel` x `kernel` windows every `stride` pixels;
/// padding counts as minus infinity.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MaxPool2dOp {
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl MaxPool2dOp {
    /// Output side for an input side of `size`.
    pub(crate) fn output_size(&self, size: usize) -> usize {
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

impl CustomOp1 for MaxPool2dOp {
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
struct MaxPoolGrad(MaxPool2dOp);

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
