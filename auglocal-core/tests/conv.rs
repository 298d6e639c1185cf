//! Our CPU convolution (forward and both gradients) against Candle's own on random inputs,
//! for every shape the CIFAR ResNets and their auxiliary networks use.

use auglocal_core::nn::Conv2d;
use auglocal_core::params::{ParamBuilder, ParamStore};
use candle_core::{Device, Tensor, Var};
use candle_nn::ModuleT;

fn max_abs_diff(a: &Tensor, b: &Tensor) -> anyhow::Result<f32> {
    Ok((a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?)
}

#[allow(clippy::too_many_arguments)]
fn check(
    batch: usize,
    c_in: usize,
    c_out: usize,
    size: usize,
    k: usize,
    stride: usize,
    padding: usize,
    groups: usize,
) -> anyhow::Result<()> {
    check_hw(batch, c_in, c_out, (size, size), k, stride, padding, groups)
}

#[allow(clippy::too_many_arguments)]
fn check_hw(
    batch: usize,
    c_in: usize,
    c_out: usize,
    (h, w): (usize, usize),
    k: usize,
    stride: usize,
    padding: usize,
    groups: usize,
) -> anyhow::Result<()> {
    let store = ParamStore::new();
    let pb = ParamBuilder::new(&store, &Device::Cpu, 11);
    let conv = Conv2d::grouped(c_in, c_out, k, stride, padding, groups, &pb.pp("conv"))?;
    let x = Var::from_tensor(&Tensor::randn(
        0f32,
        1.0,
        (batch, c_in, h, w),
        &Device::Cpu,
    )?)?;
    // A fixed random projection of the output makes every output element matter.
    let ours = conv.forward_t(x.as_tensor(), true)?;
    let reference = x
        .as_tensor()
        .conv2d(conv.weight(), padding, stride, 1, groups)?;
    assert_eq!(ours.dims(), reference.dims());
    let tag = format!("{batch}x{c_in}x{h}x{w} -> {c_out}, k{k} s{stride} p{padding} g{groups}");
    assert!(max_abs_diff(&ours, &reference)? < 1e-4, "forward {tag}");

    let probe = Tensor::randn(0f32, 1.0, ours.dims(), &Device::Cpu)?;
    let g_ours = (ours * &probe)?.sum_all()?.backward()?;
    let g_ref = (reference * &probe)?.sum_all()?.backward()?;
    let w = conv.weight();
    let dw = max_abs_diff(g_ours.get(w).unwrap(), g_ref.get(w).unwrap())?;
    let scale = g_ref
        .get(w)
        .unwrap()
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f32>()?;
    assert!(
        dw <= 1e-4 * scale.max(1.0),
        "weight gradient {tag}: {dw} (scale {scale})"
    );
    let dx = max_abs_diff(
        g_ours.get(x.as_tensor()).unwrap(),
        g_ref.get(x.as_tensor()).unwrap(),
    )?;
    assert!(dx < 1e-3, "input gradient {tag}: {dx}");
    Ok(())
}

#[test]
fn matches_candle_on_resnet_shapes() -> anyhow::Result<()> {
    check(3, 3, 16, 8, 3, 1, 1, 1)?; // stem
    check(3, 16, 16, 8, 3, 1, 1, 1)?; // stage conv
    check(2, 16, 32, 8, 3, 2, 1, 1)?; // downsampling conv
    check(2, 16, 32, 8, 1, 2, 0, 1)?; // projection shortcut
    check(2, 32, 64, 8, 1, 1, 0, 1)?; // pointwise
    check(5, 7, 6, 9, 3, 2, 1, 1)?; // odd sizes, a batch that is not a multiple of the chunk
    check(2, 3, 8, 15, 7, 2, 3, 1)?; // ImageNet-style stem
    check(2, 5, 7, 9, 3, 1, 0, 1)?; // stride 1 without padding
    check(2, 4, 6, 10, 5, 1, 2, 1)?; // 5x5, stride 1
    check(2, 3, 4, 2, 5, 1, 2, 1)?; // 5x5 on a 2x2 image: shifts reach past the plane
    Ok(())
}

/// Shapes the direct AVX2 kernels take (stride 1 at the same size, or stride 2; output
/// width a multiple of 8, output channels a multiple of 4; weight gradient from 256 output
/// pixels), with their remainder tiles, next to one that falls back to the GEMM.
#[test]
fn direct_kernels_match_candle() -> anyhow::Result<()> {
    check(2, 16, 16, 32, 3, 1, 1, 1)?; // ResNet stage 1
    check(2, 3, 16, 16, 3, 1, 1, 1)?; // stem: 27 weight rows, an odd one left over
    check_hw(2, 8, 12, (3, 8), 3, 1, 1, 1)?; // 3 pixel vectors: a one-vector tile
    check_hw(3, 5, 8, (17, 16), 3, 1, 1, 1)?; // 272 pixels, 45 weight rows
    check(6, 4, 8, 16, 3, 1, 1, 1)?; // weight gradient over a group of 4 images, then 2
    check(2, 4, 8, 16, 5, 1, 2, 1)?; // 5x5, padding 2
    check_hw(2, 3, 4, (8, 24), 7, 1, 3, 1)?; // 7x7, padding 3, wider than tall
    check(2, 4, 6, 16, 3, 1, 1, 1)?; // 6 output channels: the GEMM path

    // Stride 2, rows split into even and odd columns:
    check(2, 16, 32, 16, 3, 2, 1, 1)?; // ResNet downsampling conv
    check(2, 16, 32, 16, 1, 2, 0, 1)?; // projection shortcut
    check(2, 4, 8, 32, 3, 2, 1, 1)?; // 256 output pixels: the direct weight gradient
    check(2, 3, 8, 15, 3, 2, 1, 1)?; // odd width: the odd columns are one fewer
    check(2, 3, 4, 16, 7, 2, 3, 1)?; // ImageNet stem: 7x7, padding 3
    check_hw(2, 4, 4, (5, 33), 3, 2, 0, 1)?; // no padding, 2 x 16 outputs
    Ok(())
}

/// Shapes Winograd takes (3x3, stride 1, padding 1, output channels a multiple of 4):
/// F(4x4, 3x3) along rows where the height is a multiple of 4, the width of 16 and the
/// plane holds whole vectors of 8 tiles; F(4x4) across 8 images where the height is a
/// multiple of 4 and the width of 8; F(2x2, 3x3) along rows on the rest. Forward, input
/// gradient and weight gradient, with the remainders of their image groups, units of 8
/// images and register tiles.
#[test]
fn winograd_matches_candle() -> anyhow::Result<()> {
    // F(4x4) along rows.
    check(2, 16, 16, 32, 3, 1, 1, 1)?; // ResNet stage 1: 64 tiles an image
    check(3, 32, 32, 16, 3, 1, 1, 1)?; // stage 2: 16 tiles, groups of 2 images, then 1
    check_hw(3, 4, 8, (4, 32), 3, 1, 1, 1)?; // one row of 8 tiles
    check_hw(2, 5, 12, (8, 48), 3, 1, 1, 1)?; // 12 tiles a row: vectors across tile rows
    check(2, 3, 16, 16, 3, 1, 1, 1)?; // the stem: 3 input channels, no input gradient

    // F(4x4) across images.
    check(5, 64, 64, 8, 3, 1, 1, 1)?; // stage 3: one unit of 8 images, 5 of them real
    check(18, 8, 4, 8, 3, 1, 1, 1)?; // units of 8, 8, 2; weight gradient over 16, then 2
    check(3, 3, 16, 8, 3, 1, 1, 1)?; // 3 input channels
    check(2, 5, 12, 8, 3, 1, 1, 1)?; // 5 -> 12 channels; the input gradient falls back
    check_hw(9, 8, 8, (4, 16), 3, 1, 1, 1)?; // 4 tiles of 4x4 would not fill a vector
    check_hw(2, 4, 8, (8, 24), 3, 1, 1, 1)?; // 3 blocks of 8 columns (ImageNet's 56x56)

    // F(2x2).
    check_hw(2, 4, 8, (2, 32), 3, 1, 1, 1)?; // one row of tiles, 16 of them
    check_hw(3, 4, 8, (6, 16), 3, 1, 1, 1)?; // 3 rows of 8 tiles

    // None: 3 x 12 tiles of 2x2 are not whole vectors, the height is not a multiple of 4.
    check_hw(3, 4, 8, (6, 24), 3, 1, 1, 1)?;
    Ok(())
}

#[test]
fn grouped_and_depthwise_match_candle() -> anyhow::Result<()> {
    check(3, 8, 8, 8, 3, 1, 1, 8)?; // depthwise, stride 1
    check(2, 16, 16, 9, 3, 2, 1, 16)?; // depthwise, stride 2
    check(2, 8, 12, 6, 3, 1, 1, 4)?; // grouped
    check(2, 6, 4, 5, 1, 1, 0, 2)?; // grouped pointwise
    Ok(())
}

#[test]
fn direct_depthwise_matches_candle_on_mobilenet_shapes() -> anyhow::Result<()> {
    check(2, 96, 96, 8, 3, 1, 1, 96)?; // an expanded 16 -> 96 block at stride 1
    check(2, 144, 144, 9, 3, 2, 1, 144)?; // stride 2 on an odd side
    check(5, 6, 6, 7, 3, 1, 0, 6)?; // no padding, a batch of 5
    check(1, 4, 4, 6, 5, 2, 2, 4)?; // 5x5, stride 2
    check(2, 3, 3, 2, 3, 1, 1, 3)?; // a 2x2 image: every tap touches padding
    Ok(())
}

/// The gradient of `sum(conv(x) * probe)` by central differences, for every element of
/// `var`. The convolution is linear in input and weight, so differences are exact up to
/// rounding.
fn finite_differences(
    var: &Var,
    loss: &dyn Fn() -> anyhow::Result<f32>,
) -> anyhow::Result<Vec<f32>> {
    let base = var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
    let h = 0.05f32;
    let mut out = Vec::with_capacity(base.len());
    for i in 0..base.len() {
        let at = |delta: f32| -> anyhow::Result<f32> {
            let mut v = base.clone();
            v[i] += delta;
            var.set(&Tensor::from_vec(v, var.dims(), &Device::Cpu)?)?;
            loss()
        };
        let (plus, minus) = (at(h)?, at(-h)?);
        out.push((plus - minus) / (2.0 * h));
    }
    var.set(&Tensor::from_vec(base, var.dims(), &Device::Cpu)?)?;
    Ok(out)
}

#[test]
fn depthwise_gradients_match_finite_differences() -> anyhow::Result<()> {
    for (stride, padding) in [(1, 1), (2, 1), (2, 0)] {
        let store = ParamStore::new();
        let pb = ParamBuilder::new(&store, &Device::Cpu, 5);
        let conv = Conv2d::grouped(3, 3, 3, stride, padding, 3, &pb.pp("dw"))?;
        let weight = store.get("dw.weight").unwrap().var;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (2, 3, 5, 5), &Device::Cpu)?)?;
        let out = conv.forward_t(x.as_tensor(), true)?;
        let probe = Tensor::randn(0f32, 1.0, out.dims(), &Device::Cpu)?;
        let loss = || -> anyhow::Result<f32> {
            Ok((conv.forward_t(x.as_tensor(), true)? * &probe)?
                .sum_all()?
                .to_scalar::<f32>()?)
        };
        let grads = (out * &probe)?.sum_all()?.backward()?;
        for (what, var) in [("input", &x), ("weight", &weight)] {
            let analytic = grads
                .get(var.as_tensor())
                .unwrap()
                .flatten_all()?
                .to_vec1::<f32>()?;
            let numeric = finite_differences(var, &loss)?;
            for (i, (a, n)) in analytic.iter().zip(&numeric).enumerate() {
                assert!(
                    (a - n).abs() < 2e-3 * a.abs().max(1.0),
                    "{what} gradient element {i} at stride {stride} padding {padding}: {a} vs {n}"
                );
            }
        }
    }
    Ok(())
}

