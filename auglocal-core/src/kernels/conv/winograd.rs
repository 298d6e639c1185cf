//! Winograd convolution for the 3x3, stride-1, padding-1 convolutions of a ResNet: the
//! forward pass, through the flipped kernel its input gradient, and with the roles of the
//! transforms swapped its weight gradient ([`weight_grad`]).
//!
//! Each m x m block of outputs (a tile) comes from the (m + 2) x (m + 2) block of inputs
//! around it:
//!
//! ```text
//! y = Aᵀ [ Σ_ci (G g Gᵀ) ⊙ (Bᵀ d B) ] A
//! ```
//!
//! F(4x4, 3x3) makes 36 multiplications per pair of channels for 16 outputs, F(2x2, 3x3) 16
//! for 4, where the direct kernel makes 9 an output. The sum over input channels runs in
//! the transformed domain, as one GEMM per position ξ of the block: M[ξ] (C_out x tiles) =
//! U[ξ] (C_out x C_in) · V[ξ] (C_in x tiles). Per chunk of up to 32 tiles, on one thread:
//! the input transform fills V for every channel; then, 4 output channels at a time, the
//! GEMMs fill M in a register tile like the direct kernel's (4 channels x up to 4 vectors
//! of 8 tiles), and the output transform writes the 4 channels' outputs.
//!
//! F(4x4) runs along rows where runs of 4 tiles fit (height a multiple of 4, width of 16:
//! the 32x32 and 16x16 planes of a CIFAR ResNet): a vector holds 8 tiles of one image. An
//! 8x8 plane has 4 tiles, so there a vector holds the same tile of 8 images
//! ([`Lanes::Images`]). F(2x2) runs along rows on planes neither fits. The transforms are
//! exact in real arithmetic, so the result differs from the direct sum by rounding alone;
//! `tests/conv.rs` holds it within 1e-4 of Candle's convolution. The summation order is
//! fixed by the shapes (input channels in order in every GEMM), so results do not depend on
//! the thread count or on how images are grouped.
//!
//! Batch 128, 2 threads, forward (`cargo bench -p auglocal-core --bench ops`, each run
//! twice or more, alternated with the other kernels):
//!
//! | convolution | direct kernel | F(2x2) | F(4x4) |
//! |---|---|---|---|
//! | 16->16 on 32x32 | 3.2 ms | 2.95 ms | 2.0-2.2 ms |
//! | 64->64 on 32x32, batch 64 | 24 ms | 14.7 ms | 10.6 ms |
//! | 64->64 on 8x8 | 3.0 ms | 1.96-2.03 ms | 1.58-2.01 ms (across images) |
//! | 64->64 on 56x56, batch 16 (ImageNet) | | 11.2-11.4 ms | 9.7-9.9 ms (across images) |

use std::arch::x86_64::*;
use std::cell::RefCell;
use std::mem::MaybeUninit;

use super::geometry::Geometry;
use crate::kernels::simd::{cpu_has_avx2_fma, Registers};

/// Output channels of one register tile.
const TILE_CHANNELS: usize = 4;
/// Tiles of one vector.
const LANES: usize = 8;

/// The two transforms: F(m x m, 3x3) for m = 2 or 4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transform {
    F2,
    F4,
}

impl Transform {
    /// Outputs along one side of a tile.
    fn m(self) -> usize {
        match self {
            Transform::F2 => 2,
            Transform::F4 => 4,
        }
    }

    /// Inputs along one side of a tile.
    fn alpha(self) -> usize {
        self.m() + 2
    }

    /// Positions ξ of a transformed block.
    fn positions(self) -> usize {
        self.alpha() * self.alpha()
    }

