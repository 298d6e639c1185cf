//! 2-D convolution on the CPU with its two gradients, as Candle custom ops ([`Conv2dOp`],
//! and for its backward pass [`InputGrad`] and [`WeightGrad`]). This file only dispatches:
//! it picks the kernel that runs each call.
//!
//! Candle's own CPU convolution computes the input gradient with a direct-loop transposed
//! convolution and the weight gradient as a convolution with an image-sized kernel; both are
//! several times slower than the forward pass. The portable kernel here runs all three as one
//! GEMM per image over im2col columns ([`gemm`]). On x86-64 with AVX2, most convolutions of a
//! ResNet skip that path: [`winograd`] runs the 3x3 stride-1 convolutions that keep the image
//! size (forward, input gradient through the flipped kernel, and weight gradient) in
//! F(4x4, 3x3) or F(2x2, 3x3); [`direct`] convolves straight from the image (the other
//! forward passes and weight gradients at stride 1 keeping the image size and at stride 2,
//! their stride-1 input gradients, and the 3x3 stride-2 input gradient as four stride-1
//! phases). What stays on the GEMM path: other stride-2 input gradients, weight gradients of
//! small planes, grouped and pointwise convolutions, and every convolution on other CPUs.
//! Depthwise convolutions run [`depthwise`]'s direct loops.
//!
//! The input gradient is skipped when the input does not need one (a detached module
//! input, the network's images), which local learning hits in every module.

#[cfg(feature = "cudnn")]
use candle_core::CudaStorage;
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

mod depthwise;
#[cfg(target_arch = "x86_64")]
mod direct;
mod gemm;
pub(crate) mod geometry;
#[cfg(target_arch = "x86_64")]
mod winograd;

use super::contiguous_f32;
use geometry::Geometry;

/// Images per partial sum of the weight gradient: fixed, for thread-count-independent sums.
const WEIGHT_GRAD_CHUNK: usize = 4;
/// The same for the Winograd weight gradient, whose register tiles sum each group's tiles
/// in one pass: longer sums amortise their setup and final lane sums.
#[cfg(target_arch = "x86_64")]
const WINOGRAD_WEIGHT_GRAD_CHUNK: usize = 16;

/// The convolution of a batch `x` (N, C_in, H, W) with `weight` (C_out, C_in, k, k), on the
/// first kernel that takes it.
fn forward(g: &Geometry, x: &[f32], weight: &[f32]) -> Vec<f32> {
    #[cfg(target_arch = "x86_64")]
    if winograd::supported(g) {
        return winograd::forward::forward(g, x, weight);
    }
    #[cfg(target_arch = "x86_64")]
    if direct::supported(g) {
        return direct::forward(g, x, weight);
    }
    gemm::forward(g, x, weight)
}

/// Forward convolution; its backward runs [`InputGrad`] and [`WeightGrad`]. On CUDA (with
/// the `cudnn` feature) all three are cuDNN calls, see [`super::cudnn`].
pub(crate) struct Conv2dOp {
    pub stride: usize,
    pub padding: usize,
    pub groups: usize,
}

