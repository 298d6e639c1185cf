//! Direct convolution on AVX2 + FMA for the convolutions of a ResNet that Winograd does not
//! take: stride 1 keeping the image size (and through the flipped kernel their input
//! gradients) and stride 2 (downsampling and projection shortcuts), forward and weight
//! gradient, and the 3x3 stride-2 input gradient as four stride-1 phases.
//!
//! The GEMM path materialises im2col columns, nine times the input, and the gemm crate
//! packs them once more. Here each image is copied once into a zero-bordered plane per
//! channel, at stride 2 with each row split into its even and odd columns ([`Padded`]), so
//! that 8 neighbouring output pixels read 8 consecutive floats under every kernel tap:
//!
//! - forward: a register tile of 4 output channels x 2 vectors of 8 pixels (4 x 4 with
//!   AVX-512VL's 32 registers); for every input channel and kernel tap, one unaligned load
//!   per vector, 4 broadcast weights and an FMA per accumulator. (3 vectors on AVX2 need all
//!   16 registers; the compiler then spilled an accumulator and the kernel ran at half
//!   speed.)
//! - weight gradient: a tile of 4 output channels x 2 (or 4) weight rows (input channel,
//!   tap), summed over every pixel vector of a group of images, 8 lanes per sum.
//!
//! An output row is a whole number of vectors (width a multiple of 8), so no lane ever
//! reads across a row's end ([`Padded::fits`]). Summation order is fixed by the shapes
//! alone (input channels, then taps, in order; images in fixed groups): results do not
//! depend on the thread count.
//!
//! x86-64 only; elsewhere, and on CPUs without AVX2, the GEMM path runs.
//!
//! Batch 128, 2 threads, AVX-512VL tiles (`cargo bench -p auglocal-core --bench ops`),
//! forward against the GEMM path: 3x3 16->16 on 32x32 3.2 ms against 6.9, 64->64 on 8x8
//! 3.0 against 4.0, 16->32 at stride 2 on 32x32 2.1 against 3.6.

use std::arch::x86_64::*;
use std::mem::MaybeUninit;

use super::geometry::Geometry;
use crate::kernels::simd::{cpu_has_avx2_fma, Registers};

/// Output channels of one register tile.
const TILE_CHANNELS: usize = 4;
const LANES: usize = 8;

/// Whether [`forward`] runs this convolution: one group, stride 1 with the output as large
/// as the input (k > 1), or stride 2; output rows of whole vectors, whole tiles of output
/// channels, and a CPU with AVX2 and FMA.
pub(crate) fn supported(g: &Geometry) -> bool {
    let shape = match g.stride {
        1 => g.k > 1 && g.h_out == g.h && g.w_out == g.w,
        2 => true,
        _ => false,
    };
    g.groups == 1
        && shape
        && g.c_in > 0
        && g.c_out > 0
        && g.w_out.is_multiple_of(LANES)
        && g.c_out.is_multiple_of(TILE_CHANNELS)
        && Padded::new(g).fits(g)
        && cpu_has_avx2_fma()
}

/// Whether [`weight_grad`] runs this convolution: as [`supported`], on planes of at least
/// 256 pixels. On smaller ones each register tile sums too few pixels for its fixed cost:
/// an 8x8 plane of 64 channels, batch 128, took 5.6 ms on AVX2 tiles against the GEMM's
/// 4.2, and AVX-512 tiles only drew even.
pub(crate) fn supports_weight_grad(g: &Geometry) -> bool {
    supported(g) && g.h_out * g.w_out >= 256
}

/// How an image sits in the kernels' input buffer: each channel zero-bordered by the
/// padding, and at stride 2 each row split into its even columns, then its odd ones. An
/// output vector's 8 pixels then read 8 consecutive floats for every tap:
/// output (oy, ox) under tap (ky, kx) reads padded pixel (s·oy + ky, s·ox + kx), stored at
/// `(s·oy + ky)·row + (kx mod s)·phase + ox + kx div s`.
#[derive(Debug, Clone, Copy)]
struct Padded {
    stride: usize,
    /// Padded rows.
    rows: usize,
    /// Floats of one stored row.
    row: usize,
    /// Floats of one column phase of a row (the whole row at stride 1).
    phase: usize,
}

