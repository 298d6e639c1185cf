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
