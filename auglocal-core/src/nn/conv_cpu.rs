//! 2-D convolution on the CPU as packed GEMM (the `gemm` crate) over im2col columns, with
//! its two gradients, as Candle custom ops.
//!
//! Candle's own CPU convolution computes the input gradient with a direct-loop transposed
//! convolution and the weight gradient as a convolution with an image-sized kernel; both are
//! several times slower than the forward pass. Here all three are one GEMM per image:
//!
//! ```text
//! forward       y[n]  = W · cols(x[n])                  (C_out x R) · (R x HW)
//! input grad    dx[n] = col2im(Wᵀ · dy[n])               (R x C_out) · (C_out x HW)
//! weight grad   dW    = Σ_n dy[n] · cols(x[n])ᵀ          (C_out x HW) · (HW x R)
//! ```
//!
//! with R = C_in·k·k. On x86-64 with AVX2, most convolutions of a ResNet skip this path:
//! `winograd` runs the 3x3 stride-1 convolutions that keep the image size (forward, input
//! gradient through the flipped kernel, and weight gradient) in F(4x4, 3x3) or F(2x2, 3x3);
//! `conv_direct` convolves straight from the image (the other forward passes and weight
//! gradients at stride 1 keeping the image size and at stride 2, their stride-1 input
//! gradients, and the 3x3 stride-2 input gradient as four stride-1 phases). What stays
//! here: other stride-2 input gradients, weight gradients of small planes, grouped and
//! pointwise convolutions, and every convolution on other CPUs.
//!
//! The weight gradient's GEMM writes dWᵀ and transposes it once at the end: at 16 channels
//! the gemm crate fills that layout about 3x faster than dW's own (`examples/gemm_layouts.rs`).
//! The forward pass keeps NCHW: written transposed, its GEMM was faster alone, but the
//! transpose back and the extra operand packing ate the gain in whole training steps. A
//! stride-1 convolution keeping the image size unfolds each column row as one shifted copy
//! of the input plane. Images run in parallel on Candle's worker pool
//! ([`crate::parallel`]). The weight gradient sums images in fixed chunks, then the chunks
//! in order, so results do not depend on the thread count.
//! The input gradient is skipped when the input does not need one (a detached module
//! input, the network's images), which local learning hits in every module.

#[cfg(feature = "cudnn")]
use candle_core::CudaStorage;
use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

use super::contiguous_f32;
#[cfg(target_arch = "x86_64")]
use super::conv_direct;
use super::depthwise_cpu;
#[cfg(target_arch = "x86_64")]
use super::winograd;
use crate::parallel;

/// Images per partial sum of the weight gradient: fixed, for thread-count-independent sums.
const WEIGHT_GRAD_CHUNK: usize = 4;
/// The same for the Winograd weight gradient, whose register tiles sum each group's tiles
/// in one pass: longer sums amortise their setup and final lane sums.
#[cfg(target_arch = "x86_64")]
const WINOGRAD_WEIGHT_GRAD_CHUNK: usize = 16;

/// Shapes of one convolution (square kernel, same stride and padding on both axes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Geometry {
    pub batch: usize,
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    /// Channel groups: input and output channels split into this many independent
    /// convolutions (1: an ordinary convolution; C_in: depthwise).
    pub groups: usize,
    pub k: usize,
    pub stride: usize,
    pub padding: usize,
    pub h_out: usize,
    pub w_out: usize,
}

