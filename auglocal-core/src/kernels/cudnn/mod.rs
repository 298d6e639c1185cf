//! The CUDA paths of our convolution and BatchNorm ops, on cuDNN (cargo feature `cudnn`).
//!
//! Candle 0.11 runs a convolution's backward on CUDA as a naive transposed-convolution
//! kernel (input gradient) and a naive direct convolution or a batch-sized im2col buffer
//! (weight gradient), and BatchNorm as ~15 kernels. Here each is one cuDNN call: forward,
//! backward-data and backward-filter (grouped and depthwise through the group count);
//! BatchNorm's training forward with its running averages, its backward, and inference.
//!
//! Per device and thread we keep one cuDNN handle, the algorithm chosen for each
//! convolution shape, and one workspace that only grows, so a training step allocates no
//! workspace once every shape has been seen. Convolutions in f32 may use TF32 tensor cores,
//! as PyTorch does by default (`torch.backends.cudnn.allow_tf32 = True`); bf16 data
//! accumulates in f32.

pub(crate) mod batch_norm;

use std::cell::RefCell;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::Arc;

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc;
use candle_core::cuda_backend::{CudaDType, CudaDevice, DeviceId};
use candle_core::{bail, CudaStorage, DType, Layout, Result, Storage, Tensor, WithDType};
use cudarc::cudnn::{
    result as raw, sys, ConvBackwardData, ConvBackwardFilter, ConvDescriptor, ConvForward, Cudnn,
    CudnnDataType, FilterDescriptor, TensorDescriptor,
};
use cudarc::driver::{CudaSlice, CudaView, DevicePtr, DevicePtrMut, DeviceRepr, ValidAsZeroBits};

use super::conv::geometry::Geometry;

/// Which of a convolution's three passes an algorithm was chosen for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Pass {
    Forward,
    InputGrad,
    WeightGrad,
}

#[derive(Debug, Clone, Copy)]
enum Algo {
    Forward(sys::cudnnConvolutionFwdAlgo_t),
    InputGrad(sys::cudnnConvolutionBwdDataAlgo_t),
    WeightGrad(sys::cudnnConvolutionBwdFilterAlgo_t),
}

/// A cuDNN handle made through the raw API, for the calls cudarc has no safe wrapper for
/// (BatchNorm); it runs on the same stream as the safe handle.
struct RawHandle(sys::cudnnHandle_t);

impl Drop for RawHandle {
    fn drop(&mut self) {
        // Destroying a handle only fails for an invalid one; nothing to do about it here.
        let _ = unsafe { raw::destroy_handle(self.0) };
    }
}

/// One device's cuDNN state on one thread (cuDNN handles are neither Send nor Sync).
struct Context {
    // Fields drop in this order: the raw handle before the safe one, whose stream keeps the
    // CUDA context alive.
    raw: RawHandle,
    cudnn: Arc<Cudnn>,
    algos: HashMap<(Geometry, DType, Pass), (Algo, usize)>,
    workspace: Option<CudaSlice<u8>>,
}

thread_local! {
    static CONTEXTS: RefCell<HashMap<DeviceId, Context>> = RefCell::new(HashMap::new());
}

impl Context {
    fn new(dev: &CudaDevice) -> Result<Self> {
        let stream = dev.cuda_stream();
        let cudnn = Cudnn::new(stream.clone())?;
        let handle = raw::create_handle()?;
        let raw_handle = RawHandle(handle);
        unsafe { raw::set_stream(handle, stream.cu_stream() as *mut _) }?;
        Ok(Context {
            raw: raw_handle,
            cudnn,
            algos: HashMap::new(),
            workspace: None,
        })
    }

    /// The shared workspace, grown to at least `bytes` (none for 0 bytes).
    fn workspace(&mut self, dev: &CudaDevice, bytes: usize) -> Result<Option<&mut CudaSlice<u8>>> {
        if bytes == 0 {
            return Ok(None);
        }
        if self.workspace.as_ref().is_none_or(|w| w.len() < bytes) {
            // Free the old one first so the two never coexist.
            self.workspace = None;
            self.workspace = Some(unsafe { dev.alloc::<u8>(bytes)? });
        }
        Ok(self.workspace.as_mut())
    }
}

