//! Multiply-add counts of whole training steps on real models, against hand computations.
//! A k x k convolution from c_in to c_out channels with an h x w output costs
//! h * w * c_out * c_in * k * k multiply-adds per image.

mod common;

use auglocal_core::flops::{self, Macs};
use auglocal_core::{Engine, Method};
use candle_core::{Device, Tensor};

fn engine(model: &str, method: Method) -> anyhow::Result<Engine> {
    common::engine(&Device::Cpu, model, method, 0)
}

// Convolutions of the CIFAR ResNets at 32x32, per image.
const STEM: u64 = 32 * 32 * 16 * 3 * 9; // 442,368
const CONV_16: u64 = 32 * 32 * 16 * 16 * 9; // 3x3 16->16 at 32x32: 2,359,296
const CONV_DOWN: u64 = 16 * 16 * 32 * 16 * 9; // 3x3 16->32 stride 2: 1,179,648, as 32->64
const CONV_32: u64 = 16 * 16 * 32 * 32 * 9; // 3x3 32->32 at 16x16: 2,359,296, as 64->64 at 8x8
const PROJECTION: u64 = 16 * 16 * 32 * 16; // 1x1 16->32 stride 2: 131,072, as 32->64
const FC: u64 = 64 * 10;

#[test]
fn resnet32_bp_step_by_hand() -> anyhow::Result<()> {
    let step = flops::step_flops(&engine("resnet32", Method::named("bp")?)?, [3, 32, 32])?;
    // Stem, 5 blocks of two 16->16 convs, then per stage: a downsampling block (3x3 stride 2,
    // 3x3, 1x1 projection) and 4 blocks of two convs, whose MACs equal stage 2's.
    let stage = CONV_DOWN + CONV_32 + PROJECTION + 8 * CONV_32;
    let inference = STEM + 10 * CONV_16 + 2 * stage + FC;
    assert_eq!(inference, 69_124_736);
    assert_eq!(step.inference(), inference);
    assert_eq!(
        step.step(),
        Macs {
            forward: inference,
            // Every layer but the stem, which reads the images, passes a gradient back.
            input_grad: inference - STEM,
            weight_grad: inference,
            // The stem, 15 blocks of two convolutions, two projections, the output layer.
            layers: 1 + 30 + 2 + 1,
        }
    );
    assert_eq!(step.auxiliary(), Macs::default());
    assert_eq!(step.modules.len(), 1);

    // Recomputing runs every unit but the last forward a second time: the whole backbone
    // less the last block (two 64->64 convs at 8x8, the size of two CONV_32).
    let mut recomputing = engine("resnet32", Method::named("bp")?)?;
    recomputing.set_recompute(true);
    let again = flops::step_flops(&recomputing, [3, 32, 32])?;
    let repeated = inference - FC - 2 * CONV_32;
    assert_eq!(again.modules[0].recomputed_forward, repeated);
    assert_eq!(again.step().forward, inference + repeated);
    assert_eq!(again.step().backward(), step.step().backward());
    assert_eq!(again.inference(), inference);
    Ok(())
}

#[test]
fn resnet8_auglocal_step_by_hand() -> anyhow::Result<()> {
    // d = 1: K = 3 modules, [stem], [block 1], [blocks 2, 3 + output layer]. Units 0 and 1
    // each get one auxiliary block copied from unit 3 (16 -> 64, stride 2: its 3x3 convs at
    // 16x16 and a 1x1 projection) and a BatchNorm1d + linear head.
    let engine = engine("resnet8", Method::auglocal(1, 0.0)?)?;
    let before: Vec<Tensor> = engine
        .store()
        .entries()
        .iter()
        .map(|e| e.var.as_tensor().copy())
        .collect::<candle_core::Result<_>>()?;
    let step = flops::step_flops(&engine, [3, 32, 32])?;
    let aux = 16 * 16 * 64 * 16 * 9 + 16 * 16 * 64 * 64 * 9 + 16 * 16 * 64 * 16 + FC;
    assert_eq!(aux, 12_059_264);
    let block1 = 2 * CONV_16;
    let blocks23 = 2 * (CONV_DOWN + CONV_32 + PROJECTION);
    let all = |f, layers| Macs {
        forward: f,
        input_grad: f,
        weight_grad: f,
        layers,
    };
    let m = &step.modules;
    assert_eq!((m[0].first_unit, m[0].last_unit), (0, 0));
    assert_eq!((m[2].first_unit, m[2].last_unit), (2, 3));
    // The first layers of each module read a detached input: no input gradient.
    assert_eq!(
        m[0].units,
        Macs {
            forward: STEM,
            input_grad: 0,
            weight_grad: STEM,
            layers: 1,
        }
    );
    assert_eq!(
        m[1].units,
        Macs {
            forward: block1,
            input_grad: CONV_16,
            weight_grad: block1,
            layers: 2,
        }
    );
    assert_eq!(
        m[2].units,
        Macs {
            forward: blocks23,
            input_grad: blocks23 - CONV_DOWN - PROJECTION,
            weight_grad: blocks23,
            layers: 6,
        }
    );
    assert_eq!(
        (m[0].loss, m[1].loss, m[2].loss),
        // An auxiliary block's two convolutions and projection, then the linear head.
        (all(aux, 4), all(aux, 4), all(FC, 1))
    );
    assert_eq!(step.inference(), STEM + block1 + blocks23 + FC);
    assert_eq!(step.auxiliary().forward, 2 * aux);
    assert_eq!(step.step().forward, 36_620_160);

    // Counting leaves every tensor, BatchNorm statistics included, as it was.
    for (entry, old) in engine.store().entries().iter().zip(&before) {
        let diff = (entry.var.as_tensor().to_dtype(candle_core::DType::F64)?
            - old.to_dtype(candle_core::DType::F64)?)?
        .abs()?
        .sum_all()?
        .to_scalar::<f64>()?;
        assert_eq!(diff, 0.0, "{} changed", entry.name);
    }
    Ok(())
}
