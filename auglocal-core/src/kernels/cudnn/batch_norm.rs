//! Training-mode batch normalisation on CUDA as Candle custom ops over cuDNN: one call
//! forward (batch statistics and the running averages), one call backward (dx, dw and db).

use std::sync::{Arc, Mutex};

use candle_core::op::BackpropOp;
use candle_core::{
    bail, CpuStorage, CudaStorage, CustomOp3, Layout, Result, Shape, Storage, Tensor,
};

use crate::kernels::cudnn::{self, CudaBatchStats};

/// Training forward over (x, w, b), x (N, C, S) f32; the statistics it computed are left in
/// `stats` for the running averages and for the backward pass.
pub(crate) struct BatchNormTrainCudnn {
    pub eps: f64,
    pub momentum: f64,
    pub running_mean: Tensor,
    pub running_var: Tensor,
    pub stats: Arc<Mutex<Option<CudaBatchStats>>>,
}

/// The running averages that the forward behind `stats` computed, as tensors on the device
/// of `running_mean` (the module's current one).
pub(crate) fn take_running(
    stats: &Mutex<Option<CudaBatchStats>>,
    running_mean: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let mut guard = stats.lock().unwrap_or_else(|e| e.into_inner());
    let Some((mean, var)) = guard.as_mut().and_then(|s| s.running.take()) else {
        bail!("batch norm: the cuDNN forward left no running averages");
    };
    let Storage::Cuda(anchor) = &*running_mean.storage_and_layout().0 else {
        bail!("batch norm on CUDA: the running mean is not on the GPU");
    };
    let device = anchor.device.clone();
    let channels = running_mean.elem_count();
    let wrap = |slice| {
        Tensor::from_storage(
            Storage::Cuda(CudaStorage::wrap_cuda_slice(slice, device.clone())),
            channels,
            BackpropOp::none(),
            false,
        )
    };
    Ok((wrap(mean), wrap(var)))
}

impl CustomOp3 for BatchNormTrainCudnn {
    fn name(&self) -> &'static str {
        "auglocal-batch-norm-cudnn"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        bail!("the cuDNN batch norm runs on CUDA only")
    }

    fn cuda_fwd(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        ws: &CudaStorage,
        wl: &Layout,
        bs: &CudaStorage,
        bl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let (y, stats) = cudnn::batch_norm_train(
            (xs, xl),
            (ws, wl),
            (bs, bl),
            &self.running_mean,
            &self.running_var,
            self.momentum,
            self.eps,
        )?;
        *self.stats.lock().unwrap_or_else(|e| e.into_inner()) = Some(stats);
        Ok((y, xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, c, s) = x.dims3()?;
        let op = BatchNormBackwardCudnn {
            eps: self.eps,
            stats: self.stats.clone(),
        };
        let all = dy.contiguous()?.apply_op3_no_bwd(x, w, &op)?;
        let len = n * c * s;
        let (dw_at, db_at, _) = cudnn::bn_backward_layout(len, c);
        let dx = all.narrow(0, 0, len)?.reshape((n, c, s))?;
        let dw = all.narrow(0, dw_at, c)?;
        let db = all.narrow(0, db_at, c)?;
        Ok((x.track_op().then_some(dx), Some(dw), Some(db)))
    }
}

/// (dy, x, w) -> [dx | dw | db] flattened.
struct BatchNormBackwardCudnn {
    eps: f64,
    stats: Arc<Mutex<Option<CudaBatchStats>>>,
}

impl CustomOp3 for BatchNormBackwardCudnn {
    fn name(&self) -> &'static str {
        "auglocal-batch-norm-cudnn-backward"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        bail!("the cuDNN batch norm runs on CUDA only")
    }

    fn cuda_fwd(
        &self,
        dys: &CudaStorage,
        dyl: &Layout,
        xs: &CudaStorage,
        xl: &Layout,
        ws: &CudaStorage,
        wl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let guard = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        let Some(stats) = guard.as_ref() else {
            bail!("batch norm backward before its forward");
        };
        let out = cudnn::batch_norm_backward((dys, dyl), (xs, xl), (ws, wl), stats, self.eps)?;
        Ok((
            out,
            Shape::from(xl.shape().elem_count() + 2 * wl.shape().elem_count()),
        ))
    }
}

/// Inference over (x, w, b) with the running averages.
pub(crate) struct BatchNormEvalCudnn {
    pub eps: f64,
    pub running_mean: Tensor,
    pub running_var: Tensor,
}

impl CustomOp3 for BatchNormEvalCudnn {
    fn name(&self) -> &'static str {
        "auglocal-batch-norm-cudnn-eval"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        bail!("the cuDNN batch norm runs on CUDA only")
    }

    fn cuda_fwd(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        ws: &CudaStorage,
        wl: &Layout,
        bs: &CudaStorage,
        bl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let y = cudnn::batch_norm_inference(
            (xs, xl),
            (ws, wl),
            (bs, bl),
            &self.running_mean,
            &self.running_var,
            self.eps,
        )?;
        Ok((y, xl.shape().clone()))
    }
}
