//! AdamW (Loshchilov & Hutter) exactly as `torch.optim.AdamW` with `amsgrad=False`: weight
//! decay decoupled from the gradient.

use std::collections::BTreeMap;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::params::{Entry, Role};

use super::optimizer::Optimizer;

/// AdamW's settings; the defaults are PyTorch's.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    /// Decay rates of the first and second moment averages.
    pub betas: (f64, f64),
    /// Added to the root of the second moment.
    pub eps: f64,
    /// Decoupled weight decay: each step multiplies parameters by `1 - lr * weight_decay`.
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    /// PyTorch's: betas (0.9, 0.999), eps 1e-8, weight decay 0.01.
    fn default() -> Self {
        AdamWConfig {
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

impl AdamWConfig {
    /// Fails on a setting PyTorch's AdamW refuses too, naming it and its valid range.
    pub fn validate(&self) -> Result<()> {
        for (setting, beta) in [("beta1", self.betas.0), ("beta2", self.betas.1)] {
            if !(0.0..1.0).contains(&beta) {
                return Err(Error::InvalidSetting {
                    setting,
                    value: beta.to_string(),
                    valid: "a number in [0, 1)".into(),
                });
            }
        }
        for (setting, value) in [("eps", self.eps), ("weight decay", self.weight_decay)] {
            if !(value >= 0.0 && value.is_finite()) {
                return Err(Error::InvalidSetting {
                    setting,
                    value: value.to_string(),
                    valid: "a finite number >= 0".into(),
                });
            }
        }
        Ok(())
    }
}

/// ```text
/// t = t + 1                                   (per parameter)
/// p = p * (1 - lr * weight_decay)
/// m = beta1 * m + (1 - beta1) * g
/// v = beta2 * v + (1 - beta2) * g^2
/// p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
/// ```
///
/// A checkpoint keeps `exp_avg/<param>` (m), `exp_avg_sq/<param>` (v) and `step/<param>`
/// (t, an f64 scalar on the CPU), PyTorch's names for them. Step counts live on the host,
/// so a step never waits on the device to read them.
#[derive(Debug, Clone)]
pub struct AdamW {
    config: AdamWConfig,
    /// `exp_avg/<param>` and `exp_avg_sq/<param>`.
    moments: BTreeMap<String, Tensor>,
    /// Steps taken by each parameter.
    steps: BTreeMap<String, f64>,
}

impl AdamW {
    /// AdamW with `config`, no state yet; fails on a setting PyTorch refuses too.
    pub fn new(config: AdamWConfig) -> Result<Self> {
        config.validate()?;
        Ok(AdamW {
            config,
            moments: BTreeMap::new(),
            steps: BTreeMap::new(),
        })
    }

    /// The settings it was built with.
    pub fn config(&self) -> &AdamWConfig {
        &self.config
    }

    fn steps_taken(&self, name: &str) -> f64 {
        self.steps.get(name).copied().unwrap_or(0.0)
    }
}

impl Optimizer for AdamW {
    fn name(&self) -> &'static str {
        "adamw"
    }

    fn step(&mut self, params: &[Entry], grads: &GradStore, lr: f64) -> Result<()> {
        let AdamWConfig {
            betas: (beta1, beta2),
            eps,
            weight_decay,
        } = self.config;
        for entry in params.iter().filter(|e| e.role == Role::Param) {
            let Some(grad) = grads.get(entry.var.as_tensor()) else {
                continue;
            };
            let name = &entry.name;
            let t = self.steps_taken(name) + 1.0;
            let grad = grad.detach();
            let mut p = entry.var.as_detached_tensor();
            if weight_decay != 0.0 {
                p = p.affine(1.0 - lr * weight_decay, 0.0)?;
            }
            let key = |slot: &str| format!("{slot}/{name}");
            let m = match self.moments.get(&key("exp_avg")) {
                Some(m) => (m.affine(beta1, 0.0)? + grad.affine(1.0 - beta1, 0.0)?)?,
                None => grad.affine(1.0 - beta1, 0.0)?,
            };
            let g2 = grad.sqr()?.affine(1.0 - beta2, 0.0)?;
            let v = match self.moments.get(&key("exp_avg_sq")) {
                Some(v) => (v.affine(beta2, 0.0)? + g2)?,
                None => g2,
            };
            let step_size = lr / (1.0 - beta1.powf(t));
            let bias2_root = (1.0 - beta2.powf(t)).sqrt();
            let denom = v.sqrt()?.affine(1.0 / bias2_root, eps)?;
            p = (p - (m.div(&denom)?).affine(step_size, 0.0)?)?;
            entry.var.set(&p)?;
            self.moments.insert(key("exp_avg"), m);
            self.moments.insert(key("exp_avg_sq"), v);
            self.steps.insert(name.clone(), t);
        }
        Ok(())
    }

    fn state(&self) -> BTreeMap<String, Tensor> {
        let mut state = self.moments.clone();
        for (name, &t) in &self.steps {
            if let Ok(step) = Tensor::new(t, &Device::Cpu) {
                state.insert(format!("step/{name}"), step);
            }
        }
        state
    }

    fn slot_dims(&self, slot: &str, param: &[usize]) -> Option<Vec<usize>> {
        match slot {
            "exp_avg" | "exp_avg_sq" => Some(param.to_vec()),
            "step" => Some(Vec::new()),
            _ => None,
        }
    }

    fn load_state(&mut self, state: BTreeMap<String, Tensor>) -> Result<()> {
        let (mut moments, mut steps) = (BTreeMap::new(), BTreeMap::new());
        for (key, tensor) in state {
            match key.strip_prefix("step/") {
                Some(name) => {
                    let t = tensor.to_dtype(DType::F64)?.to_scalar::<f64>()?;
                    steps.insert(name.to_string(), t);
                }
                None => {
                    moments.insert(key, tensor);
                }
            }
        }
        (self.moments, self.steps) = (moments, steps);
        Ok(())
    }

    fn boxed_clone(&self) -> Box<dyn Optimizer> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::{Init, ParamBuilder, ParamStore};
    use candle_core::Device;

    /// Two steps on p = (1, -2) with gradients (0.5, 0.1) then (-0.3, 0.2), against the
    /// formulas in f64.
    #[test]
    fn matches_the_update_computed_by_hand() -> Result<()> {
        let store = ParamStore::new();
        let pb = ParamBuilder::new(&store, &Device::Cpu, 0);
        let w = pb.param("w.weight", &[2], Init::Const(0.0))?;
        w.set(&Tensor::new(&[1f32, -2.0], &Device::Cpu)?)?;
        let config = AdamWConfig {
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.1,
        };
        let mut adamw = AdamW::new(config)?;
        let (lr, wd) = (0.01, 0.1);
        let steps: [[f64; 2]; 2] = [[0.5, 0.1], [-0.3, 0.2]];
        let mut p = [1.0f64, -2.0];
        let (mut m, mut v) = ([0.0f64; 2], [0.0f64; 2]);
        for (t, g) in steps.iter().enumerate() {
            let t = (t + 1) as f64;
            for i in 0..2 {
                p[i] *= 1.0 - lr * wd;
                m[i] = 0.9 * m[i] + 0.1 * g[i];
                v[i] = 0.999 * v[i] + 0.001 * g[i] * g[i];
                let denom = v[i].sqrt() / (1.0 - 0.999f64.powf(t)).sqrt() + 1e-8;
                p[i] -= lr / (1.0 - 0.9f64.powf(t)) * m[i] / denom;
            }
            let coefficients = Tensor::new(&[g[0] as f32, g[1] as f32], &Device::Cpu)?;
            let loss = (w.as_tensor() * coefficients)?.sum_all()?;
            adamw.step(&store.entries(), &loss.backward()?, lr)?;
        }
        let got = w.as_tensor().to_vec1::<f32>()?;
        for i in 0..2 {
            assert!((f64::from(got[i]) - p[i]).abs() < 1e-6, "{got:?} vs {p:?}");
        }
        // The first step moves each weight by about lr (Adam's normalised step).
        assert!((p[0] - 1.0 * 0.999 + 0.01).abs() < 0.011);
        let state = adamw.state();
        let keys: Vec<&str> = state.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["exp_avg/w.weight", "exp_avg_sq/w.weight", "step/w.weight"]
        );
        assert_eq!(state["step/w.weight"].to_scalar::<f64>()?, 2.0);
        let v_got = state["exp_avg_sq/w.weight"].to_vec1::<f32>()?;
        assert!((f64::from(v_got[1]) - v[1]).abs() < 1e-9);
        Ok(())
    }

    #[test]
    fn refuses_pytorchs_invalid_settings() {
        let bad = AdamWConfig {
            betas: (0.9, 1.0),
            ..AdamWConfig::default()
        };
        let message = AdamW::new(bad).unwrap_err().to_string();
        assert!(
            message.contains("beta2") && message.contains("[0, 1)"),
            "{message}"
        );
    }
}