fn with_context<R>(dev: &CudaDevice, f: impl FnOnce(&mut Context) -> Result<R>) -> Result<R> {
    CONTEXTS.with(|cell| {
        let mut contexts = cell.borrow_mut();
        let context = match contexts.entry(dev.id()) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(Context::new(dev)?),
        };
        f(context)
    })
}

/// The element types our cuDNN paths run on.
pub(crate) trait CudnnElement:
    CudnnDataType + DeviceRepr + ValidAsZeroBits + CudaDType + WithDType
{
}
impl CudnnElement for f32 {}
impl CudnnElement for half::bf16 {}
impl CudnnElement for half::f16 {}

/// The contiguous elements of `storage` that `layout` covers.
fn view<'a, T: CudaDType>(
    storage: &'a CudaStorage,
    layout: &Layout,
    what: &str,
) -> Result<CudaView<'a, T>> {
    let Some((start, end)) = layout.contiguous_offsets() else {
        bail!("cuDNN: the {what} must be contiguous");
    };
    Ok(storage.as_cuda_slice::<T>()?.slice(start..end))
}

fn dims(values: [usize; 4]) -> [i32; 4] {
    values.map(|v| v as i32)
}

/// The descriptors of one convolution: its parameters, input, filter and output.
struct ConvDescriptors<T: CudnnDataType> {
    conv: ConvDescriptor<f32>,
    x: TensorDescriptor<T>,
    w: FilterDescriptor<T>,
    y: TensorDescriptor<T>,
}

fn conv_descriptors<T: CudnnDataType>(
    cudnn: &Arc<Cudnn>,
    g: &Geometry,
) -> Result<ConvDescriptors<T>> {
    let (p, s) = (g.padding as i32, g.stride as i32);
    let mut conv = cudnn.create_conv2d::<f32>(
        [p, p],
        [s, s],
        [1, 1],
        sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
    )?;
    conv.set_group_count(g.groups as i32)?;
    if T::DATA_TYPE != sys::cudnnDataType_t::CUDNN_DATA_FLOAT {
        conv.set_math_type(sys::cudnnMathType_t::CUDNN_TENSOR_OP_MATH)?;
    }
    let nchw = sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW;
    Ok(ConvDescriptors {
        conv,
        x: cudnn.create_4d_tensor::<T>(nchw, dims([g.batch, g.c_in, g.h, g.w]))?,
        w: cudnn.create_4d_filter::<T>(nchw, dims([g.c_out, g.c_in / g.groups, g.k, g.k]))?,
        y: cudnn.create_4d_tensor::<T>(nchw, dims([g.batch, g.c_out, g.h_out, g.w_out]))?,
    })
}

/// The algorithm and workspace size for `pass` of `g`, chosen by cuDNN's heuristics once
/// per shape.
fn algorithm<T: CudnnElement>(
    context: &mut Context,
    g: &Geometry,
    pass: Pass,
    d: &ConvDescriptors<T>,
) -> Result<(Algo, usize)> {
    let key = (*g, T::DTYPE, pass);
    if let Some(found) = context.algos.get(&key) {
        return Ok(*found);
    }
    let chosen = match pass {
        Pass::Forward => {
            let op = ConvForward {
                conv: &d.conv,
                x: &d.x,
                w: &d.w,
                y: &d.y,
            };
            let a = op.pick_algorithm()?;
            (Algo::Forward(a), op.get_workspace_size(a)?)
        }
        Pass::InputGrad => {
            let op = ConvBackwardData {
                conv: &d.conv,
                dx: &d.x,
                w: &d.w,
                dy: &d.y,
            };
            let a = op.pick_algorithm()?;
            (Algo::InputGrad(a), op.get_workspace_size(a)?)
        }
        Pass::WeightGrad => {
            let op = ConvBackwardFilter {
                conv: &d.conv,
                x: &d.x,
                dw: &d.w,
                dy: &d.y,
            };
            let a = op.pick_algorithm()?;
            (Algo::WeightGrad(a), op.get_workspace_size(a)?)
        }
    };
    context.algos.insert(key, chosen);
    Ok(chosen)
}