impl Padded {
    fn new(g: &Geometry) -> Self {
        let (rows, cols) = (g.h + 2 * g.padding, g.w + 2 * g.padding);
        let phase = cols.div_ceil(g.stride);
        Padded {
            stride: g.stride,
            rows,
            row: phase * g.stride,
            phase,
        }
    }

    /// Floats of one channel.
    fn plane(&self) -> usize {
        self.rows * self.row
    }

    /// Where padded pixel (py, px) is stored within its channel; also the offset of tap
    /// (ky, kx) = (py, px) from an output vector's source.
    fn at(&self, py: usize, px: usize) -> usize {
        py * self.row + (px % self.stride) * self.phase + px / self.stride
    }

    /// Offset of output pixel (oy, ox)'s source at tap (0, 0).
    fn source(&self, oy: usize, ox: usize) -> usize {
        self.stride * oy * self.row + ox
    }

    /// Whether every read of every tap stays inside its phase of its row: the last vector
    /// of a row at the last tap ends at most at the phase's end.
    fn fits(&self, g: &Geometry) -> bool {
        if g.k == 0 || g.h_out == 0 || g.w_out == 0 {
            return false;
        }
        let last_tap = g.k - 1;
        let last_row = self.stride * (g.h_out - 1) + last_tap;
        let last_col = (g.w_out - 1) + last_tap / self.stride;
        last_row < self.rows && last_col < self.phase
    }

    /// Copies one image (C_in, H, W) into `padded`, zero elsewhere.
    fn fill(&self, g: &Geometry, image: &[f32], padded: &mut [f32]) {
        let p = g.padding;
        for (c, dst) in padded.chunks_exact_mut(self.plane()).enumerate() {
            let channel = &image[c * g.h * g.w..(c + 1) * g.h * g.w];
            if self.stride == 1 {
                dst[..p * self.row].fill(0.0);
                dst[(g.h + p) * self.row..].fill(0.0);
                for (iy, src) in channel.chunks_exact(g.w).enumerate() {
                    let line = &mut dst[(iy + p) * self.row..(iy + p + 1) * self.row];
                    line[..p].fill(0.0);
                    line[p + g.w..].fill(0.0);
                    line[p..p + g.w].copy_from_slice(src);
                }
                continue;
            }
            // Stride 2: input column ix lands at padded column ix + p, in the even half
            // of its row when that is even.
            dst.fill(0.0);
            let first_even = p % 2;
            for (iy, src) in channel.chunks_exact(g.w).enumerate() {
                let (even, odd) = dst[(iy + p) * self.row..][..self.row].split_at_mut(self.phase);
                let even_at = (first_even + p) / 2;
                for (d, &v) in even[even_at..]
                    .iter_mut()
                    .zip(src.iter().skip(first_even).step_by(2))
                {
                    *d = v;
                }
                let odd_at = (1 - first_even + p - 1) / 2;
                for (d, &v) in odd[odd_at..]
                    .iter_mut()
                    .zip(src.iter().skip(1 - first_even).step_by(2))
                {
                    *d = v;
                }
            }
        }
    }
}