    /// The kernel transform G (alpha x 3).
    fn g(self) -> &'static [[f64; 3]] {
        match self {
            Transform::F2 => &[
                [1.0, 0.0, 0.0],
                [0.5, 0.5, 0.5],
                [0.5, -0.5, 0.5],
                [0.0, 0.0, 1.0],
            ],
            Transform::F4 => &[
                [0.25, 0.0, 0.0],
                [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
                [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
                [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
                [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
                [0.0, 0.0, 1.0],
            ],
        }
    }

    /// Whether the planes split into whole vectors of this transform's tiles laid along
    /// rows ([`Lanes::Tiles`]): each vector two runs of 4 tiles within a row of tiles, a
    /// width of 4m tiles' worth of columns, planes of a multiple of 8 tiles.
    fn fits_rows(self, h: usize, w: usize) -> bool {
        let m = self.m();
        h > 0
            && h.is_multiple_of(m)
            && w.is_multiple_of(4 * m)
            && ((h / m) * (w / m)).is_multiple_of(LANES)
    }

    /// The transform and lane layout for H x W planes: F(4x4) along rows where the planes
    /// hold runs of 4 tiles (32x32, 16x16), else F(4x4) across images where whole 4x4
    /// tiles and rows of 8 columns fit (8x8), else F(2x2) along rows.
    fn for_plane(h: usize, w: usize) -> Option<(Transform, Lanes)> {
        if Transform::F4.fits_rows(h, w) {
            Some((Transform::F4, Lanes::Tiles))
        } else if h > 0 && h.is_multiple_of(4) && w.is_multiple_of(LANES) {
            Some((Transform::F4, Lanes::Images))
        } else if Transform::F2.fits_rows(h, w) {
            Some((Transform::F2, Lanes::Tiles))
        } else {
            None
        }
    }
}

/// What the 8 lanes of a vector of tiles hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lanes {
    /// 8 tiles of one image, two runs of 4 along rows of tiles.
    Tiles,
    /// The same tile of 8 images. An 8x8 plane has 4 tiles of 4x4: runs along its rows
    /// would be 2 tiles long and need gathers; across images every load is one vector.
    Images,
}

/// The transform and lane layout [`forward`] runs this convolution with: one group, 3x3,
/// stride 1, padding 1, planes that [`Transform::for_plane`] tiles, whole register tiles of
/// output channels, on a CPU with AVX2 and FMA.
fn transform_for(g: &Geometry) -> Option<(Transform, Lanes)> {
    let shape = g.groups == 1
        && g.k == 3
        && g.stride == 1
        && g.padding == 1
        && g.h_out == g.h
        && g.w_out == g.w
        && g.c_in > 0
        && g.c_out > 0
        && g.c_out.is_multiple_of(TILE_CHANNELS);
    if !shape || !cpu_has_avx2_fma() {
        return None;
    }
    Transform::for_plane(g.h, g.w)
}

/// Whether [`forward`] runs this convolution.
pub(crate) fn supported(g: &Geometry) -> bool {
    transform_for(g).is_some()
}

/// The tiles of a plane and how images sit in the transforms' buffer, a unit of images
/// (one image, or 8 for [`Lanes::Images`]) at a time.
///
/// Each channel is zero-bordered (one row and column each side). Along rows
/// ([`Lanes::Tiles`]) each padded row is split into m phases by column modulo m,
/// `phase = W/m + 1` floats each: tile (ty, tx) reads padded rows m·ty .. m·ty + m + 2 and
/// columns m·tx + c for c < m + 2, stored at `phase[c mod m][tx + c div m]`, so 4
/// consecutive tiles read 4 consecutive floats for each of their inputs. Across images
/// ([`Lanes::Images`]) each padded pixel holds its 8 images side by side (missing images
/// zero): a tile's input is one vector.
#[derive(Debug, Clone, Copy)]
struct Tiles {
    m: usize,
    lanes: Lanes,
    /// Tile rows and columns of an image.
    rows: usize,
    cols: usize,
    /// Output plane size and width.
    plane: usize,
    width: usize,
    /// Floats of one phase of a padded row (along rows), one padded row, one padded
    /// channel of a unit.
    phase: usize,
    row: usize,
    padded_plane: usize,
}

impl Tiles {
    fn new(g: &Geometry, (transform, lanes): (Transform, Lanes)) -> Self {
        let m = transform.m();
        let (phase, row) = match lanes {
            Lanes::Tiles => (g.w / m + 1, m * (g.w / m + 1)),
            Lanes::Images => (0, (g.w + 2) * LANES),
        };
        Tiles {
            m,
            lanes,
            rows: g.h / m,
            cols: g.w / m,
            plane: g.h * g.w,
            width: g.w,
            phase,
            row,
            padded_plane: (g.h + 2) * row,
        }
    }

    fn per_image(&self) -> usize {
        self.rows * self.cols
    }

    /// Images of a unit: those [`Tiles::fill`] copies together.
    fn images_per_unit(&self) -> usize {
        match self.lanes {
            Lanes::Tiles => 1,
            Lanes::Images => LANES,
        }
    }

    /// Vectors of tiles of a unit.
    fn vectors_per_unit(&self) -> usize {
        match self.lanes {
            Lanes::Tiles => self.per_image() / LANES,
            Lanes::Images => self.per_image(),
        }
    }

    /// The unit of vector q (counted through the units in order) and its first tile.
    fn vector(&self, q: usize) -> (usize, usize) {
        let per_unit = self.vectors_per_unit();
        match self.lanes {
            Lanes::Tiles => (q / per_unit, q % per_unit * LANES),
            Lanes::Images => (q / per_unit, q % per_unit),
        }
    }

    /// Offset of tile t's input at (row 0, column 0) in a padded channel.
    fn source(&self, t: usize) -> usize {
        let (ty, tx) = (t / self.cols, t % self.cols);
        match self.lanes {
            Lanes::Tiles => self.m * ty * self.row + tx,
            Lanes::Images => self.m * (ty * self.row + tx * LANES),
        }
    }

    /// Where the two halves of the vector starting at tile t read their (0, 0) inputs:
    /// two runs of 4 tiles, or one vector of 8 images.
    fn runs(&self, t: usize) -> (usize, usize) {
        match self.lanes {
            Lanes::Tiles => (self.source(t), self.source(t + 4)),
            Lanes::Images => (self.source(t), self.source(t) + 4),
        }
    }

    /// Offset of the input at (row r, column c) of a tile from the tile's source.
    fn tap(&self, r: usize, c: usize) -> usize {
        match self.lanes {
            Lanes::Tiles => r * self.row + (c % self.m) * self.phase + c / self.m,
            Lanes::Images => r * self.row + c * LANES,
        }
    }

    /// Offset of tile t's top-left output in an output plane.
    fn output(&self, t: usize) -> usize {
        let (ty, tx) = (t / self.cols, t % self.cols);
        self.m * (ty * self.width + tx)
    }

    /// Copies the channels of a unit's images (C, H, W each) into `padded` (the unit's
    /// padded channels), zero elsewhere.
    ///
    /// # Safety
    /// The CPU supports AVX2.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn fill(&self, images: &[f32], padded: &mut [f32]) {
        match self.lanes {
            Lanes::Tiles => self.fill_rows(images, padded),
            Lanes::Images => self.fill_images(images, padded),
        }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn fill_rows(&self, image: &[f32], padded: &mut [f32]) {
        for (dst, channel) in padded
            .chunks_exact_mut(self.padded_plane)
            .zip(image.chunks_exact(self.plane))
        {
            dst[..self.row].fill(0.0);
            dst[(self.m * self.rows + 1) * self.row..].fill(0.0);
            for (iy, line) in channel.chunks_exact(self.width).enumerate() {
                let row = &mut dst[(iy + 1) * self.row..][..self.row];
                if self.m == 2 {
                    self.split_row_2(line, row);
                } else {
                    self.split_row_4(line, row);
                }
            }
        }
    }

    /// Up to 8 images side by side: each 8 columns of a row, one from each image, are an
    /// 8x8 transpose.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn fill_images(&self, images: &[f32], padded: &mut [f32]) {
        let channels = padded.len() / self.padded_plane;
        let image_len = channels * self.plane;
        let count = images.len() / image_len;
        assert!((1..=LANES).contains(&count) && images.len() == count * image_len);
        let h = self.m * self.rows;
        for (c, dst) in padded.chunks_exact_mut(self.padded_plane).enumerate() {
            dst[..self.row].fill(0.0);
            dst[(h + 1) * self.row..].fill(0.0);
            for iy in 0..h {
                let row = &mut dst[(iy + 1) * self.row..][..self.row];
                // The border columns, a vector each, not a call to `memset` per 8 floats.
                _mm256_storeu_ps(row[..LANES].as_mut_ptr(), _mm256_setzero_ps());
                let last = (self.width + 1) * LANES;
                _mm256_storeu_ps(row[last..last + LANES].as_mut_ptr(), _mm256_setzero_ps());
                for x0 in (0..self.width).step_by(LANES) {
                    let lines: [__m256; LANES] = std::array::from_fn(|l| {
                        if l < count {
                            let at = l * image_len + c * self.plane + iy * self.width + x0;
                            _mm256_loadu_ps(images[at..at + LANES].as_ptr())
                        } else {
                            _mm256_setzero_ps()
                        }
                    });
                    for (j, column) in transpose_8x8(lines).into_iter().enumerate() {
                        let at = (x0 + 1 + j) * LANES;
                        _mm256_storeu_ps(row[at..at + LANES].as_mut_ptr(), column);
                    }
                }
            }
        }
    }

    /// One row into its two phases: input column x is padded column x + 1, so odd x lands
    /// in the even phase.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn split_row_2(&self, line: &[f32], row: &mut [f32]) {
        let (even, odd) = row.split_at_mut(self.phase);
        even[0] = 0.0;
        odd[self.cols] = 0.0;
        let mut j = 0;
        while 2 * j + 2 * LANES <= line.len() {
            let a = _mm256_loadu_ps(line.as_ptr().add(2 * j));
            let b = _mm256_loadu_ps(line.as_ptr().add(2 * j + LANES));
            // [a0 a2 b0 b2 a4 a6 b4 b6] and the odd ones, then the middle 64-bit lanes
            // swapped: [a0 a2 a4 a6 b0 b2 b4 b6].
            let evens = _mm256_shuffle_ps::<0b10_00_10_00>(a, b);
            let odds = _mm256_shuffle_ps::<0b11_01_11_01>(a, b);
            let evens = _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(
                evens,
            )));
            let odds = _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(
                odds,
            )));
            _mm256_storeu_ps(odd[j..j + LANES].as_mut_ptr(), evens);
            _mm256_storeu_ps(even[j + 1..j + 1 + LANES].as_mut_ptr(), odds);
            j += LANES;
        }
        for (j, pair) in line.chunks_exact(2).enumerate().skip(j) {
            odd[j] = pair[0];
            even[j + 1] = pair[1];
        }
    }

    /// One row into its four phases: input column x = 4i + r is padded column x + 1, in
    /// phase r + 1 at index i, or phase 0 at index i + 1 for r = 3. Each 16 columns are a
    /// 4x4 transpose.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn split_row_4(&self, line: &[f32], row: &mut [f32]) {
        let phase = self.phase;
        debug_assert_eq!(phase, self.cols + 1);
        // The padding: the first slot of phase 0 and the last of phases 1-3, one store
        // each (a `fill` of one float per row was a call to `memset`).
        row[0] = 0.0;
        for k in 2..=4 {
            row[k * phase - 1] = 0.0;
        }
        debug_assert!(line.len().is_multiple_of(16));
        for (i, group) in line.chunks_exact(16).enumerate() {
            let s = group.as_ptr();
            let (r0, r1) = (_mm_loadu_ps(s), _mm_loadu_ps(s.add(4)));
            let (r2, r3) = (_mm_loadu_ps(s.add(8)), _mm_loadu_ps(s.add(12)));
            let (t0, t1) = (_mm_unpacklo_ps(r0, r1), _mm_unpackhi_ps(r0, r1));
            let (t2, t3) = (_mm_unpacklo_ps(r2, r3), _mm_unpackhi_ps(r2, r3));
            let at = 4 * i;
            let mut store = |start: usize, v: __m128| {
                _mm_storeu_ps(row[start..start + 4].as_mut_ptr(), v);
            };
            store(phase + at, _mm_movelh_ps(t0, t2));
            store(2 * phase + at, _mm_movehl_ps(t2, t0));
            store(3 * phase + at, _mm_movelh_ps(t1, t3));
            store(at + 1, _mm_movehl_ps(t3, t1));
        }
    }
}

