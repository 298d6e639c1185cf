//! Winograd F(2x2, 3x3) for the 3x3, stride-1, padding-1 convolutions of a ResNet: the
//! forward pass and, through the flipped kernel, its input gradient.
//!
//! Each 2x2 block of outputs comes from the 4x4 block of inputs around it:
//!
//! ```text
//! y = Aᵀ [ Σ_ci (G g Gᵀ) ⊙ (Bᵀ d B) ] A
//! ```
//!
//! 16 multiplications per pair of channels where the direct kernel makes 36. The sum over
//! input channels runs in the transformed domain, as one GEMM per position ξ of the 4x4 block:
//! M[ξ] (C_out x tiles) = U[ξ] (C_out x C_in) · V[ξ] (C_in x tiles). Per group of images, on
//! one thread: the input transform fills V for every channel; then, 4 output channels at a
//! time, the 16 GEMMs fill M in a register tile like the direct kernel's (4 channels x up
//! to 4 vectors of 8 tiles), and the output transform writes the 4 output planes.
//!
//! The transforms add and subtract only, and the weight transform halves (exact in f32);
//! the result differs from the direct sum by rounding alone, and `tests/conv.rs` holds it
//! within 1e-4 of Candle's convolution. The summation order is fixed by the shapes (input
//! channels in order in every GEMM), so results do not depend on the thread count or on
//! how images are grouped.
//!
//! Batch 128, 2 threads, forward (`cargo bench -p auglocal-core --bench ops`, alternated
//! 3 times with the direct kernel): 16->16 on 32x32 2.95 ms against 3.2, 64->64 on 8x8 2.0
//! against 3.0, 64->64 on 32x32 (batch 64) 14.7 against 24.

use std::arch::x86_64::*;
use std::mem::MaybeUninit;

use super::conv_cpu::Geometry;
use super::conv_direct::{cpu_has_avx2_fma, Registers};

/// Output channels of one register tile.
const TILE_CHANNELS: usize = 4;
/// Tiles of one vector.
const LANES: usize = 8;
/// Positions ξ in a 4x4 transformed block.
const POSITIONS: usize = 16;

/// Whether [`forward`] runs this convolution: one group, 3x3, stride 1, padding 1, an even
/// height, a width that is a multiple of 8 and planes of whole vectors of tiles, whole
/// register tiles of output channels, on a CPU with AVX2 and FMA.
pub(crate) fn supported(g: &Geometry) -> bool {
    g.groups == 1
        && g.k == 3
        && g.stride == 1
        && g.padding == 1
        && g.h_out == g.h
        && g.w_out == g.w
        && g.h.is_multiple_of(2)
        && g.h > 0
        && g.w.is_multiple_of(LANES)
        && ((g.h / 2) * (g.w / 2)).is_multiple_of(LANES)
        && g.c_in > 0
        && g.c_out > 0
        && g.c_out.is_multiple_of(TILE_CHANNELS)
        && cpu_has_avx2_fma()
}

/// The tiles of one image and how an image sits in the input transform's buffer.
///
/// Each channel is zero-bordered (one row and column each side) and each padded row is
/// split into its even columns, then its odd ones, `half = W/2 + 1` floats each. Tile
/// (ty, tx) reads padded rows 2ty..2ty+4 and columns 2tx..2tx+4, which are at
/// `even[tx], odd[tx], even[tx + 1], odd[tx + 1]`: 4 consecutive tiles read 4 consecutive
/// floats for each of the 16 inputs.
#[derive(Debug, Clone, Copy)]
struct Tiles {
    /// Tile rows and columns of an image.
    rows: usize,
    cols: usize,
    /// Output plane size and width.
    plane: usize,
    width: usize,
    /// Floats of one padded row half, one padded row, one padded channel.
    half: usize,
    row: usize,
    padded_plane: usize,
}

impl Tiles {
    fn new(g: &Geometry) -> Self {
        let half = g.w / 2 + 1;
        Tiles {
            rows: g.h / 2,
            cols: g.w / 2,
            plane: g.h * g.w,
            width: g.w,
            half,
            row: 2 * half,
            padded_plane: (g.h + 2) * 2 * half,
        }
    }

    fn per_image(&self) -> usize {
        self.rows * self.cols
    }