/// The convolution of `x` (N, C_in, H, W) with `weight` (C_out, C_in, k, k); callers check
/// [`supported`] first.
pub(crate) fn forward(g: &Geometry, x: &[f32], weight: &[f32]) -> Vec<f32> {
    assert!(supported(g), "direct::forward called on {g:?}");
    let k = g.k;
    let layout = Padded::new(g);
    let taps: Vec<usize> = (0..k * k).map(|t| layout.at(t / k, t % k)).collect();
    let packed = pack_weights(g, weight);
    let vectors = pixel_vectors(g, &layout);
    let regs = Registers::detect();
    let (in_image, plane, plane_p) = (g.c_in * g.h * g.w, g.h_out * g.w_out, layout.plane());
    let convolve = |padded: &mut Vec<f32>, n: usize, y: &mut [MaybeUninit<f32>]| {
        layout.fill(g, &x[n * in_image..(n + 1) * in_image], padded);
        let per_block = g.c_in * k * k * TILE_CHANNELS;
        for (block, w) in packed.chunks_exact(per_block).enumerate() {
            let y = &mut y[block * TILE_CHANNELS * plane..(block + 1) * TILE_CHANNELS * plane];
            // SAFETY: `supported` checked AVX2 and FMA, `regs` the rest; the offsets stay
            // inside `padded` and `y` (see `tile_avx2`).
            unsafe { forward_tiles(regs, padded, plane_p, w, &taps, &vectors, y, plane) }
        }
    };
    // SAFETY: `convolve` writes every output: each block of 4 channels stores every pixel
    // vector of their planes, and the vectors tile each plane (rows of whole vectors).
    unsafe {
        crate::parallel::written_chunks_init(
            g.batch * g.c_out * plane,
            g.c_out * plane,
            || vec![0f32; g.c_in * plane_p],
            convolve,
        )
    }
}

/// The output plane's vectors of 8 pixels: (offset of the first pixel's source at tap
/// (0, 0) in a padded channel, offset of the first pixel in an output plane).
fn pixel_vectors(g: &Geometry, layout: &Padded) -> Vec<(usize, usize)> {
    (0..g.h_out)
        .flat_map(|oy| {
            (0..g.w_out)
                .step_by(LANES)
                .map(move |ox| (layout.source(oy, ox), oy * g.w_out + ox))
        })
        .collect()
}

/// The weight gradient `dW[co][ci][tap] = Σ_n Σ_pixels dy[n][co][pixel] · x[n][ci][pixel +
/// tap]` of the convolutions [`supported`] accepts, for output gradient `dy` and input `x`.
///
/// Images are summed in fixed groups of `images_per_sum`, each group's sum one f32 vector
/// chain per weight, then the groups in order: results do not depend on the thread count.
pub(crate) fn weight_grad(g: &Geometry, dy: &[f32], x: &[f32], images_per_sum: usize) -> Vec<f32> {
    assert!(
        supports_weight_grad(g),
        "direct::weight_grad called on {g:?}"
    );
    let k = g.k;
    let layout = Padded::new(g);
    let (plane, plane_p, rows) = (g.h_out * g.w_out, layout.plane(), g.c_in * k * k);
    let (in_image, out_image) = (g.c_in * g.h * g.w, g.c_out * plane);
    let vectors = pixel_vectors(g, &layout);
    let regs = Registers::detect();
    // Each row of dW: (input channel plane's offset in a padded image, tap offset).
    let sources: Vec<(usize, usize)> = (0..rows)
        .map(|r| {
            let (ci, tap) = (r / (k * k), r % (k * k));
            (ci * plane_p, layout.at(tap / k, tap % k))
        })
        .collect();
    let images_per_sum = images_per_sum.max(1);
    let partials: Vec<Vec<f32>> = crate::parallel::map_init(
        g.batch.div_ceil(images_per_sum),
        Vec::new,
        |padded, group| {
            let first = group * images_per_sum;
            let count = images_per_sum.min(g.batch - first);
            // `fill` writes every float of each image's planes, so the buffer is reused as is.
            padded.resize(count * g.c_in * plane_p, 0.0);
            for (i, dst) in padded.chunks_exact_mut(g.c_in * plane_p).enumerate() {
                let n = first + i;
                layout.fill(g, &x[n * in_image..(n + 1) * in_image], dst);
            }
            let dy = &dy[first * out_image..(first + count) * out_image];
            let mut dw = vec![0f32; g.c_out * rows];
            for co in (0..g.c_out).step_by(TILE_CHANNELS) {
                for (i, rows_tile) in sources.chunks(regs.tile_width()).enumerate() {
                    let r = i * regs.tile_width();
                    // SAFETY: `supported` checked AVX2 and FMA, `regs` the rest; offsets
                    // as in `wgrad_tile`.
                    let sums = unsafe {
                        wgrad_tiles(
                            regs,
                            padded,
                            g.c_in * plane_p,
                            dy,
                            out_image,
                            plane,
                            co,
                            rows_tile,
                            &vectors,
                        )
                    };
                    for (m, s) in sums.iter().enumerate() {
                        dw[(co + m) * rows + r..][..rows_tile.len()]
                            .copy_from_slice(&s[..rows_tile.len()]);
                    }
                }
            }
            dw
        },
    );
    super::gemm::sum_in_order(partials, g.c_out * rows)
}

