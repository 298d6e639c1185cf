//! The forward pass (and through the flipped kernel the stride-1 input gradient): each task
//! a group of images; for each chunk of their tile vectors, the input transform, then for
//! each block of 4 output channels the GEMMs and the output transform.

use std::cell::RefCell;
use std::mem::MaybeUninit;

use super::fill::{at_least, fill_units};
use super::gemm::gemm;
use super::outputs::{outputs_f2, outputs_f4, outputs_f4_images};
use super::tiles::{Chunk, Tiles};
use super::transforms::{inputs_f2, inputs_f4, transform_weights};
use super::{transform_for, Lanes, Transform, TILE_CHANNELS};
use crate::kernels::conv::geometry::Geometry;
use crate::kernels::simd::Registers;

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

/// The convolution of `x` (N, C_in, H, W) with `weight` (C_out, C_in, 3, 3); callers check
/// [`supported`](super::supported) first.
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
