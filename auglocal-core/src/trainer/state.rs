//! Where a run stands, as a checkpoint's `state.json` records it.

use serde::{Deserialize, Serialize};

/// Version of the `state.json` layout this crate writes and reads.
pub const STATE_VERSION: u32 = 1;

/// Training-set sums of the epoch in progress, so a resumed epoch reports the whole epoch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochSums {
    /// Output cross-entropy summed over images.
    pub loss_sum: f64,
    /// Correct predictions of the output layer.
    pub correct: usize,
    /// Images trained on (those of skipped batches not counted).
    pub images: usize,
    /// Training seconds (evaluation excluded).
    pub seconds: f64,
    /// Batches skipped for a non-finite loss or gradient ([`OnNonFinite::Skip`](crate::OnNonFinite)).
    #[serde(default)]
    pub skipped: usize,
    /// Per module, over the batches not skipped: loss summed over images.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub module_loss_sums: Vec<f64>,
    /// Per module: correct predictions of its classifier (`None`: it has none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub module_correct: Vec<Option<usize>>,
}

impl EpochSums {
    /// Adds one step's per-module figures (`images` in the batch).
    pub fn add_modules(&mut self, losses: &[f32], correct: &[Option<usize>], images: usize) {
        if self.module_loss_sums.len() < losses.len() {
            self.module_loss_sums.resize(losses.len(), 0.0);
        }
        for (sum, loss) in self.module_loss_sums.iter_mut().zip(losses) {
            *sum += *loss as f64 * images as f64;
        }
        if self.module_correct.len() < correct.len() {
            self.module_correct.resize(correct.len(), Some(0));
        }
        for (sum, c) in self.module_correct.iter_mut().zip(correct) {
            *sum = match (*sum, c) {
                (Some(s), Some(c)) => Some(s + c),
                _ => None,
            };
        }
    }

    /// Each module's mean training loss per image.
    pub fn module_mean_losses(&self) -> Vec<f64> {
        self.module_loss_sums
            .iter()
            .map(|s| s / self.images.max(1) as f64)
            .collect()
    }

    /// Each module's training accuracy (`None` where its loss has no classifier).
    pub fn module_accuracies(&self) -> Vec<Option<f64>> {
        self.module_correct
            .iter()
            .map(|c| c.map(|c| c as f64 / self.images.max(1) as f64))
            .collect()
    }

    /// Mean output cross-entropy per image.
    pub fn mean_loss(&self) -> f64 {
        self.loss_sum / self.images.max(1) as f64
    }

    /// Share of images the output layer classified correctly.
    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.images.max(1) as f64
    }

    /// Training images per second.
    pub fn images_per_second(&self) -> f64 {
        self.images as f64 / self.seconds.max(1e-9)
    }
}

/// How far a run has trained. With the checkpoint's weights and momentum it is all an
/// exact resume needs: batches are a pure function of (seed, epoch, batch index).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Epochs fully completed.
    pub epochs_done: usize,
    /// Batches of epoch `epochs_done + 1` already trained (a resume continues there).
    pub batches_done: usize,
    /// Training steps taken so far.
    pub steps: u64,
    /// Sums of the epoch in progress.
    pub partial: EpochSums,
    /// The best test accuracy of an epoch so far, where the run keeps the best checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_test_acc: Option<f64>,
}

/// A checkpoint's `state.json`: the layout version, the progress, and whatever the caller
/// records beside it (`meta`, flattened into the same object: the CLI keeps its settings
/// and class count there, to rebuild the network on resume).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunState<M = serde_json::Map<String, serde_json::Value>> {
    /// Layout version of the file, [`STATE_VERSION`] when this crate wrote it; another is
    /// refused on resume.
    pub version: u32,
    /// How far the run has trained.
    #[serde(flatten)]
    pub progress: Progress,
    /// The caller's own record (e.g. the CLI's settings and class count).
    #[serde(flatten)]
    pub meta: M,
}
