//! What a training run tells the outside while it runs: [`Observer`] and its events.

use std::path::Path;

use crate::engine::{EvalTotals, StepReport};
use crate::error::Result;

use super::state::{EpochSums, Progress};

/// One training step, as observers see it.
#[derive(Debug, Clone, Copy)]
pub struct StepEvent<'a> {
    /// The epoch, counted from 1, of `epochs`.
    pub epoch: usize,
    /// Epochs of the whole run.
    pub epochs: usize,
    /// Batches of this epoch done, this one included, of `batches`.
    pub batch: usize,
    /// Batches in one epoch.
    pub batches: usize,
    /// Training steps taken in all, this one included.
    pub step: u64,
    /// Learning rate of the step (the epoch's, from the schedule).
    pub lr: f64,
    /// What the step measured: losses and correct predictions of every module.
    pub report: &'a StepReport,
    /// The epoch's sums so far (seconds included).
    pub sums: &'a EpochSums,
    /// GPU only: the most device memory in use during the step.
    pub peak_device_memory_bytes: Option<u64>,
}

/// One finished epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochRecord {
    /// The epoch, counted from 1, of `epochs`.
    pub epoch: usize,
    /// Epochs of the whole run.
    pub epochs: usize,
    /// The epoch's learning rate, from the schedule.
    pub lr: f64,
    /// Training sums over the whole epoch (a resumed epoch included).
    pub train: EpochSums,
    /// The evaluation after it, when the run has an evaluation source.
    pub eval: Option<EvalTotals>,
    /// The process's peak resident set size so far (Linux).
    pub peak_rss_bytes: Option<u64>,
    /// GPU only: the largest per-step peak of device memory in this epoch.
    pub peak_device_memory_bytes: Option<u64>,
    /// Time the steps of this invocation waited for their batches (0 when the source
    /// keeps ahead).
    pub data_wait_seconds: f64,
    /// Training steps taken in all after this epoch.
    pub steps: u64,
}

/// Told about a run as it goes, by [`Trainer::fit`](super::Trainer::fit): progress bars,
/// metrics files, curves, interruption. Every method has a default that does nothing; an
/// error from one ends the run (the last checkpoint stays as it was).
pub trait Observer {
    /// Before the first step, with where the run starts (a resumed run: mid-epoch too).
    fn started(&mut self, progress: &Progress, batches_per_epoch: usize) -> Result<()> {
        let _ = (progress, batches_per_epoch);
        Ok(())
    }

    /// An epoch starts at batch `start` (not 0 when resumed mid-epoch).
    fn epoch_started(&mut self, epoch: usize, lr: f64, start: usize) -> Result<()> {
        let _ = (epoch, lr, start);
        Ok(())
    }

    /// After each training step.
    fn step(&mut self, event: &StepEvent<'_>) -> Result<()> {
        let _ = event;
        Ok(())
    }

    /// An epoch's training is done and its evaluation is about to run.
    fn epoch_trained(&mut self, epoch: usize) -> Result<()> {
        let _ = epoch;
        Ok(())
    }

    /// An epoch is done and evaluated; its checkpoint is written right after.
    fn epoch_ended(&mut self, record: &EpochRecord) -> Result<()> {
        let _ = record;
        Ok(())
    }

    /// A checkpoint holding `progress` is in place in `dir`.
    fn checkpoint_saved(&mut self, dir: &Path, progress: &Progress) -> Result<()> {
        let _ = (dir, progress);
        Ok(())
    }

    /// Asked after every step: `true` stops the run there, with a checkpoint.
    fn stop_requested(&mut self) -> bool {
        false
    }
}

/// No observer.
impl Observer for () {}

/// Several observers, told in order (a metrics file before the curves drawn from it).
pub struct Observers<'a>(pub Vec<&'a mut dyn Observer>);

impl Observer for Observers<'_> {
    fn started(&mut self, progress: &Progress, batches_per_epoch: usize) -> Result<()> {
        self.0
            .iter_mut()
            .try_for_each(|o| o.started(progress, batches_per_epoch))
    }

    fn epoch_started(&mut self, epoch: usize, lr: f64, start: usize) -> Result<()> {
        self.0
            .iter_mut()
            .try_for_each(|o| o.epoch_started(epoch, lr, start))
    }

    fn step(&mut self, event: &StepEvent<'_>) -> Result<()> {
        self.0.iter_mut().try_for_each(|o| o.step(event))
    }

    fn epoch_trained(&mut self, epoch: usize) -> Result<()> {
        self.0.iter_mut().try_for_each(|o| o.epoch_trained(epoch))
    }

    fn epoch_ended(&mut self, record: &EpochRecord) -> Result<()> {
        self.0.iter_mut().try_for_each(|o| o.epoch_ended(record))
    }

    fn checkpoint_saved(&mut self, dir: &Path, progress: &Progress) -> Result<()> {
        self.0
            .iter_mut()
            .try_for_each(|o| o.checkpoint_saved(dir, progress))
    }

    fn stop_requested(&mut self) -> bool {
        // Every observer is asked, even after one said yes: one may count the question.
        let mut stop = false;
        for observer in &mut self.0 {
            stop |= observer.stop_requested();
        }
        stop
    }
}