impl Geometry {
    pub fn new(
        x: &[usize],
        weight: &[usize],
        stride: usize,
        padding: usize,
        groups: usize,
    ) -> Result<Self> {
        let (&[batch, c_in, h, w], &[c_out, c_in_w, k, k2]) = (x, weight) else {
            bail!("conv2d expects input (N, C, H, W) and weight (O, C / groups, k, k), got {x:?} and {weight:?}");
        };
        if groups == 0
            || c_in != c_in_w * groups
            || c_out % groups != 0
            || k != k2
            || k == 0
            || stride == 0
        {
            bail!("conv2d: input {x:?} does not fit weight {weight:?} at stride {stride} with {groups} groups");
        }
        if h + 2 * padding < k || w + 2 * padding < k {
            bail!("conv2d: input {x:?} is smaller than the kernel {k}x{k} with padding {padding}");
        }
        Ok(Geometry {
            batch,
            c_in,
            h,
            w,
            c_out,
            groups,
            k,
            stride,
            padding,
            h_out: (h + 2 * padding - k) / stride + 1,
            w_out: (w + 2 * padding - k) / stride + 1,
        })
    }

    /// Input channels of one group.
    fn group_in(&self) -> usize {
        self.c_in / self.groups
    }
    /// Output channels of one group.
    fn group_out(&self) -> usize {
        self.c_out / self.groups
    }
    /// Rows of one group's column matrix: its input channels times the kernel area.
    fn rows(&self) -> usize {
        self.group_in() * self.k * self.k
    }
    /// Input, output and weight values of group `grp` within one image / the weight.
    fn in_range(&self, grp: usize) -> std::ops::Range<usize> {
        let len = self.group_in() * self.h * self.w;
        grp * len..(grp + 1) * len
    }
    fn out_range(&self, grp: usize) -> std::ops::Range<usize> {
        let len = self.group_out() * self.out_plane();
        grp * len..(grp + 1) * len
    }
    fn weight_range(&self, grp: usize) -> std::ops::Range<usize> {
        let len = self.group_out() * self.rows();
        grp * len..(grp + 1) * len
    }
    fn out_plane(&self) -> usize {
        self.h_out * self.w_out
    }
    fn in_image(&self) -> usize {
        self.c_in * self.h * self.w
    }
    fn out_image(&self) -> usize {
        self.c_out * self.out_plane()
    }
    /// A 1x1, stride-1, unpadded convolution reads its input as the column matrix itself.
    fn is_pointwise(&self) -> bool {
        self.k == 1 && self.stride == 1 && self.padding == 0
    }
    fn input_shape(&self) -> Shape {
        Shape::from((self.batch, self.c_in, self.h, self.w))
    }
    fn output_shape(&self) -> Shape {
        Shape::from((self.batch, self.c_out, self.h_out, self.w_out))
    }
    fn weight_shape(&self) -> Shape {
        Shape::from((self.c_out, self.group_in(), self.k, self.k))
    }

    /// Fails unless a gradient op got the output gradient `dy` and a `second` operand of
    /// `expected` shape (the weight, or the input).
    fn check_operands(
        &self,
        op: &str,
        dy: &Layout,
        second: &Layout,
        expected: Shape,
    ) -> Result<()> {
        if dy.shape() != &self.output_shape() || second.shape() != &expected {
            bail!(
                "conv2d {op}: unexpected shapes {:?} and {:?}",
                dy.dims(),
                second.dims()
            );
        }
        Ok(())
    }

    /// One k x k filter per channel: the direct kernels of [`depthwise_cpu`] run it.
    fn is_depthwise(&self) -> bool {
        self.groups == self.c_in && self.c_out == self.c_in
    }

    /// Source index (iy or ix) of output position `o` under kernel offset `kk`, if inside.
    #[inline]
    pub(crate) fn source(&self, o: usize, kk: usize, size: usize) -> Option<usize> {
        (o * self.stride + kk)
            .checked_sub(self.padding)
            .filter(|&i| i < size)
    }

    /// The output positions `lo..hi` whose source under kernel offset `kk` lies inside an
    /// axis of `size` pixels (outside that range the source is padding).
    #[inline]
    pub(crate) fn valid_range(&self, kk: usize, size: usize, out: usize) -> (usize, usize) {
        // o*stride + kk - padding >= 0  and  < size
        let lo = self.padding.saturating_sub(kk).div_ceil(self.stride);
        let hi = (size + self.padding)
            .saturating_sub(kk)
            .div_ceil(self.stride)
            .min(out);
        (lo.min(hi), hi)
    }

