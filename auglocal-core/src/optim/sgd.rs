//! SGD with momentum, Nesterov and weight decay (PyTorch's semantics).

use std::collections::BTreeMap;

use candle_core::backprop::GradStore;
use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::params::{Entry, Role};

use super::optimizer::Optimizer;

/// SGD's settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SgdConfig {
    /// Momentum factor of the velocity buffer, in [0, 1) (0: plain SGD, no buffer kept).
    pub momentum: f64,
    /// Nesterov's momentum: step along `g + momentum * buf` instead of `buf`; needs a
    /// momentum above 0.
    pub nesterov: bool,
    /// L2 penalty added to the gradient (`weight_decay * p`), coupled as in PyTorch's SGD;
    /// finite and >= 0.
    pub weight_decay: f64,
}

impl Default for SgdConfig {
    /// The paper's: momentum 0.9, Nesterov, weight decay 1e-4.
    fn default() -> Self {
        SgdConfig {
            momentum: 0.9,
            nesterov: true,
            weight_decay: 1e-4,
        }
    }
}

impl SgdConfig {
    /// Fails on a setting PyTorch's SGD refuses too, naming it and its valid range.
    pub fn validate(&self) -> Result<()> {
        if !(self.momentum >= 0.0 && self.momentum < 1.0) {
            return Err(Error::InvalidSetting {
                setting: "momentum",
                value: self.momentum.to_string(),
                valid: "a number in [0, 1)".into(),
            });
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return Err(Error::InvalidSetting {
                setting: "weight decay",
                value: self.weight_decay.to_string(),
                valid: "a finite number >= 0".into(),
            });
        }
        if self.nesterov && self.momentum == 0.0 {
            return Err(Error::InvalidSetting {
                setting: "nesterov",
                value: "true with momentum 0".into(),
                valid: "nesterov only with momentum > 0".into(),
            });
        }
        Ok(())
    }
}

/// Stochastic gradient descent exactly as `torch.optim.SGD` (dampening 0):
///
/// ```text
/// g = grad + weight_decay * p
/// buf = g                      (first step)
/// buf = momentum * buf + g     (later steps)
/// g = g + momentum * buf       (Nesterov)   or   g = buf
/// p = p - lr * g
/// ```
///
/// Buffers (BatchNorm running statistics) are never touched, and a parameter without a
/// gradient is skipped entirely, as PyTorch skips a `None` grad.
#[derive(Debug, Clone)]
pub struct Sgd {
    config: SgdConfig,
    momentum_buffers: BTreeMap<String, Tensor>,
}

impl Sgd {
    /// SGD with `config`, no momentum buffers yet; fails on a setting PyTorch refuses too.
    pub fn new(config: SgdConfig) -> Result<Self> {
        config.validate()?;
        Ok(Sgd {
            config,
            momentum_buffers: BTreeMap::new(),
        })
    }

    /// The settings it was built with.
    pub fn config(&self) -> &SgdConfig {
        &self.config
    }
}

impl Optimizer for Sgd {
    fn name(&self) -> &'static str {
        "sgd"
    }

    fn step(&mut self, params: &[Entry], grads: &GradStore, lr: f64) -> Result<()> {
        let SgdConfig {
            momentum,
            nesterov,
            weight_decay,
        } = self.config;
        for entry in params.iter().filter(|e| e.role == Role::Param) {
            let Some(grad) = grads.get(entry.var.as_tensor()) else {
                continue;
            };
            // Detached: the update must not extend the autograd graph, or every momentum
            // buffer would keep all earlier steps' activations alive.
            let p = entry.var.as_detached_tensor();
            let grad = grad.detach();
            let mut g = if weight_decay != 0.0 {
                (grad + p.affine(weight_decay, 0.0)?)?
            } else {
                grad
            };
            if momentum != 0.0 {
                let buf = match self.momentum_buffers.get(&entry.name) {
                    Some(buf) => (buf.affine(momentum, 0.0)? + &g)?,
                    None => g.copy()?,
                };
                g = if nesterov {
                    (g + buf.affine(momentum, 0.0)?)?
                } else {
                    buf.clone()
                };
                self.momentum_buffers.insert(entry.name.clone(), buf);
            }
            entry.var.set(&(&p - g.affine(lr, 0.0)?)?)?;
        }
        Ok(())
    }

    /// Momentum buffers keyed by parameter name (no slot).
    fn state(&self) -> BTreeMap<String, Tensor> {
        self.momentum_buffers.clone()
    }

    fn slot_dims(&self, slot: &str, param: &[usize]) -> Option<Vec<usize>> {
        slot.is_empty().then(|| param.to_vec())
    }

    fn load_state(&mut self, buffers: BTreeMap<String, Tensor>) -> Result<()> {
        self.momentum_buffers = buffers;
        Ok(())
    }

    fn boxed_clone(&self) -> Box<dyn Optimizer> {
        Box::new(self.clone())
    }
}
