//! VGG with BatchNorm (Simonyan & Zisserman 2015): VGG-19 for CIFAR-size images (32x32, or
//! STL-10's 96x96), VGG-13 for ImageNet (torchvision's `vgg13_bn`).
//!
//! Every convolution (conv3x3 with bias, BN, ReLU) is one unit, and a 2x2 max-pool that
//! VGG puts between two convolutions belongs to the unit after it: VGG-19 has 16 units,
//! VGG-13 has 10, as the reference's `net_dim` lists them. The max-pool after the last
//! convolution belongs to the output layer. Tensor names are PyTorch's `nn.Sequential`
//! indices: `features.<i>` (the convolution at i, its BN at i + 1, counting the ReLUs and
//! pools), then `classifier` (VGG-19: one Linear(512, classes) after global average pooling,
//! as the common CIFAR VGG) or `classifier.{0,3,6}` (VGG-13: torchvision's three Linear
//! layers after a 7x7 adaptive average pool), so an exported VGG-13 loads into
//! `torchvision.models.vgg13_bn()` with `strict=True`. Dropout is left out of the VGG-13
//! classifier so that training stays deterministic (inference is the same).
//!
//! An auxiliary copy of a unit is `[MaxPool 2x2] Conv3x3-BN-ReLU`, the pool present exactly
//! when the copy changes the channel count (the reference's ImageNet VGG rule), and VGG-13's
//! auxiliary networks end in the reference's MLP head.

use auglocal_core::net::{AuxHead, Downsampling};
use auglocal_core::nn::{
    adaptive_avg_pool2d, conv_bn, global_avg_pool, BatchNorm2d, BoxedLayer, Conv2d, Linear,
    MaxPool2d,
};
use auglocal_core::params::{Owner, ParamBuilder};
use auglocal_core::{LocalNet, UnitSpec};
use candle_core::{Result, Tensor};
use candle_nn::ModuleT;

/// One entry of a VGG layout: a 3x3 convolution to this many channels, or `None` for a
/// 2x2 max-pool.
type Layer = Option<usize>;

const M: Layer = None;

#[rustfmt::skip]
const VGG13: &[Layer] = &[
    Some(64), Some(64), M,
    Some(128), Some(128), M,
    Some(256), Some(256), M,
    Some(512), Some(512), M,
    Some(512), Some(512), M,
];

#[rustfmt::skip]
const VGG19: &[Layer] = &[
    Some(64), Some(64), M,
    Some(128), Some(128), M,
    Some(256), Some(256), Some(256), Some(256), M,
    Some(512), Some(512), Some(512), Some(512), M,
    Some(512), Some(512), Some(512), Some(512), M,
];

/// Width of torchvision's VGG classifier and the side of its adaptive pool.
const CLASSIFIER_WIDTH: usize = 4096;
const CLASSIFIER_POOL: usize = 7;

/// `[MaxPool 2x2] Conv3x3 (bias)-BN-ReLU`: one VGG unit, or an auxiliary copy of one.
pub struct VggUnit {
    pool: Option<MaxPool2d>,
    conv: Conv2d,
    bn: BatchNorm2d,
}

impl VggUnit {
    /// Tensors `<conv>.{weight,bias}` and `<bn>.*` under `pb`.
    fn with_names(
        in_channels: usize,
        out_channels: usize,
        pool: bool,
        pb: &ParamBuilder,
        conv: &str,
        bn: &str,
    ) -> auglocal_core::Result<Self> {
        let cpb = pb.pp(conv);
        Ok(VggUnit {
            pool: pool.then(|| MaxPool2d::square(2)),
            conv: Conv2d::new(in_channels, out_channels, 3, 1, 1, &cpb)?.with_bias(&cpb)?,
            bn: BatchNorm2d::new(out_channels, &pb.pp(bn))?,
        })
    }

    /// An auxiliary copy: `conv.*`, `bn.*`; a max-pool first when `stride` is 2.
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        stride: usize,
        pb: &ParamBuilder,
    ) -> auglocal_core::Result<Self> {
        Self::with_names(in_channels, out_channels, stride == 2, pb, "conv", "bn")
    }
}

impl ModuleT for VggUnit {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let h = match &self.pool {
            Some(pool) => pool.forward_t(x, train)?,
            None => x.clone(),
        };
        conv_bn(&self.conv, &self.bn, &h, train, true)
    }
}

/// The output layer after the last unit.
enum Classifier {
    /// Max-pool, global average pool, Linear (VGG-19 for CIFAR-size images).
    Pooled(Linear),
    /// Max-pool, adaptive average pool to 7x7, three Linear layers with ReLU between
    /// (torchvision's ImageNet classifier, without dropout).
    ImageNet([Linear; 3]),
}