    /// The convolution of a batch `x` (N, C_in, H, W) with `weight` (C_out, C_in, k, k).
    fn forward(&self, x: &[f32], weight: &[f32]) -> Vec<f32> {
        #[cfg(target_arch = "x86_64")]
        if winograd::supported(self) {
            return winograd::forward(self, x, weight);
        }
        #[cfg(target_arch = "x86_64")]
        if conv_direct::supported(self) {
            return conv_direct::forward(self, x, weight);
        }
        let g = self;
        let (rows, plane) = (g.rows(), g.out_plane());
        let out = parallel::zeroed_chunks_init(
            g.batch * g.out_image(),
            g.out_image(),
            || g.column_buffer(),
            |buffer, n, y| {
                let image = &x[n * g.in_image()..(n + 1) * g.in_image()];
                for grp in 0..g.groups {
                    let cols = g.columns(&image[g.in_range(grp)], buffer);
                    matmul(
                        g.group_out(),
                        plane,
                        rows,
                        &mut y[g.out_range(grp)],
                        Order::Rows,
                        false,
                        Mat::rows(&weight[g.weight_range(grp)], rows),
                        Mat::rows(cols, plane),
                    );
                }
            },
        );
        out
    }

    /// For a stride-1, non-pointwise convolution: the geometry of the convolution that
    /// computes its input gradient from the output gradient.
    fn transposed_geometry(&self) -> Option<Geometry> {
        if self.stride != 1 || self.is_pointwise() || self.padding >= self.k || self.groups != 1 {
            return None;
        }
        let padding = self.k - 1 - self.padding;
        let g = Geometry::new(
            &[self.batch, self.c_out, self.h_out, self.w_out],
            &[self.c_in, self.c_out, self.k, self.k],
            1,
            padding,
            1,
        )
        .ok()?;
        (g.h_out == self.h && g.w_out == self.w).then_some(g)
    }

    /// `W'[ci, co, a, b] = W[co, ci, k-1-a, k-1-b]`.
    fn flipped_weight(&self, weight: &[f32]) -> Vec<f32> {
        let (k, kk) = (self.k, self.k * self.k);
        let mut out = vec![0f32; weight.len()];
        for co in 0..self.c_out {
            for ci in 0..self.c_in {
                let src = &weight[(co * self.c_in + ci) * kk..][..kk];
                let dst = &mut out[(ci * self.c_out + co) * kk..][..kk];
                for a in 0..k {
                    for b in 0..k {
                        dst[a * k + b] = src[(k - 1 - a) * k + (k - 1 - b)];
                    }
                }
            }
        }
        out
    }

    /// A scratch buffer for [`Self::columns`]: none is needed for a pointwise convolution.
    fn column_buffer(&self) -> Vec<f32> {
        if self.is_pointwise() {
            Vec::new()
        } else {
            vec![0f32; self.rows() * self.out_plane()]
        }
    }

    /// One group of an image as GEMM columns (R, H_out * W_out): the group itself for a
    /// pointwise convolution, else unfolded into `buffer`.
    fn columns<'a>(&self, part: &'a [f32], buffer: &'a mut [f32]) -> &'a [f32] {
        if self.is_pointwise() {
            part
        } else {
            self.im2col(part, buffer);
            buffer
        }
    }

