//! The real binary with nobody reading its output (`auglocal inspect | head -1` once the
//! reader is gone): the output ends quietly, status 0; `train` trains to the end.

use std::io::Read;
use std::process::{Command, Stdio};

/// Runs `auglocal ARGS` with its standard output closed before it writes anything;
/// returns the status and what it wrote to standard error.
fn with_closed_stdout(args: &[&str]) -> anyhow::Result<(std::process::ExitStatus, String)> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_auglocal"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // The read end closes here, long before the process has started up and written.
    drop(child.stdout.take());
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        e.read_to_string(&mut stderr)?;
    }
    Ok((child.wait()?, stderr))
}

#[test]
fn a_closed_output_is_not_an_error() -> anyhow::Result<()> {
    for args in [
        &["inspect", "--model", "resnet110", "--aux-depth", "3"][..],
        &["models"][..],
    ] {
        let (status, stderr) = with_closed_stdout(args)?;
        assert!(status.success(), "{args:?}: {status}, stderr:\n{stderr}");
        assert_eq!(stderr, "", "{args:?}");
    }
    Ok(())
}

#[test]
fn training_goes_on_when_its_output_is_closed() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let run = tmp.path().join("run");
    let (status, stderr) = with_closed_stdout(&[
        "train",
        "--out",
        run.to_str().expect("a UTF-8 temporary path"),
        "--model",
        "resnet8",
        "--aux-depth",
        "1",
        "--train-size",
        "16",
        "--test-size",
        "8",
        "--batch-size",
        "8",
        "--epochs",
        "2",
        "--threads",
        "1",
    ])?;
    assert!(status.success(), "{status}, stderr:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl"))?;
    assert_eq!(metrics.lines().count(), 2, "both epochs trained");
    assert!(run.join("checkpoint/model.safetensors").is_file());
    Ok(())
}
