use candle_core::{DType, Result, Tensor, Var};

use super::conv_cpu::Conv2dCpu;

use crate::params::{Init, ParamBuilder};

/// 2-D convolution without bias (every conv of the CIFAR ResNets and auxiliary nets).
///
/// Initialised as the reference does: normal(0, sqrt(2 / (k * k * out_channels))).
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Var,
    stride: usize,
    padding: usize,
}

impl Conv2d {
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        pb: &ParamBuilder,
    ) -> crate::Result<Self> {
        let std = (2.0 / (kernel * kernel * out_channels) as f64).sqrt();
        let weight = pb.param(
            "weight",
            &[out_channels, in_channels, kernel, kernel],
            Init::Normal { std },
        )?;
        Ok(Conv2d {
            weight,
            stride,
            padding,
        })
    }

    pub fn weight(&self) -> &Tensor {
        self.weight.as_tensor()
    }
}

impl candle_nn::ModuleT for Conv2d {
    fn forward_t(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        let w = self.weight.as_tensor();
        if x.device().is_cpu() && x.dtype() == DType::F32 {
            let op = Conv2dCpu {
                stride: self.stride,
                padding: self.padding,
            };
            x.contiguous()?.apply_op2(w, op)
        } else {
            x.conv2d(w, self.padding, self.stride, 1, 1)
        }
    }
}
