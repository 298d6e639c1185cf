//! Fused CPU ops against the plain composition of Candle ops they replace.

use auglocal_core::nn::{add_relu, BatchNorm2d};
use auglocal_core::params::{ParamBuilder, ParamStore};
use candle_core::{Device, Tensor, Var};
use candle_nn::ModuleT;

fn max_diff(a: &Tensor, b: &Tensor) -> anyhow::Result<f32> {
    Ok((a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?)
}

#[test]
fn add_relu_matches_add_then_relu() -> anyhow::Result<()> {
    let a = Var::from_tensor(&Tensor::randn(0f32, 1.0, (3, 4, 5, 5), &Device::Cpu)?)?;
    let b = Var::from_tensor(&Tensor::randn(0f32, 1.0, (3, 4, 5, 5), &Device::Cpu)?)?;
    let probe = Tensor::randn(0f32, 1.0, (3, 4, 5, 5), &Device::Cpu)?;
    let fused = add_relu(a.as_tensor(), b.as_tensor())?;
    let plain = (a.as_tensor() + b.as_tensor())?.relu()?;
    assert_eq!(max_diff(&fused, &plain)?, 0.0);
    let gf = (fused * &probe)?.sum_all()?.backward()?;
    let gp = (plain * &probe)?.sum_all()?.backward()?;
    for v in [&a, &b] {
        assert_eq!(
            max_diff(
                gf.get(v.as_tensor()).unwrap(),
                gp.get(v.as_tensor()).unwrap()
            )?,
            0.0
        );
    }
    Ok(())
}

#[test]
fn batch_norm_relu_matches_batch_norm_then_relu() -> anyhow::Result<()> {
    let x = Var::from_tensor(&Tensor::randn(0.5f32, 2.0, (4, 3, 6, 6), &Device::Cpu)?)?;
    let probe = Tensor::randn(0f32, 1.0, (4, 3, 6, 6), &Device::Cpu)?;
    let build = || -> anyhow::Result<(ParamStore, BatchNorm2d)> {
        let store = ParamStore::new();
        let bn = BatchNorm2d::new(3, &ParamBuilder::new(&store, &Device::Cpu, 0).pp("bn"))?;
        store
            .get("bn.weight")
            .unwrap()
            .var
            .set(&Tensor::new(&[1.5f32, -0.7, 0.3], &Device::Cpu)?)?;
        store
            .get("bn.bias")
            .unwrap()
            .var
            .set(&Tensor::new(&[0.2f32, 0.1, -0.4], &Device::Cpu)?)?;
        Ok((store, bn))
    };
    let (fs, fused_bn) = build()?;
    let (ps, plain_bn) = build()?;
    let fused = fused_bn.forward_relu(x.as_tensor(), true)?;
    let plain = plain_bn.forward_t(x.as_tensor(), true)?.relu()?;
    let d = max_diff(&fused, &plain)?;
    assert!(d < 1e-6, "forward differs by {d}");
    let gf = (fused * &probe)?.sum_all()?.backward()?;
    let gp = (plain * &probe)?.sum_all()?.backward()?;
    assert!(
        max_diff(
            gf.get(x.as_tensor()).unwrap(),
            gp.get(x.as_tensor()).unwrap()
        )? < 1e-5
    );
    for name in ["bn.weight", "bn.bias"] {
        let a = gf.get(fs.get(name).unwrap().var.as_tensor()).unwrap();
        let b = gp.get(ps.get(name).unwrap().var.as_tensor()).unwrap();
        assert!(max_diff(a, b)? < 1e-4, "{name}");
    }
    for name in ["bn.running_mean", "bn.running_var"] {
        let a = fs.get(name).unwrap().var.as_tensor().clone();
        let b = ps.get(name).unwrap().var.as_tensor().clone();
        assert!(max_diff(&a, &b)? < 1e-6, "{name}");
    }
    // Inference: running statistics, then ReLU.
    let fused = fused_bn.forward_relu(x.as_tensor(), false)?;
    let plain = plain_bn.forward_t(x.as_tensor(), false)?.relu()?;
    assert!(max_diff(&fused, &plain)? < 1e-6);
    Ok(())
}

/// The fused convolution + BatchNorm (+ ReLU) op against the two layers one after the other:
/// the same kernels, so the same values to the bit, with and without the ReLU, for a
/// Winograd, a stride-2 and a 1x1 convolution; and a detached input gets no gradient.
#[test]
fn conv_bn_matches_conv_then_batch_norm() -> anyhow::Result<()> {
    use auglocal_core::nn::{conv_bn, Conv2d};
    for (c_in, c_out, size, k, stride, padding, relu) in [
        (8, 16, 16, 3, 1, 1, true),
        (8, 16, 16, 3, 2, 1, false),
        (4, 8, 8, 1, 2, 0, false),
    ] {
        let build = || -> anyhow::Result<(ParamStore, Conv2d, BatchNorm2d)> {
            let store = ParamStore::new();
            let pb = ParamBuilder::new(&store, &Device::Cpu, 3);
            let conv = Conv2d::new(c_in, c_out, k, stride, padding, &pb.pp("conv"))?;
            let bn = BatchNorm2d::new(c_out, &pb.pp("bn"))?;
            let gamma = Tensor::randn(1f32, 0.5, c_out, &Device::Cpu)?;
            store.get("bn.weight").unwrap().var.set(&gamma)?;
            let beta = Tensor::randn(0f32, 0.5, c_out, &Device::Cpu)?;
            store.get("bn.bias").unwrap().var.set(&beta)?;
            Ok((store, conv, bn))
        };
        let (fs, f_conv, f_bn) = build()?;
        let (ps, p_conv, p_bn) = build()?;
        for name in ["conv.weight", "bn.weight", "bn.bias"] {
            let (a, b) = (fs.get(name).unwrap(), ps.get(name).unwrap());
            b.var.set(a.var.as_tensor())?;
        }
        let x = Var::from_tensor(&Tensor::randn(
            0f32,
            1.0,
            (4, c_in, size, size),
            &Device::Cpu,
        )?)?;
        let fused = conv_bn(&f_conv, &f_bn, x.as_tensor(), true, relu)?;
        let conv = p_conv.forward_t(x.as_tensor(), true)?;
        let plain = if relu {
            p_bn.forward_relu(&conv, true)?
        } else {
            p_bn.forward_t(&conv, true)?
        };
        let tag = format!("{c_in}->{c_out} k{k} s{stride} relu {relu}");
        assert_eq!(fused.dims(), plain.dims(), "{tag}");
        assert_eq!(max_diff(&fused, &plain)?, 0.0, "forward {tag}");
        let probe = Tensor::randn(0f32, 1.0, fused.dims(), &Device::Cpu)?;
        let gf = (fused * &probe)?.sum_all()?.backward()?;
        let gp = (plain * &probe)?.sum_all()?.backward()?;
        let dx = max_diff(
            gf.get(x.as_tensor()).unwrap(),
            gp.get(x.as_tensor()).unwrap(),
        )?;
        assert_eq!(dx, 0.0, "input gradient {tag}");
        for name in ["conv.weight", "bn.weight", "bn.bias"] {
            let a = gf.get(fs.get(name).unwrap().var.as_tensor()).unwrap();
            let b = gp.get(ps.get(name).unwrap().var.as_tensor()).unwrap();
            assert_eq!(max_diff(a, b)?, 0.0, "{name} gradient {tag}");
        }
        for name in [
            "bn.running_mean",
            "bn.running_var",
            "bn.num_batches_tracked",
        ] {
            let a = fs
                .get(name)
                .unwrap()
                .var
                .as_tensor()
                .to_dtype(candle_core::DType::F32)?;
            let b = ps
                .get(name)
                .unwrap()
                .var
                .as_tensor()
                .to_dtype(candle_core::DType::F32)?;
            assert_eq!(max_diff(&a, &b)?, 0.0, "{name} {tag}");
        }
        // A detached input: no input gradient, the parameters' still.
        let y = conv_bn(&f_conv, &f_bn, &x.as_tensor().detach(), true, relu)?;
        let g = y.sum_all()?.backward()?;
        assert!(g.get(x.as_tensor()).is_none(), "{tag}");
        assert!(g
            .get(fs.get("conv.weight").unwrap().var.as_tensor())
            .is_some());
    }
    Ok(())
}

/// BatchNorm's error for a single value per channel, through the fused op too.
#[test]
fn conv_bn_rejects_one_value_per_channel() -> anyhow::Result<()> {
    use auglocal_core::nn::{conv_bn, Conv2d};
    let store = ParamStore::new();
    let pb = ParamBuilder::new(&store, &Device::Cpu, 3);
    let conv = Conv2d::new(3, 4, 1, 1, 0, &pb.pp("conv"))?;
    let bn = BatchNorm2d::new(4, &pb.pp("bn"))?;
    let x = Tensor::randn(0f32, 1.0, (1, 3, 1, 1), &Device::Cpu)?;
    let err = conv_bn(&conv, &bn, &x, true, true).unwrap_err().to_string();
    assert!(err.contains("more than one value per channel"), "{err}");
    Ok(())
}
