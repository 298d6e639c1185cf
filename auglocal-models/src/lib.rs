#![warn(missing_docs)]
//! # auglocal-models
//!
//! Backbones cut into local-learning units, each implementing
//! [`auglocal_core::LocalNet`]: CIFAR ResNets, VGG-19 and MobileNetV2 for CIFAR-size
//! images; ResNet-18/34/50/101 and VGG-13 for ImageNet. Adding a backbone is one file plus
//! one entry in [`MODELS`] and [`build`].

pub mod mobilenet_v2;
pub mod resnet;
pub mod resnet_cifar;
pub mod vgg;

use auglocal_core::params::ParamBuilder;
use auglocal_core::{Error, LocalNet, ParamStore, Result, UnitSpec};

pub use mobilenet_v2::{InvertedResidual, MobileNetV2};
pub use resnet::{Bottleneck, ResNet};
pub use resnet_cifar::{BasicBlock, CifarResNet};
pub use vgg::{Vgg, VggUnit};

/// What the registry knows about a model before building it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelInfo {
    /// The model's name, as [`MODELS`] lists it.
    pub name: &'static str,
    /// Side of the square input images it is meant for (32: CIFAR-size, 224: ImageNet).
    pub input_size: usize,
    /// Classes of its default output layer (10 for CIFAR-size models, 1000 for ImageNet).
    pub default_classes: usize,
}

/// Every model name [`build`] accepts: CIFAR-size models first, then ImageNet ones.
pub const MODELS: &[&str] = &[
    "resnet8",
    "resnet20",
    "resnet32",
    "resnet56",
    "resnet110",
    "vgg19",
    "mobilenetv2",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "vgg13",
];

/// The models of [`MODELS`] built for 224x224 ImageNet images.
const IMAGENET_MODELS: &[&str] = &["resnet18", "resnet34", "resnet50", "resnet101", "vgg13"];

/// The registry entry of model `name`.
pub fn info(name: &str) -> Result<ModelInfo> {
    let name = *MODELS
        .iter()
        .find(|&&m| m == name)
        .ok_or_else(|| Error::UnknownModel {
            name: name.to_string(),
            known: MODELS.join(", "),
        })?;
    let imagenet = IMAGENET_MODELS.contains(&name);
    Ok(ModelInfo {
        name,
        input_size: if imagenet { 224 } else { 32 },
        default_classes: if imagenet { 1000 } else { 10 },
    })
}

/// Builds model `name` with `classes` outputs, creating its tensors through `pb`.
pub fn build(name: &str, classes: usize, pb: &ParamBuilder) -> Result<Box<dyn LocalNet>> {
    info(name)?;
    Ok(match name {
        "vgg19" => Box::new(Vgg::new(19, classes, pb)?),
        "vgg13" => Box::new(Vgg::new(13, classes, pb)?),
        "mobilenetv2" => Box::new(MobileNetV2::new(classes, pb)?),
        "resnet18" | "resnet34" | "resnet50" | "resnet101" => {
            Box::new(ResNet::new(depth_of(name), classes, pb)?)
        }
        _ => Box::new(CifarResNet::new(depth_of(name), classes, pb)?),
    })
}

/// The depth in a registered ResNet name (`resnet110` -> 110).
fn depth_of(name: &str) -> usize {
    name.trim_start_matches("resnet").parse().unwrap_or(0)
}

/// Builds model `name` with every parameter zero and no random draw: for what needs the
/// structure alone (units, plans, parameter counts). Fast and nearly free in memory even
/// for VGG-13 (see [`ParamBuilder::zeros`]).
pub fn build_zeroed(name: &str, classes: usize) -> Result<(Box<dyn LocalNet>, ParamStore)> {
    let store = ParamStore::new();
    let pb = ParamBuilder::zeros(&store, &candle_core::Device::Cpu);
    Ok((build(name, classes, &pb)?, store))
}

/// The units of model `name`, without initialising it.
pub fn units(name: &str) -> Result<Vec<UnitSpec>> {
    Ok(build_zeroed(name, 10)?.0.units().to_vec())
}

/// Output channels of each unit of model `name`, without initialising it.
pub fn unit_channels(name: &str) -> Result<Vec<usize>> {
    Ok(units(name)?.iter().map(|u| u.channels).collect())
}

/// Trainable parameters of model `name` with a `classes`-way output layer, counted over
/// the tensors its construction creates.
pub fn parameters(name: &str, classes: usize) -> Result<usize> {
    let (_net, store) = build_zeroed(name, classes)?;
    Ok(ParamStore::count_params(&store.entries()))
}

/// Layer `unit` of a model whose units are `layers`, or an error naming the model.
pub(crate) fn unit_layer<'a, T>(
    name: &str,
    layers: &'a [T],
    unit: usize,
) -> candle_core::Result<&'a T> {
    layers.get(unit).ok_or_else(|| {
        candle_core::Error::Msg(format!(
            "{name} has {} units, asked for unit {unit}",
            layers.len()
        ))
    })
}
