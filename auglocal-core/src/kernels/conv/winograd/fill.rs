//! Copying images into the zero-bordered planes the input transforms read, in the layouts
//! of [`Tiles`]: along rows, each row split into its phases; across images, 8 images side
//! by side.

use std::arch::x86_64::*;

use super::tiles::Tiles;
use super::{Lanes, LANES};

impl Tiles {
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

/// Fills `padded` with the units of `images` (whole images of `image_len` floats each),
/// `padded_unit` floats a unit, growing it if it is short; returns the number of units.
pub(super) fn fill_units(
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

/// Grows `buffer` to at least `len` floats (never shrinks it: growing back would
/// zero-fill), and returns its first `len`.
pub(super) fn at_least(buffer: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buffer.len() < len {
        buffer.resize(len, 0.0);
    }
    &mut buffer[..len]
}
