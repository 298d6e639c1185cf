//! [`Comm`] over MPI (the `mpi` crate over the system's MPI library).

use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant};

use mpi::environment::Universe;
use mpi::request::{Request, StaticScope};
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::traits::*;

use candle_core::Tensor;

use crate::error::{Error, Result};

use super::comm::{Comm, Pending, PendingSum, Tag};
#[cfg(feature = "nccl")]
use super::message::Message;
use super::topology::Topology;

/// Sends in flight per process before the oldest is waited for: enough to keep a stage
/// busy on the next batch while the previous one travels, few enough to bound memory.
const IN_FLIGHT: usize = 4;

/// A send whose buffer MPI reads until the request completes; the buffer is freed then.
/// A sum over replicas running in the background, and its buffers (leaked until it ends).
struct RunningSum {
    id: u64,
    request: Request<'static, [f32], StaticScope>,
    send: *mut [f32],
    receive: *mut [f32],
}

struct InFlight {
    request: Request<'static, [u8], StaticScope>,
    buffer: *mut [u8],
}

/// The MPI world of a run launched by `mpirun` or `srun` (a single process started on its
/// own is a world of one).
pub struct Mpi {
    world: SimpleCommunicator,
    replicas: SimpleCommunicator,
    topology: Topology,
    in_flight: VecDeque<InFlight>,
    sums: VecDeque<RunningSum>,
    next_sum: u64,
    bytes_sent: u64,
    communicating: Duration,
    /// Every rank joined by NCCL (activations between stages), once a GPU is attached.
    #[cfg(feature = "nccl")]
    nccl_world: Option<super::nccl::NcclGroup>,
    /// This stage's replicas joined by NCCL (gradient sums), once a GPU is attached.
    #[cfg(feature = "nccl")]
    nccl_replicas: Option<super::nccl::NcclGroup>,
    // Dropped last: the last holder finalises MPI.
    universe: Rc<Universe>,
}

/// Ends every process of the run; keeps MPI initialised while it lives, so it still works
/// after the [`Mpi`] it came from is gone.
pub struct Aborter {
    world: SimpleCommunicator,
    _universe: Rc<Universe>,
}

impl Aborter {
    /// MPI_Abort on the whole world with status `code`.
    pub fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }
}

impl Mpi {
    /// Initialises MPI and places this process in a run of `stages` pipeline stages.
    pub fn init(stages: usize) -> Result<Self> {
        let universe = mpi::initialize().ok_or_else(|| Error::InvalidSetting {
            setting: "MPI",
            value: "initialised twice".into(),
            valid: "one Mpi per process".into(),
        })?;
        let world = universe.world();
        let topology = Topology::new(world.size() as usize, world.rank() as usize, stages)?;
        let color = mpi::topology::Color::with_value(topology.stage() as i32);
        let replicas = world
            .split_by_color_with_key(color, topology.replica() as i32)
            .ok_or_else(|| Error::InvalidSetting {
                setting: "MPI communicator of a stage's replicas",
                value: "none".into(),
                valid: "a communicator for every stage".into(),
            })?;
        Ok(Mpi {
            world,
            replicas,
            topology,
            in_flight: VecDeque::new(),
            sums: VecDeque::new(),
            next_sum: 0,
            bytes_sent: 0,
            communicating: Duration::ZERO,
            #[cfg(feature = "nccl")]
            nccl_world: None,
            #[cfg(feature = "nccl")]
            nccl_replicas: None,
            universe: Rc::new(universe),
        })
    }

    /// What ends every process of the run, usable after this `Mpi` is dropped.
    pub fn aborter(&self) -> Aborter {
        Aborter {
            world: self.universe.world(),
            _universe: self.universe.clone(),
        }
    }

    /// Sums `buffer` element-wise over the replicas of this stage, in place.
    fn sum<T: Equivalence + Clone>(&mut self, buffer: &mut [T]) {
        if self.topology.replicas() == 1 {
            return;
        }
        let started = Instant::now();
        self.bytes_sent += std::mem::size_of_val(buffer) as u64;
        let mine = buffer.to_vec();
        self.replicas
            .all_reduce_into(&mine[..], buffer, mpi::collective::SystemOperation::sum());
        self.communicating += started.elapsed();
    }

