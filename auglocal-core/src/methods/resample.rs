//! Resampling of feature maps as separable linear maps, `Y = R X C^T` on every (N, C) plane.
//!
//! Adaptive average pooling, padded average pooling and bilinear upsampling all act on rows
//! and columns independently, so each is two small matrix products. Written this way they
//! are differentiable on every device (Candle has no backward pass for bilinear upsampling
//! nor for pooling whose window does not tile the input).

use candle_core::{Device, Result, Tensor};

/// Applies `rows` (OH, H) and `cols` (OW, W) to every plane of `x` (N, C, H, W).
pub fn resample(x: &Tensor, rows: &Tensor, cols: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let (oh, rh) = rows.dims2()?;
    let (ow, rw) = cols.dims2()?;
    if (rh, rw) != (h, w) {
        candle_core::bail!(
            "resample: maps for {rh}x{rw} planes applied to input {:?}",
            x.dims()
        );
    }
    // Mixed precision: the (f32) maps take the input's type.
    let (rows, cols) = (&rows.to_dtype(x.dtype())?, &cols.to_dtype(x.dtype())?);
    // Columns: (N*C*H, W) x (W, OW).
    let y = x.reshape((n * c * h, w))?.matmul(&cols.t()?)?;
    // Rows: bring H last, (N*C*OW, H) x (H, OH), then put it back.
    let y = y.reshape((n * c, h, ow))?.transpose(1, 2)?.contiguous()?;
    let y = y.reshape((n * c * ow, h))?.matmul(&rows.t()?)?;
    y.reshape((n * c, ow, oh))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((n, c, oh, ow))
}

fn matrix(rows: usize, cols: usize, values: Vec<f32>, device: &Device) -> Result<Tensor> {
    Tensor::from_vec(values, (rows, cols), device)
}

/// PyTorch's `AdaptiveAvgPool` along one axis: output bin `i` averages inputs
/// `floor(i*n/m) .. ceil((i+1)*n/m)`.
pub fn adaptive_avg(input: usize, output: usize, device: &Device) -> Result<Tensor> {
    let mut m = vec![0f32; output * input];
    for i in 0..output {
        let start = i * input / output;
        let end = ((i + 1) * input).div_ceil(output);
        for j in start..end {
            m[i * input + j] = 1.0 / (end - start) as f32;
        }
    }
    matrix(output, input, m, device)
}

/// PyTorch's `AvgPool` along one axis with window and stride `kernel`, zero padding `pad`
/// on both sides counted in the average (`count_include_pad`), floor output size.
pub fn avg_pool(input: usize, kernel: usize, pad: usize, device: &Device) -> Result<Tensor> {
    let output = (input + 2 * pad - kernel) / kernel + 1;
    let mut m = vec![0f32; output * input];
    for i in 0..output {
        for k in 0..kernel {
            // Position in the padded input; padding contributes zeros.
            let p = i * kernel + k;
            if p >= pad && p - pad < input {
                m[i * input + p - pad] = 1.0 / kernel as f32;
            }
        }
    }
    matrix(output, input, m, device)
}

/// Bilinear interpolation along one axis with `align_corners=True`: output `i` samples the
/// input at `i * (n-1)/(m-1)`.
pub fn bilinear(input: usize, output: usize, device: &Device) -> Result<Tensor> {
    let mut m = vec![0f32; output * input];
    let scale = if output > 1 {
        (input - 1) as f64 / (output - 1) as f64
    } else {
        0.0
    };
    for i in 0..output {
        let src = i as f64 * scale;
        let lo = (src.floor() as usize).min(input - 1);
        let hi = (lo + 1).min(input - 1);
        let frac = (src - lo as f64) as f32;
        m[i * input + lo] += 1.0 - frac;
        m[i * input + hi] += frac;
    }
    matrix(output, input, m, device)
}
