use candle_core::{DType, Result, Tensor, Var};

use std::sync::{Arc, Mutex};

use crate::kernels::batch_norm::{BatchNormTrain, BatchStats};
use crate::params::{Init, ParamBuilder};

const MOMENTUM: f64 = 0.1;
const EPS: f64 = 1e-5;

/// Batch normalisation with PyTorch's semantics: in training, normalise with the biased
/// batch variance and move the running statistics by momentum 0.1 using the unbiased one;
/// in inference, use the running statistics. `num_batches_tracked` is kept (i64) so that
/// exported weights load into PyTorch with `strict=True`.
#[derive(Debug, Clone)]
pub(crate) struct BatchNorm {
    weight: Var,
    bias: Var,
    running_mean: Var,
    running_var: Var,
    num_batches_tracked: Var,
}

impl BatchNorm {
    fn new(channels: usize, pb: &ParamBuilder) -> crate::Result<Self> {
        let cpu = candle_core::Device::Cpu;
        Ok(BatchNorm {
            weight: pb.param("weight", &[channels], Init::Const(1.0))?,
            bias: pb.param("bias", &[channels], Init::Const(0.0))?,
            running_mean: pb.buffer("running_mean", &Tensor::zeros(channels, DType::F32, &cpu)?)?,
            running_var: pb.buffer("running_var", &Tensor::ones(channels, DType::F32, &cpu)?)?,
            num_batches_tracked: pb
                .buffer("num_batches_tracked", &Tensor::zeros((), DType::I64, &cpu)?)?,
        })
    }

    /// Normalises `x` (N, C, ...) per channel, statistics over every dimension but C; then
    /// a ReLU if `relu` (fused into the same pass on the CPU).
    ///
    /// The CPU's fused op takes `x` in its own shape; the other paths view it as (N, C, S).
    /// (A reshape is a node in Candle's graph, and each accumulates an activation-sized
    /// gradient in the backward pass.)
    ///
    /// Mixed precision: a bf16 or f16 input is normalised in f32 and the result cast back, so
    /// statistics and running averages stay in f32.
    fn forward(&self, x: &Tensor, train: bool, relu: bool) -> Result<Tensor> {
        let dtype = x.dtype();
        let x = x.to_dtype(DType::F32)?;
        let (n, c, s) = match x.dims() {
            &[n, c, ref rest @ ..] => (n, c, rest.iter().product::<usize>()),
            d => candle_core::bail!("batch norm expects (N, C, ...), got {d:?}"),
        };
        if train && x.device().is_cpu() {
            self.check_count(&x, n * s)?;
            return self
                .forward_train_fused(&x, (n * s) as f64, relu)?
                .to_dtype(dtype);
        }
        let flat = x.reshape((n, c, s))?;
        let y = if x.device().is_cuda() {
            self.forward_cuda(&flat, train)?
        } else {
            self.forward_generic(&flat, train)?
        };
        let y = if relu { y.relu()? } else { y };
        y.reshape(x.dims())?.to_dtype(dtype)
    }

    /// The CUDA path: cuDNN in a build with the `cudnn` feature.
    #[cfg(feature = "cudnn")]
    fn forward_cuda(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        use crate::kernels::cudnn::batch_norm::{
            take_running, BatchNormEvalCudnn, BatchNormTrainCudnn,
        };
        let x = x.contiguous()?;
        let (w, b) = (self.weight.as_tensor(), self.bias.as_tensor());
        if !train {
            let op = BatchNormEvalCudnn {
                eps: EPS,
                running_mean: self.running_mean.as_tensor().clone(),
                running_var: self.running_var.as_tensor().clone(),
            };
            return x.apply_op3_no_bwd(w, b, &op);
        }
        let (n, _, s) = x.dims3()?;
        self.check_count(&x, n * s)?;
        let op = BatchNormTrainCudnn {
            eps: EPS,
            momentum: MOMENTUM,
            running_mean: self.running_mean.as_tensor().clone(),
            running_var: self.running_var.as_tensor().clone(),
            stats: Arc::new(Mutex::new(None)),
        };
        let stats = op.stats.clone();
        let y = x.apply_op3(w, b, op)?;
        let (mean, var) = take_running(&stats, self.running_mean.as_tensor())?;
        self.running_mean.set(&mean)?;
        self.running_var.set(&var)?;
        self.count_batch()?;
        Ok(y)
    }

    /// The CUDA path: Candle's ops in a build without cuDNN.
    #[cfg(not(feature = "cudnn"))]
    fn forward_cuda(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_generic(x, train)
    }

    /// Checks there is more than one value per channel to take statistics over.
    pub(crate) fn check_count(&self, x: &Tensor, count: usize) -> Result<()> {
        if count < 2 {
            candle_core::bail!(
                "BatchNorm in training needs more than one value per channel, got input {:?}; use a batch size of at least 2",
                x.dims()
            );
        }
        Ok(())
    }

