//! Bad input never panics: each case fails with a message naming the thing and the fix.

mod common;

use common::{auglocal, auglocal_err, path_str, write_cifar10};

#[test]
fn unknown_flag_values_list_the_valid_ones() {
    let err = auglocal_err(&["train", "--out", "/tmp/never", "--method", "foo"]);
    assert!(
        err.contains("invalid value 'foo' for '--method <METHOD>'") && err.contains("bp, auglocal"),
        "{err}"
    );
    let err = auglocal_err(&["train", "--out", "/tmp/never", "--model", "resnet33"]);
    assert!(
        err.contains("invalid value 'resnet33' for '--model <MODEL>'")
            && err.contains(
                "[possible values: resnet8, resnet20, resnet32, resnet56, resnet110, vgg19, mobilenetv2, resnet18, resnet34, resnet50, resnet101, vgg13]"
            ),
        "{err}"
    );
    let err = auglocal_err(&["train", "--out", "/tmp/never", "--dataset", "mnist"]);
    assert!(
        err.contains("unknown dataset `mnist`") && err.contains("cifar10"),
        "{err}"
    );
    let err = auglocal_err(&["train", "--out", "/tmp/never", "--schedule", "linear"]);
    assert!(
        err.contains("invalid schedule: linear (valid: warmup-cosine, warmup-cosine:N (N warm-up epochs), cosine, constant, or step:"),
        "{err}"
    );
    let err = auglocal_err(&["train", "--out", "/tmp/never", "--pyramid", "2"]);
    assert!(
        err.contains("invalid pyramid coefficient: 2 (valid: a number in [0, 1]"),
        "{err}"
    );
    let err = auglocal_err(&[
        "train",
        "--out",
        "/tmp/never",
        "--model",
        "resnet8",
        "--aux-depth",
        "0",
    ]);
    assert!(
        err.contains("invalid auxiliary depth: 0 (valid: 1..=2 for resnet8"),
        "{err}"
    );
    let err = auglocal_err(&["train", "--out", "/tmp/never", "--batch-size", "1"]);
    assert!(err.contains("--batch-size must be at least 2"), "{err}");
    let err = auglocal_err(&["train", "--out", "/tmp/never", "--epochs", "three"]);
    assert!(
        err.contains("invalid value 'three' for '--epochs <EPOCHS>'"),
        "{err}"
    );
    let err = auglocal_err(&["inspect", "--model", "resnet32", "--aux-depth", "15"]);
    assert!(
        err.contains("invalid auxiliary depth: 15 (valid: 1..=14"),
        "{err}"
    );
    let err = auglocal_err(&["train"]);
    assert!(err.contains("--out DIR is required"), "{err}");
    let err = auglocal_err(&["train", "--out", "/tmp/never", "--device", "tpu"]);
    assert!(
        err.contains("unknown device `tpu` (valid: cpu, cuda, cuda:N)"),
        "{err}"
    );
    if !candle_core::utils::cuda_is_available() {
        let err = auglocal_err(&["train", "--out", "/tmp/never", "--device", "cuda"]);
        assert!(
            err.contains("this auglocal was built without CUDA; build it with `--features cuda`"),
            "{err}"
        );
    }
}

#[test]
fn missing_and_broken_dataset_files_are_named() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let out = tmp.path().join("run");
    let err = auglocal_err(&["train", "--out", path_str(&out), "--dataset", "cifar10"]);
    assert!(
        err.starts_with(
            "no data directory given for cifar10: expected the directory holding data_batch_1.bin"
        ) && err.ends_with("; pass it with --data-dir DIR"),
        "{err}"
    );

    let missing = tmp.path().join("no-such-dir");
    let err = auglocal_err(&[
        "train",
        "--out",
        path_str(&out),
        "--dataset",
        "cifar10",
        "--data-dir",
        path_str(&missing),
    ]);
    assert!(
        err.contains(path_str(&missing)) && err.contains("data_batch_1.bin"),
        "{err}"
    );

    let data = write_cifar10(&tmp.path().join("cifar"), 4)?;
    let batch3 = data.join("data_batch_3.bin");
    let bytes = std::fs::read(&batch3)?;
    std::fs::write(&batch3, &bytes[..bytes.len() - 100])?;
    let err = auglocal_err(&[
        "train",
        "--out",
        path_str(&out),
        "--dataset",
        "cifar10",
        "--data-dir",
        path_str(&data),
    ]);
    assert!(
        err.contains(path_str(&batch3)) && err.contains("3073"),
        "{err}"
    );
    assert!(
        !out.join("checkpoint").exists(),
        "a failed start must not write a checkpoint"
    );
    Ok(())
}

#[test]
fn config_files_are_checked() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let out = tmp.path().join("run");
    let cfg = tmp.path().join("run.toml");
    std::fs::write(&cfg, "model = \"resnet8\"\nlearning_rate = 0.1\n")?;
    let err = auglocal_err(&["train", "--out", path_str(&out), "--config", path_str(&cfg)]);
    assert!(
        err.contains(path_str(&cfg)) && err.contains("learning_rate"),
        "{err}"
    );
    std::fs::write(&cfg, "model = [")?;
    let err = auglocal_err(&["train", "--out", path_str(&out), "--config", path_str(&cfg)]);
    assert!(
        err.contains("is not valid TOML") && err.contains(path_str(&cfg)),
        "{err}"
    );
    let absent = tmp.path().join("absent.toml");
    let err = auglocal_err(&[
        "train",
        "--out",
        path_str(&out),
        "--config",
        path_str(&absent),
    ]);
    assert!(
        err.contains("cannot read config file") && err.contains(path_str(&absent)),
        "{err}"
    );
    Ok(())
}

