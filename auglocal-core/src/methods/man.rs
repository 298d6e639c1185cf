//! MAN, the momentum auxiliary network (Su et al., ECCV 2024), as the `+man` modifier.
//!
//! A module's local loss reads `LB(h) + EMA(h)` instead of its output `h`. Both are blocks
//! of the kind of the backbone unit that follows the module, built by
//! [`LocalNet::build_block`](crate::LocalNet::build_block) and starting as copies of that
//! unit. LB is trained with the module; EMA is never trained by a gradient: after each
//! update of the module, its parameters move towards the unit's,
//! `ema = m * ema + (1 - m) * unit` with m = [`MAN_MOMENTUM`]. Its BatchNorm statistics are
//! its own, from its forward passes. So each module sees a slowly moving picture of what
//! the next module does with its output, while gradients still stop at the module.
//!
//! The unit followed belongs to the next module, so it must be trained in the same process:
//! a pipeline stage boundary after a MAN module would leave EMA following a copy that never
//! moves ([`Trainer::in_stage`](crate::trainer::Trainer::in_stage) refuses `+man` on more
//! than one stage).
//!
//! EMA's tensors are buffers, never stepped; Candle still computes (and the engine drops)
//! their weight gradients, since a layer's tensors cannot be marked as not requiring one.

use candle_core::{Tensor, Var};

use super::loss::{LocalLoss, LossSite};
use crate::error::{Error, Result};
use crate::nn::BoxedLayer;
use crate::params::{Entry, Owner, ParamBuilder, Role};

/// The momentum of MAN's moving average (the paper's 0.995; in the public code the CIFAR
/// model's default is 0.999 and the ImageNet model's 0.995).
pub const MAN_MOMENTUM: f64 = 0.995;

/// MAN's LB and EMA blocks after one module, before the method's own loss ([`MomentumAux`]
/// once the loss is given).
///
/// Tensor names under the builder's prefix: `man.lb.…` (parameters of the module) and
/// `man.ema.…` (buffers: saved in checkpoints, never stepped).
pub struct MomentumBlocks {
    lb: BoxedLayer,
    ema: BoxedLayer,
    /// (EMA tensor, the unit's tensor it follows), for the unit's parameters.
    follows: Vec<(Var, Var)>,
    /// (LB or EMA tensor, the unit's tensor it started as), for every tensor of both.
    copies: Vec<(Var, Var)>,
    momentum: f64,
}

impl MomentumBlocks {
    /// Builds LB and EMA as copies of the unit after `site`'s, as the plan's MAN block
    /// ([`UnitAux::man`](crate::plan::UnitAux::man)) describes it.
    pub fn new(site: &LossSite<'_>, pb: &ParamBuilder) -> Result<Self> {
        let Some(block) = site.aux.man else {
            return Err(Error::InvalidSetting {
                setting: "MAN block",
                value: format!("none in the plan for unit {}", site.aux.unit),
                valid: "a plan of a method with +man (AuxPlan::new), which gives each module a MAN block".into(),
            });
        };
        let store = pb.store();
        let unit = store.owned_by(&[Owner::Unit(block.copy_of)]);
        let build = |pb: &ParamBuilder| -> Result<(BoxedLayer, Vec<Entry>)> {
            let first = store.entries().len();
            let layer = site.net.build_block(
                block.copy_of,
                block.in_channels,
                block.out_channels,
                block.stride,
                pb,
            )?;
            let entries = store.entries().split_off(first);
            copy_unit(site, &unit, &entries)?;
            Ok((layer, entries))
        };
        let (lb, lb_entries) = build(&pb.pp("man").pp("lb"))?;
        let (ema, ema_entries) = build(&pb.pp("man").pp("ema").frozen())?;
        let follows = ema_entries
            .iter()
            .zip(&unit)
            .filter(|(_, u)| u.role == Role::Param)
            .map(|(e, u)| (e.var.clone(), u.var.clone()))
            .collect();
        let copies = lb_entries
            .iter()
            .zip(&unit)
            .chain(ema_entries.iter().zip(&unit))
            .map(|(e, u)| (e.var.clone(), u.var.clone()))
            .collect();
        Ok(MomentumBlocks {
            lb,
            ema,
            follows,
            copies,
            momentum: MAN_MOMENTUM,
        })
    }

