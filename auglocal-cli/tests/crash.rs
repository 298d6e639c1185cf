//! Crash safety on the real binary: `kill -9` at random moments of a run (checkpoint writes
//! included, with a checkpoint after every step) never leaves the run without a checkpoint
//! that loads, and resuming after every kill ends with exactly the weights, optimizer
//! state and metrics of the same run never interrupted.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use auglocal_core::checkpoint;

const RUN: &[&str] = &[
    "--model",
    "resnet8",
    "--method",
    "auglocal",
    "--aux-depth",
    "1",
    "--train-size",
    "192",
    "--test-size",
    "32",
    "--batch-size",
    "32",
    "--epochs",
    "3",
    "--checkpoint-every",
    "1",
    "--keep",
    "2",
    "--threads",
    "1",
];

fn auglocal(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_auglocal"));
    cmd.args(args).stdout(Stdio::null()).stderr(Stdio::piped());
    cmd
}

fn train_args(run: &str, fresh: bool) -> Vec<&str> {
    if fresh {
        let mut v = vec!["train", "--out", run];
        v.extend_from_slice(RUN);
        v
    } else {
        vec!["train", "--resume", run]
    }
}

/// The metrics of each epoch without the wall-clock fields.
fn metrics_without_timing(run: &Path) -> anyhow::Result<Vec<serde_json::Value>> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl"))?;
    text.lines()
        .map(|line| {
            let mut v: serde_json::Value = serde_json::from_str(line)?;
            for key in [
                "seconds",
                "images_per_second",
                "peak_rss_bytes",
                "data_wait_seconds",
            ] {
                v.as_object_mut().unwrap().remove(key);
            }
            Ok(v)
        })
        .collect()
}

/// The newest checkpoint of `run` loads: its state parses and its tensors read back.
fn checkpoint_step(run: &Path) -> anyhow::Result<Option<u64>> {
    let Ok(dir) = checkpoint::resolve(run) else {
        return Ok(None);
    };
    let state: serde_json::Value = checkpoint::read_state(&dir)?;
    let weights = checkpoint::read_tensors(
        &dir.join(checkpoint::WEIGHTS_FILE),
        &candle_core::Device::Cpu,
    )?;
    assert!(weights.contains_key("conv1.weight"), "{}", dir.display());
    checkpoint::read_tensors(
        &dir.join(checkpoint::OPTIMIZER_FILE),
        &candle_core::Device::Cpu,
    )?;
    Ok(Some(state["steps"].as_u64().unwrap()))
}

#[test]
fn kill_9_at_random_moments_never_loses_the_run() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let reference = tmp.path().join("reference");
    let out = auglocal(&train_args(reference.to_str().unwrap(), true)).output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let run = tmp.path().join("killed");
    let run_str = run.to_str().unwrap();
    // A fixed xorshift sequence: random-looking kill moments, the same in every test run.
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut steps_seen = Vec::new();
    for _ in 0..30 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let delay = Duration::from_millis(150 + rng % 1500);
        let fresh = checkpoint_step(&run)?.is_none();
        let mut child = auglocal(&train_args(run_str, fresh)).spawn()?;
        std::thread::sleep(delay);
        let finished = child.try_wait()?.is_some();
        if !finished {
            child.kill()?; // SIGKILL
        }
        let output = child.wait_with_output()?;
        let status = output.status;
        let step = checkpoint_step(&run)?;
        if let Some(step) = step {
            assert!(
                steps_seen.last().is_none_or(|&last| step >= last),
                "checkpoint went back from {steps_seen:?} to {step}"
            );
            steps_seen.push(step);
        }
        if finished {
            assert!(
                status.success(),
                "the run failed before it was killed (fresh: {fresh}): {}",
                String::from_utf8_lossy(&output.stderr)
            );
            break;
        }
        if steps_seen.len() >= 8 {
            break;
        }
    }
    eprintln!("checkpoint step after each kill: {steps_seen:?}");
    steps_seen.dedup();
    assert!(
        steps_seen.len() >= 3,
        "too few kills landed after progress to test anything: checkpoints at {steps_seen:?}"
    );

    let out = auglocal(&train_args(run_str, false)).output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for file in [checkpoint::WEIGHTS_FILE, checkpoint::OPTIMIZER_FILE] {
        let a = std::fs::read(reference.join("checkpoint").join(file))?;
        let b = std::fs::read(run.join("checkpoint").join(file))?;
        assert!(
            a == b,
            "{file} differs from the uninterrupted run's after kills at checkpoints {steps_seen:?}"
        );
    }
    assert_eq!(
        metrics_without_timing(&run)?,
        metrics_without_timing(&reference)?
    );
    // --keep 2: the newest checkpoint and one older one.
    assert_eq!(
        checkpoint::older_checkpoints(&run.join("checkpoint")).len(),
        1
    );
    Ok(())
}
