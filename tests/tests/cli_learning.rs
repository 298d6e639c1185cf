//! Both methods learn the embedded synthetic data well above chance (10%) through the CLI.

mod common;

use common::{auglocal, metrics, path_str};

fn learns(method: &str) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let run = tmp.path().join(method);
    auglocal(&[
        "train",
        "--out",
        path_str(&run),
        "--model",
        "resnet8",
        "--method",
        method,
        "--aux-depth",
        "1",
        "--train-size",
        "3072",
        "--test-size",
        "500",
        "--epochs",
        "6",
        "--batch-size",
        "32",
        "--lr",
        "0.05",
        "--seed",
        "5",
    ])?;
    let lines = metrics(&run)?;
    assert_eq!(lines.len(), 6);
    let acc: Vec<f64> = lines
        .iter()
        .map(|m| m["test_acc"].as_f64().unwrap())
        .collect();
    let last = *acc.last().unwrap();
    assert!(
        last > 0.3,
        "{method}: final test accuracy {last} (by epoch: {acc:?}); chance is 0.1"
    );
    assert!(
        last > acc[0] + 0.1,
        "{method}: accuracy did not rise: {acc:?}"
    );
    let train_loss: Vec<f64> = lines
        .iter()
        .map(|m| m["train_loss"].as_f64().unwrap())
        .collect();
    assert!(
        train_loss[5] < train_loss[0] - 0.3,
        "{method}: training loss did not fall: {train_loss:?}"
    );
    Ok(())
}

#[test]
fn backprop_learns_synthetic() -> anyhow::Result<()> {
    learns("bp")
}

#[test]
fn auglocal_learns_synthetic() -> anyhow::Result<()> {
    learns("auglocal")
}