    /// The local loss that reads `LB(h) + EMA(h)` through `loss`.
    pub fn before(self, loss: Box<dyn LocalLoss>) -> MomentumAux {
        MomentumAux { blocks: self, loss }
    }

    /// `LB(h) + EMA(h)`, BatchNorm on batch statistics (`train`) or running averages.
    pub fn forward_t(&self, h: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.lb.forward_t(h, train)? + self.ema.forward_t(h, train)?
    }

    /// Makes LB and EMA copies of the unit again (after the backbone was loaded from a file).
    pub fn copy_unit_again(&self) -> candle_core::Result<()> {
        for (copy, unit) in &self.copies {
            copy.set(&unit.as_tensor().copy()?)?;
        }
        Ok(())
    }

    /// Moves EMA's parameters towards the unit's by the momentum.
    pub fn follow(&self) -> candle_core::Result<()> {
        for (ema, unit) in &self.follows {
            let moved = (ema.as_tensor().affine(self.momentum, 0.0)?
                + unit.as_tensor().affine(1.0 - self.momentum, 0.0)?)?;
            ema.set(&moved)?;
        }
        Ok(())
    }
}

/// Copies unit tensors into a block's freshly built `entries`, after checking that the
/// block is the unit again: as many tensors, in the same order, with the same shapes and
/// the same last name component.
fn copy_unit(site: &LossSite<'_>, unit: &[Entry], entries: &[Entry]) -> Result<()> {
    let copy_of = site.aux.unit + 1;
    let mismatch = |what: String| {
        Error::InvalidSetting {
        setting: "MAN block",
        value: format!("unit {copy_of} of {}: {what}", site.net.name()),
        valid: "a backbone whose build_block(copy_of, ..) with the unit's channels and stride builds the unit's tensors again, in its order".into(),
    }
    };
    if unit.len() != entries.len() {
        return Err(mismatch(format!(
            "the unit has {} tensors, its copy {}",
            unit.len(),
            entries.len()
        )));
    }
    // Backbones name their units PyTorch's way (`features.3.weight`) and their blocks by
    // role (`conv.weight`): the tensor's own name (`weight`, `running_mean`) must agree.
    let own = |name: &str| name.rsplit('.').next().unwrap_or_default().to_string();
    for (u, e) in unit.iter().zip(entries) {
        if own(&u.name) != own(&e.name) || u.var.shape() != e.var.shape() {
            return Err(mismatch(format!(
                "`{}` {:?} has no match in `{}` {:?}",
                e.name,
                e.var.dims(),
                u.name,
                u.var.dims()
            )));
        }
        e.var.set(&u.var.as_tensor().copy()?)?;
    }
    Ok(())
}

/// A method's local loss behind MAN's blocks: the loss of `LB(h) + EMA(h)`; after each
/// update of the module, EMA follows the unit.
pub struct MomentumAux {
    blocks: MomentumBlocks,
    loss: Box<dyn LocalLoss>,
}

impl LocalLoss for MomentumAux {
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
        images: &Tensor,
    ) -> candle_core::Result<(Tensor, Option<Tensor>)> {
        let y = self.blocks.forward_t(features, true)?;
        self.loss.loss_and_logits(&y, labels, images)
    }

    fn eval_logits(&self, features: &Tensor) -> candle_core::Result<Option<Tensor>> {
        self.loss
            .eval_logits(&self.blocks.forward_t(features, false)?)
    }

    fn needs_images(&self) -> bool {
        self.loss.needs_images()
    }

    fn after_update(&self) -> candle_core::Result<()> {
        self.blocks.follow()?;
        self.loss.after_update()
    }

    fn after_backbone_loaded(&self) -> candle_core::Result<()> {
        self.blocks.copy_unit_again()?;
        self.loss.after_backbone_loaded()
    }
}