/// An 8x8 transpose: lane l of output j is lane j of input l.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn transpose_8x8(r: [__m256; 8]) -> [__m256; 8] {
    // Pairs of rows interleaved, then quads: s[k] holds column k (rows 0-3) in its low
    // half and column k + 4 in its high half, s[4 + k] the same for rows 4-7.
    let t: [__m256; 8] = std::array::from_fn(|i| {
        let (a, b) = (r[i / 2 * 2], r[i / 2 * 2 + 1]);
        if i % 2 == 0 {
            _mm256_unpacklo_ps(a, b)
        } else {
            _mm256_unpackhi_ps(a, b)
        }
    });
    let s: [__m256; 8] = std::array::from_fn(|i| {
        let (quad, k) = (i / 4, i % 4);
        let (a, b) = (t[4 * quad + k / 2], t[4 * quad + k / 2 + 2]);
        if k % 2 == 0 {
            _mm256_shuffle_ps::<0b01_00_01_00>(a, b)
        } else {
            _mm256_shuffle_ps::<0b11_10_11_10>(a, b)
        }
    });
    std::array::from_fn(|j| {
        if j < 4 {
            _mm256_permute2f128_ps::<0x20>(s[j], s[4 + j])
        } else {
            _mm256_permute2f128_ps::<0x31>(s[j - 4], s[j])
        }
    })
}

/// The transformed kernels U = G g Gᵀ (in f64, rounded once), packed as
/// [C_out / 4][ξ][C_in][4]: the 4 values one step of a register tile broadcasts, together.
fn transform_weights(g: &Geometry, transform: Transform, weight: &[f32]) -> Vec<f32> {
    let gm = transform.g();
    let alpha = transform.alpha();
    let blocks = g.c_out / TILE_CHANNELS;
    let block_floats = g.c_in * TILE_CHANNELS;
    // One block of 4 output channels a task, in parallel: at 64 channels the f64 products
    // run to a millisecond, which the worker threads otherwise wait out. Each kernel's
    // g Gᵀ (3 x alpha) is made once for all its positions.
    let transform_block = |_: &mut (), block: usize, part: &mut [MaybeUninit<f32>]| {
        for lane in 0..TILE_CHANNELS {
            let co = block * TILE_CHANNELS + lane;
            for ci in 0..g.c_in {
                let k = &weight[(co * g.c_in + ci) * 9..][..9];
                // (G g Gᵀ)[i][j] = Σ_r G[i][r] (Σ_c g[r][c] G[j][c]).
                let mut right = [[0f64; 6]; 3];
                for (row, kr) in right.iter_mut().zip(k.chunks_exact(3)) {
                    for (value, gj) in row.iter_mut().zip(gm) {
                        *value = (0..3).map(|c| kr[c] as f64 * gj[c]).sum();
                    }
                }
                for (xi, value) in part
                    .iter_mut()
                    .skip(ci * TILE_CHANNELS + lane)
                    .step_by(block_floats)
                    .enumerate()
                {
                    let (gi, j) = (gm[xi / alpha], xi % alpha);
                    let mut sum = 0f64;
                    for (r, row) in right.iter().enumerate() {
                        sum += gi[r] * row[j];
                    }
                    value.write(sum as f32);
                }
            }
        }
    };
    let per_block = transform.positions() * block_floats;
    // SAFETY: each block writes every (ξ, ci, lane) of its part: the positions are the
    // part's rows of `block_floats`, and (ci, lane) runs through each row.
    unsafe {
        crate::parallel::written_chunks_init(blocks * per_block, per_block, || (), transform_block)
    }
}

thread_local! {
    /// [`forward`]'s buffers, kept between calls on each thread: padded images, and for one
    /// chunk of tile vectors the transformed inputs V [C_in][ξ][vector][8] and the GEMM
    /// results M [4][ξ][vector][8] of one block of output channels. A chunk's V and M stay
    /// in the L1 and L2 caches; transforming the whole image first and running each GEMM
    /// over all its tiles was slower than the direct kernel at 16 channels (3.8 against
    /// 3.2 ms): its 16 rows of V, 16 KiB apart, fought over the same cache sets. Fresh
    /// buffers for each range of images cost a `memset` of them on every task.
    static FORWARD_BUFFERS: RefCell<[Vec<f32>; 3]> =
        const { RefCell::new([Vec::new(), Vec::new(), Vec::new()]) };
}

/// Grows `buffer` to at least `len` floats (never shrinks it: growing back would
/// zero-fill), and returns its first `len`.
fn at_least(buffer: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buffer.len() < len {
        buffer.resize(len, 0.0);
    }
    &mut buffer[..len]
}

