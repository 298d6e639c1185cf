//! A whole residual block, `relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`, as one
//! Candle op on the CPU when training.
//!
//! Candle's backward gives every node of its graph a zero-filled gradient buffer and adds
//! each incoming gradient to it (`zeros_like`, then `add`). Built from
//! [`conv_bn`](crate::nn::conv_bn) and [`add_relu`](crate::nn::add_relu), a block has three
//! activation-sized nodes (the two BatchNorm outputs and the sum) and its input takes two
//! gradients: three buffers zeroed and four adds a block, five and six with a projection
//! shortcut. As one op the block's input is the only node: one buffer and one add, plus the
//! sum of the two input gradients inside. The zeroing runs on the calling thread alone while
//! the worker waits: 2.8% of a ResNet-110 AugLocal step's CPU samples before, 0.3% after.
//!
//! The steps are the same ([`ConvNorm`], shared with [`conv_bn`](crate::nn::conv_bn), and
//! [`AddRelu`]), and the two input gradients are added as Candle would add them, so results
//! are identical to the layers run one after the other; `tests/fused.rs` checks it.

use std::sync::Mutex;

use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

use super::conv_bn::ConvNorm;
use super::elementwise::{relu_grad, AddRelu};

/// `relu(second(first(x)) + shortcut)` as one op, each of `first`, `second` and the
/// `projection` a convolution and training BatchNorm; the shortcut is `projection(x)`, or
/// `x` itself without one. The batch statistics are left in each one's `steps.norm.stats`.
pub(crate) fn residual_train(
    x: &Tensor,
    first: BlockConv,
    second: BlockConv,
    projection: Option<BlockConv>,
) -> Result<Tensor> {
    let p1 = first.packed()?;
    let p2 = match &projection {
        Some(l3) => Tensor::cat(&[second.packed()?, l3.packed()?], 0)?,
        None => second.packed()?,
    };
    let op = ResidualTrain {
        first,
        second,
        projection,
        saved: Mutex::new(None),
    };
    x.contiguous()?.apply_op3(&p1, &p2, op)
}

/// One convolution + BatchNorm of the block, and where its parameters sit in a packed
/// tensor: `[conv weight (flattened); BatchNorm weight; BatchNorm bias]`.
pub(crate) struct BlockConv {
    pub steps: ConvNorm,
    weight: Tensor,
    gamma: Tensor,
    beta: Tensor,
}

impl BlockConv {
    pub(crate) fn new(steps: ConvNorm, weight: &Tensor, gamma: &Tensor, beta: &Tensor) -> Self {
        BlockConv {
            steps,
            weight: weight.clone(),
            gamma: gamma.clone(),
            beta: beta.clone(),
        }
    }

    fn packed(&self) -> Result<Tensor> {
        Tensor::cat(&[&self.weight.flatten_all()?, &self.gamma, &self.beta], 0)
    }

    fn packed_len(&self) -> usize {
        self.weight.elem_count() + 2 * self.gamma.elem_count()
    }

    /// The convolution's output and the BatchNorm's, from the parameters packed at `at` in
    /// `ps`.
    fn forward(
        &self,
        x: (&CpuStorage, &Layout),
        (ps, pl): (&CpuStorage, &Layout),
        at: usize,
    ) -> Result<(Tensor, CpuStorage, Shape)> {
        let start = pl.start_offset() + at;
        let (w, c) = (self.weight.elem_count(), self.gamma.elem_count());
        let weight = Layout::contiguous_with_offset(self.weight.shape(), start);
        let gamma = Layout::contiguous_with_offset(c, start + w);
        let beta = Layout::contiguous_with_offset(c, start + w + c);
        self.steps.forward(x, (ps, &weight), ps, (&gamma, &beta))
    }

    /// The gradients (input when `input_grad`, then packed parameters) from the gradient of
    /// the BatchNorm's output `dy`, for the convolution's input `x`, its output `conv` and
    /// the BatchNorm's output `y`.
    fn backward(
        &self,
        (x, conv, y): (&Tensor, &Tensor, &Tensor),
        dy: &Tensor,
        input_grad: bool,
    ) -> Result<(Option<Tensor>, Tensor)> {
        let (dx, dw, dgamma, dbeta) = self.steps.backward(
            (x, &self.weight, &self.gamma),
            (conv, y, dy),
            (input_grad, true),
        )?;
        let Some(dw) = dw else {
            bail!("{NAME}: the convolution's backward left the weight gradient out");
        };
        Ok((dx, Tensor::cat(&[&dw.flatten_all()?, &dgamma, &dbeta], 0)?))
    }
}

