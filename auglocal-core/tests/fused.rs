//! Fused CPU ops against the plain composition of Candle ops they replace.

use auglocal_core::nn::{add_relu, BatchNorm2d};
use auglocal_core::params::{ParamBuilder, ParamStore, Role};
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

/// The fused residual block against the layers it replaces (`conv_bn` twice, the
/// projection, `add_relu`): identical outputs, gradients and running statistics, with the
/// identity shortcut and with a projection.
#[test]
fn residual_block_matches_its_layers() -> anyhow::Result<()> {
    use auglocal_core::nn::{add_relu, conv_bn, residual_block, Conv2d};
    struct Block {
        store: ParamStore,
        layers: Vec<(Conv2d, BatchNorm2d)>,
    }
    for (c_in, c_out, size, stride) in [(8, 8, 8, 1), (8, 16, 16, 2), (4, 4, 32, 1)] {
        let projected = stride != 1 || c_in != c_out;
        let build = || -> anyhow::Result<Block> {
            let store = ParamStore::new();
            let pb = ParamBuilder::new(&store, &Device::Cpu, 3);
            let mut layers = vec![
                (
                    Conv2d::new(c_in, c_out, 3, stride, 1, &pb.pp("conv1"))?,
                    BatchNorm2d::new(c_out, &pb.pp("bn1"))?,
                ),
                (
                    Conv2d::new(c_out, c_out, 3, 1, 1, &pb.pp("conv2"))?,
                    BatchNorm2d::new(c_out, &pb.pp("bn2"))?,
                ),
            ];
            if projected {
                layers.push((
                    Conv2d::new(c_in, c_out, 1, stride, 0, &pb.pp("down.conv"))?,
                    BatchNorm2d::new(c_out, &pb.pp("down.bn"))?,
                ));
            }
            Ok(Block { store, layers })
        };
        let (fused_block, plain_block) = (build()?, build()?);
        let names: Vec<String> = fused_block
            .store
            .entries()
            .into_iter()
            .map(|e| e.name)
            .collect();
        for name in &names {
            let a = fused_block.store.get(name).unwrap();
            // BatchNorm weights and biases away from their 1 and 0.
            if a.role == Role::Param && name.contains("bn") {
                a.var
                    .set(&Tensor::randn(0.5f32, 0.5, a.var.dims(), &Device::Cpu)?)?;
            }
            plain_block
                .store
                .get(name)
                .unwrap()
                .var
                .set(a.var.as_tensor())?;
        }
        let x = Var::from_tensor(&Tensor::randn(
            0f32,
            1.0,
            (5, c_in, size, size),
            &Device::Cpu,
        )?)?;
        let pair = |i: usize| {
            let (conv, bn) = &fused_block.layers[i];
            (conv, bn)
        };
        let fused = |x: &Tensor, train: bool| {
            residual_block(x, pair(0), pair(1), projected.then(|| pair(2)), train)
        };
        let plain = |x: &Tensor, train: bool| -> anyhow::Result<Tensor> {
            let b = &plain_block;
            let h = conv_bn(&b.layers[0].0, &b.layers[0].1, x, train, true)?;
            let h = conv_bn(&b.layers[1].0, &b.layers[1].1, &h, train, false)?;
            let shortcut = match b.layers.get(2) {
                Some((conv, bn)) => conv_bn(conv, bn, x, train, false)?,
                None => x.clone(),
            };
            Ok(add_relu(&h, &shortcut)?)
        };
        let tag = format!("{c_in}->{c_out} on {size}x{size}, stride {stride}");
        let (yf, yp) = (fused(x.as_tensor(), true)?, plain(x.as_tensor(), true)?);
        assert_eq!(yf.dims(), yp.dims(), "{tag}");
        assert_eq!(max_diff(&yf, &yp)?, 0.0, "forward {tag}");
        assert!(yf.flatten_all()?.min(0)?.to_scalar::<f32>()? >= 0.0);
        let probe = Tensor::randn(0f32, 1.0, yf.dims(), &Device::Cpu)?;
        let gf = (yf * &probe)?.sum_all()?.backward()?;
        let gp = (yp * &probe)?.sum_all()?.backward()?;
        let (dxf, dxp) = (
            gf.get(x.as_tensor()).unwrap(),
            gp.get(x.as_tensor()).unwrap(),
        );
        assert!(max_diff(dxf, &dxf.zeros_like()?)? > 0.0, "{tag}");
        assert_eq!(max_diff(dxf, dxp)?, 0.0, "input gradient {tag}");
        let mut checked = 0;
        for name in &names {
            let (a, b) = (
                fused_block.store.get(name).unwrap().var,
                plain_block.store.get(name).unwrap().var,
            );
            if name.contains("running") || name.contains("num_batches") {
                let (a, b) = (
                    a.as_tensor().to_dtype(candle_core::DType::F32)?,
                    b.as_tensor().to_dtype(candle_core::DType::F32)?,
                );
                assert_eq!(max_diff(&a, &b)?, 0.0, "{name} {tag}");
            } else {
                let (ga, gb) = (
                    gf.get(a.as_tensor()).unwrap(),
                    gp.get(b.as_tensor()).unwrap(),
                );
                assert_eq!(max_diff(ga, gb)?, 0.0, "{name} gradient {tag}");
            }
            checked += 1;
        }
        // Per layer: conv weight, BatchNorm weight and bias, two running statistics and
        // the batch count.
        assert_eq!(checked, 6 * fused_block.layers.len(), "{tag}: {names:?}");
        // Inference: the running statistics, through the layers' own paths.
        assert_eq!(
            max_diff(&fused(x.as_tensor(), false)?, &plain(x.as_tensor(), false)?)?,
            0.0,
            "inference {tag}"
        );
        // A detached input: no input gradient, every parameter's still.
        let y = fused(&x.as_tensor().detach(), true)?;
        let g = y.sum_all()?.backward()?;
        assert!(g.get(x.as_tensor()).is_none(), "{tag}");
        for (conv, _) in &fused_block.layers {
            assert!(g.get(conv.weight()).is_some(), "{tag}");
        }
    }
    Ok(())
}

/// An identity shortcut on a block that changes the shape is refused with what to do.
#[test]
fn residual_block_without_projection_must_keep_the_shape() -> anyhow::Result<()> {
    use auglocal_core::nn::{residual_block, Conv2d};
    let store = ParamStore::new();
    let pb = ParamBuilder::new(&store, &Device::Cpu, 3);
    let x = Tensor::randn(0f32, 1.0, (2, 4, 8, 8), &Device::Cpu)?;
    for (c_out, stride) in [(8, 1), (4, 2)] {
        let pp = pb.pp(format!("{c_out}-{stride}"));
        let conv1 = Conv2d::new(4, c_out, 3, stride, 1, &pp.pp("conv1"))?;
        let bn1 = BatchNorm2d::new(c_out, &pp.pp("bn1"))?;
        let conv2 = Conv2d::new(c_out, c_out, 3, 1, 1, &pp.pp("conv2"))?;
        let bn2 = BatchNorm2d::new(c_out, &pp.pp("bn2"))?;
        for train in [true, false] {
            let err = residual_block(&x, (&conv1, &bn1), (&conv2, &bn2), None, train)
                .unwrap_err()
                .to_string();
            let expected = format!("takes 4 channels to {c_out} at stride {stride}");
            assert!(err.contains(&expected), "{err}");
            assert!(
                err.contains("give the block a projection shortcut"),
                "{err}"
            );
        }
    }
    Ok(())
}