/// The convolution of `x` (N, C_in, H, W) with `weight` (C_out, C_in, 3, 3); callers check
/// [`supported`] first.
pub(crate) fn forward(g: &Geometry, x: &[f32], weight: &[f32]) -> Vec<f32> {
    let Some(plan) = transform_for(g) else {
        panic!("winograd::forward called on {g:?}");
    };
    let transform = plan.0;
    let positions = transform.positions();
    let tiles = Tiles::new(g, plan);
    let regs = Registers::detect();
    let width = regs.tile_width();
    // Images per task: whole units, enough for one whole chunk of tile vectors.
    let group = width.div_ceil(tiles.vectors_per_unit()) * tiles.images_per_unit();
    let u = transform_weights(g, transform, weight);
    let blocks = g.c_out / TILE_CHANNELS;
    let (in_image, out_image) = (g.c_in * g.h * g.w, g.c_out * g.h * g.w);
    let padded_unit = g.c_in * tiles.padded_plane;
    let convolve = |index: usize, y: &mut [MaybeUninit<f32>]| {
        let images = y.len() / out_image;
        let first_image = index * group;
        let x = &x[first_image * in_image..(first_image + images) * in_image];
        FORWARD_BUFFERS.with_borrow_mut(|[padded, v, m]| {
            let units = fill_units(&tiles, x, in_image, padded, padded_unit);
            let padded = &padded[..units * padded_unit];
            let vectors = units * tiles.vectors_per_unit();
            for first in (0..vectors).step_by(width) {
                let chunk = Chunk::new(first, (vectors - first).min(width), positions);
                // Every float a chunk reads is written first, so the buffers are reused as
                // they are.
                let v = at_least(v, chunk.floats(g.c_in));
                let m = at_least(m, chunk.floats(TILE_CHANNELS));
                // SAFETY: `supported` checked AVX2 and FMA, `regs` the rest; the buffers
                // have the sizes each function states.
                unsafe {
                    match transform {
                        Transform::F2 => inputs_f2((&tiles, g.c_in, padded), chunk, v),
                        Transform::F4 => inputs_f4((&tiles, g.c_in, padded), chunk, v),
                    }
                    for block in 0..blocks {
                        for xi in 0..positions {
                            let u = &u[(block * positions + xi) * g.c_in * TILE_CHANNELS..]
                                [..g.c_in * TILE_CHANNELS];
                            gemm(regs, u, v, m, xi, chunk);
                        }
                        let y = (&mut *y, out_image);
                        match plan {
                            (Transform::F2, Lanes::Tiles) => outputs_f2(&tiles, m, chunk, y, block),
                            (Transform::F4, Lanes::Tiles) => outputs_f4(&tiles, m, chunk, y, block),
                            (Transform::F4, Lanes::Images) => {
                                outputs_f4_images(&tiles, m, chunk, y, block)
                            }
                            (Transform::F2, Lanes::Images) => {
                                unreachable!("for_plane takes F(2x2) along rows only")
                            }
                        }
                    }
                }
            }
        })
    };
    // SAFETY: `convolve` writes every output of its images: its chunks cover all their tile
    // vectors, and each block of 4 channels writes the m x m outputs of every tile.
    unsafe {
        crate::parallel::written_chunks_init(
            g.batch * out_image,
            group * out_image,
            || (),
            |_, index, y| convolve(index, y),
        )
    }
}

/// Fills `padded` with the units of `images` (whole images of `image_len` floats each),
/// `padded_unit` floats a unit, growing it if it is short; returns the number of units.
fn fill_units(
    tiles: &Tiles,
    images: &[f32],
    image_len: usize,
    padded: &mut Vec<f32>,
    padded_unit: usize,
) -> usize {
    let per_unit = tiles.images_per_unit() * image_len;
    let units = images.len().div_ceil(per_unit);
    for (unit, dst) in images
        .chunks(per_unit)
        .zip(at_least(padded, units * padded_unit).chunks_exact_mut(padded_unit))
    {
        // SAFETY: callers run Winograd only where `supported` checked AVX2.
        unsafe { tiles.fill(unit, dst) };
    }
    units
}

/// Tile vectors `first .. first + len` of a group of images, counted through its units in
/// order ([`Tiles::vector`]): along rows, vector q holds tiles 8q .. 8q + 8 counted through
/// the images, two runs of 4 tiles, each within one row of tiles; across images, the same
/// tile of the 8 images of a unit. In V, M and T each channel holds [ξ][vector][8],
/// `stride` floats apart.
#[derive(Debug, Clone, Copy)]
struct Chunk {
    first: usize,
    len: usize,
    stride: usize,
}

impl Chunk {
    fn new(first: usize, len: usize, positions: usize) -> Self {
        // Channels are padded to lie 512 bytes off a multiple of 4 KiB apart. A GEMM
        // streams 4 to 8 channels at once; an exact multiple (36 positions x 32 vectors is
        // 36 KiB) put them all in the same L1 cache sets.
        let floats = positions * len * LANES;
        let pad = (128 + 1024 - floats % 1024) % 1024;
        Chunk {
            first,
            len,
            stride: floats + pad,
        }
    }

    /// For the chunk's k-th vector: its unit of images, and its first tile in them.
    fn vector(&self, tiles: &Tiles, k: usize) -> (usize, usize) {
        tiles.vector(self.first + k)
    }

    /// Floats of a buffer of `channels` channels.
    fn floats(&self, channels: usize) -> usize {
        channels * self.stride
    }

    /// Offset of position ξ of vector k in channel `c`.
    fn at(&self, c: usize, xi: usize, k: usize) -> usize {
        c * self.stride + (xi * self.len + k) * LANES
    }
}

/// The N input vectors of one channel's tiles of a vector, loaded from `plane` as two runs
/// of 4 tiles starting at `lo` and `hi` (one load when they are adjacent in one row of
/// tiles).
///
/// # Safety
/// The CPU supports AVX2; every `lo + tap + 4` and `hi + tap + 4` is at most `plane.len()`.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn load_tile_inputs<const N: usize>(
    plane: &[f32],
    (lo, hi): (usize, usize),
    taps: &[usize; N],
) -> [__m256; N] {
    let p = plane.as_ptr();
    let one_row = hi == lo + 4;
    std::array::from_fn(|i| {
        if one_row {
            _mm256_loadu_ps(p.add(lo + taps[i]))
        } else {
            _mm256_loadu2_m128(p.add(hi + taps[i]), p.add(lo + taps[i]))
        }
    })
}

/// Tap offsets of an alpha x alpha tile, row by row.
fn tile_taps<const N: usize>(tiles: &Tiles, alpha: usize) -> [usize; N] {
    std::array::from_fn(|i| tiles.tap(i / alpha, i % alpha))
}

/// For every channel c of the images in `padded` and vector k of the chunk: the N inputs
/// at `taps` of the vector's tiles, transformed into P values stored at `out[c][ξ][k]`;
/// `out` holds C · P · len · 8 floats.
///
/// # Safety
/// The CPU supports AVX2; `padded` holds whole padded images of `channels` channels.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn transform_tiles<const N: usize, const P: usize>(
    (tiles, channels, padded): Planes,
    chunk: Chunk,
    out: &mut [f32],
    taps: &[usize; N],
    transform: impl Fn(&[__m256; N]) -> [__m256; P],
) {
    assert_eq!(out.len(), chunk.floats(channels));
    // Taps run row by row, but within a row a later column can sit in an earlier phase:
    // the farthest read is the largest tap's, not the last one's.
    let end = taps.iter().max().map_or(0, |tap| tap + 4);
    let op = out.as_mut_ptr();
    for k in 0..chunk.len {
        let (n, t) = chunk.vector(tiles, k);
        let runs = tiles.runs(t);
        assert!(runs.0 + end <= tiles.padded_plane && runs.1 + end <= tiles.padded_plane);
        for c in 0..channels {
            let plane = &padded[(n * channels + c) * tiles.padded_plane..][..tiles.padded_plane];
            let values = transform(&load_tile_inputs(plane, runs, taps));
            for (xi, value) in values.into_iter().enumerate() {
                let at = chunk.at(c, xi, k);
                debug_assert!(at + LANES <= out.len());
                _mm256_storeu_ps(op.add(at), value);
            }
        }
    }
}

