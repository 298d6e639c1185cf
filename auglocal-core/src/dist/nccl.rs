//! Sums of GPU tensors over a stage's replicas with NCCL (feature `nccl`): one
//! communicator per stage, on the stream of Candle's device, so the sum is ordered with the
//! step's kernels and never leaves the GPU. The communicator's unique id is made by the
//! stage's first replica and broadcast over MPI.

use candle_core::op::BackpropOp;
use candle_core::{CudaDevice, CudaStorage, Device, Storage, Tensor};
use cudarc::nccl::{Comm, Id, ReduceOp};
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::traits::*;

use crate::error::{Error, Result};

/// A stage's replicas, joined by NCCL on one GPU each.
pub(super) struct NcclReplicas {
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

impl NcclReplicas {
    /// Joins the replicas of `replicas` (an MPI communicator of this stage's processes,
    /// this one among them) on `device`. Every replica calls this at the same point.
    pub(super) fn join(replicas: &SimpleCommunicator, device: &CudaDevice) -> Result<Self> {
        let rank = replicas.rank();
        let mut internal = [0 as std::ffi::c_char; 128];
        if rank == 0 {
            internal = *Id::new().map_err(|e| failed("unique id", e))?.internal();
        }
        replicas
            .process_at_rank(0)
            .broadcast_into(&mut internal[..]);
        let comm = Comm::from_rank(
            device.cuda_stream(),
            rank as usize,
            replicas.size() as usize,
            Id::uninit(internal),
        )
        .map_err(|e| failed("communicator setup", e))?;
        Ok(NcclReplicas {
            comm,
            device: device.clone(),
        })
    }

    /// The element-wise sum of the flat f32 tensor `flat` over the replicas, or `None` when
    /// `flat` is not on this GPU (then MPI sums it through host memory).
    pub(super) fn sum(&self, flat: &Tensor) -> Result<Option<Tensor>> {
        if !flat
            .device()
            .same_device(&Device::Cuda(self.device.clone()))
        {
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
        Ok(Some(Tensor::from_storage(
            Storage::Cuda(CudaStorage::wrap_cuda_slice(out, self.device.clone())),
            n,
            BackpropOp::none(),
            false,
        )))
    }
}
