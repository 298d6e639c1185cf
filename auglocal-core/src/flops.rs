//! Analytic multiply-add (MAC) counts of one training step, for any backbone and local loss.
//!
//! The layers that do the arithmetic (convolutions and linear layers) report the MACs of
//! each call to the counter of [`crate::macs`]. [`step_flops`] runs every module of an
//! engine (its units, then its local loss or the output layer) once under the counter, so a
//! new backbone or local loss is counted as long as it is built from these layers; nothing
//! here knows a model.
//!
//! Not counted: BatchNorm, ReLU, pooling, additions, the loss and the optimizer update
//! (elementwise work, a few percent of a CNN's MACs); multiply-adds of other layers.

use candle_core::{DType, Device, Tensor};
use serde::Serialize;

use crate::engine::Engine;
use crate::error::Result;
pub use crate::macs::{count, Macs};
use crate::params::Role;

/// MACs of one module of the plan, per image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModuleFlops {
    /// Index of the module in the plan, from 0.
    pub module: usize,
    /// Its backbone units.
    pub first_unit: usize,
    /// The module's last backbone unit, inclusive: it holds `first_unit..=last_unit`.
    pub last_unit: usize,
    /// The backbone units.
    pub units: Macs,
    /// Its auxiliary network (local loss), or the output layer for the last module.
    pub loss: Macs,
    /// Forward MACs run a second time when the engine recomputes activations (every unit
    /// of the module but the last); 0 otherwise.
    pub recomputed_forward: u64,
}

/// MACs of one training step, per image, module by module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepFlops {
    /// (channels, height, width) of the input images.
    pub image: [usize; 3],
    /// Every module of the plan, in order.
    pub modules: Vec<ModuleFlops>,
}

impl StepFlops {
    /// Everything a training step computes: backbone, output layer and auxiliary networks.
    pub fn step(&self) -> Macs {
        let mut total = Macs::default();
        for m in &self.modules {
            total.add(m.units);
            total.add(m.loss);
            total.forward += m.recomputed_forward;
        }
        total
    }

    /// The auxiliary networks alone.
    pub fn auxiliary(&self) -> Macs {
        let mut total = Macs::default();
        let last = self.modules.len().saturating_sub(1);
        for m in &self.modules[..last] {
            total.add(m.loss);
        }
        total
    }

    /// Inference: the backbone and its output layer, forward only.
    pub fn inference(&self) -> u64 {
        let backbone: u64 = self.modules.iter().map(|m| m.units.forward).sum();
        backbone + self.modules.last().map_or(0, |m| m.loss.forward)
    }
}

/// Counts one training step of `engine` on images of shape `image` (C, H, W), per image.
///
/// Runs each module's forward and loss in training mode on a batch of two zero images
/// (BatchNorm in training needs two values per channel) and halves the counts; BatchNorm
/// running statistics are restored afterwards, so the engine is left as it was.
pub fn step_flops(engine: &Engine, image: [usize; 3]) -> Result<StepFlops> {
    const BATCH: usize = 2;
    let entries = engine.store().entries();
    let device = entries
        .first()
        .map_or(Device::Cpu, |e| e.var.device().clone());
    let buffers: Vec<(candle_core::Var, Tensor)> = entries
        .iter()
        .filter(|e| e.role == Role::Buffer)
        .map(|e| Ok((e.var.clone(), e.var.as_tensor().copy()?)))
        .collect::<candle_core::Result<_>>()?;

    let [c, h, w] = image;
    let images = Tensor::zeros((BATCH, c, h, w), DType::F32, &device)?;
    let labels = Tensor::zeros(BATCH, DType::U32, &device)?;
    let mut modules = Vec::with_capacity(engine.module_count());
    let mut x = images.clone();
    for (m, range) in engine.plan().module_units().into_iter().enumerate() {
        let (out, units) = count(|| engine.module_forward(m, &x));
        let out = out?;
        let recomputed = match engine.recomputes() {
            false => Macs::default(),
            true => {
                let again = || -> candle_core::Result<Tensor> {
                    let mut h = x.clone();
                    for unit in range.start..range.end - 1 {
                        h = engine.net().forward_unit(unit, &h, true)?;
                    }
                    Ok(h)
                };
                let (again, macs) = count(again);
                again?;
                macs
            }
        };
        let (loss, loss_macs) = count(|| engine.module_loss(m, &out, &labels, &images));
        loss?;
        modules.push(ModuleFlops {
            module: m,
            first_unit: range.start,
            last_unit: range.end - 1,
            units: units.scaled_down(BATCH as u64),
            loss: loss_macs.scaled_down(BATCH as u64),
            recomputed_forward: recomputed.forward / BATCH as u64,
        });
        x = out.detach();
    }
    for (var, saved) in buffers {
        var.set(&saved)?;
    }
    Ok(StepFlops { image, modules })
}

/// `macs` in millions (M) or billions (G), for tables.
pub fn human(macs: u64) -> String {
    if macs >= 10_000_000_000 {
        format!("{:.1} G", macs as f64 / 1e9)
    } else {
        format!("{:.2} M", macs as f64 / 1e6)
    }
}