/// The images a transform reads: the tiles' layout, the channels of an image, the padded
/// images.
type Planes<'a> = (&'a Tiles, usize, &'a [f32]);

/// F(2x2): V[c][ξ][k] = (Bᵀ d B)[ξ] for every channel c and the tiles of the chunk's vectors
/// k, with Bᵀ = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1].
///
/// # Safety
/// As [`transform_tiles`].
#[target_feature(enable = "avx2,fma")]
unsafe fn inputs_f2(planes: Planes, chunk: Chunk, v: &mut [f32]) {
    let taps: [usize; 16] = tile_taps(planes.0, 4);
    transform_tiles(planes, chunk, v, &taps, |d| {
        // Rows: z = Bᵀ d.
        let mut z = [_mm256_setzero_ps(); 16];
        for j in 0..4 {
            z[j] = _mm256_sub_ps(d[j], d[8 + j]);
            z[4 + j] = _mm256_add_ps(d[4 + j], d[8 + j]);
            z[8 + j] = _mm256_sub_ps(d[8 + j], d[4 + j]);
            z[12 + j] = _mm256_sub_ps(d[4 + j], d[12 + j]);
        }
        // Columns: z B.
        let mut out = [_mm256_setzero_ps(); 16];
        for (r, o) in z.chunks_exact(4).zip(out.chunks_exact_mut(4)) {
            o[0] = _mm256_sub_ps(r[0], r[2]);
            o[1] = _mm256_add_ps(r[1], r[2]);
            o[2] = _mm256_sub_ps(r[2], r[1]);
            o[3] = _mm256_sub_ps(r[1], r[3]);
        }
        out
    })
}

/// F(4x4)'s Bᵀ applied to 6 vectors:
/// Bᵀ = [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0; 0 -2 -1 2 1 0; 0 2 -1 -2 1 0;
///       0 4 0 -5 0 1].
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn bt_f4(d: [__m256; 6]) -> [__m256; 6] {
    let (four, five) = (_mm256_set1_ps(4.0), _mm256_set1_ps(5.0));
    // d4 - 4 d2 ± (d3 - 4 d1), and d4 - d2 ± 2 (d3 - d1).
    let a = _mm256_fnmadd_ps(four, d[2], d[4]);
    let b = _mm256_fnmadd_ps(four, d[1], d[3]);
    let c = _mm256_sub_ps(d[4], d[2]);
    let e = _mm256_sub_ps(d[3], d[1]);
    let e = _mm256_add_ps(e, e);
    [
        _mm256_fmadd_ps(four, d[0], _mm256_fnmadd_ps(five, d[2], d[4])),
        _mm256_add_ps(a, b),
        _mm256_sub_ps(a, b),
        _mm256_add_ps(c, e),
        _mm256_sub_ps(c, e),
        _mm256_fmadd_ps(four, d[1], _mm256_fnmadd_ps(five, d[3], d[5])),
    ]
}

/// F(4x4)'s Aᵀ applied to 6 vectors: Aᵀ = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0;
/// 0 1 -1 8 -8 1].
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn at_f4(s: [__m256; 6]) -> [__m256; 4] {
    let p = _mm256_add_ps(s[1], s[2]);
    let q = _mm256_sub_ps(s[1], s[2]);
    let r = _mm256_add_ps(s[3], s[4]);
    let t = _mm256_sub_ps(s[3], s[4]);
    [
        _mm256_add_ps(_mm256_add_ps(s[0], p), r),
        _mm256_fmadd_ps(_mm256_set1_ps(2.0), t, q),
        _mm256_fmadd_ps(_mm256_set1_ps(4.0), r, p),
        _mm256_add_ps(_mm256_fmadd_ps(_mm256_set1_ps(8.0), t, q), s[5]),
    ]
}

/// F(4x4): V[c][ξ][k] = (Bᵀ d B)[ξ] as [`inputs_f2`], for 6x6 input tiles.
///
/// # Safety
/// As [`transform_tiles`].
#[target_feature(enable = "avx2,fma")]
unsafe fn inputs_f4(planes: Planes, chunk: Chunk, v: &mut [f32]) {
    let taps: [usize; 36] = tile_taps(planes.0, 6);
    transform_tiles(planes, chunk, v, &taps, |d| {
        // Rows: z = Bᵀ d, column by column.
        let mut z = [_mm256_setzero_ps(); 36];
        for j in 0..6 {
            let column = bt_f4(std::array::from_fn(|i| d[6 * i + j]));
            for (i, value) in column.into_iter().enumerate() {
                z[6 * i + j] = value;
            }
        }
        // Columns: z B, row by row.
        let mut out = [_mm256_setzero_ps(); 36];
        for (r, o) in z.chunks_exact(6).zip(out.chunks_exact_mut(6)) {
            o.copy_from_slice(&bt_f4(std::array::from_fn(|j| r[j])));
        }
        out
    })
}

/// M[·][ξ] (4 x len vectors) = U[ξ] (4 x C_in, packed [C_in][4]) · V[·][ξ] (C_in x len
/// vectors) in one register tile, input channels summed in order.
///
/// # Safety
/// The CPU has `regs`, AVX2 and FMA; `chunk.len <= regs.tile_width()`, `v` and `m` are the
/// chunk's buffers.
unsafe fn gemm(regs: Registers, u: &[f32], v: &[f32], m: &mut [f32], xi: usize, chunk: Chunk) {
    debug_assert_eq!(u.len() * chunk.stride, v.len() * TILE_CHANNELS);
    debug_assert_eq!(m.len(), chunk.floats(TILE_CHANNELS));
    let args = (
        u,
        v.as_ptr().add(chunk.at(0, xi, 0)),
        m.as_mut_ptr().add(chunk.at(0, xi, 0)),
        chunk.stride,
    );
    match (regs, chunk.len) {
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

/// The output planes a chunk writes: the group's images, and the floats of one image.
type Outputs<'a> = (&'a mut [MaybeUninit<f32>], usize);

/// Along rows ([`Lanes::Tiles`]), for each vector k of the chunk and each of the 4 output
/// channels r of the block: the vector's P transformed values of M, loaded, and where its
/// tiles 0 and 4 start in `y` (each a run of 4 tiles in one row of tiles), handed to
/// `write` with `y`'s first float.
///
/// # Safety
/// The CPU supports AVX2; `m` is the chunk's buffer and `y` holds the group's images.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn output_tiles<const P: usize>(
    tiles: &Tiles,
    m: &[f32],
    chunk: Chunk,
    (y, out_image): Outputs,
    block: usize,
    mut write: impl FnMut(*mut f32, &[__m256; P], (usize, usize)),
) {
    assert_eq!(m.len(), chunk.floats(TILE_CHANNELS));
    assert_eq!(tiles.lanes, Lanes::Tiles);
    let yp = y.as_mut_ptr().cast::<f32>();
    for k in 0..chunk.len {
        let (n, t) = chunk.vector(tiles, k);
        for r in 0..TILE_CHANNELS {
            let plane = n * out_image + (block * TILE_CHANNELS + r) * tiles.plane;
            assert!(plane + tiles.plane <= y.len());
            let s: [__m256; P] =
                std::array::from_fn(|xi| _mm256_loadu_ps(m.as_ptr().add(chunk.at(r, xi, k))));
            write(
                yp,
                &s,
                (plane + tiles.output(t), plane + tiles.output(t + 4)),
            );
        }
    }
}

