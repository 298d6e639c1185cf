//! ImageNet ResNets (He et al. 2016, torchvision's layout): ResNet-18/34 of BasicBlocks,
//! ResNet-50/101 of Bottlenecks (stride on the 3x3 convolution, torchvision's v1.5).
//!
//! Units, as the reference's `exp_imagenet` cuts them: the stem (7x7 conv stride 2, BN,
//! ReLU, 3x3 max-pool stride 2) is unit 0, then each residual block is one unit: ResNet-34
//! has 1 + 16 = 17 units, ResNet-101 has 1 + 33 = 34. Tensor names are torchvision's
//! (`conv1`, `bn1`, `layer{1..4}.{b}.conv{1,2,3}`, `...downsample.{0,1}`, `fc`), so an
//! exported backbone loads into `torchvision.models.resnet50()` with `strict=True`.

use auglocal_core::nn::{
    add_relu, conv_bn, global_avg_pool, BatchNorm2d, BoxedLayer, Conv2d, Linear, MaxPool2d,
};
use auglocal_core::params::{Owner, ParamBuilder};
use auglocal_core::AuxHead;
use auglocal_core::{LocalNet, UnitSpec};
use candle_core::{Result, Tensor};
use candle_nn::ModuleT;

use crate::resnet_cifar::{projection, BasicBlock};

/// Planes (inner widths) of the four stages.
const PLANES: [usize; 4] = [64, 128, 256, 512];

/// Which residual block a ResNet stacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    /// Two 3x3 convolutions (ResNet-18/34); outputs `planes` channels.
    Basic,
    /// 1x1 reduce, 3x3, 1x1 expand by 4 (ResNet-50/101); outputs `4 * planes` channels.
    Bottleneck,
}

impl BlockKind {
    fn expansion(self) -> usize {
        match self {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck => 4,
        }
    }

    /// A block of this kind mapping `in_channels` to `out_channels` at `stride`.
    fn build(
        self,
        in_channels: usize,
        out_channels: usize,
        stride: usize,
        pb: &ParamBuilder,
    ) -> auglocal_core::Result<BoxedLayer> {
        Ok(match self {
            BlockKind::Basic => Box::new(BasicBlock::new(in_channels, out_channels, stride, pb)?),
            BlockKind::Bottleneck => {
                Box::new(Bottleneck::new(in_channels, out_channels, stride, pb)?)
            }
        })
    }
}

/// conv1x1-BN-ReLU (to `out / 4`), conv3x3 (stride)-BN-ReLU, conv1x1-BN (to `out`), plus
/// the (projected) input, then ReLU.
pub struct Bottleneck {
    conv1: Conv2d,
    bn1: BatchNorm2d,
    conv2: Conv2d,
    bn2: BatchNorm2d,
    conv3: Conv2d,
    bn3: BatchNorm2d,
    downsample: Option<(Conv2d, BatchNorm2d)>,
}

impl Bottleneck {
    /// A block from `in_channels` to `out_channels` (its inner convolutions a quarter as
    /// wide), the 3x3 convolution at `stride`; tensors `conv1`..`bn3` (and `downsample.{0,1}`
    /// when the shape changes) under `pb`.
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        stride: usize,
        pb: &ParamBuilder,
    ) -> auglocal_core::Result<Self> {
        let width = out_channels / BlockKind::Bottleneck.expansion();
        Ok(Bottleneck {
            conv1: Conv2d::new(in_channels, width, 1, 1, 0, &pb.pp("conv1"))?,
            bn1: BatchNorm2d::new(width, &pb.pp("bn1"))?,
            conv2: Conv2d::new(width, width, 3, stride, 1, &pb.pp("conv2"))?,
            bn2: BatchNorm2d::new(width, &pb.pp("bn2"))?,
            conv3: Conv2d::new(width, out_channels, 1, 1, 0, &pb.pp("conv3"))?,
            bn3: BatchNorm2d::new(out_channels, &pb.pp("bn3"))?,
            downsample: projection(in_channels, out_channels, stride, pb)?,
        })
    }
}

