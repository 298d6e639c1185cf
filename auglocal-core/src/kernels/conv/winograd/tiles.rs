//! Where the tiles of a plane sit: in the zero-bordered planes the transforms read
//! ([`Tiles`]), and in the transforms' buffers V, M and T ([`Chunk`]).

use super::{Lanes, Transform, LANES};
use crate::kernels::conv::geometry::Geometry;

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
pub(super) struct Tiles {
    pub(super) m: usize,
    pub(super) lanes: Lanes,
    /// Tile rows and columns of an image.
    pub(super) rows: usize,
    pub(super) cols: usize,
    /// Output plane size and width.
    pub(super) plane: usize,
    pub(super) width: usize,
    /// Floats of one phase of a padded row (along rows), one padded row, one padded
    /// channel of a unit.
    pub(super) phase: usize,
    pub(super) row: usize,
    pub(super) padded_plane: usize,
}

impl Tiles {
    pub(super) fn new(g: &Geometry, (transform, lanes): (Transform, Lanes)) -> Self {
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
    pub(super) fn images_per_unit(&self) -> usize {
        match self.lanes {
            Lanes::Tiles => 1,
            Lanes::Images => LANES,
        }
    }

    /// Vectors of tiles of a unit.
    pub(super) fn vectors_per_unit(&self) -> usize {
        match self.lanes {
            Lanes::Tiles => self.per_image() / LANES,
            Lanes::Images => self.per_image(),
        }
    }

    /// The unit of vector q (counted through the units in order) and its first tile.
    pub(super) fn vector(&self, q: usize) -> (usize, usize) {
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
    pub(super) fn runs(&self, t: usize) -> (usize, usize) {
        match self.lanes {
            Lanes::Tiles => (self.source(t), self.source(t + 4)),
            Lanes::Images => (self.source(t), self.source(t) + 4),
        }
    }

    /// Offset of the input at (row r, column c) of a tile from the tile's source.
    pub(super) fn tap(&self, r: usize, c: usize) -> usize {
        match self.lanes {
            Lanes::Tiles => r * self.row + (c % self.m) * self.phase + c / self.m,
            Lanes::Images => r * self.row + c * LANES,
        }
    }

    /// Offset of tile t's top-left output in an output plane.
    pub(super) fn output(&self, t: usize) -> usize {
        let (ty, tx) = (t / self.cols, t % self.cols);
        self.m * (ty * self.width + tx)
    }
}

/// Tile vectors `first .. first + len` of a group of images, counted through its units in
/// order ([`Tiles::vector`]): along rows, vector q holds tiles 8q .. 8q + 8 counted through
/// the images, two runs of 4 tiles, each within one row of tiles; across images, the same
/// tile of the 8 images of a unit. In V, M and T each channel holds [ξ][vector][8],
/// `stride` floats apart.
#[derive(Debug, Clone, Copy)]
pub(super) struct Chunk {
    pub(super) first: usize,
    pub(super) len: usize,
    pub(super) stride: usize,
}

impl Chunk {
    pub(super) fn new(first: usize, len: usize, positions: usize) -> Self {
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
    pub(super) fn vector(&self, tiles: &Tiles, k: usize) -> (usize, usize) {
        tiles.vector(self.first + k)
    }

    /// Floats of a buffer of `channels` channels.
    pub(super) fn floats(&self, channels: usize) -> usize {
        channels * self.stride
    }

    /// Offset of position ξ of vector k in channel `c`.
    pub(super) fn at(&self, c: usize, xi: usize, k: usize) -> usize {
        c * self.stride + (xi * self.len + k) * LANES
    }
}