/// A VGG with BatchNorm cut into one unit per convolution.
pub struct Vgg {
    name: String,
    classes: usize,
    layers: Vec<VggUnit>,
    classifier: Classifier,
    units: Vec<UnitSpec>,
}

impl Vgg {
    /// VGG-19 (CIFAR-size) or VGG-13 (ImageNet) with `classes` outputs.
    pub fn new(depth: usize, classes: usize, pb: &ParamBuilder) -> auglocal_core::Result<Self> {
        Self::with_width(depth, classes, 1, pb)
    }

    /// The same network with every convolution `1 / divisor` as wide (for quick tests;
    /// `divisor` 1 is the real VGG).
    pub fn with_width(
        depth: usize,
        classes: usize,
        divisor: usize,
        pb: &ParamBuilder,
    ) -> auglocal_core::Result<Self> {
        let layout = match depth {
            13 => VGG13,
            19 => VGG19,
            _ => {
                return Err(auglocal_core::Error::InvalidSetting {
                    setting: "VGG depth",
                    value: depth.to_string(),
                    valid: "19 (CIFAR-size images) or 13 (ImageNet)".into(),
                })
            }
        };
        if divisor == 0 || !64usize.is_multiple_of(divisor) {
            return Err(auglocal_core::Error::InvalidSetting {
                setting: "VGG width divisor",
                value: divisor.to_string(),
                valid: "1, 2, 4, 8, 16, 32 or 64".into(),
            });
        }
        let mut layers = Vec::new();
        let mut units = Vec::new();
        let (mut in_channels, mut reduction, mut pool) = (3, 1, false);
        for (index, layer) in layout.iter().enumerate() {
            let Some(width) = layer else {
                pool = true;
                reduction *= 2;
                continue;
            };
            let out = width / divisor;
            let upb = pb.owned_by(Owner::Unit(units.len())).pp("features");
            let (conv, bn) = (index_name(layout, index), index_name(layout, index) + 1);
            layers.push(VggUnit::with_names(
                in_channels,
                out,
                pool,
                &upb,
                &conv.to_string(),
                &bn.to_string(),
            )?);
            units.push(UnitSpec {
                channels: out,
                reduction,
            });
            (in_channels, pool) = (out, false);
        }
        let hpb = pb.owned_by(Owner::Head).pp("classifier");
        let classifier = if depth == 13 {
            let flat = in_channels * CLASSIFIER_POOL * CLASSIFIER_POOL;
            Classifier::ImageNet([
                Linear::new(flat, CLASSIFIER_WIDTH, true, &hpb.pp(0))?,
                Linear::new(CLASSIFIER_WIDTH, CLASSIFIER_WIDTH, true, &hpb.pp(3))?,
                Linear::new(CLASSIFIER_WIDTH, classes, true, &hpb.pp(6))?,
            ])
        } else {
            Classifier::Pooled(Linear::new(in_channels, classes, true, &hpb)?)
        };
        let name = match divisor {
            1 => format!("vgg{depth}"),
            d => format!("vgg{depth}/{d}"),
        };
        Ok(Vgg {
            name,
            classes,
            layers,
            classifier,
            units,
        })
    }
}

/// PyTorch's `nn.Sequential` index of layout entry `index`: a convolution takes three slots
/// (conv, BN, ReLU), a max-pool one.
fn index_name(layout: &[Layer], index: usize) -> usize {
    layout[..index]
        .iter()
        .map(|l| if l.is_some() { 3 } else { 1 })
        .sum()
}

impl LocalNet for Vgg {
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
        let h = MaxPool2d::square(2).forward_t(x, train)?;
        match &self.classifier {
            Classifier::Pooled(fc) => fc.forward_t(&global_avg_pool(&h)?, train),
            Classifier::ImageNet([fc0, fc3, fc6]) => {
                let h = adaptive_avg_pool2d(&h, CLASSIFIER_POOL)?.flatten_from(1)?;
                let h = fc0.forward_t(&h, train)?.relu()?;
                let h = fc3.forward_t(&h, train)?.relu()?;
                fc6.forward_t(&h, train)
            }
        }
    }

    fn build_block(
        &self,
        _copy_of: usize,
        in_channels: usize,
        out_channels: usize,
        stride: usize,
        pb: &ParamBuilder,
    ) -> auglocal_core::Result<BoxedLayer> {
        Ok(Box::new(VggUnit::new(
            in_channels,
            out_channels,
            stride,
            pb,
        )?))
    }

    fn aux_downsampling(&self) -> Downsampling {
        Downsampling::ChannelChange
    }

    fn aux_head(&self, depth: usize) -> AuxHead {
        match self.classifier {
            Classifier::ImageNet(_) => AuxHead::Mlp,
            Classifier::Pooled(_) => AuxHead::for_depth(depth),
        }
    }
}