impl ModuleT for Bottleneck {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let h = conv_bn(&self.conv1, &self.bn1, x, train, true)?;
        let h = conv_bn(&self.conv2, &self.bn2, &h, train, true)?;
        let h = conv_bn(&self.conv3, &self.bn3, &h, train, false)?;
        let shortcut = match &self.downsample {
            Some((conv, bn)) => conv_bn(conv, bn, x, train, false)?,
            None => x.clone(),
        };
        add_relu(&h, &shortcut)
    }
}

/// The stem: conv7x7 stride 2 (3 -> 64), BN, ReLU, max-pool 3x3 stride 2 padding 1.
struct Stem {
    conv1: Conv2d,
    bn1: BatchNorm2d,
    pool: MaxPool2d,
}

impl ModuleT for Stem {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let h = conv_bn(&self.conv1, &self.bn1, x, train, true)?;
        self.pool.forward_t(&h, train)
    }
}

/// An ImageNet ResNet cut into the stem and one unit per residual block.
pub struct ResNet {
    name: String,
    classes: usize,
    kind: BlockKind,
    /// The stem, then the blocks.
    layers: Vec<BoxedLayer>,
    fc: Linear,
    units: Vec<UnitSpec>,
}

impl ResNet {
    /// ResNet-18, 34, 50 or 101 with `classes` outputs.
    pub fn new(depth: usize, classes: usize, pb: &ParamBuilder) -> auglocal_core::Result<Self> {
        let (kind, stage_blocks) = match depth {
            18 => (BlockKind::Basic, [2, 2, 2, 2]),
            34 => (BlockKind::Basic, [3, 4, 6, 3]),
            50 => (BlockKind::Bottleneck, [3, 4, 6, 3]),
            101 => (BlockKind::Bottleneck, [3, 4, 23, 3]),
            _ => {
                return Err(auglocal_core::Error::InvalidSetting {
                    setting: "ImageNet ResNet depth",
                    value: depth.to_string(),
                    valid: "18, 34, 50 or 101".into(),
                })
            }
        };
        let stem_pb = pb.owned_by(Owner::Unit(0));
        let stem: BoxedLayer = Box::new(Stem {
            conv1: Conv2d::new(3, PLANES[0], 7, 2, 3, &stem_pb.pp("conv1"))?,
            bn1: BatchNorm2d::new(PLANES[0], &stem_pb.pp("bn1"))?,
            pool: MaxPool2d {
                kernel: 3,
                stride: 2,
                padding: 1,
            },
        });
        let mut units = vec![UnitSpec {
            channels: PLANES[0],
            reduction: 4,
        }];
        let mut layers = vec![stem];
        let mut in_channels = PLANES[0];
        for (stage, (&planes, &count)) in PLANES.iter().zip(&stage_blocks).enumerate() {
            let out = planes * kind.expansion();
            for b in 0..count {
                let stride = if stage > 0 && b == 0 { 2 } else { 1 };
                let bpb = pb
                    .owned_by(Owner::Unit(units.len()))
                    .pp(format!("layer{}", stage + 1))
                    .pp(b);
                layers.push(kind.build(in_channels, out, stride, &bpb)?);
                units.push(UnitSpec {
                    channels: out,
                    reduction: 4 << stage,
                });
                in_channels = out;
            }
        }
        let fc = Linear::new(
            in_channels,
            classes,
            true,
            &pb.owned_by(Owner::Head).pp("fc"),
        )?;
        Ok(ResNet {
            name: format!("resnet{depth}"),
            classes,
            kind,
            layers,
            fc,
            units,
        })
    }
}

impl LocalNet for ResNet {
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
        crate::unit_layer(&self.name, &self.layers, unit)?.forward_t(x, train)
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
        // Copies come from units after the one being trained, so never from the stem.
        self.kind.build(in_channels, out_channels, stride, pb)
    }

    /// The reference's ImageNet auxiliary head has no BatchNorm1d, whatever the depth.
    fn aux_head(&self, _depth: usize) -> AuxHead {
        AuxHead::Fc
    }
}
