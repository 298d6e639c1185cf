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

use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor};
use candle_nn::ModuleT;

use super::batch_norm_cpu::BatchNormTrain;
use super::conv_cpu::Conv2dOp;
use super::{contiguous_f32, BatchNorm2d, Conv2d};

/// `bn(conv(x))`, or `relu(bn(conv(x)))` with `relu`: one op when training on the CPU in
/// f32 (with a convolution without bias), the two layers otherwise.
pub fn conv_bn(
    conv: &Conv2d,
    bn: &BatchNorm2d,
    x: &Tensor,
    train: bool,
    relu: bool,
) -> Result<Tensor> {
    let op = conv.cpu_op(x).filter(|_| train && x.dtype() == DType::F32);
    let Some(conv_op) = op else {
        let y = conv.forward_t(x, train)?;
        return if relu {
            bn.forward_relu(&y, train)
        } else {
            bn.forward_t(&y, train)
        };
    };
    let norm = bn.inner();
    let (gamma, beta) = norm.affine();
    let op = ConvBnTrain {
        conv: conv_op,
        norm: norm.train_op(relu),
        conv_out: Arc::new(Mutex::new(None)),
    };
    let stats = op.norm.stats.clone();
    let packed = Tensor::stack(&[gamma, beta], 0)?;
    let y = x.contiguous()?.apply_op3(conv.weight(), &packed, op)?;
    let (n, _, h, w) = y.dims4()?;
    norm.check_count(&y, n * h * w)?;
    conv.record_flops(&y, x)?;
    norm.finish_train(&stats, (n * h * w) as f64, y.device())?;
    Ok(y)
}

/// The fused op on (x, conv weight, [BatchNorm weight; bias]).
struct ConvBnTrain {
    conv: Conv2dOp,
    norm: BatchNormTrain,
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
        let (conv, shape) = self.conv.cpu_fwd(xs, xl, ws, wl)?;
        let c = shape.dims()[1];
        let packed = contiguous_f32(self.name(), ps, pl, "BatchNorm weight and bias")?;
        if packed.len() != 2 * c {
            bail!(
                "{}: {c} channels but {} packed BatchNorm values (expected 2 x {c})",
                self.name(),
                packed.len()
            );
        }
        let gamma = CpuStorage::F32(packed[..c].to_vec());
        let beta = CpuStorage::F32(packed[c..].to_vec());
        let per_channel = Layout::contiguous(c);
        let conv_layout = Layout::contiguous(shape.clone());
        let y = self.norm.cpu_fwd(
            &conv,
            &conv_layout,
            &gamma,
            &per_channel,
            &beta,
            &per_channel,
        )?;
        let CpuStorage::F32(conv) = conv else {
            bail!("{}: the convolution returned non-f32 values", self.name());
        };
        let conv = Tensor::from_vec(conv, shape, &candle_core::Device::Cpu)?;
        *self.conv_out.lock().unwrap_or_else(|e| e.into_inner()) = Some(conv);
        Ok(y)
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
        let (dconv, dgamma, dbeta) = self.norm.backward(&conv, &gamma, y, dy, true)?;
        let (Some(dconv), Some(dgamma), Some(dbeta)) = (dconv, dgamma, dbeta) else {
            bail!("{}: BatchNorm's backward left a gradient out", self.name());
        };
        let (dx, dw) = self.conv.bwd(x, w, &conv, &dconv)?;
        Ok((dx, dw, Some(Tensor::stack(&[dgamma, dbeta], 0)?)))
    }
}
