//! CIFAR ResNets (He et al. 2016, option B: projection shortcuts), depth 6n+2.
//!
//! Units, as the reference cuts them: the stem (conv3x3-BN-ReLU) is unit 0, then each
//! BasicBlock is one unit: ResNet-32 has 1 + 3*5 = 16 units, ResNet-110 has 55.
//! Tensor names follow PyTorch's CIFAR ResNet: `conv1`, `bn1`, `layer{1,2,3}.{b}.conv1`,
//! `...bn2`, `layer2.0.downsample.{0,1}`, `fc`.

use auglocal_core::nn::{
    conv_bn, global_avg_pool, residual_block, BatchNorm2d, BoxedLayer, Conv2d, Linear,
};
use auglocal_core::params::{Owner, ParamBuilder};
use auglocal_core::{LocalNet, UnitSpec};
use candle_core::{Result, Tensor};
use candle_nn::ModuleT;

/// Stage widths of the CIFAR ResNets.
const WIDTHS: [usize; 3] = [16, 32, 64];

/// The projection shortcut (`downsample.0`: 1x1 conv at `stride`, `downsample.1`: BN) of a
/// residual block that changes channels or resolution; `None` when the identity fits.
pub(crate) fn projection(
    in_channels: usize,
    out_channels: usize,
    stride: usize,
    pb: &ParamBuilder,
) -> auglocal_core::Result<Option<(Conv2d, BatchNorm2d)>> {
    if stride == 1 && in_channels == out_channels {
        return Ok(None);
    }
    let d = pb.pp("downsample");
    Ok(Some((
        Conv2d::new(in_channels, out_channels, 1, stride, 0, &d.pp(0))?,
        BatchNorm2d::new(out_channels, &d.pp(1))?,
    )))
}

/// conv3x3-BN-ReLU, conv3x3-BN, plus the (projected) input, then ReLU.
pub struct BasicBlock {
    conv1: Conv2d,
    bn1: BatchNorm2d,
    conv2: Conv2d,
    bn2: BatchNorm2d,
    /// 1x1 conv (stride) + BN when the block changes channels or resolution.
    downsample: Option<(Conv2d, BatchNorm2d)>,
}

impl BasicBlock {
    /// A block from `in_channels` to `out_channels`, the first convolution at `stride`;
    /// tensors `conv1`, `bn1`, `conv2`, `bn2` (and `downsample.{0,1}` when the shape
    /// changes) under `pb`.
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        stride: usize,
        pb: &ParamBuilder,
    ) -> auglocal_core::Result<Self> {
        let downsample = projection(in_channels, out_channels, stride, pb)?;
        Ok(BasicBlock {
            conv1: Conv2d::new(in_channels, out_channels, 3, stride, 1, &pb.pp("conv1"))?,
            bn1: BatchNorm2d::new(out_channels, &pb.pp("bn1"))?,
            conv2: Conv2d::new(out_channels, out_channels, 3, 1, 1, &pb.pp("conv2"))?,
            bn2: BatchNorm2d::new(out_channels, &pb.pp("bn2"))?,
            downsample,
        })
    }
}

impl ModuleT for BasicBlock {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        residual_block(
            x,
            (&self.conv1, &self.bn1),
            (&self.conv2, &self.bn2),
            self.downsample.as_ref().map(|(conv, bn)| (conv, bn)),
            train,
        )
    }
}

/// The stem: conv3x3 (3 -> 16) - BN - ReLU.
struct Stem {
    conv1: Conv2d,
    bn1: BatchNorm2d,
}

impl ModuleT for Stem {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        conv_bn(&self.conv1, &self.bn1, x, train, true)
    }
}

/// A CIFAR ResNet of depth 6n+2 cut into 3n+1 units.
pub struct CifarResNet {
    name: String,
    classes: usize,
    stem: Stem,
    blocks: Vec<BasicBlock>,
    fc: Linear,
    units: Vec<UnitSpec>,
}

impl CifarResNet {
    /// Depth must be 6n+2 (20, 32, 44, 56, 110, ...). Parameters are created through `pb`.
    pub fn new(depth: usize, classes: usize, pb: &ParamBuilder) -> auglocal_core::Result<Self> {
        if depth < 8 || !(depth - 2).is_multiple_of(6) {
            return Err(auglocal_core::Error::InvalidSetting {
                setting: "CIFAR ResNet depth",
                value: depth.to_string(),
                valid: "6n+2 with n >= 1 (20, 32, 56, 110, ...)".into(),
            });
        }
        let per_stage = (depth - 2) / 6;
        let stem_pb = pb.owned_by(Owner::Unit(0));
        let stem = Stem {
            conv1: Conv2d::new(3, WIDTHS[0], 3, 1, 1, &stem_pb.pp("conv1"))?,
            bn1: BatchNorm2d::new(WIDTHS[0], &stem_pb.pp("bn1"))?,
        };
        let mut units = vec![UnitSpec {
            channels: WIDTHS[0],
            reduction: 1,
        }];
        let mut blocks = Vec::with_capacity(3 * per_stage);
        let mut in_channels = WIDTHS[0];
        for (stage, &width) in WIDTHS.iter().enumerate() {
            for b in 0..per_stage {
                let stride = if stage > 0 && b == 0 { 2 } else { 1 };
                let unit = units.len();
                let bpb = pb
                    .owned_by(Owner::Unit(unit))
                    .pp(format!("layer{}", stage + 1))
                    .pp(b);
                blocks.push(BasicBlock::new(in_channels, width, stride, &bpb)?);
                units.push(UnitSpec {
                    channels: width,
                    reduction: 1 << stage,
                });
                in_channels = width;
            }
        }
        let fc = Linear::new(
            in_channels,
            classes,
            true,
            &pb.owned_by(Owner::Head).pp("fc"),
        )?;
        Ok(CifarResNet {
            name: format!("resnet{depth}"),
            classes,
            stem,
            blocks,
            fc,
            units,
        })
    }
}

impl LocalNet for CifarResNet {
    fn name(&self) -> &str {
        &self.name
    }

    fn units(&self) -> &[UnitSpec] {
        &self.units
    }

    fn classes(&self) -> usize {
        self.classes
    }

    fn forward_unit(&self, unit: usize, x: &Tensor, train: bool) -> Result<Tensor> {
        match unit {
            0 => self.stem.forward_t(x, train),
            u => match self.blocks.get(u - 1) {
                Some(block) => block.forward_t(x, train),
                None => candle_core::bail!(
                    "{} has {} units, asked for unit {u}",
                    self.name,
                    self.units.len()
                ),
            },
        }
    }

    fn head(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.fc.forward_t(&global_avg_pool(x)?, train)
    }

    fn build_block(
        &self,
        _copy_of: usize,
        in_channels: usize,
        out_channels: usize,
        stride: usize,
        pb: &ParamBuilder,
    ) -> auglocal_core::Result<BoxedLayer> {
        // Every unit an auxiliary network may copy (never the stem: copies come from units
        // after the one being trained) is a BasicBlock.
        Ok(Box::new(BasicBlock::new(
            in_channels,
            out_channels,
            stride,
            pb,
        )?))
    }
}