/// F(2x2): writes output channels 4·block .. 4·block + 4 of the chunk's tiles from
/// M [4][ξ][k][·]: y = Aᵀ M A with Aᵀ = [1 1 1 0; 0 1 -1 -1].
///
/// # Safety
/// As [`output_tiles`].
#[target_feature(enable = "avx2,fma")]
unsafe fn outputs_f2(tiles: &Tiles, m: &[f32], chunk: Chunk, y: Outputs, block: usize) {
    let w = tiles.width;
    output_tiles(
        tiles,
        m,
        chunk,
        y,
        block,
        |yp, s: &[__m256; 16], (lo, hi)| {
            // Rows: Aᵀ M.
            let mut a = [_mm256_setzero_ps(); 8];
            for j in 0..4 {
                a[j] = _mm256_add_ps(_mm256_add_ps(s[j], s[4 + j]), s[8 + j]);
                a[4 + j] = _mm256_sub_ps(_mm256_sub_ps(s[4 + j], s[8 + j]), s[12 + j]);
            }
            // Columns, and each tile's 2x2 outputs into place: a run of 4 tiles in a tile row
            // is 8 consecutive outputs, the even columns from the first column of A, the odd
            // ones from the second.
            for (i, row) in [&a[..4], &a[4..]].into_iter().enumerate() {
                let even = _mm256_add_ps(_mm256_add_ps(row[0], row[1]), row[2]);
                let odd = _mm256_sub_ps(_mm256_sub_ps(row[1], row[2]), row[3]);
                let first = _mm256_unpacklo_ps(even, odd);
                let second = _mm256_unpackhi_ps(even, odd);
                let runs = [
                    _mm256_permute2f128_ps::<0x20>(first, second),
                    _mm256_permute2f128_ps::<0x31>(first, second),
                ];
                for (at, run) in [lo, hi].into_iter().zip(runs) {
                    _mm256_storeu_ps(yp.add(at + i * w), run);
                }
            }
        },
    )
}

/// F(4x4)'s y = Aᵀ M A for the 8 lanes' 6x6 blocks `s`, row by row, each row's 4 x 8
/// outputs transposed so that each half vector holds one lane's 4 outputs: `[lane 0 |
/// lane 4], [1 | 5], [2 | 6], [3 | 7]`.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn f4_output_rows(s: &[__m256; 36]) -> [[__m256; 4]; 4] {
    // Rows: a = Aᵀ M, column by column (4 x 6).
    let mut a = [_mm256_setzero_ps(); 24];
    for j in 0..6 {
        let column = at_f4(std::array::from_fn(|i| s[6 * i + j]));
        for (i, value) in column.into_iter().enumerate() {
            a[6 * i + j] = value;
        }
    }
    std::array::from_fn(|i| {
        // Columns: output row i, o[c] lane l = lane l's column c.
        let o = at_f4(std::array::from_fn(|j| a[6 * i + j]));
        // A 4x8 transpose: each lane's 4 outputs together.
        let t0 = _mm256_castps_pd(_mm256_unpacklo_ps(o[0], o[1]));
        let t1 = _mm256_castps_pd(_mm256_unpackhi_ps(o[0], o[1]));
        let t2 = _mm256_castps_pd(_mm256_unpacklo_ps(o[2], o[3]));
        let t3 = _mm256_castps_pd(_mm256_unpackhi_ps(o[2], o[3]));
        [
            _mm256_castpd_ps(_mm256_unpacklo_pd(t0, t2)),
            _mm256_castpd_ps(_mm256_unpackhi_pd(t0, t2)),
            _mm256_castpd_ps(_mm256_unpacklo_pd(t1, t3)),
            _mm256_castpd_ps(_mm256_unpackhi_pd(t1, t3)),
        ]
    })
}

/// F(4x4): writes output channels 4·block .. 4·block + 4 of the chunk's tiles as
/// [`outputs_f2`], with [`at_f4`].
///
/// # Safety
/// As [`output_tiles`].
#[target_feature(enable = "avx2,fma")]
unsafe fn outputs_f4(tiles: &Tiles, m: &[f32], chunk: Chunk, y: Outputs, block: usize) {
    let w = tiles.width;
    output_tiles(
        tiles,
        m,
        chunk,
        y,
        block,
        |yp, s: &[__m256; 36], (lo, hi)| {
            for (i, q) in f4_output_rows(s).into_iter().enumerate() {
                // Tiles 0-3 of the run at `lo`, 4-7 of the one at `hi`: 16 outputs each.
                let line = i * w;
                _mm256_storeu_ps(
                    yp.add(lo + line),
                    _mm256_permute2f128_ps::<0x20>(q[0], q[1]),
                );
                _mm256_storeu_ps(
                    yp.add(lo + line + 8),
                    _mm256_permute2f128_ps::<0x20>(q[2], q[3]),
                );
                _mm256_storeu_ps(
                    yp.add(hi + line),
                    _mm256_permute2f128_ps::<0x31>(q[0], q[1]),
                );
                _mm256_storeu_ps(
                    yp.add(hi + line + 8),
                    _mm256_permute2f128_ps::<0x31>(q[2], q[3]),
                );
            }
        },
    )
}

/// F(4x4) across images ([`Lanes::Images`]): writes output channels 4·block .. 4·block + 4
/// of the chunk's tiles, each lane's 4x4 outputs into its own image, for the images the
/// group has (the last unit may be short).
///
/// # Safety
/// The CPU supports AVX2; `m` is the chunk's buffer and `y` holds the group's images.
#[target_feature(enable = "avx2,fma")]
unsafe fn outputs_f4_images(
    tiles: &Tiles,
    m: &[f32],
    chunk: Chunk,
    (y, out_image): Outputs,
    block: usize,
) {
    assert_eq!(m.len(), chunk.floats(TILE_CHANNELS));
    let images = y.len() / out_image;
    let yp = y.as_mut_ptr().cast::<f32>();
    let w = tiles.width;
    for k in 0..chunk.len {
        let (unit, t) = chunk.vector(tiles, k);
        let first = unit * LANES;
        let lanes = images.saturating_sub(first).min(LANES);
        for r in 0..TILE_CHANNELS {
            let at = |lane: usize| {
                (first + lane) * out_image
                    + (block * TILE_CHANNELS + r) * tiles.plane
                    + tiles.output(t)
            };
            // The tile's last row ends 3 rows and 4 columns past its first output.
            assert!(lanes == 0 || at(lanes - 1) + 3 * w + 4 <= y.len());
            let s: [__m256; 36] =
                std::array::from_fn(|xi| _mm256_loadu_ps(m.as_ptr().add(chunk.at(r, xi, k))));
            for (i, q) in f4_output_rows(&s).into_iter().enumerate() {
                for lane in 0..lanes {
                    let half = q[lane % 4];
                    let value = if lane < 4 {
                        _mm256_castps256_ps128(half)
                    } else {
                        _mm256_extractf128_ps::<1>(half)
                    };
                    _mm_storeu_ps(yp.add(at(lane) + i * w), value);
                }
            }
        }
    }
}