#[test]
fn checkpoints_that_do_not_fit_are_refused() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let missing = tmp.path().join("nothing-here");
    let err = auglocal_err(&["eval", "--checkpoint", path_str(&missing)]);
    assert!(
        err.contains(path_str(&missing)) && err.contains("no such directory"),
        "{err}"
    );
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty)?;
    let err = auglocal_err(&["eval", "--checkpoint", path_str(&empty)]);
    assert!(err.contains("no checkpoint here"), "{err}");

    // A real, tiny run.
    let run = tmp.path().join("run");
    auglocal(&[
        "train",
        "--out",
        path_str(&run),
        "--model",
        "resnet8",
        "--method",
        "bp",
        "--train-size",
        "16",
        "--test-size",
        "8",
        "--batch-size",
        "8",
        "--epochs",
        "1",
    ])?;
    let err = auglocal_err(&["train", "--out", path_str(&run)]);
    assert!(
        err.contains("already holds a training run") && err.contains("--resume"),
        "{err}"
    );

    // The same checkpoint claimed for another model.
    let other = tmp.path().join("other");
    std::fs::create_dir(&other)?;
    let ckpt = run.join("checkpoint");
    for f in ["model.safetensors", "optimizer.safetensors"] {
        std::fs::copy(ckpt.join(f), other.join(f))?;
    }
    let state =
        std::fs::read_to_string(ckpt.join("state.json"))?.replace("\"resnet8\"", "\"resnet20\"");
    std::fs::write(other.join("state.json"), state)?;
    let err = auglocal_err(&["eval", "--checkpoint", path_str(&other)]);
    assert!(
        err.contains("model.safetensors") && err.contains("saved from another model"),
        "{err}"
    );

    // Truncated weights.
    let bytes = std::fs::read(ckpt.join("model.safetensors"))?;
    std::fs::write(other.join("model.safetensors"), &bytes[..bytes.len() / 2])?;
    let state = std::fs::read_to_string(ckpt.join("state.json"))?;
    std::fs::write(other.join("state.json"), state)?;
    let err = auglocal_err(&["eval", "--checkpoint", path_str(&other)]);
    assert!(
        err.contains("not a valid safetensors file") && err.contains("truncated"),
        "{err}"
    );

    // Weights of another model as --init-from.
    let export = tmp.path().join("resnet8.safetensors");
    auglocal(&[
        "export",
        "--checkpoint",
        path_str(&run),
        "--out",
        path_str(&export),
    ])?;
    let err = auglocal_err(&[
        "train",
        "--out",
        path_str(&tmp.path().join("r20")),
        "--model",
        "resnet20",
        "--init-from",
        path_str(&export),
    ]);
    assert!(
        err.contains(path_str(&export)) && err.contains("another model"),
        "{err}"
    );

    // Settings a run fixed cannot change on resume.
    let err = auglocal_err(&["train", "--resume", path_str(&run), "--model", "resnet20"]);
    assert!(err.contains("--model cannot change when resuming"), "{err}");
    Ok(())
}

/// `train` of a ResNet-8 with BP at a learning rate that diverges at once, plus `extra` flags.
fn diverging_run(run: &std::path::Path, extra: &[&str]) -> anyhow::Result<String> {
    let mut args = vec![
        "train",
        "--out",
        path_str(run),
        "--model",
        "resnet8",
        "--method",
        "bp",
        "--train-size",
        "256",
        "--test-size",
        "32",
        "--batch-size",
        "32",
        "--epochs",
        "1",
        "--lr",
        "1e30",
    ];
    args.extend_from_slice(extra);
    auglocal(&args)
}

#[test]
fn a_diverging_run_names_the_step_and_keeps_the_last_good_checkpoint() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let run = tmp.path().join("run");
    let err = format!(
        "{:#}",
        diverging_run(&run, &["--checkpoint-every", "1"]).unwrap_err()
    );
    // Step 1's huge update makes step 2's gradients NaN: caught before they reach the
    // weights, with the tensor named.
    assert!(
        err.contains("non-finite gradient of `conv1.weight` at step 2 in module 0: NaN; lower the learning rate"),
        "{err}"
    );
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("checkpoint/state.json"))?)?;
    assert_eq!(state["steps"], 1, "the checkpoint of step 1 is kept");
    Ok(())
}

#[test]
fn on_nan_skip_skips_the_bad_batches_and_counts_them() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let run = tmp.path().join("run");
    diverging_run(&run, &["--on-nan", "skip"])?;
    let lines = common::metrics(&run)?;
    assert_eq!(lines.len(), 1);
    // Step 1 is finite (as in the stopping run above); the weights it leaves give NaN
    // gradients on every later batch, so the other 7 of the epoch's 8 are skipped.
    assert_eq!(lines[0]["steps"], 8);
    assert_eq!(lines[0]["skipped_steps"], 7);
    assert!(lines[0]["train_loss"].as_f64().unwrap().is_finite());
    Ok(())
}