/// Weights as [C_out / 4][C_in][tap][4]: the 4 values one step of a tile broadcasts, together.
fn pack_weights(g: &Geometry, weight: &[f32]) -> Vec<f32> {
    let kk = g.k * g.k;
    let mut packed = vec![0f32; weight.len()];
    let mut i = 0;
    for block in 0..g.c_out / TILE_CHANNELS {
        for ci in 0..g.c_in {
            for tap in 0..kk {
                for m in 0..TILE_CHANNELS {
                    let co = block * TILE_CHANNELS + m;
                    packed[i] = weight[(co * g.c_in + ci) * kk + tap];
                    i += 1;
                }
            }
        }
    }
    packed
}

/// Runs forward tiles over `vectors`, `regs.tile_width()` at a time, the last one narrower.
///
/// # Safety
/// As [`tile_avx2`], on a CPU that has `regs`.
#[allow(clippy::too_many_arguments)]
unsafe fn forward_tiles(
    regs: Registers,
    padded: &[f32],
    plane_p: usize,
    weights: &[f32],
    taps: &[usize],
    vectors: &[(usize, usize)],
    y: &mut [MaybeUninit<f32>],
    plane: usize,
) {
    for tile in vectors.chunks(regs.tile_width()) {
        let args = (padded, plane_p, weights, taps, tile);
        match (regs, tile.len()) {
            (Registers::Avx512, 4) => tile_avx512::<4>(args, y, plane),
            (Registers::Avx512, 3) => tile_avx512::<3>(args, y, plane),
            (_, 2) => tile_avx2::<2>(args, y, plane),
            (_, 1) => tile_avx2::<1>(args, y, plane),
            (_, width) => unreachable!("a forward tile of {width} vectors"),
        }
    }
}

/// The operands of one forward tile: padded image, padded plane size, packed weights of 4
/// output channels, tap offsets, and the tile's pixel vectors.
type TileArgs<'a> = (
    &'a [f32],
    usize,
    &'a [f32],
    &'a [usize],
    &'a [(usize, usize)],
);

/// [`tile_avx2`] compiled for AVX-512VL's 32 registers.
///
/// # Safety
/// As [`tile_avx2`], on a CPU with AVX-512F and AVX-512VL.
#[target_feature(enable = "avx2,fma,avx512f,avx512vl")]
unsafe fn tile_avx512<const V: usize>(args: TileArgs, y: &mut [MaybeUninit<f32>], plane: usize) {
    tile_avx2::<V>(args, y, plane)
}

/// Sums of one weight-gradient tile of `rows.len()` (up to 4) weight rows, as
/// [`wgrad_tile`]; columns past `rows.len()` are zero.
///
/// # Safety
/// As [`wgrad_tile`], on a CPU that has `regs`.
#[allow(clippy::too_many_arguments)]
unsafe fn wgrad_tiles(
    regs: Registers,
    padded: &[f32],
    image_p: usize,
    dy: &[f32],
    out_image: usize,
    plane: usize,
    co: usize,
    rows: &[(usize, usize)],
    vectors: &[(usize, usize)],
) -> [[f32; 4]; TILE_CHANNELS] {
    fn widen<const T: usize>(sums: [[f32; T]; TILE_CHANNELS]) -> [[f32; 4]; TILE_CHANNELS] {
        let mut out = [[0f32; 4]; TILE_CHANNELS];
        for (o, s) in out.iter_mut().zip(&sums) {
            o[..T].copy_from_slice(s);
        }
        out
    }
    let args = (padded, image_p, dy, out_image, plane, co, rows, vectors);
    match (regs, rows.len()) {
        (Registers::Avx512, 4) => widen(wgrad_tile_avx512::<4>(args)),
        (Registers::Avx512, 3) => widen(wgrad_tile_avx512::<3>(args)),
        (_, 2) => widen(wgrad_tile::<2>(args)),
        (_, 1) => widen(wgrad_tile::<1>(args)),
        (_, width) => unreachable!("a weight-gradient tile of {width} rows"),
    }
}

