//! What a local loss is ([`LocalLoss`]), where it sits ([`LossSite`]) and how it is built
//! ([`LocalLossBuilder`]).

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::net::LocalNet;
use crate::nn::cross_entropy;
use crate::params::ParamBuilder;
use crate::plan::UnitAux;

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

    /// [`LocalLoss::loss`] and, where the loss has a classifier, its logits (N, classes)
    /// from the same pass: the engine counts each module's correct predictions from them
    /// (the reference's per-module Prec@1). The default has none.
    fn loss_and_logits(
        &self,
        features: &Tensor,
        labels: &Tensor,
        images: &Tensor,
    ) -> candle_core::Result<(Tensor, Option<Tensor>)> {
        Ok((self.loss(features, labels, images)?, None))
    }

    /// The classifier's logits for `features` in inference mode (BatchNorm on its running
    /// averages), to score the auxiliary head on a test set (`auglocal eval --aux`); `None`
    /// where the loss has no classifier (the default).
    fn eval_logits(&self, features: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let _ = features;
        Ok(None)
    }

    /// Whether [`LocalLoss::loss`] reads `images` (a pipeline stage then receives them with
    /// its activations).
    fn needs_images(&self) -> bool {
        false
    }

    /// Called once the module's parameters were updated for a batch (not when the step was
    /// skipped): where a loss keeps state that follows the network (MAN's moving average).
    /// The default does nothing.
    fn after_update(&self) -> candle_core::Result<()> {
        Ok(())
    }

    /// Called after the backbone's weights were replaced from a file while the auxiliary
    /// networks kept theirs (`train --init-from`): a loss whose tensors start as copies of
    /// backbone tensors (MAN's) copies them again. The default does nothing.
    fn after_backbone_loaded(&self) -> candle_core::Result<()> {
        Ok(())
    }
}

/// A local loss that is the cross-entropy of a classifier's logits (AugLocal, DGL and the
/// greedy baseline): the type gives its logits, [`CrossEntropy`] makes it a [`LocalLoss`].
pub trait Classifier: Send + Sync {
    /// Logits (N, classes) for a module's output, BatchNorm on batch statistics (`train`)
    /// or on its running averages.
    fn logits_t(&self, features: &Tensor, train: bool) -> candle_core::Result<Tensor>;
}

/// The [`LocalLoss`] of a [`Classifier`]: cross-entropy of its training-mode logits, which
/// also count the module's correct predictions; its inference logits score it on a test set.
pub struct CrossEntropy<C>(pub C);

impl<C: Classifier> LocalLoss for CrossEntropy<C> {
    fn loss(
        &self,
        features: &Tensor,
        labels: &Tensor,
        images: &Tensor,
    ) -> candle_core::Result<Tensor> {
        Ok(self.loss_and_logits(features, labels, images)?.0)
    }

    fn loss_and_logits(
        &self,
        features: &Tensor,
        labels: &Tensor,
        _images: &Tensor,
    ) -> candle_core::Result<(Tensor, Option<Tensor>)> {
        let logits = self.0.logits_t(features, true)?;
        Ok((cross_entropy(&logits, labels)?, Some(logits)))
    }

    fn eval_logits(&self, features: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(self.0.logits_t(features, false)?))
    }
}

/// What the built-in losses need to know about the input: the image side (DGL, PredSim
/// and InfoPro size their pooling and decoder from it) and the normalisation the loader
/// applied (InfoPro reconstructs the image as it was before normalisation). It comes from
/// the data's settings (`auglocal_data::DatasetSpec::input`); nothing here assumes CIFAR.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct InputSpec {
    /// Height and width of the (square) input images.
    pub image_size: usize,
    /// Channel means the images were normalised with, on the 0..1 scale.
    pub mean: [f32; 3],
    /// Channel standard deviations the images were normalised with.
    pub std: [f32; 3],
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
    /// The images the network is trained on.
    pub input: InputSpec,
}

impl LossSite<'_> {
    /// Output channels of the unit the loss follows.
    pub fn channels(&self) -> usize {
        self.net.units()[self.aux.unit].channels
    }

    /// Spatial side of the unit's output.
    pub fn feature_size(&self) -> Result<usize> {
        let reduction = self.net.units()[self.aux.unit].reduction.max(1);
        let side = self.input.image_size / reduction;
        if side == 0 {
            return Err(Error::InvalidSetting {
                setting: "image size",
                value: self.input.image_size.to_string(),
                valid: format!(
                    "at least {reduction} pixels: unit {} of {} downsamples by {reduction}",
                    self.aux.unit,
                    self.net.name()
                ),
            });
        }
        Ok(side)
    }
}

/// Builds the local loss of each module. The engine calls it once for every module but the
/// last, with a [`ParamBuilder`] that names tensors `aux.<unit>.…` and tags them with the
/// module, so their parameters are stepped with it and saved in checkpoints.
pub trait LocalLossBuilder {
    /// The local loss at `site`, its auxiliary network's tensors created through `pb`.
    fn build(&self, site: &LossSite<'_>, pb: &ParamBuilder) -> Result<Box<dyn LocalLoss>>;
}

impl<F> LocalLossBuilder for F
where
    F: Fn(&LossSite<'_>, &ParamBuilder) -> Result<Box<dyn LocalLoss>>,
{
    fn build(&self, site: &LossSite<'_>, pb: &ParamBuilder) -> Result<Box<dyn LocalLoss>> {
        self(site, pb)
    }
}
