//! Which stage and replica each rank of a run is.

use serde::Serialize;

use crate::error::{Error, Result};

/// The place of one process among `world`: ranks `replica * stages + stage`, so the stages
/// of one replica are neighbouring ranks (on one machine when `mpirun` fills machines in
/// order, where the activations between stages travel).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Topology {
    /// Processes in the run (1 without MPI); a multiple of `stages`.
    pub world: usize,
    /// This process's rank, in `0..world`.
    pub rank: usize,
    /// Pipeline stages the model is cut into; each runs on `world / stages` replicas.
    pub stages: usize,
}

impl Topology {
    /// One process.
    pub const SINGLE: Topology = Topology {
        world: 1,
        rank: 0,
        stages: 1,
    };

    /// Rank `rank` of `world` processes cut into `stages` pipeline stages.
    pub fn new(world: usize, rank: usize, stages: usize) -> Result<Self> {
        if stages == 0 || world == 0 || !world.is_multiple_of(stages) {
            return Err(Error::InvalidSetting {
                setting: "pipeline stages",
                value: format!("{stages} for {world} processes"),
                valid: format!(
                    "a divisor of the number of processes: {}",
                    (1..=world)
                        .filter(|s| world.is_multiple_of(*s))
                        .map(|s| s.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        if rank >= world {
            return Err(Error::InvalidSetting {
                setting: "rank",
                value: rank.to_string(),
                valid: format!("0..{world}"),
            });
        }
        Ok(Topology {
            world,
            rank,
            stages,
        })
    }

    /// Data-parallel replicas: processes per stage.
    pub fn replicas(&self) -> usize {
        self.world / self.stages
    }

    /// This process's pipeline stage, in `0..stages` (0 sees the images first).
    pub fn stage(&self) -> usize {
        self.rank % self.stages
    }

    /// This process's data-parallel replica, in `0..replicas()`.
    pub fn replica(&self) -> usize {
        self.rank / self.stages
    }

    /// The rank of `stage` in `replica`.
    pub fn rank_of(&self, stage: usize, replica: usize) -> usize {
        replica * self.stages + stage
    }

    /// The process that prints progress and writes metrics and checkpoints: replica 0 of
    /// the last stage, which sees every step's output loss.
    pub fn writer(&self) -> usize {
        self.rank_of(self.stages - 1, 0)
    }

    /// Whether this process is the [`Topology::writer`].
    pub fn is_writer(&self) -> bool {
        self.rank == self.writer()
    }

    /// Whether this process runs the first stage, the one that reads the batches.
    pub fn is_first_stage(&self) -> bool {
        self.stage() == 0
    }

    /// Whether this process runs the last stage, the one with the output layer.
    pub fn is_last_stage(&self) -> bool {
        self.stage() == self.stages - 1
    }

    /// More than one process.
    pub fn is_distributed(&self) -> bool {
        self.world > 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_stages_and_replicas() {
        let t = Topology::new(6, 4, 3).unwrap();
        assert_eq!((t.replicas(), t.stage(), t.replica()), (2, 1, 1));
        assert_eq!(t.writer(), 2);
        assert_eq!(t.rank_of(2, 1), 5);
        assert!(!t.is_writer() && !t.is_first_stage() && !t.is_last_stage());
        assert_eq!(
            Topology::new(6, 0, 4).unwrap_err().to_string(),
            "invalid pipeline stages: 4 for 6 processes (valid: a divisor of the number of processes: 1, 2, 3, 6)"
        );
    }
}
