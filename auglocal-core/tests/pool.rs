//! Max pooling and adaptive average pooling against hand computations and Candle.

use auglocal_core::nn::{adaptive_avg_pool1d, adaptive_avg_pool2d, MaxPool2d};
use candle_core::{Device, Tensor, Var};
use candle_nn::ModuleT;

fn values(t: &Tensor) -> anyhow::Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_vec1::<f32>()?)
}

#[test]
fn resnet_stem_pool_by_hand() -> anyhow::Result<()> {
    // 3x3 stride 2 padding 1 on a 4x4 plane: windows centred on rows/cols 0 and 2.
    #[rustfmt::skip]
    let x = Tensor::new(&[
        1f32, 5.0, 2.0, 0.0,
        3.0, 4.0, 9.0, 1.0,
        0.0, 8.0, 6.0, 7.0,
        2.0, 2.0, 3.0, 4.0,
    ], &Device::Cpu)?.reshape((1, 1, 4, 4))?;
    let x = Var::from_tensor(&x)?;
    let pool = MaxPool2d {
        kernel: 3,
        stride: 2,
        padding: 1,
    };
    assert_eq!(pool.output_size(4), 2);
    let y = pool.forward_t(x.as_tensor(), true)?;
    assert_eq!(y.dims(), &[1, 1, 2, 2]);
    // Top-left window rows 0..2, cols 0..2 -> 5; top-right rows 0..2, cols 1..4 -> 9;
    // bottom-left rows 1..4, cols 0..2 -> 8; bottom-right rows 1..4, cols 1..4 -> 9.
    assert_eq!(values(&y)?, vec![5.0, 9.0, 8.0, 9.0]);
    let dy = Tensor::new(&[1f32, 10.0, 100.0, 1000.0], &Device::Cpu)?.reshape((1, 1, 2, 2))?;
    let grads = (y * dy)?.sum_all()?.backward()?;
    // The 9 at (1, 2) is the maximum of two windows and gets both gradients.
    #[rustfmt::skip]
    let expected = vec![
        0f32, 1.0, 0.0, 0.0,
        0.0, 0.0, 1010.0, 0.0,
        0.0, 100.0, 0.0, 0.0,
        0.0, 0.0, 0.0, 0.0,
    ];
    assert_eq!(values(grads.get(x.as_tensor()).unwrap())?, expected);
    Ok(())
}

#[test]
fn square_pool_matches_candle_and_routes_gradients_to_the_maximum() -> anyhow::Result<()> {
    let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (2, 3, 6, 8), &Device::Cpu)?)?;
    let ours = MaxPool2d::square(2).forward_t(x.as_tensor(), true)?;
    assert_eq!(values(&ours)?, values(&x.as_tensor().max_pool2d(2)?)?);
    let probe = Tensor::randn(0f32, 1.0, ours.dims(), &Device::Cpu)?;
    let grads = (&ours * &probe)?.sum_all()?.backward()?;
    // Random values have no ties: each window's gradient lands on its one maximum, whole
    // (as in PyTorch; Candle's own max-pool gradient divides it by the window area).
    let at_max = x
        .as_tensor()
        .eq(&ours.upsample_nearest2d(6, 8)?)?
        .to_dtype(candle_core::DType::F32)?;
    let expected = (probe.upsample_nearest2d(6, 8)? * at_max)?;
    assert_eq!(
        values(grads.get(x.as_tensor()).unwrap())?,
        values(&expected)?
    );
    Ok(())
}

#[test]
fn pool_rejects_bad_shapes() {
    let pool = MaxPool2d::square(2);
    let small = Tensor::zeros((1, 1, 1, 1), candle_core::DType::F32, &Device::Cpu).unwrap();
    let err = pool.forward_t(&small, false).unwrap_err().to_string();
    assert!(
        err.contains("max pool: input [1, 1, 1, 1] is smaller than the 2x2 window"),
        "{err}"
    );
}

#[test]
fn adaptive_pools_follow_pytorch_bins() -> anyhow::Result<()> {
    // 5 -> 3 bins: [0, 2), [1, 4), [3, 5) (floor(i*5/3) .. ceil((i+1)*5/3)).
    let x = Tensor::new(&[[1f32, 2.0, 3.0, 4.0, 5.0]], &Device::Cpu)?;
    assert_eq!(values(&adaptive_avg_pool1d(&x, 3)?)?, vec![1.5, 3.0, 4.5]);
    // Even bins: one mean per pair.
    let x = Tensor::new(&[[1f32, 3.0, 5.0, 7.0]], &Device::Cpu)?;
    assert_eq!(values(&adaptive_avg_pool1d(&x, 2)?)?, vec![2.0, 6.0]);
    // 1x1 -> 2x2 repeats; 4x4 -> 2x2 averages quadrants.
    let one = Tensor::new(&[7f32], &Device::Cpu)?.reshape((1, 1, 1, 1))?;
    assert_eq!(values(&adaptive_avg_pool2d(&one, 2)?)?, vec![7.0; 4]);
    let x = Tensor::arange(0f32, 16.0, &Device::Cpu)?.reshape((1, 1, 4, 4))?;
    assert_eq!(
        values(&adaptive_avg_pool2d(&x, 2)?)?,
        vec![2.5, 4.5, 10.5, 12.5]
    );
    Ok(())
}
