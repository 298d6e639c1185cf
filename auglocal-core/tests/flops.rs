//! Multiply-adds reported by single layers, against hand counts.

use auglocal_core::flops::{self, Macs};
use auglocal_core::nn::{Conv2d, Linear};
use auglocal_core::params::{ParamBuilder, ParamStore};
use candle_core::{Device, Tensor, Var};
use candle_nn::ModuleT;

fn zeros(shape: &[usize]) -> Tensor {
    Tensor::zeros(shape, candle_core::DType::F32, &Device::Cpu).unwrap()
}

#[test]
fn convolutions_count_output_elements_times_their_dot_products() -> anyhow::Result<()> {
    let store = ParamStore::new();
    let pb = ParamBuilder::new(&store, &Device::Cpu, 0);
    // 3 -> 8 channels, 3x3, stride 2, padding 1 on 9x9: a 5x5 output, each of its 2 x 8 x 25
    // elements a dot product of 3 x 3 x 3 = 27 terms: 2 * 8 * 25 * 27 = 10,800.
    let conv = Conv2d::new(3, 8, 3, 2, 1, &pb.pp("a"))?;
    let (y, macs) = flops::count(|| conv.forward_t(&zeros(&[2, 3, 9, 9]), true));
    assert_eq!(y?.dims(), &[2, 8, 5, 5]);
    // The input is not tracked (images or a detached tensor): no input gradient.
    assert_eq!(
        macs,
        Macs {
            forward: 10_800,
            input_grad: 0,
            weight_grad: 10_800,
            layers: 1,
        }
    );
    // 4 groups of 2 -> 2 channels, 3x3 on 6x6 with padding 1: 8 * 36 outputs, 2 * 9 terms
    // each: 5,184. A tracked input (a variable) needs its gradient.
    let grouped = Conv2d::grouped(8, 8, 3, 1, 1, 4, &pb.pp("g"))?;
    let x = Var::from_tensor(&zeros(&[1, 8, 6, 6]))?;
    let (_, macs) = flops::count(|| grouped.forward_t(x.as_tensor(), true));
    assert_eq!(
        macs,
        Macs {
            forward: 5_184,
            input_grad: 5_184,
            weight_grad: 5_184,
            layers: 1,
        }
    );
    // Depthwise, 1x1: one multiply-add per output element.
    let depthwise = Conv2d::grouped(8, 8, 1, 1, 0, 8, &pb.pp("d"))?;
    let (_, macs) = flops::count(|| depthwise.forward_t(&zeros(&[1, 8, 6, 6]), true));
    assert_eq!(macs.forward, 8 * 36);
    Ok(())
}

#[test]
fn linear_layers_count_rows_times_inputs_times_outputs() -> anyhow::Result<()> {
    let store = ParamStore::new();
    let pb = ParamBuilder::new(&store, &Device::Cpu, 0);
    let fc = Linear::new(5, 7, true, &pb.pp("fc"))?;
    let x = Var::from_tensor(&zeros(&[4, 5]))?;
    let (_, macs) = flops::count(|| fc.forward_t(x.as_tensor(), true));
    assert_eq!(
        macs,
        Macs {
            forward: 140,
            input_grad: 140,
            weight_grad: 140,
            layers: 1,
        }
    );
    assert_eq!(macs.backward(), 280);
    assert_eq!(macs.total(), 420);
    Ok(())
}

#[test]
fn counting_is_scoped_and_nests() -> anyhow::Result<()> {
    let store = ParamStore::new();
    let pb = ParamBuilder::new(&store, &Device::Cpu, 0);
    let fc = Linear::new(5, 7, false, &pb.pp("fc"))?;
    let x = zeros(&[1, 5]);
    // Outside a count nothing is recorded, and nothing leaks into a later count.
    fc.forward_t(&x, true)?;
    let (inner, outer) = flops::count(|| {
        let inner = flops::count(|| fc.forward_t(&x, true));
        fc.forward_t(&x, true).map(|_| inner.1)
    });
    assert_eq!(inner?.forward, 35);
    assert_eq!(outer.forward, 70);
    assert_eq!(flops::human(69_124_736), "69.12 M");
    assert_eq!(flops::human(12_345_000_000), "12.3 G");
    Ok(())
}