    /// Waits for a running sum and frees its buffers; returns the sum.
    fn wait_sum(&mut self, running: RunningSum) -> Vec<f32> {
        let started = Instant::now();
        running.request.wait();
        self.communicating += started.elapsed();
        // SAFETY: both came from Box::leak in `start_sum`, and MPI no longer uses them.
        unsafe {
            drop(Box::from_raw(running.send));
            Box::from_raw(running.receive).into_vec()
        }
    }

    fn finish_oldest(&mut self) {
        if let Some(done) = self.in_flight.pop_front() {
            let started = Instant::now();
            done.request.wait();
            self.communicating += started.elapsed();
            // SAFETY: the buffer came from Box::leak in `send` and MPI no longer reads it.
            drop(unsafe { Box::from_raw(done.buffer) });
        }
    }
}

impl Comm for Mpi {
    fn topology(&self) -> Topology {
        self.topology
    }

    fn sum_over_replicas(&mut self, buffer: &mut [f32]) -> Result<()> {
        self.sum(buffer);
        Ok(())
    }

    fn sum_over_replicas_f64(&mut self, buffer: &mut [f64]) -> Result<()> {
        self.sum(buffer);
        Ok(())
    }

    fn start_sum(&mut self, flat: &Tensor) -> Result<PendingSum> {
        if self.topology.replicas() == 1 {
            return Ok(PendingSum::done(flat.clone()));
        }
        self.bytes_sent += 4 * flat.elem_count() as u64;
        #[cfg(feature = "nccl")]
        if let Some(nccl) = &self.nccl_replicas {
            // Queued on the GPU's stream: ordered with the next module's kernels.
            if let Some(sum) = nccl.sum(flat)? {
                return Ok(PendingSum::done(sum));
            }
        }
        let len = flat.elem_count();
        let send: *mut [f32] = Box::leak(flat.to_vec1::<f32>()?.into_boxed_slice());
        let receive: *mut [f32] = Box::leak(vec![0f32; len].into_boxed_slice());
        // SAFETY: both buffers are leaked until `finish_sum` (or drop) has waited for the
        // request; nothing else touches them meanwhile.
        let request = self.replicas.immediate_all_reduce_into(
            StaticScope,
            unsafe { &*send },
            unsafe { &mut *receive },
            mpi::collective::SystemOperation::sum(),
        );
        let id = self.next_sum;
        self.next_sum += 1;
        self.sums.push_back(RunningSum {
            id,
            request,
            send,
            receive,
        });
        Ok(PendingSum(Pending::Running {
            id,
            len,
            device: flat.device().clone(),
        }))
    }

    fn finish_sum(&mut self, pending: PendingSum) -> Result<Tensor> {
        let (id, len, device) = match pending.0 {
            Pending::Done(sum) => return Ok(sum),
            Pending::Running { id, len, device } => (id, len, device),
        };
        // Sums finish in the order they started: the ones before are waited for too.
        let mut sum = None;
        while let Some(running) = self.sums.pop_front() {
            let done = running.id;
            let values = self.wait_sum(running);
            if done == id {
                sum = Some(values);
                break;
            }
        }
        match sum {
            Some(values) if values.len() == len => Ok(Tensor::from_vec(values, len, &device)?),
            _ => Err(Error::Transport {
                transport: "MPI",
                operation: "sum over replicas",
                problem: format!("sum {id} was not running (or finished twice)"),
            }),
        }
    }

    #[cfg(feature = "nccl")]
    fn attach_device(&mut self, device: &candle_core::Device) -> Result<()> {
        use super::nccl::NcclGroup;
        let candle_core::Device::Cuda(gpu) = device else {
            return Ok(());
        };
        // Every rank joins the world's group first, then its stage's: the same order
        // everywhere, since joining waits for the group's other members.
        if self.nccl_world.is_none() && self.topology.stages > 1 {
            self.nccl_world = Some(NcclGroup::join(&self.world, gpu)?);
        }
        if self.nccl_replicas.is_none() && self.topology.replicas() > 1 {
            self.nccl_replicas = Some(NcclGroup::join(&self.replicas, gpu)?);
        }
        Ok(())
    }