/// Runs one pass of convolution `g`: `a` and `b` are (x, w) for the forward pass, (dy, w)
/// for the input gradient and (dy, x) for the weight gradient. Returns y, dx or dw.
fn conv_pass<T: CudnnElement>(
    dev: &CudaDevice,
    g: &Geometry,
    pass: Pass,
    a: &CudaView<T>,
    b: &CudaView<T>,
) -> Result<CudaSlice<T>> {
    let (x_len, y_len) = (
        g.batch * g.c_in * g.h * g.w,
        g.batch * g.c_out * g.h_out * g.w_out,
    );
    let w_len = g.c_out * (g.c_in / g.groups) * g.k * g.k;
    // cuDNN trusts the descriptors: operands of other sizes would be read out of bounds.
    let (a_len, b_len, out_len) = match pass {
        Pass::Forward => (x_len, w_len, y_len),
        Pass::InputGrad => (y_len, w_len, x_len),
        Pass::WeightGrad => (y_len, x_len, w_len),
    };
    if a.len() != a_len || b.len() != b_len {
        bail!(
            "conv2d on CUDA ({pass:?}): operands of {} and {} elements for {g:?}, expected {a_len} and {b_len}",
            a.len(),
            b.len()
        );
    }
    // Every element is written (beta = 0), so the output need not be zeroed.
    let mut out = unsafe { dev.alloc::<T>(out_len)? };
    let scale = (T::from_f64(1.0), T::from_f64(0.0));
    with_context(dev, |context| {
        let d = conv_descriptors::<T>(&context.cudnn, g)?;
        let (algo, bytes) = algorithm(context, g, pass, &d)?;
        let workspace = context.workspace(dev, bytes)?;
        unsafe {
            match algo {
                Algo::Forward(algo) => ConvForward {
                    conv: &d.conv,
                    x: &d.x,
                    w: &d.w,
                    y: &d.y,
                }
                .launch(algo, workspace, scale, a, b, &mut out)?,
                Algo::InputGrad(algo) => ConvBackwardData {
                    conv: &d.conv,
                    dx: &d.x,
                    w: &d.w,
                    dy: &d.y,
                }
                .launch(algo, workspace, scale, &mut out, b, a)?,
                Algo::WeightGrad(algo) => ConvBackwardFilter {
                    conv: &d.conv,
                    x: &d.x,
                    dw: &d.w,
                    dy: &d.y,
                }
                .launch(algo, workspace, scale, b, &mut out, a)?,
            }
        }
        Ok(())
    })?;
    Ok(out)
}

fn conv_typed<T: CudnnElement>(
    g: &Geometry,
    pass: Pass,
    (a, al): (&CudaStorage, &Layout),
    (b, bl): (&CudaStorage, &Layout),
) -> Result<CudaStorage> {
    let out = conv_pass::<T>(
        &a.device,
        g,
        pass,
        &view(a, al, "first operand")?,
        &view(b, bl, "second operand")?,
    )?;
    Ok(CudaStorage::wrap_cuda_slice(out, a.device.clone()))
}

fn conv(
    g: &Geometry,
    pass: Pass,
    a: (&CudaStorage, &Layout),
    b: (&CudaStorage, &Layout),
) -> Result<CudaStorage> {
    if a.0.dtype() != b.0.dtype() {
        bail!(
            "conv2d on CUDA: operands of different types {:?} and {:?}",
            a.0.dtype(),
            b.0.dtype()
        );
    }
    match a.0.dtype() {
        DType::F32 => conv_typed::<f32>(g, pass, a, b),
        DType::BF16 => conv_typed::<half::bf16>(g, pass, a, b),
        DType::F16 => conv_typed::<half::f16>(g, pass, a, b),
        other => bail!("conv2d on CUDA runs on f32, bf16 or f16, not {other:?}"),
    }
}

/// y from (x, w).
pub(crate) fn conv_forward(
    g: &Geometry,
    x: (&CudaStorage, &Layout),
    w: (&CudaStorage, &Layout),
) -> Result<CudaStorage> {
    conv(g, Pass::Forward, x, w)
}

/// dx from (dy, w).
pub(crate) fn conv_input_grad(
    g: &Geometry,
    dy: (&CudaStorage, &Layout),
    w: (&CudaStorage, &Layout),
) -> Result<CudaStorage> {
    conv(g, Pass::InputGrad, dy, w)
}