    /// Batch normalisation from Candle ops, for devices without a fused kernel.
    fn forward_generic(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (n, c, s) = x.dims3()?;
        let per_channel = |t: &Tensor| t.reshape((1, c, 1));
        if train {
            self.check_count(x, n * s)?;
            let count = (n * s) as f64;
            let mean = x.sum_keepdim(2)?.sum_keepdim(0)?.affine(1.0 / count, 0.0)?;
            let centred = x.broadcast_sub(&mean)?;
            let var = centred
                .sqr()?
                .sum_keepdim(2)?
                .sum_keepdim(0)?
                .affine(1.0 / count, 0.0)?;
            self.update_running(
                &mean.detach().flatten_all()?,
                &var.detach().flatten_all()?,
                count,
            )?;
            let inv_std = (var + EPS)?.sqrt()?.recip()?;
            let scale = inv_std.broadcast_mul(&per_channel(self.weight.as_tensor())?)?;
            let y = centred.broadcast_mul(&scale)?;
            return y.broadcast_add(&per_channel(self.bias.as_tensor())?);
        }
        // Inference folds the running statistics into one scale and shift per channel.
        let inv_std = (self.running_var.as_tensor() + EPS)?.sqrt()?.recip()?;
        let scale = (self.weight.as_tensor() * inv_std)?;
        let shift = (self.bias.as_tensor() - (self.running_mean.as_tensor() * &scale)?)?;
        x.broadcast_mul(&per_channel(&scale)?)?
            .broadcast_add(&per_channel(&shift)?)
    }

    /// The CPU path: one fused op, statistics handed back for the running averages.
    fn forward_train_fused(&self, x: &Tensor, count: f64, relu: bool) -> Result<Tensor> {
        let op = self.train_op(relu);
        let stats = op.stats.clone();
        let y = x
            .contiguous()?
            .apply_op3(self.weight.as_tensor(), self.bias.as_tensor(), op)?;
        self.finish_train(&stats, count, x.device())?;
        Ok(y)
    }

    /// A fused training op for this layer (its statistics left in its `stats`).
    pub(crate) fn train_op(&self, relu: bool) -> BatchNormTrain {
        BatchNormTrain {
            eps: EPS,
            relu,
            stats: Arc::new(Mutex::new(None)),
        }
    }

    /// After a training op's forward pass over `count` values per channel: moves the
    /// running statistics by the batch's.
    pub(crate) fn finish_train(
        &self,
        stats: &Mutex<Option<BatchStats>>,
        count: f64,
        device: &candle_core::Device,
    ) -> Result<()> {
        let batch = stats.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let Some(batch) = batch else {
            candle_core::bail!("batch norm: the fused op left no statistics");
        };
        let mean = Tensor::from_slice(&batch.mean, batch.mean.len(), device)?;
        let var = Tensor::from_slice(&batch.var, batch.var.len(), device)?;
        self.update_running(&mean, &var, count)
    }

    /// The learned scale and shift.
    pub(crate) fn affine(&self) -> (&Tensor, &Tensor) {
        (self.weight.as_tensor(), self.bias.as_tensor())
    }

    fn update_running(&self, mean: &Tensor, var: &Tensor, count: f64) -> Result<()> {
        let unbiased = var.affine(count / (count - 1.0), 0.0)?;
        let rm = (self.running_mean.as_tensor().affine(1.0 - MOMENTUM, 0.0)?
            + mean.affine(MOMENTUM, 0.0)?)?;
        let rv = (self.running_var.as_tensor().affine(1.0 - MOMENTUM, 0.0)?
            + unbiased.affine(MOMENTUM, 0.0)?)?;
        self.running_mean.set(&rm)?;
        self.running_var.set(&rv)?;
        self.count_batch()
    }

    /// One more batch in `num_batches_tracked`, on the device (no read back to the host,
    /// which would wait for the GPU at every layer).
    fn count_batch(&self) -> Result<()> {
        let tracked = self.num_batches_tracked.as_tensor();
        self.num_batches_tracked
            .set(&(tracked + tracked.ones_like()?)?)
    }
}

/// BatchNorm over (N, C, H, W), statistics per channel.
#[derive(Debug, Clone)]
pub struct BatchNorm2d(BatchNorm);

impl BatchNorm2d {
    /// BatchNorm of `channels` channels: `weight` 1, `bias` 0, `running_mean` 0,
    /// `running_var` 1 and `num_batches_tracked` 0, named through `pb`.
    pub fn new(channels: usize, pb: &ParamBuilder) -> crate::Result<Self> {
        Ok(BatchNorm2d(BatchNorm::new(channels, pb)?))
    }
}

impl BatchNorm2d {
    pub(crate) fn inner(&self) -> &BatchNorm {
        &self.0
    }

    /// `relu(bn(x))`, fused on the CPU.
    pub fn forward_relu(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        x.dims4()?;
        self.0.forward(x, train, true)
    }
}

impl candle_nn::ModuleT for BatchNorm2d {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        x.dims4()?;
        self.0.forward(x, train, false)
    }
}

/// BatchNorm over (N, C) features.
#[derive(Debug, Clone)]
pub struct BatchNorm1d(BatchNorm);

impl BatchNorm1d {
    /// BatchNorm of `features` features, with the tensors and starting values of
    /// [`BatchNorm2d::new`].
    pub fn new(features: usize, pb: &ParamBuilder) -> crate::Result<Self> {
        Ok(BatchNorm1d(BatchNorm::new(features, pb)?))
    }
}

impl candle_nn::ModuleT for BatchNorm1d {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        x.dims2()?;
        self.0.forward(x, train, false)
    }
}
