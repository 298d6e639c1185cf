//! [`Comm`]: what the trainer asks of the transport between processes.

use candle_core::{Device, Tensor};

use crate::error::{Error, Result};

use super::message::Message;
use super::topology::Topology;

/// The kind of a message between ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Tag {
    /// A training batch's activations (and labels, images, losses) to the next stage.
    Train = 1,
    /// An evaluation batch's activations to the next stage.
    Eval = 2,
    /// A stage's tensors and momentum to the writer, for a checkpoint.
    Checkpoint = 3,
    /// A rank's figures (time busy, bytes sent, memory) to the writer.
    Report = 4,
}

/// A sum over replicas, finished or still running (see [`Comm::start_sum`]).
#[derive(Debug)]
pub struct PendingSum(pub(super) Pending);

#[derive(Debug)]
pub(super) enum Pending {
    Done(Tensor),
    /// The `id`-th sum started, of `len` values, returned to `device`.
    #[cfg_attr(not(feature = "mpi"), allow(dead_code))]
    Running {
        id: u64,
        len: usize,
        device: Device,
    },
}

impl PendingSum {
    /// A sum that is already complete.
    pub fn done(sum: Tensor) -> Self {
        PendingSum(Pending::Done(sum))
    }

    /// The sum, if it is complete; the sum still running, if not.
    pub fn into_done(self) -> std::result::Result<Tensor, PendingSum> {
        match self.0 {
            Pending::Done(sum) => Ok(sum),
            running => Err(PendingSum(running)),
        }
    }
}

/// Sums of flat f32 tensors over a stage's replicas, started and finished apart, as the
/// engine asks for them ([`crate::engine::Replicas`]): a module's sum runs while the next
/// module computes.
pub trait ReplicaSums {
    /// Starts the element-wise sum of the 1-D f32 tensor `flat` over the replicas; the
    /// result comes from [`ReplicaSums::finish_sum`].
    fn start_sum(&mut self, flat: &Tensor) -> Result<PendingSum>;
    /// Waits for a sum that [`ReplicaSums::start_sum`] started and returns it, on the device
    /// of the tensor summed. Sums finish in the order they started.
    fn finish_sum(&mut self, pending: PendingSum) -> Result<Tensor>;
}

/// A transport's sums, for the engine.
pub struct CommSums<'a>(pub &'a mut dyn Comm);

impl ReplicaSums for CommSums<'_> {
    fn start_sum(&mut self, flat: &Tensor) -> Result<PendingSum> {
        self.0.start_sum(flat)
    }
    fn finish_sum(&mut self, pending: PendingSum) -> Result<Tensor> {
        self.0.finish_sum(pending)
    }
}

/// The transport: sums over a stage's replicas and messages between ranks.
pub trait Comm {
    /// This process's place in the run: its rank, the number of processes and of stages.
    fn topology(&self) -> Topology;

    /// Element-wise sum of `buffer` over the replicas of this process's stage, in place.
    fn sum_over_replicas(&mut self, buffer: &mut [f32]) -> Result<()>;

    /// Starts the element-wise sum of a flat f32 tensor over the replicas of this
    /// process's stage; [`Comm::finish_sum`] returns it, on the tensor's device. Sums finish
    /// in the order they started. The default sums at once, through host memory and
    /// [`Comm::sum_over_replicas`]; MPI sums in the background while the next module
    /// computes, and NCCL sums GPU tensors on the GPU.
    fn start_sum(&mut self, flat: &Tensor) -> Result<PendingSum> {
        if self.topology().replicas() == 1 {
            return Ok(PendingSum::done(flat.clone()));
        }
        let mut host = flat.to_vec1::<f32>()?;
        self.sum_over_replicas(&mut host)?;
        Ok(PendingSum::done(Tensor::from_vec(
            host,
            flat.dim(0)?,
            flat.device(),
        )?))
    }

    /// Waits for a sum [`Comm::start_sum`] started and returns it.
    fn finish_sum(&mut self, pending: PendingSum) -> Result<Tensor> {
        match pending.0 {
            Pending::Done(sum) => Ok(sum),
            Pending::Running { .. } => Err(Error::Transport {
                transport: "replica sums",
                operation: "finish",
                problem: "this transport started no sum in the background".into(),
            }),
        }
    }

    /// Makes ready to move tensors of `device` (for a GPU, with NCCL where built in). The
    /// trainer calls this once, before the first step.
    fn attach_device(&mut self, _device: &Device) -> Result<()> {
        Ok(())
    }

    /// [`Comm::sum_over_replicas`] in f64 (evaluation and epoch totals).
    fn sum_over_replicas_f64(&mut self, buffer: &mut [f64]) -> Result<()>;

    /// Rank `root`'s `buffer` on every rank (the same length everywhere).
    fn broadcast_f64(&mut self, root: usize, buffer: &mut [f64]) -> Result<()>;

    /// Sends `bytes` to rank `to` without waiting for it to be received (a bounded number
    /// of sends may be in flight; the oldest is waited for beyond that).
    fn send(&mut self, to: usize, tag: Tag, bytes: Vec<u8>) -> Result<()>;

    /// Waits for the next message of kind `tag` from rank `from`.
    fn receive(&mut self, from: usize, tag: Tag) -> Result<Vec<u8>>;

    /// Sends `message` to rank `to` as [`Comm::send`] does. The default encodes it whole;
    /// with NCCL, the tensors of training and evaluation batches on a GPU go GPU to GPU and
    /// the bytes carry only the rest.
    fn send_message(&mut self, to: usize, tag: Tag, message: Message) -> Result<()> {
        self.send(to, tag, message.encode()?)
    }

    /// Waits for the next message [`Comm::send_message`] sent, its tensors on `device`.
    fn receive_message(&mut self, from: usize, tag: Tag, device: &Device) -> Result<Message> {
        Message::decode(&self.receive(from, tag)?, device)
    }

    /// Waits until every message sent has been received.
    fn flush(&mut self) -> Result<()>;

    /// Bytes sent so far: messages, and this rank's buffers in sums over replicas.
    fn bytes_sent(&self) -> u64;

    /// Seconds spent so far waiting on the others: in sums, receives and sends.
    fn seconds_communicating(&self) -> f64;

    /// Ends every process of the run at once with status `code` (after this one has said
    /// why).
    fn abort(&self, code: i32) -> !;
}

/// One process: sums are the buffer itself, and there is no one to talk to.
#[derive(Debug, Default, Clone, Copy)]
pub struct Single;

impl Comm for Single {
    fn topology(&self) -> Topology {
        Topology::SINGLE
    }

    fn sum_over_replicas(&mut self, _buffer: &mut [f32]) -> Result<()> {
        Ok(())
    }

    fn sum_over_replicas_f64(&mut self, _buffer: &mut [f64]) -> Result<()> {
        Ok(())
    }

    fn broadcast_f64(&mut self, _root: usize, _buffer: &mut [f64]) -> Result<()> {
        Ok(())
    }

    fn send(&mut self, to: usize, _tag: Tag, _bytes: Vec<u8>) -> Result<()> {
        Err(no_peer(to))
    }

    fn receive(&mut self, from: usize, _tag: Tag) -> Result<Vec<u8>> {
        Err(no_peer(from))
    }

    fn flush(&mut self) -> Result<()> {
        Ok(())
    }

    fn bytes_sent(&self) -> u64 {
        0
    }

    fn seconds_communicating(&self) -> f64 {
        0.0
    }

    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}

fn no_peer(rank: usize) -> Error {
    Error::InvalidSetting {
        setting: "rank",
        value: rank.to_string(),
        valid: "none: a single process has no other rank".into(),
    }
}
