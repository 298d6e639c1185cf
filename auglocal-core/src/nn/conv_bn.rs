//! [`conv_bn`]: a convolution, then training-mode BatchNorm (and a ReLU), as one Candle op
//! on the CPU (the op, and why it pays, in the crate's `kernels::conv_bn`).

use candle_core::{DType, Result, Tensor};
use candle_nn::ModuleT;

use super::batch_norm::BatchNorm2d;
use super::conv::Conv2d;
use crate::kernels::conv_bn::{conv_bn_train, ConvNorm};

/// `bn(conv(x))`, or `relu(bn(conv(x)))` with `relu`: one op when training on the CPU in
/// f32 (with a convolution without bias), the two layers otherwise.
pub fn conv_bn(
    conv: &Conv2d,
    bn: &BatchNorm2d,
    x: &Tensor,
    train: bool,
    relu: bool,
) -> Result<Tensor> {
    let Some(steps) = fused_steps((conv, bn), x, train, relu) else {
        let y = conv.forward_t(x, train)?;
        return if relu {
            bn.forward_relu(&y, train)
        } else {
            bn.forward_t(&y, train)
        };
    };
    let norm = bn.inner();
    let stats = steps.norm.stats.clone();
    let y = conv_bn_train(steps, x, conv.weight(), norm.affine())?;
    let (n, _, h, w) = y.dims4()?;
    norm.check_count(&y, n * h * w)?;
    conv.record_flops(&y, x)?;
    norm.finish_train(&stats, (n * h * w) as f64, y.device())?;
    Ok(y)
}

/// The steps of the fused op for `conv` then `bn` (then a ReLU with `relu`) on input `x`,
/// where it runs: training, on the CPU in f32, a convolution without bias.
pub(super) fn fused_steps(
    (conv, bn): (&Conv2d, &BatchNorm2d),
    x: &Tensor,
    train: bool,
    relu: bool,
) -> Option<ConvNorm> {
    let conv_op = conv
        .cpu_op(x)
        .filter(|_| train && x.dtype() == DType::F32)?;
    Some(ConvNorm {
        conv: conv_op,
        norm: bn.inner().train_op(relu),
    })
}
