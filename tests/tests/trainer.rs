//! The library's training loop on a real backbone: what observers see and in which order,
//! stops by `max_steps` and by an observer, and resuming from either, exactly.

use std::path::Path;
use std::sync::Arc;

use auglocal_core::trainer::{
    CheckpointPolicy, EpochRecord, Observer, Progress, StepEvent, Stop, Trainer, TrainerConfig,
};
use auglocal_core::{Method, Schedule};
use auglocal_data::synthetic::{generate, SyntheticConfig};
use auglocal_data::{Loader, Split};
use candle_core::Device;

mod common;

/// Every event, as a line, and a stop after `stop_after` steps.
#[derive(Default)]
struct Log {
    events: Vec<String>,
    stop_after: Option<u64>,
    steps: u64,
}

impl Observer for Log {
    fn started(&mut self, p: &Progress, batches: usize) -> auglocal_core::Result<()> {
        let at = (p.epochs_done, p.batches_done, p.steps);
        self.events.push(format!("started at {at:?} of {batches}"));
        Ok(())
    }
    fn epoch_started(&mut self, epoch: usize, _: f64, start: usize) -> auglocal_core::Result<()> {
        self.events.push(format!("epoch {epoch} from {start}"));
        Ok(())
    }
    fn step(&mut self, e: &StepEvent<'_>) -> auglocal_core::Result<()> {
        self.steps = e.step;
        self.events
            .push(format!("step {} ({}/{})", e.step, e.batch, e.batches));
        Ok(())
    }
    fn epoch_trained(&mut self, epoch: usize) -> auglocal_core::Result<()> {
        self.events.push(format!("trained {epoch}"));
        Ok(())
    }
    fn epoch_ended(&mut self, r: &EpochRecord) -> auglocal_core::Result<()> {
        let images = r.eval.map(|e| e.images);
        self.events
            .push(format!("ended {} eval {images:?}", r.epoch));
        Ok(())
    }
    fn checkpoint_saved(&mut self, _: &Path, p: &Progress) -> auglocal_core::Result<()> {
        let at = (p.epochs_done, p.batches_done, p.steps);
        self.events.push(format!("saved {at:?}"));
        Ok(())
    }
    fn stop_requested(&mut self) -> bool {
        self.stop_after.is_some_and(|n| self.steps >= n)
    }
}

/// ResNet-8 with AugLocal d = 1 over 48 synthetic images in batches of 16, 3 epochs.
fn setup(run: &Path, max_steps: Option<u64>) -> anyhow::Result<(Trainer, Loader, Loader)> {
    let engine = common::engine(&Device::Cpu, "resnet8", Method::auglocal(1, 0.0)?, 5)?;
    let data = auglocal_data::spec("synthetic")?;
    let sizes = SyntheticConfig {
        train_size: 48,
        test_size: 20,
        seed: 0,
    };
    let train = Arc::new(generate(&sizes, Split::Train));
    let train = Loader::new(train, data.train_loader(16, 3), Device::Cpu)?;
    let test = Arc::new(generate(&sizes, Split::Test));
    let test = Loader::new(test, data.eval_loader(20), Device::Cpu)?;
    let config = TrainerConfig {
        epochs: 3,
        lr: 0.05,
        schedule: Schedule::Cosine,
        max_steps,
        checkpoint: CheckpointPolicy::in_run(run),
        ..TrainerConfig::default()
    };
    Ok((Trainer::new(engine, config)?, train, test))
}

fn checkpoint_bytes(run: &Path) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    let dir = run.join("checkpoint");
    Ok((
        std::fs::read(dir.join("model.safetensors"))?,
        std::fs::read(dir.join("optimizer.safetensors"))?,
    ))
}

#[test]
fn observers_see_every_event_in_order_and_stops_resume_exactly() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let straight = tmp.path().join("straight");
    let (mut trainer, train, test) = setup(&straight, None)?;
    let mut log = Log::default();
    let outcome = trainer.fit(&train, Some(&test), &mut log)?;
    assert_eq!(outcome.stop, Stop::Finished);
    assert_eq!(outcome.epochs.len(), 3);
    assert_eq!(
        log.events[..8],
        [
            "started at (0, 0, 0) of 3",
            "epoch 1 from 0",
            "step 1 (1/3)",
            "step 2 (2/3)",
            "step 3 (3/3)",
            "trained 1",
            "ended 1 eval Some(20)",
            "saved (1, 0, 3)",
        ]
    );
    assert_eq!(log.events.len(), 3 * 7 + 1);
    assert_eq!(
        *trainer.progress(),
        Progress {
            epochs_done: 3,
            batches_done: 0,
            steps: 9,
            ..Progress::default()
        }
    );

    // Stopped by max_steps in epoch 2 (a checkpoint and an evaluation there), then by an
    // observer after step 7, then to the end: the same bytes as the run never stopped.
    let stopped = tmp.path().join("stopped");
    let (mut first, train, test) = setup(&stopped, Some(4))?;
    let outcome = first.fit(&train, Some(&test), &mut ())?;
    assert_eq!(outcome.stop, Stop::MaxSteps);
    assert_eq!(outcome.eval_at_stop.map(|e| e.images), Some(20));
    assert_eq!(
        (first.progress().epochs_done, first.progress().batches_done),
        (1, 1)
    );
    let (mut second, train, test) = setup(&stopped, None)?;
    second.resume(&stopped)?;
    let mut log = Log {
        stop_after: Some(7),
        ..Log::default()
    };
    let outcome = second.fit(&train, Some(&test), &mut log)?;
    assert_eq!(outcome.stop, Stop::Requested);
    assert_eq!(
        log.events[..2],
        ["started at (1, 1, 4) of 3", "epoch 2 from 1"]
    );
    assert_eq!(
        log.events.last().map(String::as_str),
        Some("saved (2, 1, 7)")
    );
    let (mut third, train, test) = setup(&stopped, None)?;
    assert!(third.resume_if_saved(&stopped)?);
    let outcome = third.fit(&train, Some(&test), &mut ())?;
    assert_eq!(outcome.stop, Stop::Finished);
    assert_eq!(
        outcome.epochs.iter().map(|e| e.epoch).collect::<Vec<_>>(),
        [3]
    );
    assert!(checkpoint_bytes(&straight)? == checkpoint_bytes(&stopped)?);
    Ok(())
}

#[test]
fn settings_no_run_can_use_are_refused() {
    let bad = |config: TrainerConfig| match Trainer::new(
        common::engine(&Device::Cpu, "resnet8", Method::named("bp").unwrap(), 0).unwrap(),
        config,
    ) {
        Ok(_) => panic!("accepted"),
        Err(e) => e.to_string(),
    };
    assert_eq!(
        bad(TrainerConfig {
            epochs: 0,
            ..TrainerConfig::default()
        }),
        "invalid epochs: 0 (valid: at least 1)"
    );
    assert_eq!(
        bad(TrainerConfig {
            lr: f64::NAN,
            ..TrainerConfig::default()
        }),
        "invalid learning rate: NaN (valid: a positive finite number)"
    );
    let mut keep_none = CheckpointPolicy::in_run("x");
    keep_none.keep = 0;
    assert_eq!(
        bad(TrainerConfig {
            checkpoint: keep_none,
            ..TrainerConfig::default()
        }),
        "invalid checkpoints kept: 0 (valid: at least 1 (the newest checkpoint is always kept))"
    );
}