/// Whether [`weight_grad`] runs this convolution: as [`supported`], with whole register
/// tiles of input channels too (multiples of 4).
pub(crate) fn supports_weight_grad(g: &Geometry) -> bool {
    supported(g) && g.c_in.is_multiple_of(TILE_CHANNELS)
}

/// The weight gradient `dW[co][ci] = Σ_n Σ_pixels dy[n][co][pixel] · x[n][ci][pixel + tap]`
/// for output gradient `dy` and input `x`, through the same transforms:
///
/// ```text
/// dW = Gᵀ [ Σ_n Σ_tiles (A dy Aᵀ) ⊙ (Bᵀ d B) ] G
/// ```
///
/// (the forward identity with the roles of A and G swapped: each dy tile is an m x m
/// "kernel" correlated with its input tile into 3x3 outputs). The sum over tiles and
/// images runs in the transformed domain, one GEMM per position ξ whose reduction runs over
/// every tile of a group of `images_per_sum` images, 8 lanes per sum; the groups' sums are
/// then added in order and transformed once: results do not depend on the thread count.
pub(crate) fn weight_grad(g: &Geometry, dy: &[f32], x: &[f32], images_per_sum: usize) -> Vec<f32> {
    assert!(
        supports_weight_grad(g),
        "winograd::weight_grad called on {g:?}"
    );
    let Some(plan) = transform_for(g) else {
        unreachable!("checked by supports_weight_grad");
    };
    let transform = plan.0;
    let positions = transform.positions();
    let tiles = Tiles::new(g, plan);
    let regs = Registers::detect();
    let images_per_sum = images_per_sum.max(1);
    let (in_image, out_image) = (g.c_in * g.h * g.w, g.c_out * g.h * g.w);
    let pairs = g.c_out * g.c_in;
    let partials: Vec<Vec<f32>> = crate::parallel::map(g.batch.div_ceil(images_per_sum), |group| {
        WEIGHT_GRAD_BUFFERS.with_borrow_mut(|[padded_x, padded_dy, v, t]| {
            let first = group * images_per_sum;
            let images = images_per_sum.min(g.batch - first);
            // `fill` and the transforms write every float they later read, so the buffers
            // are reused as they are.
            let x = &x[first * in_image..(first + images) * in_image];
            let dy = &dy[first * out_image..(first + images) * out_image];
            let (x_unit, dy_unit) = (g.c_in * tiles.padded_plane, g.c_out * tiles.padded_plane);
            let units = fill_units(&tiles, x, in_image, padded_x, x_unit);
            fill_units(&tiles, dy, out_image, padded_dy, dy_unit);
            let (padded_x, padded_dy) =
                (&padded_x[..units * x_unit], &padded_dy[..units * dy_unit]);
            let chunk = Chunk::new(0, units * tiles.vectors_per_unit(), positions);
            let v = at_least(v, chunk.floats(g.c_in));
            let t = at_least(t, chunk.floats(g.c_out));
            assert!(
                g.c_in.is_multiple_of(regs.tile_width()) && g.c_out.is_multiple_of(TILE_CHANNELS)
            );
            // SAFETY: `supported` checked AVX2 and FMA, `regs` the rest; the buffers have
            // the sizes each function states.
            unsafe {
                match transform {
                    Transform::F2 => {
                        inputs_f2((&tiles, g.c_in, padded_x), chunk, v);
                        grads_f2((&tiles, g.c_out, padded_dy), chunk, t);
                    }
                    Transform::F4 => {
                        inputs_f4((&tiles, g.c_in, padded_x), chunk, v);
                        grads_f4((&tiles, g.c_out, padded_dy), chunk, t);
                    }
                }
                // M[ξ][co][ci], summed over every tile of the group; not zeroed first, as
                // the register tiles cover it (C_in is a multiple of their width).
                let mut m = Vec::with_capacity(positions * pairs);
                let spare = &mut m.spare_capacity_mut()[..positions * pairs];
                for xi in 0..positions {
                    for co in (0..g.c_out).step_by(TILE_CHANNELS) {
                        for ci in (0..g.c_in).step_by(regs.tile_width()) {
                            let sums = wgrad_gemm(regs, t, v, chunk, xi, (co, ci));
                            for (r, row) in sums.iter().enumerate() {
                                let at = (xi * g.c_out + co + r) * g.c_in + ci;
                                for (dst, value) in
                                    spare[at..at + regs.tile_width()].iter_mut().zip(row)
                                {
                                    dst.write(*value);
                                }
                            }
                        }
                    }
                }
                // SAFETY: every (ξ, co, ci) was written: the register tiles step through
                // whole multiples (asserted below the buffers' setup).
                m.set_len(positions * pairs);
                m
            }
        })
    });
    let m = super::gemm::sum_in_order(partials, positions * pairs);
    // dW = Gᵀ M G per pair of channels, in f64, output channels in parallel.
    let gm = transform.g();
    let alpha = transform.alpha();
    let rows: Vec<Vec<f32>> = crate::parallel::map(g.c_out, |co| {
        let mut out = vec![0f32; g.c_in * 9];
        let mut block = [0f64; 36];
        for (ci, out) in out.chunks_exact_mut(9).enumerate() {
            let pair = co * g.c_in + ci;
            for (xi, value) in block[..alpha * alpha].iter_mut().enumerate() {
                *value = m[xi * pairs + pair] as f64;
            }
            // Gᵀ M (3 x alpha), then times G.
            let mut left = [[0f64; 6]; 3];
            for (a, row) in left.iter_mut().enumerate() {
                for (j, value) in row[..alpha].iter_mut().enumerate() {
                    *value = (0..alpha).map(|i| gm[i][a] * block[alpha * i + j]).sum();
                }
            }
            for a in 0..3 {
                for b in 0..3 {
                    let sum: f64 = (0..alpha).map(|j| left[a][j] * gm[j][b]).sum();
                    out[3 * a + b] = sum as f32;
                }
            }
        }
        out
    });
    rows.concat()
}

thread_local! {
    /// [`weight_grad`]'s buffers (padded inputs and output gradients, V, T), kept between
    /// calls on each thread: a group's transformed tiles take megabytes, and zeroing fresh
    /// ones at every call was ~2% of a ResNet-32 step.
    static WEIGHT_GRAD_BUFFERS: RefCell<[Vec<f32>; 4]> =
        const { RefCell::new([Vec::new(), Vec::new(), Vec::new(), Vec::new()]) };
}

/// Tap offsets of an m x m block of outputs inside a tile of the padded (one-bordered)
/// output gradient: row and column i of the tile are padded row and column i + 1.
fn grad_taps<const N: usize>(tiles: &Tiles) -> [usize; N] {
    std::array::from_fn(|i| tiles.tap(i / tiles.m + 1, i % tiles.m + 1))
}

/// F(2x2)'s A applied to 2 vectors: A = [1 0; 1 1; 1 -1; 0 -1].
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn a_f2(h: [__m256; 2]) -> [__m256; 4] {
    [
        h[0],
        _mm256_add_ps(h[0], h[1]),
        _mm256_sub_ps(h[0], h[1]),
        _mm256_sub_ps(_mm256_setzero_ps(), h[1]),
    ]
}