#[test]
fn bias_is_added_per_channel() -> anyhow::Result<()> {
    let store = ParamStore::new();
    let pb = ParamBuilder::new(&store, &Device::Cpu, 0);
    let conv = Conv2d::new(1, 2, 1, 1, 0, &pb.pp("c"))?.with_bias(&pb.pp("c"))?;
    store
        .get("c.weight")
        .unwrap()
        .var
        .set(&Tensor::new(&[2f32, -1.0], &Device::Cpu)?.reshape((2, 1, 1, 1))?)?;
    store
        .get("c.bias")
        .unwrap()
        .var
        .set(&Tensor::new(&[0.5f32, 3.0], &Device::Cpu)?)?;
    let x = Tensor::new(&[1f32, -2.0], &Device::Cpu)?.reshape((1, 1, 1, 2))?;
    let y = conv.forward_t(&x, false)?.flatten_all()?.to_vec1::<f32>()?;
    // Channel 0: 2x + 0.5; channel 1: -x + 3.
    assert_eq!(y, vec![2.5, -3.5, 2.0, 5.0]);
    Ok(())
}

#[test]
fn bad_groups_are_rejected() {
    let store = ParamStore::new();
    let pb = ParamBuilder::new(&store, &Device::Cpu, 0);
    let err = Conv2d::grouped(6, 4, 3, 1, 1, 4, &pb)
        .unwrap_err()
        .to_string();
    assert_eq!(err, "invalid convolution groups: 4 for 6 -> 4 channels (valid: a number >= 1 that divides both channel counts)");
    let err = Conv2d::new(4, 4, 0, 1, 0, &pb).unwrap_err().to_string();
    assert_eq!(
        err,
        "invalid convolution kernel and stride: kernel 0, stride 1 (valid: both >= 1)"
    );
}

#[test]
fn detached_inputs_get_no_gradient() -> anyhow::Result<()> {
    let store = ParamStore::new();
    let pb = ParamBuilder::new(&store, &Device::Cpu, 0);
    let conv = Conv2d::new(4, 4, 3, 1, 1, &pb.pp("conv"))?;
    let x = Tensor::randn(0f32, 1.0, (2, 4, 6, 6), &Device::Cpu)?;
    let grads = conv.forward_t(&x, true)?.sum_all()?.backward()?;
    assert!(grads.get(&x).is_none());
    assert!(grads.get(conv.weight()).is_some());
    Ok(())
}
