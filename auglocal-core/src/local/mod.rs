//! Local losses: how a module that is not the last one is trained.
//!
//! A local loss owns the auxiliary network attached after a unit and turns that unit's
//! output into a scalar loss. Adding a method is one file implementing [`LocalLoss`], and a
//! [`LocalLossBuilder`] (a plain closure will do) that the engine calls once per module:
//! [`Engine::with_losses`](crate::Engine::with_losses) takes it, so a new loss plugs in
//! without touching the engine.

mod auglocal;
mod dgl;
mod greedy;
mod infopro;
pub mod pool;
mod predsim;

pub use auglocal::AugLocalAux;
pub use dgl::DglAux;
pub use greedy::GreedyAux;
pub use infopro::{supervised_contrastive, InfoProAux, InfoProWeights};
pub use predsim::{similarity_matrix, PredSimAux};

use candle_core::Tensor;

use crate::net::LocalNet;
use crate::params::ParamBuilder;
use crate::plan::{HeadKind, UnitAux};

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

/// Where a local loss sits: everything a builder may need to size its auxiliary network.
pub struct LossSite<'a> {
    /// The backbone (unit channels and reductions, `classes`, `build_block`).
    pub net: &'a dyn LocalNet,
    /// The plan's entry for the unit the loss follows.
    pub aux: &'a UnitAux,
    /// Index of the module this loss trains, from 0.
    pub module: usize,
    /// K, the number of modules (the last one is trained by the output cross-entropy).
    pub modules: usize,
}

impl LossSite<'_> {
    /// Output channels of the unit the loss follows.
    pub fn channels(&self) -> usize {
        self.net.units()[self.aux.unit].channels
    }
}

/// Builds the local loss of each module. The engine calls it once for every module but the
/// last, with a [`ParamBuilder`] that names tensors `aux.<unit>.…` and tags them with the
/// module, so their parameters are stepped with it and saved in checkpoints.
pub trait LocalLossBuilder {
    fn build(&self, site: &LossSite<'_>, pb: &ParamBuilder) -> crate::Result<Box<dyn LocalLoss>>;
}

impl<F> LocalLossBuilder for F
where
    F: Fn(&LossSite<'_>, &ParamBuilder) -> crate::Result<Box<dyn LocalLoss>>,
{
    fn build(&self, site: &LossSite<'_>, pb: &ParamBuilder) -> crate::Result<Box<dyn LocalLoss>> {
        self(site, pb)
    }
}

/// What the built-in losses need to know about the input: the image side (DGL and PredSim
/// size their pooling from it) and the normalisation the loader applied (InfoPro
/// reconstructs the image as it was before normalisation).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InputSpec {
    /// Height and width of the (square) input images.
    pub image_size: usize,
    /// Channel means the images were normalised with, on the 0..1 scale.
    pub mean: [f32; 3],
    /// Channel standard deviations the images were normalised with.
    pub std: [f32; 3],
}

impl Default for InputSpec {
    /// 32x32 images normalised with the CIFAR statistics (the paper's setting).
    fn default() -> Self {
        InputSpec {
            image_size: 32,
            mean: [125.3 / 255.0, 123.0 / 255.0, 113.9 / 255.0],
            std: [63.0 / 255.0, 62.1 / 255.0, 66.7 / 255.0],
        }
    }
}

/// The local losses of the paper and its baselines, chosen by the plan's head kind:
/// AugLocal (`fc`, `bn_fc`), DGL, InfoPro (both forms), PredSim and greedy SL.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BuiltinLosses {
    pub input: InputSpec,
}

impl LocalLossBuilder for BuiltinLosses {
    fn build(&self, site: &LossSite<'_>, pb: &ParamBuilder) -> crate::Result<Box<dyn LocalLoss>> {
        Ok(match site.aux.head {
            HeadKind::Fc | HeadKind::BnFc | HeadKind::Mlp => {
                Box::new(AugLocalAux::new(site.net, site.aux, pb)?)
            }
            HeadKind::Dgl => Box::new(DglAux::new(site, self.input.image_size, pb)?),
            HeadKind::InfoPro | HeadKind::InfoProContrast => Box::new(InfoProAux::new(
                site,
                self.input,
                InfoProWeights::for_model(site.net.name()),
                site.aux.head == HeadKind::InfoProContrast,
                pb,
            )?),
            HeadKind::PredSim => Box::new(PredSimAux::new(site, self.input.image_size, pb)?),
            HeadKind::Linear => Box::new(GreedyAux::new(site, pb)?),
        })
    }
}

/// Spatial side of unit `site`'s output for square inputs of side `image_size`.
pub(crate) fn feature_size(site: &LossSite<'_>, image_size: usize) -> crate::Result<usize> {
    let reduction = site.net.units()[site.aux.unit].reduction.max(1);
    let side = image_size / reduction;
    if side == 0 {
        return Err(crate::Error::InvalidSetting {
            setting: "image size",
            value: image_size.to_string(),
            valid: format!(
                "at least {reduction} pixels: unit {} of {} downsamples by {reduction}",
                site.aux.unit,
                site.net.name()
            ),
        });
    }
    Ok(side)
}
