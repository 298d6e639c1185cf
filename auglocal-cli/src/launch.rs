//! The processes of a run: this one alone, or those `mpirun -np N` or `srun` started (in a
//! build with `--features mpi`), and how a failure in any of them ends them all.

use anyhow::{bail, Result};
use auglocal_core::dist::{self, Comm, Single, Topology};

/// This process's place in its run and its line to the others.
pub struct Processes {
    pub comm: Box<dyn Comm>,
    pub ending: Ending,
}

/// A run stopped by Ctrl-C (SIGINT or SIGTERM, which `mpirun` and `srun` pass to every
/// rank): every rank stopped after the same step and the checkpoint is saved, so no rank
/// ends the others. The writer's carries what to do next; the other ranks' carry nothing
/// (`None`) and the binary prints nothing for them.
#[derive(Debug)]
pub struct Interrupted(pub Option<String>);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            self.0
                .as_deref()
                .unwrap_or("interrupted; the writing rank reports where the checkpoint is"),
        )
    }
}

impl std::error::Error for Interrupted {}

/// How a failure in this process ends the run.
pub struct Ending {
    topology: Topology,
    #[cfg(feature = "mpi")]
    aborter: Option<dist::Aborter>,
}

impl Ending {
    /// Ends the run after a failure in this process: alone, returns `error`; in a run of
    /// several, says which rank failed and why, and ends every rank at once (non-zero). An
    /// [`Interrupted`] run ends on every rank by itself: the writer says so here, and every
    /// rank returns an error with nothing more to print.
    pub fn fail(&self, error: anyhow::Error) -> anyhow::Error {
        let t = self.topology;
        if !t.is_distributed() {
            return error;
        }
        if let Some(Interrupted(said)) = error.downcast_ref::<Interrupted>() {
            // Said now, before MPI is finalised: once every rank has finalised, the launcher
            // may end this process before `main` could print.
            if let Some(said) = said {
                eprintln!("error: {said}");
            }
            return Interrupted(None).into();
        }
        let error = crate::hints::with_flag(error);
        eprintln!(
            "error on rank {} of {} (stage {}, replica {}): {error:#}",
            t.rank,
            t.world,
            t.stage(),
            t.replica()
        );
        #[cfg(feature = "mpi")]
        if let Some(aborter) = &self.aborter {
            aborter.abort(1);
        }
        std::process::exit(1)
    }
}

/// This process's part of a run of `stages` pipeline stages.
pub fn start(stages: usize) -> Result<Processes> {
    let launched = dist::launched_processes().unwrap_or(1);
    #[cfg(feature = "mpi")]
    if launched > 1 || stages > 1 {
        if stages > launched {
            bail!(
                "--stages {stages} needs a multiple of {stages} processes and this run has {launched}; start them with `mpirun -np {stages} auglocal train ...` (or `srun -n {stages}`)"
            );
        }
        let mpi = dist::Mpi::init(stages)?;
        let ending = Ending {
            topology: mpi.topology(),
            aborter: Some(mpi.aborter()),
        };
        return Ok(Processes {
            comm: Box::new(mpi),
            ending,
        });
    }
    if launched > 1 {
        bail!(
            "this is one of {launched} processes started together, but this auglocal was built without MPI: each would train alone into the same --out; build it with `--features mpi` (see the README, \"Scaling out\")"
        );
    }
    if stages > 1 {
        bail!(
            "--stages {stages}: this auglocal was built without MPI; build it with `--features mpi` and start {stages} processes with `mpirun -np {stages}` (see the README, \"Scaling out\")"
        );
    }
    Ok(Processes {
        comm: Box::new(Single),
        ending: Ending {
            topology: Topology::SINGLE,
            #[cfg(feature = "mpi")]
            aborter: None,
        },
    })
}
