//! The GEMMs of the transformed domain as register tiles: the forward pass's
//! `M[ξ] = U[ξ] · V[ξ]`, summed over input channels, and the weight gradient's sums over
//! tiles of `T[ξ] · V[ξ]ᵀ`, with the lane sums that end them.

use std::arch::x86_64::*;

use super::tiles::Chunk;
use super::{LANES, TILE_CHANNELS};
use crate::kernels::simd::Registers;

/// M[·][ξ] (4 x len vectors) = U[ξ] (4 x C_in, packed [C_in][4]) · V[·][ξ] (C_in x len
/// vectors) in one register tile, input channels summed in order.
///
/// # Safety
/// The CPU has `regs`, AVX2 and FMA; `chunk.len <= regs.tile_width()`, `v` and `m` are the
/// chunk's buffers.
pub(super) unsafe fn gemm(
    regs: Registers,
    u: &[f32],
    v: &[f32],
    m: &mut [f32],
    xi: usize,
    chunk: Chunk,
) {
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

/// Sums Σ_k Σ_lanes T[co + r][ξ][k] · V[ci + s][ξ][k] for 4 output channels r and
/// `regs.tile_width()` input channels s (columns past it are zero), lanes added in order.
///
/// # Safety
/// The CPU has `regs`, AVX2 and FMA; `t` and `v` are the chunk's buffers and the channels
/// inside them.
pub(super) unsafe fn wgrad_gemm(
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
