//! The shapes of one 2-D convolution ([`Geometry`]) and the index arithmetic every kernel
//! shares: which input pixel an output reads under a kernel tap, and where each group of
//! channels sits in an image or the weight.

use candle_core::{bail, Layout, Result, Shape};

/// Shapes of one convolution (square kernel, same stride and padding on both axes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Geometry {
    pub batch: usize,
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    /// Channel groups: input and output channels split into this many independent
    /// convolutions (1: an ordinary convolution; C_in: depthwise).
    pub groups: usize,
    pub k: usize,
    pub stride: usize,
    pub padding: usize,
    pub h_out: usize,
    pub w_out: usize,
}

impl Geometry {
    pub fn new(
        x: &[usize],
        weight: &[usize],
        stride: usize,
        padding: usize,
        groups: usize,
    ) -> Result<Self> {
        let (&[batch, c_in, h, w], &[c_out, c_in_w, k, k2]) = (x, weight) else {
            bail!("conv2d expects input (N, C, H, W) and weight (O, C / groups, k, k), got {x:?} and {weight:?}");
        };
        if groups == 0
            || c_in != c_in_w * groups
            || c_out % groups != 0
            || k != k2
            || k == 0
            || stride == 0
        {
            bail!("conv2d: input {x:?} does not fit weight {weight:?} at stride {stride} with {groups} groups");
        }
        if h + 2 * padding < k || w + 2 * padding < k {
            bail!("conv2d: input {x:?} is smaller than the kernel {k}x{k} with padding {padding}");
        }
        Ok(Geometry {
            batch,
            c_in,
            h,
            w,
            c_out,
            groups,
            k,
            stride,
            padding,
            h_out: (h + 2 * padding - k) / stride + 1,
            w_out: (w + 2 * padding - k) / stride + 1,
        })
    }

    /// Input channels of one group.
    pub(super) fn group_in(&self) -> usize {
        self.c_in / self.groups
    }
    /// Output channels of one group.
    pub(super) fn group_out(&self) -> usize {
        self.c_out / self.groups
    }
    /// Rows of one group's column matrix: its input channels times the kernel area.
    pub(super) fn rows(&self) -> usize {
        self.group_in() * self.k * self.k
    }
    /// Input, output and weight values of group `grp` within one image / the weight.
    pub(super) fn in_range(&self, grp: usize) -> std::ops::Range<usize> {
        let len = self.group_in() * self.h * self.w;
        grp * len..(grp + 1) * len
    }
    pub(super) fn out_range(&self, grp: usize) -> std::ops::Range<usize> {
        let len = self.group_out() * self.out_plane();
        grp * len..(grp + 1) * len
    }
    pub(super) fn weight_range(&self, grp: usize) -> std::ops::Range<usize> {
        let len = self.group_out() * self.rows();
        grp * len..(grp + 1) * len
    }
    pub(super) fn out_plane(&self) -> usize {
        self.h_out * self.w_out
    }
    pub(super) fn in_image(&self) -> usize {
        self.c_in * self.h * self.w
    }
    pub(super) fn out_image(&self) -> usize {
        self.c_out * self.out_plane()
    }
    /// A 1x1, stride-1, unpadded convolution reads its input as the column matrix itself.
    pub(super) fn is_pointwise(&self) -> bool {
        self.k == 1 && self.stride == 1 && self.padding == 0
    }
    pub(super) fn input_shape(&self) -> Shape {
        Shape::from((self.batch, self.c_in, self.h, self.w))
    }
    pub(super) fn output_shape(&self) -> Shape {
        Shape::from((self.batch, self.c_out, self.h_out, self.w_out))
    }
    pub(super) fn weight_shape(&self) -> Shape {
        Shape::from((self.c_out, self.group_in(), self.k, self.k))
    }

    /// Fails unless a gradient op got the output gradient `dy` and a `second` operand of
    /// `expected` shape (the weight, or the input).
    pub(super) fn check_operands(
        &self,
        op: &str,
        dy: &Layout,
        second: &Layout,
        expected: Shape,
    ) -> Result<()> {
        if dy.shape() != &self.output_shape() || second.shape() != &expected {
            bail!(
                "conv2d {op}: unexpected shapes {:?} and {:?}",
                dy.dims(),
                second.dims()
            );
        }
        Ok(())
    }

    /// One k x k filter per channel: the direct kernels of [`super::depthwise`] run it.
    pub(super) fn is_depthwise(&self) -> bool {
        self.groups == self.c_in && self.c_out == self.c_in
    }

    /// Source index (iy or ix) of output position `o` under kernel offset `kk`, if inside.
    #[inline]
    pub(crate) fn source(&self, o: usize, kk: usize, size: usize) -> Option<usize> {
        (o * self.stride + kk)
            .checked_sub(self.padding)
            .filter(|&i| i < size)
    }

    /// The output positions `lo..hi` whose source under kernel offset `kk` lies inside an
    /// axis of `size` pixels (outside that range the source is padding).
    #[inline]
    pub(crate) fn valid_range(&self, kk: usize, size: usize, out: usize) -> (usize, usize) {
        // o*stride + kk - padding >= 0  and  < size
        let lo = self.padding.saturating_sub(kk).div_ceil(self.stride);
        let hi = (size + self.padding)
            .saturating_sub(kk)
            .div_ceil(self.stride)
            .min(out);
        (lo.min(hi), hi)
    }

    /// For a stride-1, non-pointwise convolution: the geometry of the convolution that
    /// computes its input gradient from the output gradient.
    pub(super) fn transposed_geometry(&self) -> Option<Geometry> {
        if self.stride != 1 || self.is_pointwise() || self.padding >= self.k || self.groups != 1 {
            return None;
        }
        let padding = self.k - 1 - self.padding;
        let g = Geometry::new(
            &[self.batch, self.c_out, self.h_out, self.w_out],
            &[self.c_in, self.c_out, self.k, self.k],
            1,
            padding,
            1,
        )
        .ok()?;
        (g.h_out == self.h && g.w_out == self.w).then_some(g)
    }

    /// `W'[ci, co, a, b] = W[co, ci, k-1-a, k-1-b]`.
    pub(super) fn flipped_weight(&self, weight: &[f32]) -> Vec<f32> {
        let (k, kk) = (self.k, self.k * self.k);
        let mut out = vec![0f32; weight.len()];
        for co in 0..self.c_out {
            for ci in 0..self.c_in {
                let src = &weight[(co * self.c_in + ci) * kk..][..kk];
                let dst = &mut out[(ci * self.c_out + co) * kk..][..kk];
                for a in 0..k {
                    for b in 0..k {
                        dst[a * k + b] = src[(k - 1 - a) * k + (k - 1 - b)];
                    }
                }
            }
        }
        out
    }
}
