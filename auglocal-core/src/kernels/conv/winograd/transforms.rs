//! The transforms into the Winograd domain: the kernels' U = G g Gᵀ (once a call, in f64),
//! the inputs' V = Bᵀ d B and the output gradients' T = A dy Aᵀ (a chunk of tile vectors at
//! a time, 8 lanes a vector).

use std::arch::x86_64::*;
use std::mem::MaybeUninit;

use super::tiles::{Chunk, Tiles};
use super::{Transform, LANES, TILE_CHANNELS};
use crate::kernels::conv::geometry::Geometry;

/// The transformed kernels U = G g Gᵀ (in f64, rounded once), packed as
/// [C_out / 4][ξ][C_in][4]: the 4 values one step of a register tile broadcasts, together.
pub(super) fn transform_weights(g: &Geometry, transform: Transform, weight: &[f32]) -> Vec<f32> {
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
pub(super) type Planes<'a> = (&'a Tiles, usize, &'a [f32]);

/// F(2x2): V[c][ξ][k] = (Bᵀ d B)[ξ] for every channel c and the tiles of the chunk's vectors
/// k, with Bᵀ = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1].
///
/// # Safety
/// As [`transform_tiles`].
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn inputs_f2(planes: Planes, chunk: Chunk, v: &mut [f32]) {
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

/// F(4x4): V[c][ξ][k] = (Bᵀ d B)[ξ] as [`inputs_f2`], for 6x6 input tiles.
///
/// # Safety
/// As [`transform_tiles`].
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn inputs_f4(planes: Planes, chunk: Chunk, v: &mut [f32]) {
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
pub(super) unsafe fn grads_f2(planes: Planes, chunk: Chunk, out: &mut [f32]) {
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
pub(super) unsafe fn grads_f4(planes: Planes, chunk: Chunk, out: &mut [f32]) {
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
