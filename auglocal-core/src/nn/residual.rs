//! The end of a residual block: [`residual_block`], a whole block, as one Candle op on the
//! CPU when training (the op, and why it pays, in the crate's `kernels::residual`), and
//! [`add_relu`], its `relu(a + b)`.

use candle_core::{bail, DType, Result, Tensor};

use super::batch_norm::BatchNorm2d;
use super::conv::Conv2d;
use super::conv_bn::{conv_bn, fused_steps};
use crate::kernels::elementwise::AddRelu;
use crate::kernels::residual::{residual_train, BlockConv};

/// `relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`, where the shortcut is `bn(conv(x))`
/// for `projection` and `x` itself otherwise: one op when training on the CPU in f32 (with
/// convolutions without bias), [`conv_bn`] and [`add_relu`] otherwise.
pub fn residual_block(
    x: &Tensor,
    first: (&Conv2d, &BatchNorm2d),
    second: (&Conv2d, &BatchNorm2d),
    projection: Option<(&Conv2d, &BatchNorm2d)>,
    train: bool,
) -> Result<Tensor> {
    if projection.is_none() {
        let (c_in, c_out) = (x.dim(1)?, first.0.weight().dim(0)?);
        if c_in != c_out || first.0.stride() != 1 {
            bail!(
                "residual block: the identity shortcut needs a block that keeps its input's \
                 shape, but its first convolution takes {c_in} channels to {c_out} at stride \
                 {}; give the block a projection shortcut (a 1x1 convolution at that stride \
                 and a BatchNorm)",
                first.0.stride()
            );
        }
    }
    let layer = |(conv, bn): (&Conv2d, &BatchNorm2d), relu| {
        fused_steps((conv, bn), x, train, relu).map(|steps| {
            let (gamma, beta) = bn.inner().affine();
            BlockConv::new(steps, conv.weight(), gamma, beta)
        })
    };
    let projected = match projection {
        Some(p) => layer(p, false).map(Some),
        None => Some(None),
    };
    let (Some(l1), Some(l2), Some(l3)) = (layer(first, true), layer(second, false), projected)
    else {
        let h = conv_bn(first.0, first.1, x, train, true)?;
        let h = conv_bn(second.0, second.1, &h, train, false)?;
        let shortcut = match projection {
            Some((conv, bn)) => conv_bn(conv, bn, x, train, false)?,
            None => x.clone(),
        };
        return add_relu(&h, &shortcut);
    };
    let stats: Vec<_> = [Some(&l1), Some(&l2), l3.as_ref()]
        .into_iter()
        .flatten()
        .map(|l| l.steps.norm.stats.clone())
        .collect();
    let y = residual_train(x, l1, l2, l3)?;
    let (n, _, h, w) = y.dims4()?;
    let norms = [Some(first.1), Some(second.1), projection.map(|p| p.1)];
    for (bn, stats) in norms.into_iter().flatten().zip(&stats) {
        bn.inner().check_count(&y, n * h * w)?;
        bn.inner()
            .finish_train(stats, (n * h * w) as f64, y.device())?;
    }
    first.0.record_macs(y.elem_count(), x.track_op())?;
    second.0.record_macs(y.elem_count(), true)?;
    if let Some((conv, _)) = projection {
        conv.record_macs(y.elem_count(), x.track_op())?;
    }
    Ok(y)
}

/// `relu(a + b)`, the end of a residual block, fused into one pass on the CPU.
pub fn add_relu(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.device().is_cpu() && a.dtype() == DType::F32 && a.dims() == b.dims() {
        a.contiguous()?.apply_op2(&b.contiguous()?, AddRelu)
    } else {
        (a + b)?.relu()
    }
}
