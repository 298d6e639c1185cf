//! The auxiliary network after one unit, as data: which later units it copies, with what
//! channels and strides, and the head that closes it.

use serde::{Deserialize, Serialize};

use crate::net::AuxHead;

/// One block of an auxiliary network: a fresh copy of backbone unit `copy_of`, mapping
/// `in_channels` to `out_channels` at `stride`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuxBlock {
    /// Index of the backbone unit this block is a fresh copy of (same structure, its own
    /// weights).
    pub copy_of: usize,
    /// Channels the block reads: the previous block's output, or the unit's for the first.
    #[serde(rename = "in")]
    pub in_channels: usize,
    /// Channels the block writes: those of unit `copy_of`.
    #[serde(rename = "out")]
    pub out_channels: usize,
    /// 2 where the block halves the resolution, else 1.
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
    /// Index of the backbone unit whose output the auxiliary network reads.
    pub unit: usize,
    /// Blocks copied from later units (AugLocal); 0 for the methods whose local loss sits
    /// on the unit's output as it is.
    pub depth: usize,
    /// The copied blocks in order, `depth` of them.
    pub blocks: Vec<AuxBlock>,
    /// The classifier closing AugLocal's blocks; `None` where the method's local loss
    /// brings its own head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<AuxHead>,
    /// With `+man`: the block MAN's LB and EMA copy, the unit after this one
    /// ([`crate::methods::man`]); the method's loss then sits at that unit's position
    /// (AugLocal's `blocks` and `head` are those it would have after that unit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub man: Option<AuxBlock>,
}

impl UnitAux {
    /// Output channels of the last auxiliary block (the head's input width).
    pub fn head_channels(&self, unit_channels: usize) -> usize {
        self.blocks.last().map_or(unit_channels, |b| b.out_channels)
    }
}