/// dw from (dy, x).
pub(crate) fn conv_weight_grad(
    g: &Geometry,
    dy: (&CudaStorage, &Layout),
    x: (&CudaStorage, &Layout),
) -> Result<CudaStorage> {
    conv(g, Pass::WeightGrad, dy, x)
}

/// An f32 tensor descriptor made through the raw API (BatchNorm).
struct RawTensor(sys::cudnnTensorDescriptor_t);

impl RawTensor {
    fn new(shape: [usize; 4]) -> Result<Self> {
        let desc = RawTensor(raw::create_tensor_descriptor()?);
        unsafe {
            raw::set_tensor4d_descriptor(
                desc.0,
                sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW,
                sys::cudnnDataType_t::CUDNN_DATA_FLOAT,
                dims(shape),
            )
        }?;
        Ok(desc)
    }
}

impl Drop for RawTensor {
    fn drop(&mut self) {
        let _ = unsafe { raw::destroy_tensor_descriptor(self.0) };
    }
}

/// What a BatchNorm training forward leaves for its backward pass and for the module's
/// running averages.
pub(crate) struct CudaBatchStats {
    /// Batch mean and 1 / sqrt(biased variance + eps), per channel.
    pub saved_mean: CudaSlice<f32>,
    pub saved_inv_std: CudaSlice<f32>,
    /// The running averages after this batch; taken by the module once the forward is done.
    pub running: Option<(CudaSlice<f32>, CudaSlice<f32>)>,
}

/// The f32 elements of a CUDA tensor (a BatchNorm parameter or running average), copied.
fn copy_of(t: &Tensor, dev: &CudaDevice) -> Result<CudaSlice<f32>> {
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cuda(storage) = &*storage else {
        bail!("batch norm on CUDA: a running average is not on the GPU");
    };
    Ok(dev
        .cuda_stream()
        .clone_dtod(&view::<f32>(storage, layout, "running average")?)?)
}

/// Element count of x (N, C, S) and the descriptors of x and of the per-channel tensors,
/// after checking that every per-channel operand has C elements.
fn bn_shapes(x: &Layout, per_channel: &[(&str, usize)]) -> Result<(usize, RawTensor, RawTensor)> {
    let &[n, c, s] = x.dims() else {
        bail!("batch norm expects (N, C, S), got {:?}", x.dims());
    };
    for &(what, len) in per_channel {
        if len != c {
            bail!("batch norm on CUDA: {what} has {len} values for {c} channels");
        }
    }
    Ok((
        n * c * s,
        RawTensor::new([n, c, s, 1])?,
        RawTensor::new([1, c, 1, 1])?,
    ))
}

/// Where dw and db start in the backward's output buffer (after dx, `len` values), and the
/// buffer's length: each part starts on a 256-byte boundary.
pub(crate) fn bn_backward_layout(len: usize, channels: usize) -> (usize, usize, usize) {
    const ALIGN: usize = 256 / std::mem::size_of::<f32>();
    let dw = len.next_multiple_of(ALIGN);
    let db = (dw + channels).next_multiple_of(ALIGN);
    (dw, db, db + channels)
}

const SPATIAL: sys::cudnnBatchNormMode_t = sys::cudnnBatchNormMode_t::CUDNN_BATCHNORM_SPATIAL;

fn ptr(address: u64) -> *const c_void {
    address as usize as *const c_void
}

fn ptr_mut(address: u64) -> *mut c_void {
    address as usize as *mut c_void
}

/// The checked operands of a BatchNorm forward (training or inference).
struct BnForward<'a> {
    len: usize,
    x_desc: RawTensor,
    bn_desc: RawTensor,
    x: CudaView<'a, f32>,
    w: CudaView<'a, f32>,
    b: CudaView<'a, f32>,
}

