//! A convolution, then training-mode BatchNorm (and a ReLU), as one Candle op on the CPU.
//!
//! Apart, the convolution's output is a node of Candle's graph, and Candle's backward gives
//! every node's gradient a zero-filled buffer and an add before passing it on
//! (`zeros_like`, then `add`): one more activation-sized pass per convolution. Fused, the
//! convolution's output stays inside the op, kept for the backward pass as the separate
//! BatchNorm kept it, and BatchNorm's input gradient goes straight into the convolution's
//! backward. The kernels are the same ([`Conv2dOp`], [`BatchNormTrain`]), so results are
//! identical to the two layers run one after the other; `tests/fused.rs` checks it.

use std::sync::{Arc, Mutex};

use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

use super::batch_norm::BatchNormTrain;
use super::conv::Conv2dOp;

/// `steps` on input `x` as one op: the convolution with `weight`, then the training
/// BatchNorm with weight `gamma` and bias `beta` (and its ReLU, if `steps.norm` has one).
/// The batch statistics are left in `steps.norm.stats`.
pub(crate) fn conv_bn_train(
    steps: ConvNorm,
    x: &Tensor,
    weight: &Tensor,
    (gamma, beta): (&Tensor, &Tensor),
) -> Result<Tensor> {
    let op = ConvBnTrain {
        layer: steps,
        conv_out: Arc::new(Mutex::new(None)),
    };
    let packed = Tensor::stack(&[gamma, beta], 0)?;
    x.contiguous()?.apply_op3(weight, &packed, op)
}

/// A convolution and the training BatchNorm after it, on the CPU: the steps both fused ops
/// (this one and [`super::residual`]'s) run.
pub(crate) struct ConvNorm {
    pub conv: Conv2dOp,
    pub norm: BatchNormTrain,
}

impl ConvNorm {
    /// The convolution's output (kept for the backward pass) and the BatchNorm's output,
    /// the BatchNorm's weight and bias read from `ps` at `gamma` and `beta`.
    pub(super) fn forward(
        &self,
        (xs, xl): (&CpuStorage, &Layout),
        (ws, wl): (&CpuStorage, &Layout),
        ps: &CpuStorage,
        (gamma, beta): (&Layout, &Layout),
    ) -> Result<(Tensor, CpuStorage, Shape)> {
        let (conv, shape) = self.conv.cpu_fwd(xs, xl, ws, wl)?;
        let conv_layout = Layout::contiguous(shape.clone());
        let (y, _) = self
            .norm
            .cpu_fwd(&conv, &conv_layout, ps, gamma, ps, beta)?;
        let CpuStorage::F32(conv) = conv else {
            bail!("conv + batch norm: the convolution returned non-f32 values");
        };
        let conv = Tensor::from_vec(conv, shape.clone(), &candle_core::Device::Cpu)?;
        Ok((conv, y, shape))
    }

    /// (dx when `input_grad`, dw when `weight_grad`, dgamma, dbeta) for input `x`, conv
    /// weight `w`, BatchNorm weight `gamma`, the convolution's output `conv`, the
    /// BatchNorm's output `y` (read only to mask by its ReLU) and its gradient `dy`.
    pub(super) fn backward(
        &self,
        (x, w, gamma): (&Tensor, &Tensor, &Tensor),
        (conv, y, dy): (&Tensor, &Tensor, &Tensor),
        (input_grad, weight_grad): (bool, bool),
    ) -> Result<(Option<Tensor>, Option<Tensor>, Tensor, Tensor)> {
        let (dconv, dgamma, dbeta) = self.norm.backward(conv, gamma, y, dy, true)?;
        let (Some(dconv), Some(dgamma), Some(dbeta)) = (dconv, dgamma, dbeta) else {
            bail!("conv + batch norm: BatchNorm's backward left a gradient out");
        };
        let (dx, dw) = self.conv.grads(x, w, &dconv, input_grad, weight_grad)?;
        Ok((dx, dw, dgamma, dbeta))
    }
}

/// The fused op on (x, conv weight, [BatchNorm weight; bias]).
struct ConvBnTrain {
    layer: ConvNorm,
    /// The convolution's output, for the backward pass.
    conv_out: Arc<Mutex<Option<Tensor>>>,
}

impl CustomOp3 for ConvBnTrain {
    fn name(&self) -> &'static str {
        "auglocal-conv-batch-norm"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        ps: &CpuStorage,
        pl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let c = wl.dims().first().copied().unwrap_or(0);
        let values = pl.shape().elem_count();
        if !pl.is_contiguous() || values != 2 * c {
            bail!(
                "{}: {c} channels but {values} packed BatchNorm values (expected 2 x {c}, \
                 contiguous)",
                self.name(),
            );
        }
        let gamma = Layout::contiguous_with_offset(c, pl.start_offset());
        let beta = Layout::contiguous_with_offset(c, pl.start_offset() + c);
        let (conv, y, shape) = self
            .layer
            .forward((xs, xl), (ws, wl), ps, (&gamma, &beta))?;
        *self.conv_out.lock().unwrap_or_else(|e| e.into_inner()) = Some(conv);
        Ok((y, shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        packed: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let conv = self
            .conv_out
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let Some(conv) = conv else {
            bail!("{}: backward before its forward", self.name());
        };
        let gamma = packed.get(0)?;
        let (dx, dw, dgamma, dbeta) =
            self.layer
                .backward((x, w, &gamma), (&conv, y, dy), (x.track_op(), w.track_op()))?;
        Ok((dx, dw, Some(Tensor::stack(&[dgamma, dbeta], 0)?)))
    }
}
