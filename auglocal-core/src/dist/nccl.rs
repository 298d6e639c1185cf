//! GPU tensors between processes with NCCL (feature `nccl`): one communicator over every
//! rank for the activations a stage passes on, and one per stage for the sums over its
//! replicas. Both run on the stream of Candle's device, so they are ordered with the step's
//! kernels and the data never leaves the GPU. A communicator's unique id is made by the
//! group's first rank and broadcast over MPI.

use candle_core::cuda::CudaDType;
use candle_core::op::BackpropOp;
use candle_core::{CudaDevice, CudaStorage, DType, Device, Shape, Storage, Tensor};
use cudarc::driver::{DeviceRepr, ValidAsZeroBits};
use cudarc::nccl::{Comm, Id, NcclType, ReduceOp};
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::traits::*;

use crate::error::{Error, Result};

/// Ranks joined by NCCL, one GPU each.
pub(super) struct NcclGroup {
    comm: Comm,
    device: CudaDevice,
}

fn failed(operation: &'static str, e: impl std::fmt::Debug) -> Error {
    Error::Transport {
        transport: "NCCL",
        operation,
        problem: format!("{e:?}"),
    }
}

/// A tensor's values as a flat slice of its element type, and the element type's NCCL
/// calls; one instance per element type that moves between ranks.
trait Element: NcclType + CudaDType + DeviceRepr + ValidAsZeroBits {}
impl Element for f32 {}
impl Element for u32 {}
impl Element for half::bf16 {}
impl Element for i64 {}
impl Element for u8 {}

impl NcclGroup {
    /// Joins the ranks of `group` (an MPI communicator this process belongs to) on
    /// `device`; NCCL ranks are the group's ranks. Every member calls this at the same point.
    pub(super) fn join(group: &SimpleCommunicator, device: &CudaDevice) -> Result<Self> {
        let rank = group.rank();
        let mut internal = [0 as std::ffi::c_char; 128];
        if rank == 0 {
            internal = *Id::new().map_err(|e| failed("unique id", e))?.internal();
        }
        group.process_at_rank(0).broadcast_into(&mut internal[..]);
        let comm = Comm::from_rank(
            device.cuda_stream(),
            rank as usize,
            group.size() as usize,
            Id::uninit(internal),
        )
        .map_err(|e| failed("communicator setup", e))?;
        Ok(NcclGroup {
            comm,
            device: device.clone(),
        })
    }

    /// Whether `tensor` lives on this group's GPU.
    pub(super) fn holds(&self, tensor: &Tensor) -> bool {
        tensor
            .device()
            .same_device(&Device::Cuda(self.device.clone()))
    }

    /// The element-wise sum of the flat f32 tensor `flat` over the group, or `None` when
    /// `flat` is not on this GPU (then MPI sums it through host memory).
    pub(super) fn sum(&self, flat: &Tensor) -> Result<Option<Tensor>> {
        if !self.holds(flat) {
            return Ok(None);
        }
        let flat = flat.contiguous()?;
        let n = flat.elem_count();
        let mut out = self.device.alloc_zeros::<f32>(n)?;
        {
            let (storage, layout) = flat.storage_and_layout();
            let Storage::Cuda(storage) = &*storage else {
                return Ok(None);
            };
            let start = layout.start_offset();
            let input = storage.as_cuda_slice::<f32>()?.slice(start..start + n);
            self.comm
                .all_reduce(&input, &mut out, &ReduceOp::Sum)
                .map_err(|e| failed("all-reduce of gradients", e))?;
        }
        Ok(Some(self.wrap(out, n)))
    }

    /// Sends `tensor` (on this GPU) to group rank `to`, queued on the stream: the stream
    /// goes on once `to` has posted the matching [`NcclGroup::receive`].
    pub(super) fn send(&self, tensor: &Tensor, to: usize) -> Result<()> {
        match tensor.dtype() {
            DType::F32 => self.send_as::<f32>(tensor, to),
            DType::BF16 => self.send_as::<half::bf16>(tensor, to),
            DType::U32 => self.send_as::<u32>(tensor, to),
            DType::I64 => self.send_as::<i64>(tensor, to),
            DType::U8 => self.send_as::<u8>(tensor, to),
            other => Err(failed(
                "send",
                format!("no NCCL path for {other:?} tensors"),
            )),
        }
    }

    /// Receives a tensor of `shape` and `dtype` that group rank `from` sent.
    pub(super) fn receive(&self, from: usize, shape: Shape, dtype: DType) -> Result<Tensor> {
        match dtype {
            DType::F32 => self.receive_as::<f32>(from, shape),
            DType::BF16 => self.receive_as::<half::bf16>(from, shape),
            DType::U32 => self.receive_as::<u32>(from, shape),
            DType::I64 => self.receive_as::<i64>(from, shape),
            DType::U8 => self.receive_as::<u8>(from, shape),
            other => Err(failed(
                "receive",
                format!("no NCCL path for {other:?} tensors"),
            )),
        }
    }

    fn send_as<T: Element>(&self, tensor: &Tensor, to: usize) -> Result<()> {
        let tensor = tensor.contiguous()?;
        let n = tensor.elem_count();
        let (storage, layout) = tensor.storage_and_layout();
        let Storage::Cuda(storage) = &*storage else {
            return Err(failed("send", "the tensor is not on the GPU"));
        };
        let start = layout.start_offset();
        let data = storage.as_cuda_slice::<T>()?.slice(start..start + n);
        // The tensor may be dropped at once: Candle frees device memory in stream order,
        // after the send.
        self.comm
            .send(&data, to as i32)
            .map_err(|e| failed("send of activations", e))
    }

    fn receive_as<T: Element>(&self, from: usize, shape: Shape) -> Result<Tensor> {
        let n = shape.elem_count();
        let mut data = self.device.alloc_zeros::<T>(n)?;
        self.comm
            .recv(&mut data, from as i32)
            .map_err(|e| failed("receive of activations", e))?;
        Ok(Tensor::from_storage(
            Storage::Cuda(T::wrap_cuda_slice(data, self.device.clone())),
            shape,
            BackpropOp::none(),
            false,
        ))
    }

    fn wrap(&self, slice: cudarc::driver::CudaSlice<f32>, n: usize) -> Tensor {
        Tensor::from_storage(
            Storage::Cuda(CudaStorage::wrap_cuda_slice(slice, self.device.clone())),
            n,
            BackpropOp::none(),
            false,
        )
    }
}