    #[cfg(feature = "nccl")]
    fn send_message(&mut self, to: usize, tag: Tag, message: Message) -> Result<()> {
        let on_gpu = |link: &super::nccl::NcclGroup| {
            !message.tensors.is_empty() && message.tensors.values().all(|t| link.holds(t))
        };
        // Only batches: they are received in the order sent, as NCCL's unlabelled sends
        // between two ranks must be.
        match &self.nccl_world {
            Some(link) if matches!(tag, Tag::Train | Tag::Eval) && on_gpu(link) => {
                let (header, tensors) = message.split_tensors();
                self.send(to, tag, header.encode()?)?;
                if let Some(link) = &self.nccl_world {
                    for tensor in tensors.iter().filter(|t| t.elem_count() > 0) {
                        self.bytes_sent +=
                            (tensor.elem_count() * tensor.dtype().size_in_bytes()) as u64;
                        link.send(tensor, to)?;
                    }
                }
                Ok(())
            }
            _ => self.send(to, tag, message.encode()?),
        }
    }

    #[cfg(feature = "nccl")]
    fn receive_message(
        &mut self,
        from: usize,
        tag: Tag,
        device: &candle_core::Device,
    ) -> Result<Message> {
        let mut message = Message::decode(&self.receive(from, tag)?, device)?;
        if let Some(listed) = message.take_listed()? {
            let link = self.nccl_world.as_ref().ok_or_else(|| Error::Transport {
                transport: "NCCL",
                operation: "receive of activations",
                problem: format!("rank {from} sent tensors over NCCL, and this rank has no NCCL link (is it on the GPU?)"),
            })?;
            let started = Instant::now();
            for (name, dtype, shape) in listed {
                let tensor = match shape.elem_count() {
                    0 => Tensor::zeros(shape, dtype, device)?,
                    _ => link.receive(from, shape, dtype)?,
                };
                message.tensors.insert(name, tensor);
            }
            self.communicating += started.elapsed();
        }
        Ok(message)
    }

    fn broadcast_f64(&mut self, root: usize, buffer: &mut [f64]) -> Result<()> {
        self.world
            .process_at_rank(root as i32)
            .broadcast_into(buffer);
        Ok(())
    }

    fn send(&mut self, to: usize, tag: Tag, bytes: Vec<u8>) -> Result<()> {
        while self.in_flight.len() >= IN_FLIGHT {
            self.finish_oldest();
        }
        self.bytes_sent += bytes.len() as u64;
        let buffer: &'static mut [u8] = Box::leak(bytes.into_boxed_slice());
        let pointer: *mut [u8] = buffer;
        let request = self
            .world
            .process_at_rank(to as i32)
            .immediate_send_with_tag(StaticScope, &*buffer, tag as u16 as i32);
        self.in_flight.push_back(InFlight {
            request,
            buffer: pointer,
        });
        Ok(())
    }

    fn receive(&mut self, from: usize, tag: Tag) -> Result<Vec<u8>> {
        let started = Instant::now();
        let (bytes, _status) = self
            .world
            .process_at_rank(from as i32)
            .receive_vec_with_tag::<u8>(tag as u16 as i32);
        self.communicating += started.elapsed();
        Ok(bytes)
    }

    fn flush(&mut self) -> Result<()> {
        while !self.in_flight.is_empty() {
            self.finish_oldest();
        }
        Ok(())
    }

    fn bytes_sent(&self) -> u64 {
        self.bytes_sent
    }

    fn seconds_communicating(&self) -> f64 {
        self.communicating.as_secs_f64()
    }

    fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }
}

impl Drop for Mpi {
    fn drop(&mut self) {
        // Every buffer must outlive its send or sum.
        let _ = self.flush();
        while let Some(running) = self.sums.pop_front() {
            self.wait_sum(running);
        }
    }
}
