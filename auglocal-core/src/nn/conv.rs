use candle_core::{DType, Result, Tensor, Var};

use crate::kernels::conv::Conv2dOp;
use crate::params::{Init, ParamBuilder};

/// 2-D convolution, without bias unless [`Conv2d::with_bias`] adds one (VGG's convolutions
/// have one), with optional channel groups (depthwise when `groups` equals the channel count).
///
/// Initialised as the reference does: normal(0, sqrt(2 / (k * k * out_channels))), bias 0.
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Var,
    bias: Option<Var>,
    stride: usize,
    padding: usize,
    groups: usize,
}

impl Conv2d {
    /// A `kernel` x `kernel` convolution from `in_channels` to `out_channels` with the given
    /// stride and zero padding (pixels on each side), one group; its `weight` (out, in, k, k)
    /// is created through `pb`.
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        pb: &ParamBuilder,
    ) -> crate::Result<Self> {
        Self::grouped(in_channels, out_channels, kernel, stride, padding, 1, pb)
    }

    /// A convolution whose channels are split into `groups` independent convolutions.
    pub fn grouped(
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        groups: usize,
        pb: &ParamBuilder,
    ) -> crate::Result<Self> {
        if groups == 0
            || !in_channels.is_multiple_of(groups)
            || !out_channels.is_multiple_of(groups)
        {
            return Err(crate::Error::InvalidSetting {
                setting: "convolution groups",
                value: format!("{groups} for {in_channels} -> {out_channels} channels"),
                valid: "a number >= 1 that divides both channel counts".into(),
            });
        }
        if kernel == 0 || stride == 0 {
            return Err(crate::Error::InvalidSetting {
                setting: "convolution kernel and stride",
                value: format!("kernel {kernel}, stride {stride}"),
                valid: "both >= 1".into(),
            });
        }
        let std = (2.0 / (kernel * kernel * out_channels) as f64).sqrt();
        let weight = pb.param(
            "weight",
            &[out_channels, in_channels / groups, kernel, kernel],
            Init::Normal { std },
        )?;
        Ok(Conv2d {
            weight,
            bias: None,
            stride,
            padding,
            groups,
        })
    }

    /// The same convolution plus a per-channel bias (`bias`, starting at 0) from `pb`, which
    /// should be the builder the weight came from so the two share a prefix.
    pub fn with_bias(mut self, pb: &ParamBuilder) -> crate::Result<Self> {
        let channels = self.weight.dim(0)?;
        self.bias = Some(pb.param("bias", &[channels], Init::Const(0.0))?);
        Ok(self)
    }

    /// The weight, (out_channels, in_channels / groups, kernel, kernel), f32.
    pub fn weight(&self) -> &Tensor {
        self.weight.as_tensor()
    }

    /// Step between windows, in pixels (the same along both axes).
    pub fn stride(&self) -> usize {
        self.stride
    }

    /// Our CPU op for this convolution of `x`, where it runs one: f32 on the CPU, no bias.
    pub(crate) fn cpu_op(&self, x: &Tensor) -> Option<Conv2dOp> {
        (x.device().is_cpu() && x.dtype() == DType::F32 && self.bias.is_none()).then_some(
            Conv2dOp {
                stride: self.stride,
                padding: self.padding,
                groups: self.groups,
            },
        )
    }

    /// Counts the multiply-adds of output `y` from input `x` (see [`crate::macs`]): each
    /// output element is a dot product over (in_channels / groups) x k x k weights.
    pub(crate) fn record_flops(&self, y: &Tensor, x: &Tensor) -> Result<()> {
        self.record_macs(y.elem_count(), x.track_op())
    }

    /// [`Conv2d::record_flops`] for `outputs` output elements, from an input that does or
    /// does not take a gradient.
    pub(crate) fn record_macs(&self, outputs: usize, input_grad: bool) -> Result<()> {
        let w = self.weight.as_tensor();
        crate::macs::record(outputs * (w.elem_count() / w.dim(0)?), input_grad);
        Ok(())
    }
}

impl candle_nn::ModuleT for Conv2d {
    fn forward_t(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        if x.device().is_cpu() && x.dtype() != DType::F32 {
            // Candle's CPU convolution has no bf16 kernel: run in f32 and round the output,
            // as a GPU's bf16 convolution does (bf16 in and out, f32 accumulation).
            return self
                .forward_t(&x.to_dtype(DType::F32)?, false)?
                .to_dtype(x.dtype());
        }
        // Mixed precision: a bf16 input meets a bf16 copy of the f32 weight; the copy's
        // gradient flows back into the f32 weight.
        let w = &self.weight.as_tensor().to_dtype(x.dtype())?;
        let own_op = if x.device().is_cpu() {
            x.dtype() == DType::F32
        } else {
            cfg!(feature = "cudnn")
                && x.device().is_cuda()
                && matches!(x.dtype(), DType::F32 | DType::BF16 | DType::F16)
        };
        let y = if own_op {
            let op = Conv2dOp {
                stride: self.stride,
                padding: self.padding,
                groups: self.groups,
            };
            x.contiguous()?.apply_op2(w, op)?
        } else {
            x.conv2d(w, self.padding, self.stride, 1, self.groups)?
        };
        self.record_flops(&y, x)?;
        match &self.bias {
            Some(b) => {
                y.broadcast_add(&b.as_tensor().to_dtype(y.dtype())?.reshape((1, (), 1, 1))?)
            }
            None => Ok(y),
        }
    }
}
