//! Several processes training one network: pipeline stages and data-parallel replicas.
//!
//! A run of `world` processes has `stages` pipeline stages and `world / stages`
//! data-parallel replicas. Stage `s` trains a contiguous range of the plan's modules
//! ([`partition`]): it takes batch `t` as the previous stage's detached output (stage 0:
//! from the data), trains its modules, and passes its own output on. Module `m + 1` needs
//! only `h_m(t)`, computed before module `m`'s update of step `t`, so a pipelined run is bit
//! for bit the single-process run on the CPU, whatever the number of stages. Replicas of a
//! stage each take a slice of every batch and sum each module's scaled gradients before its
//! update; BatchNorm statistics stay per replica, as in PyTorch's DDP.
//!
//! [`Comm`] is all the trainer asks of the transport: sums over a stage's replicas and
//! messages between ranks. [`Single`] is the one-process run; `Mpi` (feature `mpi`) runs
//! over the system's MPI (launched by `mpirun` or Slurm's `srun`); with feature `nccl`, GPU
//! tensors of batches and gradient sums go over NCCL instead, GPU to GPU.

mod comm;
pub mod message;
#[cfg(feature = "mpi")]
mod mpi;
#[cfg(feature = "nccl")]
mod nccl;
pub mod partition;
mod topology;

pub use comm::{Comm, CommSums, PendingSum, ReplicaSums, Single, Tag};
#[cfg(feature = "mpi")]
pub use mpi::{Aborter, Mpi};
pub use topology::Topology;

/// How many processes the launcher that started this one started in all (`mpirun`'s
/// `OMPI_COMM_WORLD_SIZE`, PMI's `PMI_SIZE`, Slurm's `SLURM_NTASKS` in an `srun` step), or
/// `None` when no launcher is in sight.
pub fn launched_processes() -> Option<usize> {
    let read = |name: &str| std::env::var(name).ok()?.parse::<usize>().ok();
    read("OMPI_COMM_WORLD_SIZE")
        .or_else(|| read("PMI_SIZE"))
        .or_else(|| {
            std::env::var("SLURM_STEP_ID")
                .ok()
                .and_then(|_| read("SLURM_NTASKS"))
        })
}

/// This process's rank among the processes of its run on the same machine (`mpirun`'s
/// `OMPI_COMM_WORLD_LOCAL_RANK`, MPICH's `MPI_LOCALRANKID`, Slurm's `SLURM_LOCALID`): the
/// GPU it takes, one each.
pub fn local_rank() -> Option<usize> {
    let read = |name: &str| std::env::var(name).ok()?.parse::<usize>().ok();
    read("OMPI_COMM_WORLD_LOCAL_RANK")
        .or_else(|| read("MPI_LOCALRANKID"))
        .or_else(|| read("SLURM_LOCALID"))
}

/// How many processes of this run the launcher started on this machine (`mpirun`'s
/// `OMPI_COMM_WORLD_LOCAL_SIZE`, MPICH's `MPI_LOCALNRANKS`), or `None` when it does not say.
pub fn local_processes() -> Option<usize> {
    let read = |name: &str| std::env::var(name).ok()?.parse::<usize>().ok();
    read("OMPI_COMM_WORLD_LOCAL_SIZE").or_else(|| read("MPI_LOCALNRANKS"))
}