const NAME: &str = "auglocal-residual-block";

/// What the backward pass needs of the forward's insides: both convolutions' outputs, the
/// first BatchNorm's (after its ReLU), and the projection's convolution output.
struct Saved {
    conv1: Tensor,
    h1: Tensor,
    conv2: Tensor,
    projection: Option<Tensor>,
}

/// The fused op on (x, [first layer's parameters], [second's; projection's]).
struct ResidualTrain {
    first: BlockConv,
    second: BlockConv,
    projection: Option<BlockConv>,
    saved: Mutex<Option<Saved>>,
}

fn into_tensor(storage: CpuStorage, shape: Shape) -> Result<Tensor> {
    match storage {
        CpuStorage::F32(v) => Tensor::from_vec(v, shape, &candle_core::Device::Cpu),
        _ => bail!("{NAME}: a layer returned non-f32 values"),
    }
}

impl CustomOp3 for ResidualTrain {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        p1s: &CpuStorage,
        p1l: &Layout,
        p2s: &CpuStorage,
        p2l: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (first, second, projection) = (&self.first, &self.second, self.projection.as_ref());
        let expected = [
            (p1l, first.packed_len()),
            (
                p2l,
                second.packed_len() + projection.map_or(0, BlockConv::packed_len),
            ),
        ];
        for (layout, len) in expected {
            if !layout.is_contiguous() || layout.shape().elem_count() != len {
                bail!(
                    "{NAME}: expected {len} contiguous packed parameters, got {:?}",
                    layout.dims()
                );
            }
        }
        let (conv1, h1, shape) = first.forward((xs, xl), (p1s, p1l), 0)?;
        let layout = Layout::contiguous(shape.clone());
        let (conv2, h2, shape2) = second.forward((&h1, &layout), (p2s, p2l), 0)?;
        let layout2 = Layout::contiguous(shape2.clone());
        let (y, saved_projection) = match projection {
            Some(p) => {
                let (conv, shortcut, s) = p.forward((xs, xl), (p2s, p2l), second.packed_len())?;
                let (y, _) = AddRelu.cpu_fwd(&h2, &layout2, &shortcut, &Layout::contiguous(s))?;
                (y, Some(conv))
            }
            None => (AddRelu.cpu_fwd(&h2, &layout2, xs, xl)?.0, None),
        };
        *self.saved.lock().unwrap_or_else(|e| e.into_inner()) = Some(Saved {
            conv1,
            h1: into_tensor(h1, shape)?,
            conv2,
            projection: saved_projection,
        });
        Ok((y, shape2))
    }

    fn bwd(
        &self,
        x: &Tensor,
        p1: &Tensor,
        p2: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (first, second, projection) = (&self.first, &self.second, self.projection.as_ref());
        let saved = self.saved.lock().unwrap_or_else(|e| e.into_inner());
        let Some(saved) = saved.as_ref() else {
            bail!("{NAME}: backward before its forward");
        };
        // Both branches take the gradient of the sum, masked by the final ReLU. A
        // BatchNorm's backward reads its output only to mask by its own ReLU, so the
        // block's output stands in for the second BatchNorm's and the projection's.
        let dsum = relu_grad(dy, y)?;
        let (dh1, dp2) = second.backward((&saved.h1, &saved.conv2, y), &dsum, true)?;
        let Some(dh1) = dh1 else {
            bail!("{NAME}: the second convolution left its input gradient out");
        };
        let (dx, dp1) = first.backward((x, &saved.conv1, &saved.h1), &dh1, x.track_op())?;
        let (dx_shortcut, dp2) = match (projection, &saved.projection) {
            (Some(p), Some(conv)) => {
                let (dx, dp) = p.backward((x, conv, y), &dsum, x.track_op())?;
                (dx, Tensor::cat(&[dp2, dp], 0)?)
            }
            (None, None) => (x.track_op().then(|| dsum.clone()), dp2),
            _ => bail!("{NAME}: the projection's output was not kept"),
        };
        let dx = match (dx, dx_shortcut) {
            (Some(a), Some(b)) => Some((a + b)?),
            (a, b) => a.or(b),
        };
        Ok((
            dx,
            p1.track_op().then_some(dp1),
            p2.track_op().then_some(dp2),
        ))
    }
}
