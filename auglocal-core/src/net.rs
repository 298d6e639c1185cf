//! The contract between a backbone and local learning.

use candle_core::Tensor;

use serde::{Deserialize, Serialize};

use crate::nn::BoxedLayer;
use crate::params::ParamBuilder;

/// What the plan needs to know about one unit (local layer) of a backbone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnitSpec {
    /// Output channels (the reference's `net_dim` entry).
    pub channels: usize,
    /// Spatial downsampling factor of the unit's output relative to the input image.
    pub reduction: usize,
}

/// A backbone cut into units. The model knows its blocks; core knows the method: the engine
/// only calls these methods and never looks inside a unit.
///
/// Parameters are created through a [`ParamBuilder`] tagged with
/// [`Owner::Unit`](crate::params::Owner) for unit `i` and [`Owner::Head`](crate::params::Owner)
/// for the output layer, so that the engine can find each module's parameters.
pub trait LocalNet: Send + Sync {
    /// Registry name, e.g. `resnet32`.
    fn name(&self) -> &str;

    /// The units in forward order.
    fn units(&self) -> &[UnitSpec];

    /// Number of output classes.
    fn classes(&self) -> usize;

    /// Runs unit `unit` on `x`.
    fn forward_unit(&self, unit: usize, x: &Tensor, train: bool) -> candle_core::Result<Tensor>;

    /// The output layer: pooling and classifier, giving logits.
    fn head(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor>;

    /// A fresh block of the same kind as unit `copy_of`, mapping `in_channels` to
    /// `out_channels` at `stride`, with a projection shortcut when the shape changes. Used
    /// to build auxiliary networks; nothing is shared with the backbone.
    fn build_block(
        &self,
        copy_of: usize,
        in_channels: usize,
        out_channels: usize,
        stride: usize,
        pb: &ParamBuilder,
    ) -> crate::Result<BoxedLayer>;

    /// Where auxiliary copies halve the resolution ([`AuxPlan::new`](crate::AuxPlan::new)).
    fn aux_downsampling(&self) -> Downsampling {
        Downsampling::Counter
    }

    /// The head closing an AugLocal auxiliary network of depth `depth`: by default the
    /// CIFAR recipe's (global average pool, BatchNorm1d at depth <= 1, Linear).
    fn aux_head(&self, depth: usize) -> AuxHead {
        AuxHead::for_depth(depth)
    }

    /// Unit channels, the `net_dim` the plan is computed from.
    fn unit_channels(&self) -> Vec<usize> {
        self.units().iter().map(|u| u.channels).collect()
    }

    /// Runs every unit and the output layer (inference or end-to-end training).
    fn forward(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let mut h = x.clone();
        for unit in 0..self.units().len() {
            h = self.forward_unit(unit, &h, train)?;
        }
        self.head(&h, train)
    }
}

/// The classifier that closes an AugLocal auxiliary network, as the backbone's recipe has
/// it ([`LocalNet::aux_head`]). A shape, not a method: the baselines' heads belong to their
/// local losses ([`crate::methods`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuxHead {
    /// Global average pool, then Linear.
    Fc,
    /// Global average pool, BatchNorm1d, then Linear (the CIFAR recipe at depth <= 1).
    BnFc,
    /// The reference's ImageNet VGG head: flatten, adaptive average pool to 512 features,
    /// two Linear(512, 512)-BatchNorm1d-ReLU, then Linear.
    Mlp,
}

impl AuxHead {
    /// The name the plan's JSON and `auglocal inspect` use.
    pub fn name(self) -> &'static str {
        match self {
            AuxHead::Fc => "fc",
            AuxHead::BnFc => "bn_fc",
            AuxHead::Mlp => "mlp",
        }
    }

    /// The head of the CIFAR recipe for an auxiliary network of depth `depth`.
    pub fn for_depth(depth: usize) -> Self {
        if depth <= 1 {
            AuxHead::BnFc
        } else {
            AuxHead::Fc
        }
    }
}

/// Where the blocks of an auxiliary network halve the resolution
/// ([`LocalNet::aux_downsampling`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Downsampling {
    /// The reference's counter: moving from the current unit to a copied unit of coarser
    /// resolution owes log2 of their ratio in halvings, paid at most one per block (stride
    /// 2), the rest carried to the next block. ResNets and MobileNetV2.
    #[default]
    Counter,
    /// VGG's rule: a block halves the resolution (a 2x2 max-pool before its convolution)
    /// exactly when it changes the channel count.
    ChannelChange,
}