    /// Offset of tile t's input at (row 0, column 0) in a padded channel.
    fn source(&self, t: usize) -> usize {
        let (ty, tx) = (t / self.cols, t % self.cols);
        2 * ty * self.row + tx
    }

    /// Offset of the input at (row r, column c) of a tile from the tile's source.
    fn tap(&self, r: usize, c: usize) -> usize {
        r * self.row + (c % 2) * self.half + c / 2
    }

    /// Offset of tile t's top-left output in an output plane.
    fn output(&self, t: usize) -> usize {
        let (ty, tx) = (t / self.cols, t % self.cols);
        2 * ty * self.width + 2 * tx
    }
}

/// The 16 transformed 3x3 kernels, packed as [ξ][C_out / 4][C_in][4]: the 4 values one step
/// of a register tile broadcasts, together.
fn transform_weights(g: &Geometry, weight: &[f32]) -> Vec<f32> {
    let blocks = g.c_out / TILE_CHANNELS;
    let mut packed = vec![0f32; POSITIONS * g.c_out * g.c_in];
    for co in 0..g.c_out {
        for ci in 0..g.c_in {
            let k = &weight[(co * g.c_in + ci) * 9..][..9];
            // G g: rows g0, (g0 + g1 + g2) / 2, (g0 - g1 + g2) / 2, g2; then the same on
            // the columns.
            let mut gg = [[0f32; 3]; 4];
            for c in 0..3 {
                let (a, b, d) = (k[c], k[3 + c], k[6 + c]);
                gg[0][c] = a;
                gg[1][c] = 0.5 * (a + b + d);
                gg[2][c] = 0.5 * (a - b + d);
                gg[3][c] = d;
            }
            for (i, row) in gg.iter().enumerate() {
                let [a, b, d] = *row;
                let u = [a, 0.5 * (a + b + d), 0.5 * (a - b + d), d];
                for (j, &value) in u.iter().enumerate() {
                    let xi = 4 * i + j;
                    let (block, m) = (co / TILE_CHANNELS, co % TILE_CHANNELS);
                    packed[((xi * blocks + block) * g.c_in + ci) * TILE_CHANNELS + m] = value;
                }
            }
        }
    }
    packed
}

/// Per-thread buffers: padded images, and for one chunk of tile vectors the transformed
/// inputs V [C_in][ξ][vector][8] and the GEMM results M [4][ξ][vector][8] of one block of
/// output channels. A chunk's V and M stay in the L1 and L2 caches; transforming the whole
/// image first and running each GEMM over all its tiles was slower than the direct kernel
/// at 16 channels (3.8 against 3.2 ms): its 16 rows of V, 16 KiB apart, fought over the
/// same cache sets.
struct Scratch {
    padded: Vec<f32>,
    v: Vec<f32>,
    m: Vec<f32>,
}

/// The convolution of `x` (N, C_in, H, W) with `weight` (C_out, C_in, 3, 3); callers check
/// [`supported`] first.
pub(crate) fn forward(g: &Geometry, x: &[f32], weight: &[f32]) -> Vec<f32> {
    assert!(supported(g), "winograd::forward called on {g:?}");
    let tiles = Tiles::new(g);
    let per_image = tiles.per_image();
    let regs = Registers::detect();
    let width = regs.tile_width();
    // Images per task: enough for one whole chunk of tile vectors.
    let group = (width * LANES).div_ceil(per_image);
    let u = transform_weights(g, weight);
    let blocks = g.c_out / TILE_CHANNELS;
    let (in_image, out_image) = (g.c_in * g.h * g.w, g.c_out * g.h * g.w);
    let padded_image = g.c_in * tiles.padded_plane;
    let init = || Scratch {
        padded: vec![0f32; group * padded_image],
        v: vec![0f32; g.c_in * POSITIONS * width * LANES],
        m: vec![0f32; TILE_CHANNELS * POSITIONS * width * LANES],
    };
    let convolve = |scratch: &mut Scratch, index: usize, y: &mut [MaybeUninit<f32>]| {
        let images = y.len() / out_image;
        let first_image = index * group;
        let x = &x[first_image * in_image..(first_image + images) * in_image];
        let padded = &mut scratch.padded[..images * padded_image];
        for (image, dst) in x
            .chunks_exact(in_image)
            .zip(padded.chunks_exact_mut(padded_image))
        {
            // SAFETY: `supported` checked AVX2.
            unsafe { tiles.fill(image, dst) };
        }
        let vectors = images * per_image / LANES;
        for first in (0..vectors).step_by(width) {
            let chunk = Chunk {
                first,
                len: (vectors - first).min(width),
            };
            let v = &mut scratch.v[..g.c_in * POSITIONS * chunk.len * LANES];
            let m = &mut scratch.m[..TILE_CHANNELS * POSITIONS * chunk.len * LANES];
            // SAFETY: `supported` checked AVX2 and FMA, `regs` the rest; the buffers have
            // the sizes each function states.
            unsafe {
                transform_inputs(&tiles, g.c_in, padded, chunk, v);
                for block in 0..blocks {
                    for xi in 0..POSITIONS {
                        let u = &u[(xi * blocks + block) * g.c_in * TILE_CHANNELS..]
                            [..g.c_in * TILE_CHANNELS];
                        gemm(regs, u, v, m, xi, chunk.len);
                    }
                    transform_outputs(&tiles, m, chunk, (&mut *y, out_image), block);
                }
            }
        }
    };
    // SAFETY: `convolve` writes every output of its images: its chunks cover all their tile
    // vectors, and each block of 4 channels writes the 2x2 outputs of every tile.
    unsafe {
        crate::parallel::written_chunks_init(g.batch * out_image, group * out_image, init, convolve)
    }
}