impl<'a> BnForward<'a> {
    fn new(
        (xs, xl): (&'a CudaStorage, &Layout),
        (ws, wl): (&'a CudaStorage, &Layout),
        (bs, bl): (&'a CudaStorage, &Layout),
        running_mean: &Tensor,
        running_var: &Tensor,
    ) -> Result<Self> {
        let (len, x_desc, bn_desc) = bn_shapes(
            xl,
            &[
                ("the weight", wl.shape().elem_count()),
                ("the bias", bl.shape().elem_count()),
                ("the running mean", running_mean.elem_count()),
                ("the running variance", running_var.elem_count()),
            ],
        )?;
        Ok(BnForward {
            len,
            x_desc,
            bn_desc,
            x: view(xs, xl, "input")?,
            w: view(ws, wl, "weight")?,
            b: view(bs, bl, "bias")?,
        })
    }
}

/// Training forward of BatchNorm over x (N, C, S) f32 with batch statistics, moving copies
/// of the running averages by `momentum` (cuDNN uses the unbiased variance for them, as
/// PyTorch does).
#[allow(clippy::too_many_arguments)]
pub(crate) fn batch_norm_train(
    (xs, xl): (&CudaStorage, &Layout),
    (ws, wl): (&CudaStorage, &Layout),
    (bs, bl): (&CudaStorage, &Layout),
    running_mean: &Tensor,
    running_var: &Tensor,
    momentum: f64,
    eps: f64,
) -> Result<(CudaStorage, CudaBatchStats)> {
    let dev = &xs.device;
    let stream = dev.cuda_stream();
    let BnForward {
        len,
        x_desc,
        bn_desc,
        x,
        w,
        b,
    } = BnForward::new((xs, xl), (ws, wl), (bs, bl), running_mean, running_var)?;
    let channels = xl.dims()[1];
    let mut y = unsafe { dev.alloc::<f32>(len)? };
    let mut mean = copy_of(running_mean, dev)?;
    let mut var = copy_of(running_var, dev)?;
    let mut saved_mean = unsafe { dev.alloc::<f32>(channels)? };
    let mut saved_inv_std = unsafe { dev.alloc::<f32>(channels)? };
    let (one, zero) = (1f32, 0f32);
    with_context(dev, |context| {
        let (xp, _gx) = x.device_ptr(&stream);
        let (yp, _gy) = y.device_ptr_mut(&stream);
        let (wp, _gw) = w.device_ptr(&stream);
        let (bp, _gb) = b.device_ptr(&stream);
        let (mp, _gm) = mean.device_ptr_mut(&stream);
        let (vp, _gv) = var.device_ptr_mut(&stream);
        let (smp, _gsm) = saved_mean.device_ptr_mut(&stream);
        let (sip, _gsi) = saved_inv_std.device_ptr_mut(&stream);
        unsafe {
            sys::cudnnBatchNormalizationForwardTraining(
                context.raw.0,
                SPATIAL,
                &one as *const f32 as *const c_void,
                &zero as *const f32 as *const c_void,
                x_desc.0,
                ptr(xp),
                x_desc.0,
                ptr_mut(yp),
                bn_desc.0,
                ptr(wp),
                ptr(bp),
                momentum,
                ptr_mut(mp),
                ptr_mut(vp),
                eps,
                ptr_mut(smp),
                ptr_mut(sip),
            )
            .result()?;
        }
        Ok(())
    })?;
    let stats = CudaBatchStats {
        saved_mean,
        saved_inv_std,
        running: Some((mean, var)),
    };
    Ok((CudaStorage::wrap_cuda_slice(y, dev.clone()), stats))
}

/// BatchNorm's backward from (dy, x, w): one buffer holding dx (N·C·S values), then dw
/// and db (C values each) where [`bn_backward_layout`] puts them.
pub(crate) fn batch_norm_backward(
    (dys, dyl): (&CudaStorage, &Layout),
    (xs, xl): (&CudaStorage, &Layout),
    (ws, wl): (&CudaStorage, &Layout),
    stats: &CudaBatchStats,
    eps: f64,
) -> Result<CudaStorage> {
    let dev = &xs.device;
    let stream = dev.cuda_stream();
    let (len, x_desc, bn_desc) = bn_shapes(
        xl,
        &[
            ("the weight", wl.shape().elem_count()),
            ("the saved mean", stats.saved_mean.len()),
            ("the saved inverse std", stats.saved_inv_std.len()),
        ],
    )?;
    if dyl.shape() != xl.shape() {
        bail!(
            "batch norm backward on CUDA: output gradient {:?} for input {:?}",
            dyl.dims(),
            xl.dims()
        );
    }
    let channels = xl.dims()[1];
    let dy = view::<f32>(dys, dyl, "output gradient")?;
    let x = view::<f32>(xs, xl, "input")?;
    let w = view::<f32>(ws, wl, "weight")?;
    let (dw_at, db_at, total) = bn_backward_layout(len, channels);
    // The gaps between the parts are never read.
    let mut out = unsafe { dev.alloc::<f32>(total)? };
    let (one, zero) = (1f32, 0f32);
    let elem = std::mem::size_of::<f32>() as u64;
    with_context(dev, |context| {
        let (dyp, _gdy) = dy.device_ptr(&stream);
        let (xp, _gx) = x.device_ptr(&stream);
        let (wp, _gw) = w.device_ptr(&stream);
        let (op, _go) = out.device_ptr_mut(&stream);
        let (mp, _gm) = stats.saved_mean.device_ptr(&stream);
        let (ip, _gi) = stats.saved_inv_std.device_ptr(&stream);
        let dw = op + dw_at as u64 * elem;
        let db = op + db_at as u64 * elem;
        unsafe {
            sys::cudnnBatchNormalizationBackward(
                context.raw.0,
                SPATIAL,
                &one as *const f32 as *const c_void,
                &zero as *const f32 as *const c_void,
                &one as *const f32 as *const c_void,
                &zero as *const f32 as *const c_void,
                x_desc.0,
                ptr(xp),
                x_desc.0,
                ptr(dyp),
                x_desc.0,
                ptr_mut(op),
                bn_desc.0,
                ptr(wp),
                ptr_mut(dw),
                ptr_mut(db),
                eps,
                ptr(mp),
                ptr(ip),
            )
            .result()?;
        }
        Ok(())
    })?;
    Ok(CudaStorage::wrap_cuda_slice(out, dev.clone()))
}

/// Inference BatchNorm over x (N, C, S) f32 with the running averages.
pub(crate) fn batch_norm_inference(
    (xs, xl): (&CudaStorage, &Layout),
    (ws, wl): (&CudaStorage, &Layout),
    (bs, bl): (&CudaStorage, &Layout),
    running_mean: &Tensor,
    running_var: &Tensor,
    eps: f64,
) -> Result<CudaStorage> {
    let dev = &xs.device;
    let stream = dev.cuda_stream();
    let BnForward {
        len,
        x_desc,
        bn_desc,
        x,
        w,
        b,
    } = BnForward::new((xs, xl), (ws, wl), (bs, bl), running_mean, running_var)?;
    let (mean_storage, mean_layout) = running_mean.storage_and_layout();
    let (var_storage, var_layout) = running_var.storage_and_layout();
    let (Storage::Cuda(mean_storage), Storage::Cuda(var_storage)) = (&*mean_storage, &*var_storage)
    else {
        bail!("batch norm on CUDA: the running averages are not on the GPU");
    };
    let mean = view::<f32>(mean_storage, mean_layout, "running mean")?;
    let var = view::<f32>(var_storage, var_layout, "running variance")?;
    let mut y = unsafe { dev.alloc::<f32>(len)? };
    let (one, zero) = (1f32, 0f32);
    with_context(dev, |context| {
        let (xp, _gx) = x.device_ptr(&stream);
        let (yp, _gy) = y.device_ptr_mut(&stream);
        let (wp, _gw) = w.device_ptr(&stream);
        let (bp, _gb) = b.device_ptr(&stream);
        let (mp, _gm) = mean.device_ptr(&stream);
        let (vp, _gv) = var.device_ptr(&stream);
        unsafe {
            sys::cudnnBatchNormalizationForwardInference(
                context.raw.0,
                SPATIAL,
                &one as *const f32 as *const c_void,
                &zero as *const f32 as *const c_void,
                x_desc.0,
                ptr(xp),
                x_desc.0,
                ptr_mut(yp),
                bn_desc.0,
                ptr(wp),
                ptr(bp),
                ptr(mp),
                ptr(vp),
                eps,
            )
            .result()?;
        }
        Ok(())
    })?;
    Ok(CudaStorage::wrap_cuda_slice(y, dev.clone()))
}
