//! The output transform y = Aᵀ M A, each tile's m x m outputs written into place in the
//! output planes: along rows as runs of 4 tiles, across images one image a lane.

use std::arch::x86_64::*;
use std::mem::MaybeUninit;

use super::tiles::{Chunk, Tiles};
use super::{Lanes, LANES, TILE_CHANNELS};

/// The output planes a chunk writes: the group's images, and the floats of one image.
pub(super) type Outputs<'a> = (&'a mut [MaybeUninit<f32>], usize);

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
pub(super) unsafe fn outputs_f2(tiles: &Tiles, m: &[f32], chunk: Chunk, y: Outputs, block: usize) {
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
pub(super) unsafe fn outputs_f4(tiles: &Tiles, m: &[f32], chunk: Chunk, y: Outputs, block: usize) {
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
pub(super) unsafe fn outputs_f4_images(
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