/// Tile vectors `first .. first + len` of a group of images: vector q holds tiles 8q .. 8q + 8
/// counted through the images in order, two runs of 4 tiles, each within one row of tiles.
#[derive(Debug, Clone, Copy)]
struct Chunk {
    first: usize,
    len: usize,
}

impl Chunk {
    /// For the chunk's k-th vector: its image, and its first tile in that image.
    fn vector(&self, tiles: &Tiles, k: usize) -> (usize, usize) {
        let tile = (self.first + k) * LANES;
        (tile / tiles.per_image(), tile % tiles.per_image())
    }
}

impl Tiles {
    /// Copies the channels of one image (C, H, W) into `padded`, zero elsewhere.
    ///
    /// # Safety
    /// The CPU supports AVX2.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn fill(&self, image: &[f32], padded: &mut [f32]) {
        let w = self.width;
        for (dst, channel) in padded
            .chunks_exact_mut(self.padded_plane)
            .zip(image.chunks_exact(self.plane))
        {
            dst[..self.row].fill(0.0);
            dst[(2 * self.rows + 1) * self.row..].fill(0.0);
            for (iy, line) in channel.chunks_exact(w).enumerate() {
                let (even, odd) = dst[(iy + 1) * self.row..][..self.row].split_at_mut(self.half);
                // Input column x is padded column x + 1: odd x lands in the even half.
                even[0] = 0.0;
                odd[self.cols] = 0.0;
                let mut j = 0;
                while 2 * j + 2 * LANES <= w {
                    let a = _mm256_loadu_ps(line.as_ptr().add(2 * j));
                    let b = _mm256_loadu_ps(line.as_ptr().add(2 * j + LANES));
                    // [a0 a2 b0 b2 a4 a6 b4 b6] and the odd ones, then the middle 64-bit
                    // lanes swapped: [a0 a2 a4 a6 b0 b2 b4 b6].
                    let evens = _mm256_shuffle_ps::<0b10_00_10_00>(a, b);
                    let odds = _mm256_shuffle_ps::<0b11_01_11_01>(a, b);
                    let evens = _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(
                        _mm256_castps_pd(evens),
                    ));
                    let odds = _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(
                        _mm256_castps_pd(odds),
                    ));
                    _mm256_storeu_ps(odd[j..j + LANES].as_mut_ptr(), evens);
                    _mm256_storeu_ps(even[j + 1..j + 1 + LANES].as_mut_ptr(), odds);
                    j += LANES;
                }
                for (j, pair) in line.chunks_exact(2).enumerate().skip(j) {
                    odd[j] = pair[0];
                    even[j + 1] = pair[1];
                }
            }
        }
    }
}

