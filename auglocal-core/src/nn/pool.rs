//! Pooling: max pooling with any kernel, stride and padding (VGG's 2x2 and the ImageNet
//! ResNet stem's 3x3 stride 2 padding 1), and adaptive average pooling.
//!
//! On the CPU, max pooling runs our own custom op ([`crate::kernels::pool`]): Candle's has no
//! padding and no gradient when the kernel differs from the stride.

use candle_core::{bail, DType, Result, Tensor};

use crate::kernels::pool::MaxPool2dOp;

/// 2-D max pooling over (N, C, H, W); padding counts as minus infinity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxPool2d {
    /// Side of the square window, in pixels.
    pub kernel: usize,
    /// Step between windows, in pixels.
    pub stride: usize,
    /// Pixels added on each side of the input before pooling.
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
        self.op().output_size(size)
    }

    /// The CPU op for this pooling.
    fn op(&self) -> MaxPool2dOp {
        MaxPool2dOp {
            kernel: self.kernel,
            stride: self.stride,
            padding: self.padding,
        }
    }
}

impl candle_nn::ModuleT for MaxPool2d {
    fn forward_t(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        if x.device().is_cpu() && x.dtype() == DType::F32 {
            return x.contiguous()?.apply_op1(self.op());
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