    /// Unfolds one group of an image (C_in / groups, H, W) into columns (R, H_out * W_out).
    fn im2col(&self, image: &[f32], cols: &mut [f32]) {
        if self.stride == 1 && self.h_out == self.h && self.w_out == self.w {
            return self.im2col_same(image, cols);
        }
        let plane = self.out_plane();
        for c in 0..self.group_in() {
            let channel = &image[c * self.h * self.w..(c + 1) * self.h * self.w];
            for ky in 0..self.k {
                for kx in 0..self.k {
                    let row = (c * self.k + ky) * self.k + kx;
                    let dst = &mut cols[row * plane..(row + 1) * plane];
                    let (x_lo, x_hi) = self.valid_range(kx, self.w, self.w_out);
                    for oy in 0..self.h_out {
                        let line = &mut dst[oy * self.w_out..(oy + 1) * self.w_out];
                        let Some(iy) = self.source(oy, ky, self.h) else {
                            line.fill(0.0);
                            continue;
                        };
                        let src = &channel[iy * self.w..(iy + 1) * self.w];
                        line[..x_lo].fill(0.0);
                        line[x_hi..].fill(0.0);
                        if x_lo == x_hi {
                            continue;
                        }
                        let first = x_lo * self.stride + kx - self.padding;
                        if self.stride == 1 {
                            line[x_lo..x_hi].copy_from_slice(&src[first..first + x_hi - x_lo]);
                        } else {
                            for (v, s) in line[x_lo..x_hi]
                                .iter_mut()
                                .zip(src[first..].iter().step_by(self.stride))
                            {
                                *v = *s;
                            }
                        }
                    }
                }
            }
        }
    }

    /// [`Self::im2col`] for a stride-1 convolution whose output is as large as its input
    /// (3x3 with padding 1, the bulk of every ResNet): each column row is then the input
    /// plane shifted by `dy·W + dx`, one copy per row instead of one per image line (the
    /// 8-pixel lines of an 8x8 stage made im2col a tenth of a training step), with the
    /// pixels the shift wraps across a line edge, or brings from outside the plane, zeroed.
    fn im2col_same(&self, image: &[f32], cols: &mut [f32]) {
        let (h, w, plane) = (self.h as isize, self.w as isize, self.h * self.w);
        for c in 0..self.group_in() {
            let channel = &image[c * plane..(c + 1) * plane];
            for ky in 0..self.k {
                for kx in 0..self.k {
                    let row = (c * self.k + ky) * self.k + kx;
                    let dst = &mut cols[row * plane..(row + 1) * plane];
                    let dy = ky as isize - self.padding as isize;
                    let dx = kx as isize - self.padding as isize;
                    // Output lines whose source line lies inside the image.
                    let lo = (-dy).clamp(0, h) as usize;
                    let hi = (h - dy).clamp(0, h) as usize;
                    if lo >= hi {
                        dst.fill(0.0);
                        continue;
                    }
                    let (start, end) = (lo * self.w, hi * self.w);
                    dst[..start].fill(0.0);
                    dst[end..].fill(0.0);
                    let shift = dy * w + dx;
                    let first = start.max((-shift).max(0) as usize);
                    let last = end.min((plane as isize - shift).max(0) as usize);
                    if first < last {
                        let from = (first as isize + shift) as usize;
                        dst[first..last].copy_from_slice(&channel[from..from + (last - first)]);
                    }
                    // Line edges: the first -dx or last dx pixels of each line read the
                    // padding. This also covers `start..first` and `last..end`, whose
                    // sources fall before or after the plane.
                    let (edge_lo, edge_hi) = if dx < 0 {
                        (0, (-dx).min(w) as usize)
                    } else {
                        ((w - dx).max(0) as usize, self.w)
                    };
                    for line in dst[start..end].chunks_exact_mut(self.w) {
                        line[edge_lo..edge_hi].fill(0.0);
                    }
                }
            }
        }
    }

    /// Folds columns (R, H_out * W_out) back into one group of an image, adding overlaps.
    fn col2im(&self, cols: &[f32], image: &mut [f32]) {
        image.fill(0.0);
        let plane = self.out_plane();
        for c in 0..self.group_in() {
            let channel = &mut image[c * self.h * self.w..(c + 1) * self.h * self.w];
            for ky in 0..self.k {
                for kx in 0..self.k {
                    let row = (c * self.k + ky) * self.k + kx;
                    let src = &cols[row * plane..(row + 1) * plane];
                    let (x_lo, x_hi) = self.valid_range(kx, self.w, self.w_out);
                    for oy in 0..self.h_out {
                        let Some(iy) = self.source(oy, ky, self.h).filter(|_| x_lo < x_hi) else {
                            continue;
                        };
                        let dst = &mut channel[iy * self.w..(iy + 1) * self.w];
                        let line = &src[oy * self.w_out + x_lo..oy * self.w_out + x_hi];
                        let first = x_lo * self.stride + kx - self.padding;
                        for (s, d) in line
                            .iter()
                            .zip(dst[first..].iter_mut().step_by(self.stride))
                        {
                            *d += s;
                        }
                    }
                }
            }
        }
    }
}