/// V[c][ξ][k][·] = (Bᵀ d B)[ξ] for every channel c and the tiles of the chunk's vectors k,
/// with Bᵀ = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]; `v` holds C · 16 · len · 8 floats.
///
/// # Safety
/// The CPU supports AVX2; `padded` holds whole padded images of `channels` channels.
#[target_feature(enable = "avx2,fma")]
unsafe fn transform_inputs(
    tiles: &Tiles,
    channels: usize,
    padded: &[f32],
    chunk: Chunk,
    v: &mut [f32],
) {
    assert_eq!(v.len(), channels * POSITIONS * chunk.len * LANES);
    let mut taps = [0usize; 16];
    for (i, tap) in taps.iter_mut().enumerate() {
        *tap = tiles.tap(i / 4, i % 4);
    }
    let last = tiles.tap(3, 3) + 4;
    let vp = v.as_mut_ptr();
    for k in 0..chunk.len {
        let (n, t) = chunk.vector(tiles, k);
        // Two runs of 4 tiles, each within one tile row.
        let (lo, hi) = (tiles.source(t), tiles.source(t + 4));
        let one_row = hi == lo + 4;
        for c in 0..channels {
            let plane = &padded[(n * channels + c) * tiles.padded_plane..][..tiles.padded_plane];
            assert!(lo + last <= plane.len() && hi + last <= plane.len());
            let p = plane.as_ptr();
            let mut d = [_mm256_setzero_ps(); 16];
            for (i, &tap) in taps.iter().enumerate() {
                d[i] = if one_row {
                    _mm256_loadu_ps(p.add(lo + tap))
                } else {
                    _mm256_loadu2_m128(p.add(hi + tap), p.add(lo + tap))
                };
            }
            // Rows: z = Bᵀ d.
            let mut z = [_mm256_setzero_ps(); 16];
            for j in 0..4 {
                z[j] = _mm256_sub_ps(d[j], d[8 + j]);
                z[4 + j] = _mm256_add_ps(d[4 + j], d[8 + j]);
                z[8 + j] = _mm256_sub_ps(d[8 + j], d[4 + j]);
                z[12 + j] = _mm256_sub_ps(d[4 + j], d[12 + j]);
            }
            // Columns: z B.
            for i in 0..4 {
                let r = &z[4 * i..4 * i + 4];
                let out = [
                    _mm256_sub_ps(r[0], r[2]),
                    _mm256_add_ps(r[1], r[2]),
                    _mm256_sub_ps(r[2], r[1]),
                    _mm256_sub_ps(r[1], r[3]),
                ];
                for (j, value) in out.into_iter().enumerate() {
                    let at = ((c * POSITIONS + 4 * i + j) * chunk.len + k) * LANES;
                    debug_assert!(at + LANES <= v.len());
                    _mm256_storeu_ps(vp.add(at), value);
                }
            }
        }
    }
}

/// M[·][ξ] (4 x len vectors) = U[ξ] (4 x C_in, packed [C_in][4]) · V[·][ξ] (C_in x len
/// vectors) in one register tile, input channels summed in order.
///
/// # Safety
/// The CPU has `regs`, AVX2 and FMA; `len <= regs.tile_width()`, `v` and `m` are a chunk's
/// buffers for `len` vectors.
unsafe fn gemm(regs: Registers, u: &[f32], v: &[f32], m: &mut [f32], xi: usize, len: usize) {
    debug_assert_eq!(u.len() * POSITIONS * len * LANES, v.len() * TILE_CHANNELS);
    debug_assert_eq!(m.len(), TILE_CHANNELS * POSITIONS * len * LANES);
    let step = POSITIONS * len * LANES;
    let args = (
        u,
        v.as_ptr().add(xi * len * LANES),
        m.as_mut_ptr().add(xi * len * LANES),
        step,
    );
    match (regs, len) {
        (Registers::Avx512, 4) => gemm_tile_avx512::<4>(args),
        (Registers::Avx512, 3) => gemm_tile_avx512::<3>(args),
        (_, 2) => gemm_tile::<2>(args),
        (_, 1) => gemm_tile::<1>(args),
        (_, w) => unreachable!("a GEMM tile of {w} vectors"),
    }
}

/// The operands of one GEMM tile: packed U, the tile's first V and M vectors, and the
/// distance between the rows of V (input channels) and of M (output channels).
type GemmArgs<'a> = (&'a [f32], *const f32, *mut f32, usize);

