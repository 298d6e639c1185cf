//! One network per set of flags: `inspect`, `bench`, `train` and `compare` build the same
//! auxiliary networks from the same flags, defaults included (once, `inspect`'s pyramid
//! default was 0 where `train`'s was 0.5, so ResNet-110 with d = 3 was reported with
//! 8,998,014 auxiliary parameters and trained with 7,240,702).

mod common;

use std::path::Path;

use common::{auglocal, path_str};

/// The auxiliary parameters `inspect` reports.
fn inspected(args: &[&str]) -> anyhow::Result<usize> {
    let mut argv = vec!["inspect"];
    argv.extend_from_slice(args);
    let text = auglocal(&argv)?;
    let count = text
        .split("auxiliary ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok());
    count.ok_or_else(|| anyhow::anyhow!("no auxiliary parameter count in:\n{text}"))
}

/// The auxiliary parameters `bench` reports.
fn benched(args: &[&str]) -> anyhow::Result<usize> {
    let mut argv = vec![
        "bench",
        "--iters",
        "1",
        "--warmup",
        "0",
        "--batch-size",
        "2",
        "--threads",
        "1",
        "--json",
    ];
    argv.extend_from_slice(args);
    let line: serde_json::Value = serde_json::from_str(auglocal(&argv)?.trim())?;
    line["aux_parameters"]
        .as_u64()
        .map(|n| n as usize)
        .ok_or_else(|| anyhow::anyhow!("no aux_parameters in {line}"))
}

/// The trainable auxiliary scalars in a checkpoint (BatchNorm's averages left out).
fn stored_aux(model: &Path) -> anyhow::Result<usize> {
    Ok(common::tensors(model)?
        .into_iter()
        .filter(|(name, ..)| {
            name.starts_with("aux.")
                && !name.ends_with("running_mean")
                && !name.ends_with("running_var")
                && !name.ends_with("num_batches_tracked")
        })
        .map(|(_, _, shape, _)| shape.iter().product::<usize>())
        .sum())
}

const TINY: [&str; 12] = [
    "--train-size",
    "4",
    "--test-size",
    "2",
    "--batch-size",
    "2",
    "--epochs",
    "1",
    "--threads",
    "1",
    "--seed",
    "1",
];

/// Every method on two CIFAR backbones, through all four commands, with no flag but the
/// model and method, and with AugLocal's settings given.
#[test]
fn every_command_builds_the_same_network_from_the_same_flags() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let methods = [
        "bp",
        "auglocal",
        "dgl",
        "infopro",
        "infopro-contrast",
        "predsim",
        "greedy",
    ];
    for (model, extra) in [
        ("resnet110", &[][..]),
        ("resnet20", &["--aux-depth", "3", "--pyramid", "0.25"][..]),
    ] {
        let out = tmp.path().join(format!("cmp-{model}"));
        let mut argv = vec![
            "compare",
            "--model",
            model,
            "--methods",
            "bp,auglocal,dgl,infopro,infopro-contrast,predsim,greedy",
            "--out",
            path_str(&out),
        ];
        argv.extend_from_slice(&TINY);
        argv.extend_from_slice(extra);
        auglocal(&argv)?;
        let csv = std::fs::read_to_string(out.join("compare.csv"))?;
        let header: Vec<&str> = csv.lines().next().unwrap_or("").split(',').collect();
        let column = header
            .iter()
            .position(|h| *h == "aux_parameters")
            .ok_or_else(|| anyhow::anyhow!("no aux_parameters column in {csv}"))?;
        for (method, row) in methods.iter().zip(csv.lines().skip(1)) {
            let compared: usize = row.split(',').nth(column).unwrap_or("").parse()?;
            let mut flags = vec!["--model", model, "--method", method];
            flags.extend_from_slice(extra);
            let inspect = inspected(&flags)?;
            let bench = benched(&flags)?;
            let run = tmp.path().join(format!("train-{model}-{method}"));
            let mut argv = vec!["train", "--out", path_str(&run)];
            argv.extend_from_slice(&flags);
            argv.extend_from_slice(&TINY);
            auglocal(&argv)?;
            let trained = stored_aux(&run.join("checkpoint/model.safetensors"))?;
            assert_eq!(
                (inspect, bench, trained, compared),
                (trained, trained, trained, trained),
                "{model} {method} {extra:?}: inspect, bench, train, compare"
            );
            if *method == "bp" {
                assert_eq!(trained, 0);
            } else {
                assert!(trained > 0, "{model} {method}");
            }
        }
    }
    // The figure that was once wrong, now the one every command gives.
    assert_eq!(
        inspected(&["--model", "resnet110", "--aux-depth", "3"])?,
        7_240_702
    );
    Ok(())
}

/// Every backbone, AugLocal with the defaults: `inspect` and `bench` agree (`train` and
/// `compare` build through the same function as `bench`, checked above).
#[test]
fn every_model_is_inspected_as_it_is_benched() -> anyhow::Result<()> {
    for model in auglocal_models::MODELS {
        let flags = ["--model", model, "--image-size", "32"];
        assert_eq!(inspected(&flags)?, benched(&flags)?, "{model}");
    }
    Ok(())
}
