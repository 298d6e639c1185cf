//! Gradient clipping by global norm, as `torch.nn.utils.clip_grad_norm_`.

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor};

use crate::error::Result;
use crate::params::{Entry, Role};

/// Scales the gradients of `params` in `grads` so that their joint L2 norm is at most
/// `max_norm`, and returns the norm they had. As PyTorch: the scale is
/// `max_norm / (norm + 1e-6)`, applied only where it is below 1.
///
/// The engine clips each module's gradients on their own (the module's backbone units and
/// its auxiliary network), since each module steps on its own.
pub fn clip_grad_norm(params: &[Entry], grads: &mut GradStore, max_norm: f64) -> Result<f64> {
    let mut squares = Vec::with_capacity(params.len());
    let mut held = Vec::with_capacity(params.len());
    for entry in params.iter().filter(|e| e.role == Role::Param) {
        if let Some(g) = grads.get(entry.var.as_tensor()) {
            squares.push(g.to_dtype(DType::F32)?.sqr()?.sum_all()?);
            held.push(entry);
        }
    }
    if squares.is_empty() {
        return Ok(0.0);
    }
    let norm = f64::from(Tensor::stack(&squares, 0)?.sum_all()?.to_scalar::<f32>()?).sqrt();
    let scale = max_norm / (norm + 1e-6);
    if scale < 1.0 {
        for entry in held {
            let tensor = entry.var.as_tensor();
            if let Some(g) = grads.remove(tensor) {
                grads.insert(tensor, g.affine(scale, 0.0)?);
            }
        }
    }
    Ok(norm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::{Init, ParamBuilder, ParamStore};
    use candle_core::Device;

    #[test]
    fn scales_to_the_limit_only_above_it() -> Result<()> {
        let store = ParamStore::new();
        let pb = ParamBuilder::new(&store, &Device::Cpu, 0);
        let a = pb.param("a.weight", &[2], Init::Const(0.0))?;
        let b = pb.param("b.weight", &[1], Init::Const(0.0))?;
        // Gradients (3, 0) and (4): joint norm 5.
        let loss = ((a.as_tensor() * Tensor::new(&[3f32, 0.0], &Device::Cpu)?)?.sum_all()?
            + (b.as_tensor() * 4.0)?.sum_all()?)?;
        let entries = store.entries();

        let mut grads = loss.backward()?;
        assert_eq!(clip_grad_norm(&entries, &mut grads, 10.0)?, 5.0);
        let g = |grads: &GradStore, v: &candle_core::Var| -> Result<Vec<f32>> {
            Ok(grads.get(v.as_tensor()).unwrap().to_vec1::<f32>()?)
        };
        assert_eq!(g(&grads, &a)?, [3.0, 0.0], "below the limit: untouched");

        assert_eq!(clip_grad_norm(&entries, &mut grads, 1.0)?, 5.0);
        let scale = (1.0 / (5.0 + 1e-6)) as f32;
        assert_eq!(g(&grads, &a)?, [3.0 * scale, 0.0]);
        assert_eq!(g(&grads, &b)?, [4.0 * scale]);
        Ok(())
    }
}
