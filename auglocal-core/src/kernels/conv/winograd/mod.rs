//! Winograd convolution for the 3x3, stride-1, padding-1 convolutions of a ResNet: the
//! forward pass, through the flipped kernel its input gradient, and with the roles of the
//! transforms swapped its weight gradient ([`weight_grad::weight_grad`]).
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
//!
//! The files: [`tiles`] (where tiles sit in the padded planes and in the transforms'
//! buffers), [`fill`] (images into the padded planes), [`transforms`] (kernels, inputs and
//! output gradients into the transformed domain), [`gemm`] (the register-tile GEMMs there),
//! [`outputs`] (back out, into the output planes), and the two drivers, [`forward`] and
//! [`weight_grad`]. This file chooses the transform and the lane layout.

mod fill;
pub(crate) mod forward;
mod gemm;
mod outputs;
mod tiles;
mod transforms;
pub(crate) mod weight_grad;

use crate::kernels::conv::geometry::Geometry;
use crate::kernels::simd::cpu_has_avx2_fma;

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

/// The transform and lane layout [`forward::forward`] runs this convolution with: one group, 3x3,
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

/// Whether [`forward::forward`] runs this convolution.
pub(crate) fn supported(g: &Geometry) -> bool {
    transform_for(g).is_some()
}

/// Whether [`weight_grad::weight_grad`] runs this convolution: as [`supported`], with
/// whole register tiles of input channels too (multiples of 4).
pub(crate) fn supports_weight_grad(g: &Geometry) -> bool {
    supported(g) && g.c_in.is_multiple_of(TILE_CHANNELS)
}