impl CustomOp2 for Conv2dOp {
    fn name(&self) -> &'static str {
        "auglocal-conv2d"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = Geometry::new(xl.dims(), wl.dims(), self.stride, self.padding, self.groups)?;
        let x = contiguous_f32("conv2d", xs, xl, "input")?;
        let weight = contiguous_f32("conv2d", ws, wl, "weight")?;
        let out = if g.is_depthwise() {
            depthwise::forward(&g, x, weight)
        } else {
            forward(&g, x, weight)
        };
        Ok((CpuStorage::F32(out), g.output_shape()))
    }

    #[cfg(feature = "cudnn")]
    fn cuda_fwd(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        ws: &CudaStorage,
        wl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let g = Geometry::new(xl.dims(), wl.dims(), self.stride, self.padding, self.groups)?;
        let y = super::cudnn::conv_forward(&g, (xs, xl), (ws, wl))?;
        Ok((y, g.output_shape()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        self.grads(x, weight, dy, x.track_op(), weight.track_op())
    }
}

impl Conv2dOp {
    /// The input gradient (when `input_grad`) and the weight gradient (when `weight_grad`)
    /// for input `x`, `weight` and output gradient `dy`.
    pub(crate) fn grads(
        &self,
        x: &Tensor,
        weight: &Tensor,
        dy: &Tensor,
        input_grad: bool,
        weight_grad: bool,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = Geometry::new(
            x.dims(),
            weight.dims(),
            self.stride,
            self.padding,
            self.groups,
        )?;
        let dy = dy.contiguous()?;
        let dx = if input_grad {
            Some(dy.apply_op2_no_bwd(weight, &InputGrad(g))?)
        } else {
            None
        };
        let dw = if weight_grad {
            Some(dy.apply_op2_no_bwd(&x.contiguous()?, &WeightGrad(g))?)
        } else {
            None
        };
        Ok((dx, dw))
    }
}

/// dx from (dy, W).
struct InputGrad(Geometry);

impl CustomOp2 for InputGrad {
    fn name(&self) -> &'static str {
        "auglocal-conv2d-input-grad"
    }

    #[cfg(feature = "cudnn")]
    fn cuda_fwd(
        &self,
        dys: &CudaStorage,
        dyl: &Layout,
        ws: &CudaStorage,
        wl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let g = self.0;
        g.check_operands("input gradient", dyl, wl, g.weight_shape())?;
        let dx = super::cudnn::conv_input_grad(&g, (dys, dyl), (ws, wl))?;
        Ok((dx, g.input_shape()))
    }

    fn cpu_fwd(
        &self,
        dys: &CpuStorage,
        dyl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        g.check_operands("input gradient", dyl, wl, g.weight_shape())?;
        let dy = contiguous_f32("conv2d", dys, dyl, "output gradient")?;
        let weight = contiguous_f32("conv2d", ws, wl, "weight")?;
        if g.is_depthwise() {
            let dx = depthwise::input_grad(&g, dy, weight);
            return Ok((CpuStorage::F32(dx), g.input_shape()));
        }
        #[cfg(target_arch = "x86_64")]
        if direct::supports_input_grad_stride2(&g) {
            let dx = direct::input_grad_stride2(&g, dy, weight);
            return Ok((CpuStorage::F32(dx), g.input_shape()));
        }
        if let Some(full) = g.transposed_geometry() {
            // Stride 1: dx is a convolution of dy with the spatially flipped, channel-swapped
            // kernel. Its GEMM reduces over C_out·k·k instead of C_out, and needs no col2im.
            let flipped = g.flipped_weight(weight);
            return Ok((
                CpuStorage::F32(forward(&full, dy, &flipped)),
                g.input_shape(),
            ));
        }
        let dx = gemm::input_grad(&g, dy, weight);
        Ok((CpuStorage::F32(dx), g.input_shape()))
    }
}

/// dW from (dy, x).
struct WeightGrad(Geometry);

impl CustomOp2 for WeightGrad {
    fn name(&self) -> &'static str {
        "auglocal-conv2d-weight-grad"
    }

    #[cfg(feature = "cudnn")]
    fn cuda_fwd(
        &self,
        dys: &CudaStorage,
        dyl: &Layout,
        xs: &CudaStorage,
        xl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let g = self.0;
        g.check_operands("weight gradient", dyl, xl, g.input_shape())?;
        let dw = super::cudnn::conv_weight_grad(&g, (dys, dyl), (xs, xl))?;
        Ok((dw, g.weight_shape()))
    }

    fn cpu_fwd(
        &self,
        dys: &CpuStorage,
        dyl: &Layout,
        xs: &CpuStorage,
        xl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        g.check_operands("weight gradient", dyl, xl, g.input_shape())?;
        let dy = contiguous_f32("conv2d", dys, dyl, "output gradient")?;
        let x = contiguous_f32("conv2d", xs, xl, "input")?;
        if g.is_depthwise() {
            let dw = depthwise::weight_grad(&g, dy, x);
            return Ok((CpuStorage::F32(dw), g.weight_shape()));
        }
        #[cfg(target_arch = "x86_64")]
        if winograd::supports_weight_grad(&g) {
            let dw = winograd::weight_grad::weight_grad(&g, dy, x, WINOGRAD_WEIGHT_GRAD_CHUNK);
            return Ok((CpuStorage::F32(dw), g.weight_shape()));
        }
        #[cfg(target_arch = "x86_64")]
        if direct::supports_weight_grad(&g) {
            let dw = direct::weight_grad(&g, dy, x, WEIGHT_GRAD_CHUNK);
            return Ok((CpuStorage::F32(dw), g.weight_shape()));
        }
        let dw = gemm::weight_grad(&g, dy, x, WEIGHT_GRAD_CHUNK);
        Ok((CpuStorage::F32(dw), g.weight_shape()))
    }
}
