//! The real binary under SIGINT: it finishes the step, writes a checkpoint, says how to
//! resume and exits non-zero; the run then resumes from there.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn sigint_checkpoints_and_resume_continues() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let run = tmp.path().join("run");
    let run_str = run.to_str().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_auglocal"))
        .args([
            "train",
            "--out",
            run_str,
            "--model",
            "resnet8",
            "--method",
            "auglocal",
            "--aux-depth",
            "1",
            "--train-size",
            "3072",
            "--test-size",
            "64",
            "--batch-size",
            "32",
            "--epochs",
            "1",
            "--log-every",
            "1",
            "--threads",
            "1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let steps = run.join("steps.jsonl");
    let start = Instant::now();
    while std::fs::read_to_string(&steps)
        .map(|s| s.lines().count())
        .unwrap_or(0)
        < 3
    {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the run did not reach step 3"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()?;
    assert!(status.success());
    let output = child.wait_with_output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains("interrupted after step")
            && stderr.contains(&format!("--resume {run_str}")),
        "{stderr}"
    );

    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("checkpoint/state.json"))?)?;
    let done = state["steps"].as_u64().unwrap();
    assert!((3..96).contains(&done), "checkpoint at step {done}");
    assert_eq!(state["batches_done"].as_u64().unwrap(), done);

    let resumed = Command::new(env!("CARGO_BIN_EXE_auglocal"))
        .args([
            "train",
            "--resume",
            run_str,
            "--max-steps",
            &(done + 2).to_string(),
        ])
        .output()?;
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("checkpoint/state.json"))?)?;
    assert_eq!(state["steps"].as_u64().unwrap(), done + 2);
    Ok(())
}

#[test]
fn bad_flags_exit_with_usage_errors_not_panics() -> anyhow::Result<()> {
    let out = Command::new(env!("CARGO_BIN_EXE_auglocal"))
        .args(["train", "--method", "sgd"])
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("invalid value 'sgd' for '--method <METHOD>'"),
        "{stderr}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_auglocal"))
        .args([
            "train",
            "--out",
            "/nonexistent-parent/x",
            "--dataset",
            "cifar10",
            "--data-dir",
            "/nonexistent",
        ])
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("error: ") && stderr.contains("/nonexistent"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    Ok(())
}