/// The operands of one weight-gradient tile: padded images, padded image size, output
/// gradient, output image size, output plane size, first output channel, weight rows
/// (channel plane offset, tap offset), pixel vectors.
type WgradArgs<'a> = (
    &'a [f32],
    usize,
    &'a [f32],
    usize,
    usize,
    usize,
    &'a [(usize, usize)],
    &'a [(usize, usize)],
);

/// [`wgrad_tile`] compiled for AVX-512VL's 32 registers.
///
/// # Safety
/// As [`wgrad_tile`], on a CPU with AVX-512F and AVX-512VL.
#[target_feature(enable = "avx2,fma,avx512f,avx512vl")]
unsafe fn wgrad_tile_avx512<const T: usize>(args: WgradArgs) -> [[f32; T]; TILE_CHANNELS] {
    wgrad_tile::<T>(args)
}

/// One forward register tile: 4 output channels x `V` pixel vectors.
///
/// `tile[v]` is (offset of the vector's top-left source in a padded plane, offset of the
/// vector in an output plane); `taps[t]` the offset of tap t from that source. Reads
/// `padded[c * plane_p + src + tap .. + 8]`, inside the plane because the vector's pixels
/// and the kernel both stay inside the padded image; writes `y[m * plane + dst .. + 8]`.
///
/// # Safety
/// The CPU supports AVX2 and FMA, and the offsets are as described.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn tile_avx2<const V: usize>(args: TileArgs, y: &mut [MaybeUninit<f32>], plane: usize) {
    let (padded, plane_p, weights, taps, tile) = args;
    debug_assert_eq!(tile.len(), V);
    let c_in = padded.len() / plane_p;
    debug_assert_eq!(weights.len(), c_in * taps.len() * TILE_CHANNELS);
    let mut acc = [[_mm256_setzero_ps(); V]; TILE_CHANNELS];
    let mut src = [0usize; V];
    for v in 0..V {
        src[v] = tile[v].0;
    }
    let mut w = weights.as_ptr();
    for c in 0..c_in {
        let base = padded.as_ptr().add(c * plane_p);
        for &tap in taps {
            let mut xv = [_mm256_setzero_ps(); V];
            for v in 0..V {
                debug_assert!(c * plane_p + src[v] + tap + LANES <= padded.len());
                xv[v] = _mm256_loadu_ps(base.add(src[v] + tap));
            }
            for (m, row) in acc.iter_mut().enumerate() {
                let b = _mm256_broadcast_ss(&*w.add(m));
                for v in 0..V {
                    row[v] = _mm256_fmadd_ps(b, xv[v], row[v]);
                }
            }
            w = w.add(TILE_CHANNELS);
        }
    }
    for (m, row) in acc.iter().enumerate() {
        for v in 0..V {
            let at = m * plane + tile[v].1;
            debug_assert!(at + LANES <= y.len());
            _mm256_storeu_ps(y.as_mut_ptr().cast::<f32>().add(at), row[v]);
        }
    }
}

