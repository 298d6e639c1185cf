use candle_core::{Result, Tensor, Var, D};

use crate::params::{Init, ParamBuilder};

/// Fully connected layer, `y = x W^T + b`, with PyTorch's default initialisation:
/// weight and bias uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)).
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Var,
    bias: Option<Var>,
}

impl Linear {
    /// A layer from `in_features` to `out_features`, with a bias if `bias`; its `weight`
    /// (out, in) and `bias` (out) are created through `pb`.
    pub fn new(
        in_features: usize,
        out_features: usize,
        bias: bool,
        pb: &ParamBuilder,
    ) -> crate::Result<Self> {
        let bound = 1.0 / (in_features as f64).sqrt();
        let weight = pb.param(
            "weight",
            &[out_features, in_features],
            Init::Uniform { bound },
        )?;
        let bias = if bias {
            Some(pb.param("bias", &[out_features], Init::Uniform { bound })?)
        } else {
            None
        };
        Ok(Linear { weight, bias })
    }
}

impl candle_nn::ModuleT for Linear {
    fn forward_t(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        // Mixed precision: the f32 weight is cast to the input's type (a no-op for f32).
        let y = x.matmul(&self.weight.as_tensor().to_dtype(x.dtype())?.t()?)?;
        crate::macs::record(x.elem_count() * y.dim(D::Minus1)?, x.track_op());
        match &self.bias {
            Some(b) => y.broadcast_add(&b.as_tensor().to_dtype(y.dtype())?),
            None => Ok(y),
        }
    }
}
