//! Fused elementwise ops on the CPU: the residual `relu(a + b)` and the ReLU gradient, one
//! pass each instead of Candle's add, relu, and its four-pass relu backward.

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

use crate::parallel;

use super::contiguous_f32;

/// Elements per parallel task: large enough to amortise scheduling, small enough to split
/// a 32x32 feature map batch across threads.
const CHUNK: usize = 1 << 14;

fn check_same(op: &str, l1: &Layout, l2: &Layout) -> Result<()> {
    if l1.shape() != l2.shape() {
        candle_core::bail!("{op}: shapes {:?} and {:?} differ", l1.dims(), l2.dims());
    }
    Ok(())
}

/// `f(a[i], b[i])` for every i, in parallel chunks.
fn zip_map(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) -> Vec<f32> {
    assert_eq!(a.len(), b.len());
    let map = |i: usize, out: &mut [MaybeUninit<f32>]| {
        let range = i * CHUNK..i * CHUNK + out.len();
        for ((o, a), b) in out.iter_mut().zip(&a[range.clone()]).zip(&b[range]) {
            o.write(f(*a, *b));
        }
    };
    // SAFETY: `map` writes every element of its chunk: `a` and `b` are as long as the output.
    unsafe { parallel::written_chunks_init(a.len(), CHUNK, || (), |_, i, out| map(i, out)) }
}

/// `relu(a + b)`.
pub(crate) struct AddRelu;

impl CustomOp2 for AddRelu {
    fn name(&self) -> &'static str {
        "auglocal-add-relu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        check_same(self.name(), l1, l2)?;
        let a = contiguous_f32(self.name(), s1, l1, "first input")?;
        let b = contiguous_f32(self.name(), s2, l2, "second input")?;
        let y = zip_map(a, b, |a, b| (a + b).max(0.0));
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = relu_grad(dy, y)?;
        let ga = a.track_op().then(|| g.clone());
        let gb = b.track_op().then_some(g);
        Ok((ga, gb))
    }
}

/// The gradient through a ReLU whose output was `y`: `dy` where `y > 0`, else 0.
pub(crate) fn relu_grad(dy: &Tensor, y: &Tensor) -> Result<Tensor> {
    dy.contiguous()?
        .apply_op2_no_bwd(&y.contiguous()?, &ReluGrad)
}

struct ReluGrad;

impl CustomOp2 for ReluGrad {
    fn name(&self) -> &'static str {
        "auglocal-relu-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        check_same(self.name(), l1, l2)?;
        let dy = contiguous_f32(self.name(), s1, l1, "output gradient")?;
        let y = contiguous_f32(self.name(), s2, l2, "output")?;
        let g = zip_map(dy, y, |dy, y| if y > 0.0 { dy } else { 0.0 });
        Ok((CpuStorage::F32(g), l1.shape().clone()))
    }
}