/// Sums for 4 output channels from `co` x `T` rows of dW: over every image in `padded`
/// (images `image_p` apart) and `dy` (images `out_image` apart, channel planes `plane`
/// apart), over every pixel vector, one 8-lane accumulator each, its lanes added in order.
///
/// `rows[t]` = (channel plane offset in a padded image, tap offset); reads stay inside the
/// padded planes as in [`tile_avx2`], and `dy[n * out_image + (co + m) * plane + dst .. + 8]`.
///
/// # Safety
/// The CPU supports AVX2 and FMA, and the offsets are as described.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn wgrad_tile<const T: usize>(args: WgradArgs) -> [[f32; T]; TILE_CHANNELS] {
    let (padded, image_p, dy, out_image, plane, co, rows, vectors) = args;
    debug_assert_eq!(rows.len(), T);
    let mut acc = [[_mm256_setzero_ps(); T]; TILE_CHANNELS];
    for n in 0..padded.len() / image_p {
        let image = padded.as_ptr().add(n * image_p);
        let grads = dy.as_ptr().add(n * out_image + co * plane);
        let mut sources = [image; T];
        for t in 0..T {
            sources[t] = image.add(rows[t].0 + rows[t].1);
        }
        for &(src, dst) in vectors {
            debug_assert!(
                n * out_image + (co + TILE_CHANNELS - 1) * plane + dst + LANES <= dy.len()
            );
            let mut d = [_mm256_setzero_ps(); TILE_CHANNELS];
            for (m, d) in d.iter_mut().enumerate() {
                *d = _mm256_loadu_ps(grads.add(m * plane + dst));
            }
            for t in 0..T {
                debug_assert!(n * image_p + rows[t].0 + rows[t].1 + src + LANES <= padded.len());
                let xv = _mm256_loadu_ps(sources[t].add(src));
                for m in 0..TILE_CHANNELS {
                    acc[m][t] = _mm256_fmadd_ps(d[m], xv, acc[m][t]);
                }
            }
        }
    }
    let mut sums = [[0f32; T]; TILE_CHANNELS];
    for m in 0..TILE_CHANNELS {
        for t in 0..T {
            let mut lanes = [0f32; LANES];
            _mm256_storeu_ps(lanes.as_mut_ptr(), acc[m][t]);
            sums[m][t] = lanes.iter().sum();
        }
    }
    sums
}

/// Whether [`input_grad_stride2`] runs this convolution: one group, 3x3, stride 2, padding
/// 1, an input twice the output (H = 2·H_out, W = 2·W_out), output rows of whole vectors,
/// whole register tiles of input channels, and a CPU with AVX2 and FMA.
pub(crate) fn supports_input_grad_stride2(g: &Geometry) -> bool {
    g.groups == 1
        && g.k == 3
        && g.stride == 2
        && g.padding == 1
        && g.h == 2 * g.h_out
        && g.w == 2 * g.w_out
        && g.w_out.is_multiple_of(LANES)
        && g.c_in.is_multiple_of(TILE_CHANNELS)
        && g.c_in > 0
        && g.c_out > 0
        && cpu_has_avx2_fma()
}

/// One phase (a, b) of a stride-2 input gradient: its taps' offsets in the padded output
/// gradient and its weights (input channels as output channels) packed for
/// [`forward_tiles`].
struct Phase {
    taps: Vec<usize>,
    weights: Vec<f32>,
}

