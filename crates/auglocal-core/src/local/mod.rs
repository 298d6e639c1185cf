//! Local losses: how a module that is not the last one is trained.
//!
//! A local loss owns the auxiliary network attached after a unit and turns that unit's
//! output into a scalar loss. Adding a method is one file implementing [`LocalLoss`].

mod auglocal;

pub use auglocal::AugLocalAux;

use candle_core::Tensor;

/// The loss that trains one gradient-isolated module.
pub trait LocalLoss: Send + Sync {
    /// The module's loss from its output `features` (N, C, H, W), the `labels` (N) and the
    /// network's input `images` (methods that reconstruct the input use it).
    fn loss(
        &self,
        features: &Tensor,
        labels: &Tensor,
        images: &Tensor,
    ) -> candle_core::Result<Tensor>;
}