/// F(4x4)'s A applied to 4 vectors: A = Aᵀ's transpose, rows [1 0 0 0], [1 1 1 1],
/// [1 -1 1 -1], [1 2 4 8], [1 -2 4 -8], [0 0 0 1].
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn a_f4(h: [__m256; 4]) -> [__m256; 6] {
    let even = _mm256_add_ps(h[0], h[2]);
    let odd = _mm256_add_ps(h[1], h[3]);
    let even4 = _mm256_fmadd_ps(_mm256_set1_ps(4.0), h[2], h[0]);
    let odd8 = _mm256_fmadd_ps(_mm256_set1_ps(8.0), h[3], _mm256_add_ps(h[1], h[1]));
    [
        h[0],
        _mm256_add_ps(even, odd),
        _mm256_sub_ps(even, odd),
        _mm256_add_ps(even4, odd8),
        _mm256_sub_ps(even4, odd8),
        h[3],
    ]
}

/// F(2x2): T[c][ξ][k] = (A dy Aᵀ)[ξ] for every channel c of the padded output gradient and
/// the tiles of the chunk's vectors k.
///
/// # Safety
/// As [`transform_tiles`], with `planes` holding padded output gradients.
#[target_feature(enable = "avx2,fma")]
unsafe fn grads_f2(planes: Planes, chunk: Chunk, out: &mut [f32]) {
    let taps: [usize; 4] = grad_taps(planes.0);
    transform_tiles(planes, chunk, out, &taps, |h| {
        let (first, second) = (a_f2([h[0], h[2]]), a_f2([h[1], h[3]]));
        let mut values = [_mm256_setzero_ps(); 16];
        for ((a, b), o) in first
            .into_iter()
            .zip(second)
            .zip(values.chunks_exact_mut(4))
        {
            o.copy_from_slice(&a_f2([a, b]));
        }
        values
    })
}

/// F(4x4): T[c][ξ][k] = (A dy Aᵀ)[ξ] as [`grads_f2`], for 4x4 blocks of outputs.
///
/// # Safety
/// As [`grads_f2`].
#[target_feature(enable = "avx2,fma")]
unsafe fn grads_f4(planes: Planes, chunk: Chunk, out: &mut [f32]) {
    let taps: [usize; 16] = grad_taps(planes.0);
    transform_tiles(planes, chunk, out, &taps, |h| {
        // Rows: A h, column by column (6 x 4); then each row's 4 into 6.
        let columns: [[__m256; 6]; 4] =
            std::array::from_fn(|j| a_f4(std::array::from_fn(|i| h[4 * i + j])));
        let mut values = [_mm256_setzero_ps(); 36];
        for (i, o) in values.chunks_exact_mut(6).enumerate() {
            o.copy_from_slice(&a_f4(columns.map(|column| column[i])));
        }
        values
    })
}

/// Sums Σ_k Σ_lanes T[co + r][ξ][k] · V[ci + s][ξ][k] for 4 output channels r and
/// `regs.tile_width()` input channels s (columns past it are zero), lanes added in order.
///
/// # Safety
/// The CPU has `regs`, AVX2 and FMA; `t` and `v` are the chunk's buffers and the channels
/// inside them.
unsafe fn wgrad_gemm(
    regs: Registers,
    t: &[f32],
    v: &[f32],
    chunk: Chunk,
    xi: usize,
    (co, ci): (usize, usize),
) -> [[f32; 4]; TILE_CHANNELS] {
    let width = regs.tile_width();
    assert!(chunk.at(co + TILE_CHANNELS - 1, xi, chunk.len) <= t.len());
    assert!(chunk.at(ci + width - 1, xi, chunk.len) <= v.len());
    let args = (
        t.as_ptr().add(chunk.at(co, xi, 0)),
        v.as_ptr().add(chunk.at(ci, xi, 0)),
        chunk.stride,
        chunk.len,
    );
    match regs {
        Registers::Avx512 => wgrad_gemm_tile_avx512::<4>(args),
        Registers::Avx2 => wgrad_gemm_tile::<2>(args),
    }
}

/// The operands of one weight-gradient GEMM tile: the first T and V vectors, the distance
/// between channels, and the vectors to sum.
type WgradArgs = (*const f32, *const f32, usize, usize);

/// [`wgrad_gemm_tile`] compiled for AVX-512VL's 32 registers.
///
/// # Safety
/// As [`wgrad_gemm_tile`], on a CPU with AVX-512F and AVX-512VL.
#[target_feature(enable = "avx2,fma,avx512f,avx512vl")]
unsafe fn wgrad_gemm_tile_avx512<const S: usize>(args: WgradArgs) -> [[f32; 4]; TILE_CHANNELS] {
    wgrad_gemm_tile::<S>(args)
}

/// One register tile of [`wgrad_gemm`]: 4 x `S` sums, one 8-lane accumulator each.
///
/// # Safety
/// The CPU supports AVX2 and FMA; T and V hold `len` vectors for each of 4 and `S`
/// channels, `step` floats apart.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn wgrad_gemm_tile<const S: usize>(args: WgradArgs) -> [[f32; 4]; TILE_CHANNELS] {
    let (t, v, step, len) = args;
    let mut acc = [[_mm256_setzero_ps(); S]; TILE_CHANNELS];
    for k in 0..len {
        let d: [__m256; TILE_CHANNELS] =
            std::array::from_fn(|r| _mm256_loadu_ps(t.add(r * step + k * LANES)));
        let x: [__m256; S] = std::array::from_fn(|s| _mm256_loadu_ps(v.add(s * step + k * LANES)));
        for r in 0..TILE_CHANNELS {
            for s in 0..S {
                acc[r][s] = _mm256_fmadd_ps(d[r], x[s], acc[r][s]);
            }
        }
    }
    // The lanes of each accumulator added 8 accumulators at a time, in a fixed order.
    let flat: [__m256; 16] = std::array::from_fn(|i| {
        let (r, s) = (i / S, i % S);
        if r < TILE_CHANNELS {
            acc[r][s]
        } else {
            _mm256_setzero_ps()
        }
    });
    let mut lanes = [0f32; 16];
    for (group, out) in flat.chunks_exact(LANES).zip(lanes.chunks_exact_mut(LANES)) {
        _mm256_storeu_ps(out.as_mut_ptr(), lane_sums(group));
    }
    let mut sums = [[0f32; 4]; TILE_CHANNELS];
    for (r, row) in sums.iter_mut().enumerate() {
        row[..S].copy_from_slice(&lanes[r * S..(r + 1) * S]);
    }
    sums
}

/// The sums of the 8 lanes of each of 8 vectors, as one vector: pairwise horizontal adds,
/// then the two 128-bit halves added.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn lane_sums(v: &[__m256]) -> __m256 {
    let h01 = _mm256_hadd_ps(v[0], v[1]);
    let h23 = _mm256_hadd_ps(v[2], v[3]);
    let h45 = _mm256_hadd_ps(v[4], v[5]);
    let h67 = _mm256_hadd_ps(v[6], v[7]);
    // [v0 v1 v2 v3 | v0 v1 v2 v3] (lower lanes | upper lanes), the same for v4..v7.
    let low = _mm256_hadd_ps(h01, h23);
    let high = _mm256_hadd_ps(h45, h67);
    _mm256_add_ps(
        _mm256_permute2f128_ps::<0x20>(low, high),
        _mm256_permute2f128_ps::<0x31>(low, high),
    )
}
