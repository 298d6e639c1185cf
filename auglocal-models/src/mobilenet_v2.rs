//! MobileNetV2 (Sandler et al. 2018) for CIFAR-size images, as the common CIFAR variant
//! (kuangliu's `pytorch-cifar`) builds it: a stride-1 stem (conv3x3 3 -> 32) and a stride-1
//! 24-channel stage, so a 32x32 image ends at 4x4; ReLU; every block expands with a 1x1
//! convolution (expansion 1 too); a stride-1 block adds its input, through a 1x1
//! projection when the channel count changes; a stride-2 block has no shortcut.
//!
//! Units, as the reference's `mobilenet` config counts them (19): the stem, the 17 inverted
//! residual blocks, and the final conv1x1 320 -> 1280 with BN and ReLU. Tensor names follow
//! that PyTorch model: `conv1`, `bn1`, `layers.<b>.{conv1,bn1,conv2,bn2,conv3,bn3}`,
//! `layers.<b>.shortcut.{0,1}`, `conv2`, `bn2`, `linear`.
//!
//! An auxiliary copy of a block is an inverted residual block with that block's expansion;
//! a copy of the final unit is its conv1x1-BN-ReLU. The depthwise 3x3 convolutions run on
//! the direct depthwise kernel of `auglocal-core`.

use auglocal_core::nn::{conv_bn, global_avg_pool, BatchNorm2d, BoxedLayer, Conv2d, Linear};
use auglocal_core::params::{Owner, ParamBuilder};
use auglocal_core::{LocalNet, UnitSpec};
use candle_core::{Result, Tensor};
use candle_nn::ModuleT;

/// (expansion, output channels, blocks, stride of the first block) of each stage.
const STAGES: [(usize, usize, usize, usize); 7] = [
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
];
const STEM: usize = 32;
const LAST: usize = 1280;

/// Expand (conv1x1-BN-ReLU), depthwise conv3x3 (stride)-BN-ReLU, project (conv1x1-BN),
/// plus the input at stride 1.
pub struct InvertedResidual {
    conv1: Conv2d,
    bn1: BatchNorm2d,
    conv2: Conv2d,
    bn2: BatchNorm2d,
    conv3: Conv2d,
    bn3: BatchNorm2d,
    shortcut: Shortcut,
}

enum Shortcut {
    None,
    Identity,
    Projection(Conv2d, BatchNorm2d),
}

impl InvertedResidual {
    /// A block from `in_channels` to `out_channels` whose hidden layer is `expansion` times
    /// `in_channels` wide and whose depthwise convolution has stride `stride`; tensors
    /// `conv1`..`bn3` (and `shortcut.{0,1}` for a stride-1 block that changes channels)
    /// under `pb`.
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        expansion: usize,
        stride: usize,
        pb: &ParamBuilder,
    ) -> auglocal_core::Result<Self> {
        let hidden = expansion * in_channels;
        let shortcut = match (stride, in_channels == out_channels) {
            (1, true) => Shortcut::Identity,
            (1, false) => {
                let s = pb.pp("shortcut");
                Shortcut::Projection(
                    Conv2d::new(in_channels, out_channels, 1, 1, 0, &s.pp(0))?,
                    BatchNorm2d::new(out_channels, &s.pp(1))?,
                )
            }
            _ => Shortcut::None,
        };
        Ok(InvertedResidual {
            conv1: Conv2d::new(in_channels, hidden, 1, 1, 0, &pb.pp("conv1"))?,
            bn1: BatchNorm2d::new(hidden, &pb.pp("bn1"))?,
            conv2: Conv2d::grouped(hidden, hidden, 3, stride, 1, hidden, &pb.pp("conv2"))?,
            bn2: BatchNorm2d::new(hidden, &pb.pp("bn2"))?,
            conv3: Conv2d::new(hidden, out_channels, 1, 1, 0, &pb.pp("conv3"))?,
            bn3: BatchNorm2d::new(out_channels, &pb.pp("bn3"))?,
            shortcut,
        })
    }
}

impl ModuleT for InvertedResidual {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let h = conv_bn(&self.conv1, &self.bn1, x, train, true)?;
        let h = conv_bn(&self.conv2, &self.bn2, &h, train, true)?;
        let h = conv_bn(&self.conv3, &self.bn3, &h, train, false)?;
        match &self.shortcut {
            Shortcut::None => Ok(h),
            Shortcut::Identity => h + x,
            Shortcut::Projection(conv, bn) => h + conv_bn(conv, bn, x, train, false)?,
        }
    }
}

/// Conv (k x k, stride)-BN-ReLU: the stem (3x3) and the final unit (1x1).
pub struct ConvBnRelu {
    conv: Conv2d,
    bn: BatchNorm2d,
}