/// [`gemm_tile`] compiled for AVX-512VL's 32 registers.
///
/// # Safety
/// As [`gemm_tile`], on a CPU with AVX-512F and AVX-512VL.
#[target_feature(enable = "avx2,fma,avx512f,avx512vl")]
unsafe fn gemm_tile_avx512<const V: usize>(args: GemmArgs) {
    gemm_tile::<V>(args)
}

/// One register tile: M[r][k] = Σ_c U[c][r] · V[c][k] for the 4 rows r and the `V` vectors
/// k, input channels summed in order.
///
/// # Safety
/// The CPU supports AVX2 and FMA; V has a row of `V` vectors every `step` floats for each
/// packed channel of `u`, M one for each of the 4 rows.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn gemm_tile<const V: usize>(args: GemmArgs) {
    let (u, v, m, step) = args;
    let mut acc = [[_mm256_setzero_ps(); V]; TILE_CHANNELS];
    let mut src = v;
    for weights in u.chunks_exact(TILE_CHANNELS) {
        let mut xv = [_mm256_setzero_ps(); V];
        for (k, x) in xv.iter_mut().enumerate() {
            *x = _mm256_loadu_ps(src.add(k * LANES));
        }
        for (row, w) in acc.iter_mut().zip(weights) {
            let b = _mm256_broadcast_ss(w);
            for k in 0..V {
                row[k] = _mm256_fmadd_ps(b, xv[k], row[k]);
            }
        }
        src = src.add(step);
    }
    for (r, row) in acc.iter().enumerate() {
        for (k, value) in row.iter().enumerate() {
            _mm256_storeu_ps(m.add(r * step + k * LANES), *value);
        }
    }
}

/// Writes output channels 4·block .. 4·block + 4 of the chunk's tiles in `y` (the group's
/// images, `out_image` floats each) from M [4][ξ][k][·]: y = Aᵀ M A with
/// Aᵀ = [1 1 1 0; 0 1 -1 -1].
///
/// # Safety
/// The CPU supports AVX2; `m` is a chunk's buffer and `y` holds the group's images.
#[target_feature(enable = "avx2,fma")]
unsafe fn transform_outputs(
    tiles: &Tiles,
    m: &[f32],
    chunk: Chunk,
    (y, out_image): (&mut [MaybeUninit<f32>], usize),
    block: usize,
) {
    assert_eq!(m.len(), TILE_CHANNELS * POSITIONS * chunk.len * LANES);
    let w = tiles.width;
    let yp = y.as_mut_ptr().cast::<f32>();
    for k in 0..chunk.len {
        let (n, t) = chunk.vector(tiles, k);
        for r in 0..TILE_CHANNELS {
            let plane = n * out_image + (block * TILE_CHANNELS + r) * tiles.plane;
            assert!(plane + tiles.plane <= y.len());
            let mut s = [_mm256_setzero_ps(); 16];
            for (xi, value) in s.iter_mut().enumerate() {
                let at = ((r * POSITIONS + xi) * chunk.len + k) * LANES;
                *value = _mm256_loadu_ps(m.as_ptr().add(at));
            }
            // Rows: Aᵀ M.
            let mut a = [_mm256_setzero_ps(); 8];
            for j in 0..4 {
                a[j] = _mm256_add_ps(_mm256_add_ps(s[j], s[4 + j]), s[8 + j]);
                a[4 + j] = _mm256_sub_ps(_mm256_sub_ps(s[4 + j], s[8 + j]), s[12 + j]);
            }
            // Columns, and each tile's 2x2 outputs into place: a run of 4 tiles in a tile
            // row is 8 consecutive outputs, the even columns from the first column of A, the
            // odd ones from the second.
            let (lo, hi) = (plane + tiles.output(t), plane + tiles.output(t + 4));
            for (i, row) in [&a[..4], &a[4..]].into_iter().enumerate() {
                let even = _mm256_add_ps(_mm256_add_ps(row[0], row[1]), row[2]);
                let odd = _mm256_sub_ps(_mm256_sub_ps(row[1], row[2]), row[3]);
                let first = _mm256_unpacklo_ps(even, odd);
                let second = _mm256_unpackhi_ps(even, odd);
                _mm256_storeu_ps(
                    yp.add(lo + i * w),
                    _mm256_permute2f128_ps::<0x20>(first, second),
                );
                _mm256_storeu_ps(
                    yp.add(hi + i * w),
                    _mm256_permute2f128_ps::<0x31>(first, second),
                );
            }
        }
    }
}
