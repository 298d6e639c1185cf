//! Depthwise convolution (one k x k filter per channel) on the CPU as direct loops.
//!
//! The grouped GEMM path ([`super::gemm`]) runs one GEMM per channel there: a 1 x (k·k)
//! times (k·k) x HW product whose im2col copy costs more than the arithmetic. MobileNetV2
//! spends most of its convolutions on such layers, so they get their own kernel: for each
//! kernel tap, one multiply-add over the run of output pixels whose source lies inside the
//! image (contiguous when the stride is 1, so it vectorises). Planes run in parallel; the
//! weight gradient sums images in order per channel, so results do not depend on the thread
//! count.

use crate::parallel;

use super::geometry::Geometry;

/// Calls `f(tap, out_start, in_start, len)` for every kernel tap (`ky * k + kx`) and output
/// row whose source row is inside the image: output pixels `out_start..out_start + len` of
/// the plane read input pixels `in_start, in_start + stride, ...`.
#[inline]
fn for_each_tap(g: &Geometry, mut f: impl FnMut(usize, usize, usize, usize)) {
    for ky in 0..g.k {
        for kx in 0..g.k {
            let (x_lo, x_hi) = g.valid_range(kx, g.w, g.w_out);
            if x_lo == x_hi {
                continue;
            }
            let first = x_lo * g.stride + kx - g.padding;
            for oy in 0..g.h_out {
                if let Some(iy) = g.source(oy, ky, g.h) {
                    f(
                        ky * g.k + kx,
                        oy * g.w_out + x_lo,
                        iy * g.w + first,
                        x_hi - x_lo,
                    );
                }
            }
        }
    }
}

/// `y[n, c] = x[n, c] ⋆ w[c]` for input (N, C, H, W) and weight (C, 1, k, k).
pub(crate) fn forward(g: &Geometry, x: &[f32], weight: &[f32]) -> Vec<f32> {
    let (plane_in, plane_out, taps) = (g.h * g.w, g.h_out * g.w_out, g.k * g.k);
    let y = parallel::zeroed_chunks(g.batch * g.c_out * plane_out, plane_out, |p, out| {
        let c = p % g.c_in;
        let src = &x[p * plane_in..(p + 1) * plane_in];
        let w = &weight[c * taps..(c + 1) * taps];
        for_each_tap(g, |tap, o, i, len| {
            let wv = w[tap];
            let out = &mut out[o..o + len];
            if g.stride == 1 {
                for (v, s) in out.iter_mut().zip(&src[i..i + len]) {
                    *v += wv * s;
                }
            } else {
                for (v, s) in out.iter_mut().zip(src[i..].iter().step_by(g.stride)) {
                    *v += wv * s;
                }
            }
        });
    });
    y
}

/// The input gradient from the output gradient `dy` and the weight.
pub(crate) fn input_grad(g: &Geometry, dy: &[f32], weight: &[f32]) -> Vec<f32> {
    let (plane_in, plane_out, taps) = (g.h * g.w, g.h_out * g.w_out, g.k * g.k);
    let dx = parallel::zeroed_chunks(g.batch * g.c_in * plane_in, plane_in, |p, dst| {
        let c = p % g.c_in;
        let grad = &dy[p * plane_out..(p + 1) * plane_out];
        let w = &weight[c * taps..(c + 1) * taps];
        for_each_tap(g, |tap, o, i, len| {
            let wv = w[tap];
            let grad = &grad[o..o + len];
            if g.stride == 1 {
                for (d, s) in dst[i..i + len].iter_mut().zip(grad) {
                    *d += wv * s;
                }
            } else {
                for (d, s) in dst[i..].iter_mut().step_by(g.stride).zip(grad) {
                    *d += wv * s;
                }
            }
        });
    });
    dx
}

/// The weight gradient from the output gradient `dy` and the input `x`.
pub(crate) fn weight_grad(g: &Geometry, dy: &[f32], x: &[f32]) -> Vec<f32> {
    let (plane_in, plane_out, taps) = (g.h * g.w, g.h_out * g.w_out, g.k * g.k);
    let dw = parallel::zeroed_chunks(g.c_out * taps, taps, |c, acc| {
        for n in 0..g.batch {
            let p = n * g.c_in + c;
            let src = &x[p * plane_in..(p + 1) * plane_in];
            let grad = &dy[p * plane_out..(p + 1) * plane_out];
            for_each_tap(g, |tap, o, i, len| {
                let grad = &grad[o..o + len];
                let dot: f32 = if g.stride == 1 {
                    grad.iter().zip(&src[i..i + len]).map(|(a, b)| a * b).sum()
                } else {
                    grad.iter()
                        .zip(src[i..].iter().step_by(g.stride))
                        .map(|(a, b)| a * b)
                        .sum()
                };
                acc[tap] += dot;
            });
        }
    });
    dw
}