/// A row-major matrix view: `rows x cols` with row stride `rs` and column stride `cs`.
#[derive(Clone, Copy)]
struct Mat<'a> {
    data: &'a [f32],
    rs: isize,
    cs: isize,
}

impl<'a> Mat<'a> {
    fn rows(data: &'a [f32], cols: usize) -> Self {
        Mat {
            data,
            rs: cols as isize,
            cs: 1,
        }
    }
    /// The transpose of a row-major `rows x cols` matrix.
    fn transposed(data: &'a [f32], cols: usize) -> Self {
        Mat {
            data,
            rs: 1,
            cs: cols as isize,
        }
    }
}

/// How a GEMM lays out its `m x n` destination.
#[derive(Clone, Copy)]
enum Order {
    /// Row-major: `dst[i * n + j]`.
    Rows,
    /// Column-major, the transpose in memory: `dst[j * m + i]`.
    Columns,
}

/// `dst (m x n) = [dst +] lhs (m x k) · rhs (k x n)`, single-threaded (callers parallelise
/// over images).
///
/// At our shapes the gemm crate's speed depends on the destination's layout by up to 3x
/// (`examples/gemm_layouts.rs`); callers pick the faster `order`.
#[allow(clippy::too_many_arguments)]
fn matmul(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    order: Order,
    accumulate: bool,
    lhs: Mat,
    rhs: Mat,
) {
    debug_assert!(dst.len() >= m * n);
    let (dst_rs, dst_cs) = match order {
        Order::Rows => (n as isize, 1),
        Order::Columns => (1, m as isize),
    };
    // SAFETY: every index the kernel touches is inside the slices: lhs spans (m-1)*rs +
    // (k-1)*cs, rhs (k-1)*rs + (n-1)*cs, dst (m-1)*n + (n-1) in either order, all checked
    // by the callers' shapes (see the debug assertions of the ops).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            dst_cs,
            dst_rs,
            accumulate,
            lhs.data.as_ptr(),
            lhs.cs,
            lhs.rs,
            rhs.data.as_ptr(),
            rhs.cs,
            rhs.rs,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// The element-wise sum of `partials` (each `len` long), added in order.
pub(crate) fn sum_in_order(partials: Vec<Vec<f32>>, len: usize) -> Vec<f32> {
    // Each element's partials are added in the same order whatever the split: in parallel
    // over slices of the sum.
    const SLICE: usize = 1 << 14;
    parallel::zeroed_chunks(len, SLICE, |i, sum| {
        let range = i * SLICE..i * SLICE + sum.len();
        for (k, p) in partials.iter().enumerate() {
            let part = &p[range.clone()];
            if k == 0 {
                sum.copy_from_slice(part);
            } else {
                sum.iter_mut().zip(part).for_each(|(a, b)| *a += b);
            }
        }
    })
}

/// Writes the transpose of `src` (`rows x cols`, row-major) into `dst` (`cols x rows`).
fn transpose(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    const TILE: usize = 16;
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            for r in r0..(r0 + TILE).min(rows) {
                for c in c0..(c0 + TILE).min(cols) {
                    dst[c * rows + r] = src[r * cols + c];
                }
            }
        }
    }
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
            depthwise_cpu::forward(&g, x, weight)
        } else {
            g.forward(x, weight)
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
            let dx = depthwise_cpu::input_grad(&g, dy, weight);
            return Ok((CpuStorage::F32(dx), g.input_shape()));
        }
        #[cfg(target_arch = "x86_64")]
        if conv_direct::supports_input_grad_stride2(&g) {
            let dx = conv_direct::input_grad_stride2(&g, dy, weight);
            return Ok((CpuStorage::F32(dx), g.input_shape()));
        }
        if let Some(full) = g.transposed_geometry() {
            // Stride 1: dx is a convolution of dy with the spatially flipped, channel-swapped
            // kernel. Its GEMM reduces over C_out·k·k instead of C_out, and needs no col2im.
            let flipped = g.flipped_weight(weight);
            return Ok((CpuStorage::F32(full.forward(dy, &flipped)), g.input_shape()));
        }
        let (rows, plane) = (g.rows(), g.out_plane());
        let dx = parallel::zeroed_chunks_init(
            g.batch * g.in_image(),
            g.in_image(),
            || vec![0f32; rows * plane],
            |cols, n, image| {
                let dyn_ = &dy[n * g.out_image()..(n + 1) * g.out_image()];
                for grp in 0..g.groups {
                    let part = &mut image[g.in_range(grp)];
                    let w = Mat::transposed(&weight[g.weight_range(grp)], rows);
                    let d = Mat::rows(&dyn_[g.out_range(grp)], plane);
                    if g.is_pointwise() {
                        matmul(rows, plane, g.group_out(), part, Order::Rows, false, w, d);
                    } else {
                        matmul(rows, plane, g.group_out(), cols, Order::Rows, false, w, d);
                        g.col2im(cols, part);
                    }
                }
            },
        );
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
            let dw = depthwise_cpu::weight_grad(&g, dy, x);
            return Ok((CpuStorage::F32(dw), g.weight_shape()));
        }
        #[cfg(target_arch = "x86_64")]
        if winograd::supports_weight_grad(&g) {
            let dw = winograd::weight_grad(&g, dy, x, WINOGRAD_WEIGHT_GRAD_CHUNK);
            return Ok((CpuStorage::F32(dw), g.weight_shape()));
        }
        #[cfg(target_arch = "x86_64")]
        if conv_direct::supports_weight_grad(&g) {
            let dw = conv_direct::weight_grad(&g, dy, x, WEIGHT_GRAD_CHUNK);
            return Ok((CpuStorage::F32(dw), g.weight_shape()));
        }
        let (rows, plane) = (g.rows(), g.out_plane());
        let partials: Vec<Vec<f32>> = parallel::map(g.batch.div_ceil(WEIGHT_GRAD_CHUNK), |chunk| {
            let first = chunk * WEIGHT_GRAD_CHUNK;
            let mut dw = vec![0f32; g.c_out * rows];
            let mut buffer = g.column_buffer();
            for n in first..(first + WEIGHT_GRAD_CHUNK).min(g.batch) {
                let image = &x[n * g.in_image()..(n + 1) * g.in_image()];
                let dyn_ = &dy[n * g.out_image()..(n + 1) * g.out_image()];
                for grp in 0..g.groups {
                    let cols = g.columns(&image[g.in_range(grp)], &mut buffer);
                    // Column order: dW is written as dWᵀ (R x C_out), the layout
                    // the gemm crate fills fastest here (16 channels: 89 against 33
                    // GFLOP/s on one core, `examples/gemm_layouts.rs`).
                    matmul(
                        g.group_out(),
                        rows,
                        plane,
                        &mut dw[g.weight_range(grp)],
                        Order::Columns,
                        n > first,
                        Mat::rows(&dyn_[g.out_range(grp)], plane),
                        Mat::transposed(cols, plane),
                    );
                }
            }
            dw
        });
        let sum = sum_in_order(partials, g.c_out * rows);
        let mut dw = vec![0f32; g.c_out * rows];
        for grp in 0..g.groups {
            let range = g.weight_range(grp);
            transpose(&sum[range.clone()], rows, g.group_out(), &mut dw[range]);
        }
        Ok((CpuStorage::F32(dw), g.weight_shape()))
    }
}
