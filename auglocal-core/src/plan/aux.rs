//! The auxiliary network after one unit, as data: which later units it copies, with what
//! channels and strides, and the head that closes it.

use serde::{Deserialize, Serialize};

use crate::net::AuxHead;

/// One block of an auxiliary network: a fresh copy of backbone unit `copy_of`, mapping
/// `in_channels` to `out_channels` at `stride`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuxBlock {
    pub copy_of: usize,
    #[serde(rename = "in")]
    pub in_channels: usize,
    #[serde(rename = "out")]
    pub out_channels: usize,
    pub stride: usize,
}

impl AuxBlock {
    /// A projection shortcut (1x1 conv + BN) is needed whenever the block changes the shape.
    pub fn needs_projection(&self) -> bool {
        self.stride != 1 || self.in_channels != self.out_channels
    }
}

/// The auxiliary network attached after one unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitAux {
    pub unit: usize,
    /// Blocks copied from later units (AugLocal); 0 for the methods whose local loss sits
    /// on the unit's output as it is.
    pub depth: usize,
    pub blocks: Vec<AuxBlock>,
    /// The classifier closing AugLocal's blocks; `None` where the method's local loss
    /// brings its own head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<AuxHead>,
}

impl UnitAux {
    /// Output channels of the last auxiliary block (the head's input width).
    pub fn head_channels(&self, unit_channels: usize) -> usize {
        self.blocks.last().map_or(unit_channels, |b| b.out_channels)
    }
}