/// The input gradient of a 3x3, stride-2, padding-1 convolution as four stride-1
/// convolutions of dy, one per phase (a, b) of dx's rows and columns:
///
/// ```text
/// dx[ci][2i + a][2j + b] = Σ_co Σ w[co][ci][ky][kx] · dy[co][i + di][j + dj]
/// ```
///
/// over the taps with ky ≡ a + 1 and kx ≡ b + 1 (mod 2): along each axis, ky = 1 at
/// offset 0 for the even phase, ky = 0 at offset +1 and ky = 2 at offset 0 for the odd one.
/// Each phase runs on the forward kernel's register tiles (input channels as its output
/// channels), from dy bordered by one zero row and column; the phases are then interleaved
/// into dx. The GEMM path it replaces computed all 9 taps' columns and scattered them back
/// (col2im), ~10% of a ResNet-32 AugLocal step.
pub(crate) fn input_grad_stride2(g: &Geometry, dy: &[f32], weight: &[f32]) -> Vec<f32> {
    assert!(
        supports_input_grad_stride2(g),
        "direct::input_grad_stride2 called on {g:?}"
    );
    let (h2, w2) = (g.h_out, g.w_out);
    let row = w2 + 1;
    let plane_p = (h2 + 1) * row;
    // Per axis and phase: (kernel tap, offset in dy).
    let axis: [&[(usize, usize)]; 2] = [&[(1, 0)], &[(0, 1), (2, 0)]];
    // Phase (a, b) is phases[2a + b].
    let phases: Vec<Phase> = (0..4)
        .map(|p| {
            let (ra, cb) = (axis[p / 2], axis[p % 2]);
            let pairs: Vec<(usize, usize)> = ra
                .iter()
                .flat_map(|&(ky, dr)| cb.iter().map(move |&(kx, dc)| (3 * ky + kx, dr * row + dc)))
                .collect();
            let mut weights = Vec::with_capacity(g.c_in * g.c_out * pairs.len());
            for block in 0..g.c_in / TILE_CHANNELS {
                for co in 0..g.c_out {
                    for &(tap, _) in &pairs {
                        for m in 0..TILE_CHANNELS {
                            let ci = block * TILE_CHANNELS + m;
                            weights.push(weight[(co * g.c_in + ci) * 9 + tap]);
                        }
                    }
                }
            }
            Phase {
                taps: pairs.iter().map(|p| p.1).collect(),
                weights,
            }
        })
        .collect();
    let vectors: Vec<(usize, usize)> = (0..h2)
        .flat_map(|i| {
            (0..w2)
                .step_by(LANES)
                .map(move |j| (i * row + j, i * w2 + j))
        })
        .collect();
    let regs = Registers::detect();
    let (in_image, out_image, phase_plane) = (g.c_in * g.h * g.w, g.c_out * h2 * w2, h2 * w2);
    let init = || {
        (
            vec![0f32; g.c_out * plane_p],
            vec![0f32; 4 * g.c_in * phase_plane],
        )
    };
    let by_phases =
        |(padded, parts): &mut (Vec<f32>, Vec<f32>), n: usize, dx: &mut [MaybeUninit<f32>]| {
            let dy = &dy[n * out_image..(n + 1) * out_image];
            for (dst, src) in padded
                .chunks_exact_mut(plane_p)
                .zip(dy.chunks_exact(h2 * w2))
            {
                for (line, values) in dst.chunks_exact_mut(row).zip(src.chunks_exact(w2)) {
                    line[..w2].copy_from_slice(values);
                    line[w2] = 0.0;
                }
                dst[h2 * row..].fill(0.0);
            }
            for (phase, part) in phases
                .iter()
                .zip(parts.chunks_exact_mut(g.c_in * phase_plane))
            {
                let per_block = g.c_out * phase.taps.len() * TILE_CHANNELS;
                for (block, w) in phase.weights.chunks_exact(per_block).enumerate() {
                    let y = &mut part[block * TILE_CHANNELS * phase_plane..]
                        [..TILE_CHANNELS * phase_plane];
                    // SAFETY: a `&mut [f32]` viewed as `MaybeUninit<f32>`s, which the kernel only
                    // overwrites with floats.
                    let y = unsafe { &mut *(y as *mut [f32] as *mut [MaybeUninit<f32>]) };
                    // SAFETY: `supports_input_grad_stride2` checked AVX2 and FMA, `regs` the rest;
                    // every read stays inside its zero-bordered plane (see `tile_avx2`).
                    unsafe {
                        forward_tiles(
                            regs,
                            padded,
                            plane_p,
                            w,
                            &phase.taps,
                            &vectors,
                            y,
                            phase_plane,
                        )
                    }
                }
            }
            // Interleave: dx row 2i + a takes phase (a, 0)'s row i in its even columns and
            // phase (a, 1)'s in its odd ones.
            let part = |p: usize, ci: usize, i: usize| {
                &parts[(p * g.c_in + ci) * phase_plane + i * w2..][..w2]
            };
            for ci in 0..g.c_in {
                for i in 0..h2 {
                    for a in 0..2 {
                        let (even, odd) = (part(2 * a, ci, i), part(2 * a + 1, ci, i));
                        let line = &mut dx[ci * g.h * g.w + (2 * i + a) * g.w..][..g.w];
                        for (pair, (&e, &o)) in line.chunks_exact_mut(2).zip(even.iter().zip(odd)) {
                            pair[0].write(e);
                            pair[1].write(o);
                        }
                    }
                }
            }
        };
    // SAFETY: `by_phases` writes every float of its image: every channel, row (both row
    // phases) and column (both column phases).
    unsafe { crate::parallel::written_chunks_init(g.batch * in_image, in_image, init, by_phases) }
}
