//! # auglocal-models
//!
//! Backbones cut into local-learning units, each implementing
//! [`auglocal_core::LocalNet`]. Adding a backbone is one file plus one line in [`MODELS`].

pub mod resnet_cifar;

use auglocal_core::params::ParamBuilder;
use auglocal_core::{Error, LocalNet, Result};

pub use resnet_cifar::{BasicBlock, CifarResNet};

/// Every model name [`build`] accepts.
pub const MODELS: &[&str] = &["resnet8", "resnet20", "resnet32", "resnet56", "resnet110"];

/// Builds model `name` with `classes` outputs, creating its tensors through `pb`.
pub fn build(name: &str, classes: usize, pb: &ParamBuilder) -> Result<Box<dyn LocalNet>> {
    let unknown = || Error::UnknownModel {
        name: name.to_string(),
        known: MODELS.join(", "),
    };
    if !MODELS.contains(&name) {
        return Err(unknown());
    }
    let depth: usize = name
        .strip_prefix("resnet")
        .and_then(|d| d.parse().ok())
        .ok_or_else(unknown)?;
    Ok(Box::new(CifarResNet::new(depth, classes, pb)?))
}

/// Output channels of each unit of model `name`, without building any tensor (what
/// `auglocal inspect` needs).
pub fn unit_channels(name: &str) -> Result<Vec<usize>> {
    let store = auglocal_core::ParamStore::new();
    let pb = ParamBuilder::new(&store, &candle_core::Device::Cpu, 0);
    // Building a CIFAR ResNet allocates well under a megabyte even for ResNet-110.
    Ok(build(name, 10, &pb)?.unit_channels())
}
