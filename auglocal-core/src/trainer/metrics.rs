//! [`MetricsLog`]: the run directory's `metrics.jsonl` (a line per epoch) and `steps.jsonl`
//! (a line every N steps), kept consistent with the checkpoint across crashes and resumes.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::checkpoint::write_atomic;
use crate::error::{Error, Result};

use super::observer::{EpochRecord, Observer, StepEvent};
use super::state::Progress;

/// File of one line per epoch.
pub const METRICS_FILE: &str = "metrics.jsonl";
/// File of one line every `log_every` steps.
pub const STEPS_FILE: &str = "steps.jsonl";

/// Writes `metrics.jsonl` and, with `log_every`, `steps.jsonl` into a run directory.
///
/// A line is written before the checkpoint that covers it, so a crash between the two
/// leaves lines the checkpoint does not know; a resumed run drops them when it starts
/// (lines past the checkpoint's epoch or step), so no line is ever written twice.
///
/// `metrics.jsonl`: `epoch, lr, train_loss, train_acc, test_loss, test_acc, seconds,
/// images_per_second, peak_rss_bytes, peak_device_memory_bytes, data_wait_seconds, steps,
/// skipped_steps`. `steps.jsonl`: `step, epoch, batch, lr, loss, accuracy, module_losses,
/// peak_device_memory_bytes`.
pub struct MetricsLog {
    dir: PathBuf,
    log_every: Option<u64>,
    metrics: Option<File>,
    steps: Option<File>,
}

impl MetricsLog {
    /// A log into run directory `dir` (created if needed), with a `steps.jsonl` line every
    /// `log_every` steps when given. Files are opened when the run starts.
    pub fn new(dir: impl Into<PathBuf>, log_every: Option<u64>) -> Self {
        MetricsLog {
            dir: dir.into(),
            log_every,
            metrics: None,
            steps: None,
        }
    }

    fn open(path: &Path) -> Result<File> {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io("opening for writing", path, e))
    }

    fn append(file: &mut Option<File>, path: PathBuf, line: &serde_json::Value) -> Result<()> {
        let file = match file {
            Some(file) => file,
            None => file.insert(Self::open(&path)?),
        };
        writeln!(file, "{line}").map_err(|e| Error::io("writing", path, e))
    }
}

/// Keeps only the JSON lines of `path` whose `key` is at most `last` (no-op if absent).
fn trim_log(path: &Path, key: &str, last: u64) -> Result<()> {
    let Ok(text) = fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: Vec<&str> = text
        .lines()
        .filter(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v[key].as_u64())
                .is_some_and(|v| v <= last)
        })
        .collect();
    if kept.len() != text.lines().count() {
        let mut body = kept.join("\n");
        if !body.is_empty() {
            body.push('\n');
        }
        write_atomic(path, body.as_bytes())?;
    }
    Ok(())
}

impl Observer for MetricsLog {
    fn started(&mut self, progress: &Progress, _batches_per_epoch: usize) -> Result<()> {
        fs::create_dir_all(&self.dir).map_err(|e| Error::io("creating", &self.dir, e))?;
        let metrics = self.dir.join(METRICS_FILE);
        trim_log(&metrics, "epoch", progress.epochs_done as u64)?;
        trim_log(&self.dir.join(STEPS_FILE), "step", progress.steps)?;
        self.metrics = Some(Self::open(&metrics)?);
        Ok(())
    }

    fn step(&mut self, event: &StepEvent<'_>) -> Result<()> {
        let Some(every) = self.log_every else {
            return Ok(());
        };
        if !event.step.is_multiple_of(every) {
            return Ok(());
        }
        let report = event.report;
        let line = json!({
            "step": event.step,
            "epoch": event.epoch,
            "batch": event.batch,
            "lr": event.lr,
            "loss": report.loss,
            "accuracy": report.correct as f64 / report.images.max(1) as f64,
            "module_losses": report.module_losses,
            "peak_device_memory_bytes": event.peak_device_memory_bytes,
        });
        Self::append(&mut self.steps, self.dir.join(STEPS_FILE), &line)
    }

    fn epoch_ended(&mut self, record: &EpochRecord) -> Result<()> {
        let train = &record.train;
        let mut line = json!({
            "epoch": record.epoch,
            "lr": record.lr,
            "train_loss": train.mean_loss(),
            "train_acc": train.accuracy(),
            "test_loss": record.eval.map(|e| e.mean_loss()),
            "test_acc": record.eval.map(|e| e.accuracy()),
            "seconds": train.seconds,
            "images_per_second": train.images_per_second(),
            "peak_rss_bytes": record.peak_rss_bytes,
            "peak_device_memory_bytes": record.peak_device_memory_bytes,
            "data_wait_seconds": record.data_wait_seconds,
            "steps": record.steps,
            "skipped_steps": train.skipped,
        });
        // Each module's training loss and accuracy (the reference's per-module Prec@1; null
        // where a local loss has no classifier): the curve local learning is read by.
        if !train.module_loss_sums.is_empty() {
            line["module_train_loss"] = json!(train.module_mean_losses());
            line["module_train_acc"] = json!(train.module_accuracies());
        }
        // The reference's Prec@5, where it says more than top-1 (CIFAR-100, ImageNet).
        if let Some(top5) = record.eval.and_then(|e| e.top5_accuracy()) {
            if record.eval.is_some_and(|e| e.classes > 10) {
                line["test_top5"] = json!(top5);
            }
        }
        Self::append(&mut self.metrics, self.dir.join(METRICS_FILE), &line)
    }
}
