//! The portable convolution kernel: packed GEMM (the `gemm` crate) over im2col columns, for
//! the forward pass and both gradients, one GEMM per image:
//!
//! ```text
//! forward       y[n]  = W · cols(x[n])                  (C_out x R) · (R x HW)
//! input grad    dx[n] = col2im(Wᵀ · dy[n])               (R x C_out) · (C_out x HW)
//! weight grad   dW    = Σ_n dy[n] · cols(x[n])ᵀ          (C_out x HW) · (HW x R)
//! ```
//!
//! with R = C_in·k·k.
//!
//! The weight gradient's GEMM writes dWᵀ and transposes it once at the end: at 16 channels
//! the gemm crate fills that layout about 3x faster than dW's own (`examples/gemm_layouts.rs`).
//! The forward pass keeps NCHW: written transposed, its GEMM was faster alone, but the
//! transpose back and the extra operand packing ate the gain in whole training steps. A
//! stride-1 convolution keeping the image size unfolds each column row as one shifted copy
//! of the input plane. Images run in parallel on Candle's worker pool
//! ([`crate::parallel`]). The weight gradient sums images in fixed chunks, then the chunks
//! in order, so results do not depend on the thread count.

use super::geometry::Geometry;
use crate::parallel;

/// The convolution of a batch `x` (N, C_in, H, W) with `weight` (C_out, C_in, k, k).
pub(super) fn forward(g: &Geometry, x: &[f32], weight: &[f32]) -> Vec<f32> {
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

/// The input gradient dx (N, C_in, H, W) from the output gradient `dy` and `weight`: per
/// image and group, Wᵀ · dy, folded back into the image by col2im (a pointwise
/// convolution's GEMM writes it directly).
pub(super) fn input_grad(g: &Geometry, dy: &[f32], weight: &[f32]) -> Vec<f32> {
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
    dx
}

/// The weight gradient dW (C_out, C_in / groups, k, k) from the output gradient `dy` and
/// the input `x`: images summed in fixed chunks of `images_per_sum`, then the chunks in
/// order.
pub(super) fn weight_grad(g: &Geometry, dy: &[f32], x: &[f32], images_per_sum: usize) -> Vec<f32> {
    let (rows, plane) = (g.rows(), g.out_plane());
    let partials: Vec<Vec<f32>> = parallel::map(g.batch.div_ceil(images_per_sum), |chunk| {
        let first = chunk * images_per_sum;
        let mut dw = vec![0f32; g.c_out * rows];
        let mut buffer = g.column_buffer();
        for n in first..(first + images_per_sum).min(g.batch) {
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
    dw
}

impl Geometry {
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
pub(super) fn sum_in_order(partials: Vec<Vec<f32>>, len: usize) -> Vec<f32> {
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