impl ConvBnRelu {
    /// Tensors `<conv>.weight` and `<bn>.*` under `pb`.
    fn new(
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        stride: usize,
        pb: &ParamBuilder,
        names: (&str, &str),
    ) -> auglocal_core::Result<Self> {
        Ok(ConvBnRelu {
            conv: Conv2d::new(
                in_channels,
                out_channels,
                kernel,
                stride,
                kernel / 2,
                &pb.pp(names.0),
            )?,
            bn: BatchNorm2d::new(out_channels, &pb.pp(names.1))?,
        })
    }
}

impl ModuleT for ConvBnRelu {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        conv_bn(&self.conv, &self.bn, x, train, true)
    }
}

/// A CIFAR MobileNetV2 cut into 19 units.
pub struct MobileNetV2 {
    classes: usize,
    layers: Vec<BoxedLayer>,
    /// Expansion of each unit that is an inverted residual block (`None`: stem, last).
    expansions: Vec<Option<usize>>,
    linear: Linear,
    units: Vec<UnitSpec>,
}

impl MobileNetV2 {
    /// The full-width network with a `classes`-way output layer, its tensors created through
    /// `pb` (each tagged with its unit, the output layer with [`Owner::Head`]).
    pub fn new(classes: usize, pb: &ParamBuilder) -> auglocal_core::Result<Self> {
        Self::with_width(classes, 1, pb)
    }

    /// The same network with every layer `1 / divisor` as wide (for quick tests; `divisor`
    /// 1 is the real MobileNetV2).
    pub fn with_width(
        classes: usize,
        divisor: usize,
        pb: &ParamBuilder,
    ) -> auglocal_core::Result<Self> {
        if divisor == 0 || !16usize.is_multiple_of(divisor) {
            return Err(auglocal_core::Error::InvalidSetting {
                setting: "MobileNetV2 width divisor",
                value: divisor.to_string(),
                valid: "1, 2, 4, 8 or 16".into(),
            });
        }
        let (stem, last) = (STEM / divisor, LAST / divisor);
        let unit_pb = |u: usize| pb.owned_by(Owner::Unit(u));
        let mut layers: Vec<BoxedLayer> = vec![Box::new(ConvBnRelu::new(
            3,
            stem,
            3,
            1,
            &unit_pb(0),
            ("conv1", "bn1"),
        )?)];
        let mut expansions = vec![None];
        let mut units = vec![UnitSpec {
            channels: stem,
            reduction: 1,
        }];
        let (mut in_channels, mut reduction) = (stem, 1);
        for (expansion, width, count, first_stride) in STAGES {
            let out = width / divisor;
            for b in 0..count {
                let stride = if b == 0 { first_stride } else { 1 };
                reduction *= stride;
                let bpb = unit_pb(units.len()).pp("layers").pp(units.len() - 1);
                layers.push(Box::new(InvertedResidual::new(
                    in_channels,
                    out,
                    expansion,
                    stride,
                    &bpb,
                )?));
                expansions.push(Some(expansion));
                units.push(UnitSpec {
                    channels: out,
                    reduction,
                });
                in_channels = out;
            }
        }
        layers.push(Box::new(ConvBnRelu::new(
            in_channels,
            last,
            1,
            1,
            &unit_pb(units.len()),
            ("conv2", "bn2"),
        )?));
        expansions.push(None);
        units.push(UnitSpec {
            channels: last,
            reduction,
        });
        let linear = Linear::new(last, classes, true, &pb.owned_by(Owner::Head).pp("linear"))?;
        Ok(MobileNetV2 {
            classes,
            layers,
            expansions,
            linear,
            units,
        })
    }
}

impl LocalNet for MobileNetV2 {
    fn name(&self) -> &str {
        "mobilenetv2"
    }

    fn units(&self) -> &[UnitSpec] {
        &self.units
    }

    fn classes(&self) -> usize {
        self.classes
    }

    fn forward_unit(&self, unit: usize, x: &Tensor, train: bool) -> Result<Tensor> {
        crate::unit_layer(self.name(), &self.layers, unit)?.forward_t(x, train)
    }

    fn head(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.linear.forward_t(&global_avg_pool(x)?, train)
    }

    fn build_block(
        &self,
        copy_of: usize,
        in_channels: usize,
        out_channels: usize,
        stride: usize,
        pb: &ParamBuilder,
    ) -> auglocal_core::Result<BoxedLayer> {
        Ok(match self.expansions.get(copy_of).copied().flatten() {
            Some(expansion) => Box::new(InvertedResidual::new(
                in_channels,
                out_channels,
                expansion,
                stride,
                pb,
            )?),
            None => Box::new(ConvBnRelu::new(
                in_channels,
                out_channels,
                1,
                stride,
                pb,
                ("conv", "bn"),
            )?),
        })
    }
}
