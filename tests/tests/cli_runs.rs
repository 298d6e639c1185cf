//! The CLI end to end on small runs: resume continuity, eval, export, init-from, CIFAR files,
//! inspect.

mod common;

use common::{auglocal, metrics, path_str, tensors, write_cifar10};

const TINY: &[&str] = &[
    "--model",
    "resnet8",
    "--train-size",
    "96",
    "--test-size",
    "32",
    "--batch-size",
    "32",
    "--eval-batch-size",
    "32",
];

fn train(out: &std::path::Path, extra: &[&str]) -> anyhow::Result<()> {
    let mut args = vec!["train", "--out", path_str(out)];
    args.extend_from_slice(TINY);
    args.extend_from_slice(extra);
    auglocal(&args)?;
    Ok(())
}

/// Metrics without the timing fields, which differ between runs.
fn comparable(run: &std::path::Path) -> anyhow::Result<Vec<serde_json::Value>> {
    Ok(metrics(run)?
        .into_iter()
        .map(|mut m| {
            let o = m.as_object_mut().unwrap();
            for k in [
                "seconds",
                "images_per_second",
                "peak_rss_bytes",
                "data_wait_seconds",
            ] {
                o.remove(k);
            }
            m
        })
        .collect())
}

#[test]
fn interrupted_and_resumed_runs_equal_uninterrupted_ones() -> anyhow::Result<()> {
    // AdamW's state (two moments and a step count per parameter) and clipping resume too.
    let adamw = [
        "auglocal",
        "--optimizer",
        "adamw",
        "--clip-grad-norm",
        "0.5",
    ];
    // MAN's moving-average copies are buffers of the checkpoint; HPFF reads image patches.
    for method_args in [&["auglocal"][..], &["bp"], &adamw, &["infopro+man+hpff"]] {
        let method = method_args.join(" ");
        let tmp = tempfile::tempdir()?;
        let straight = tmp.path().join("straight");
        let pieces = tmp.path().join("pieces");
        let mut args = vec!["--method"];
        args.extend_from_slice(method_args);
        args.extend(["--aux-depth", "1", "--epochs", "2", "--log-every", "1"]);
        train(&straight, &args)?;
        let optimizer_state = tensors(&straight.join("checkpoint/optimizer.safetensors"))?;
        let adam_slots = optimizer_state.iter().all(|t| {
            ["exp_avg/", "exp_avg_sq/", "step/"]
                .iter()
                .any(|slot| t.0.starts_with(slot))
        });
        assert_eq!(
            adam_slots,
            method_args.contains(&"adamw"),
            "{method}: optimizer state keys"
        );
        // 3 steps per epoch: stop mid-epoch 1, then mid-epoch 2, then finish.
        let mut first = args.to_vec();
        first.extend(["--max-steps", "2"]);
        train(&pieces, &first)?;
        assert!(!pieces.join("metrics.jsonl").exists() || metrics(&pieces)?.is_empty());
        auglocal(&["train", "--resume", path_str(&pieces), "--max-steps", "4"])?;
        assert_eq!(metrics(&pieces)?.len(), 1);
        auglocal(&["train", "--resume", path_str(&pieces)])?;

        let a = tensors(&straight.join("checkpoint/model.safetensors"))?;
        let b = tensors(&pieces.join("checkpoint/model.safetensors"))?;
        assert_eq!(a.len(), b.len());
        assert_eq!(
            a.iter().any(|t| t.0.starts_with("aux.0.man.ema.")),
            method.contains("+man"),
            "{method}: MAN's copies in the checkpoint"
        );
        for (x, y) in a.iter().zip(&b) {
            assert!(x == y, "{method}: tensor {} differs after resume", x.0);
        }
        assert_eq!(
            tensors(&straight.join("checkpoint/optimizer.safetensors"))?,
            tensors(&pieces.join("checkpoint/optimizer.safetensors"))?,
            "{method}: momentum buffers differ after resume"
        );
        assert_eq!(
            comparable(&straight)?,
            comparable(&pieces)?,
            "{method}: metrics differ after resume"
        );
        let steps_a = std::fs::read_to_string(straight.join("steps.jsonl"))?;
        let steps_b = std::fs::read_to_string(pieces.join("steps.jsonl"))?;
        assert_eq!(
            steps_a, steps_b,
            "{method}: per-step losses differ after resume"
        );
        assert_eq!(steps_a.lines().count(), 6);
        // Log lines written after the last checkpoint (a crash between the two) are dropped
        // on resume, not duplicated.
        let staged = tmp.path().join("staged");
        train(&staged, &first)?;
        let mut log = std::fs::OpenOptions::new()
            .append(true)
            .open(staged.join("steps.jsonl"))?;
        std::io::Write::write_all(&mut log, b"{\"step\":3,\"stale\":true}\n")?;
        auglocal(&["train", "--resume", path_str(&staged)])?;
        assert_eq!(
            std::fs::read_to_string(staged.join("steps.jsonl"))?,
            steps_a,
            "{method}: stale log line kept"
        );
        // A finished run says so instead of training again.
        auglocal(&["train", "--resume", path_str(&pieces)])?;
        assert_eq!(metrics(&pieces)?.len(), 2);
    }
    Ok(())
}

#[test]
fn metrics_config_and_step_logs_have_every_field() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let run = tmp.path().join("run");
    train(
        &run,
        &[
            "--method",
            "auglocal",
            "--aux-depth",
            "1",
            "--epochs",
            "1",
            "--log-every",
            "2",
            "--lr",
            "0.03",
        ],
    )?;
    let lines = metrics(&run)?;
    assert_eq!(lines.len(), 1);
    let m = &lines[0];
    for key in [
        "epoch",
        "lr",
        "train_loss",
        "train_acc",
        "test_loss",
        "test_acc",
        "seconds",
        "images_per_second",
        "peak_rss_bytes",
    ] {
        assert!(m.get(key).is_some(), "metrics.jsonl lacks {key}: {m}");
    }
    assert_eq!(m["epoch"], 1);
    assert_eq!(m["lr"], 0.03);
    assert!(m["peak_rss_bytes"].as_u64().unwrap() > 10_000_000);
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json"))?)?;
    assert_eq!(config["model"], "resnet8");
    assert_eq!(config["method"], "auglocal");
    assert_eq!(config["aux_depth"], 1);
    assert_eq!(config["schedule"], "cosine");
    assert_eq!(config["momentum"], 0.9);
    assert_eq!(config["nesterov"], true);
    assert_eq!(config["weight_decay"], 1e-4);
    let steps = std::fs::read_to_string(run.join("steps.jsonl"))?;
    let first: serde_json::Value = serde_json::from_str(steps.lines().next().unwrap())?;
    assert_eq!(first["step"], 2);
    // resnet8 with d = 1: K = 4 - 1 = 3 modules.
    assert_eq!(first["module_losses"].as_array().unwrap().len(), 3);
    Ok(())
}

#[test]
fn eval_and_export_agree_with_the_checkpoint() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let run = tmp.path().join("run");
    train(
        &run,
        &["--method", "auglocal", "--aux-depth", "1", "--epochs", "1"],
    )?;
    // The run tested on its first 32 test images; eval scores what it is told to.
    let out = auglocal(&["eval", "--checkpoint", path_str(&run), "--test-size", "32"])?;
    let line: serde_json::Value = serde_json::from_str(out.trim())?;
    assert_eq!(line["images"], 32);
    assert_eq!(line["dataset"], "synthetic");
    let last = &metrics(&run)?[0];
    assert!(last.get("test_top5").is_none(), "10 classes: top-1 only");
    assert!(
        (line["accuracy"].as_f64().unwrap() - last["test_acc"].as_f64().unwrap()).abs() < 1e-12
    );
    assert!((line["loss"].as_f64().unwrap() - last["test_loss"].as_f64().unwrap()).abs() < 1e-5);
    let (top1, top5) = (
        line["accuracy"].as_f64().unwrap(),
        line["top5_accuracy"].as_f64().unwrap(),
    );
    assert!(top5 >= top1 && top5 <= 1.0, "top-1 {top1}, top-5 {top5}");
    // By default, the whole test split (the synthetic one holds 1000 images).
    let out = auglocal(&["eval", "--checkpoint", path_str(&run)])?;
    let whole: serde_json::Value = serde_json::from_str(out.trim())?;
    assert_eq!(whole["images"], 1000);

    let file = tmp.path().join("resnet8.safetensors");
    auglocal(&[
        "export",
        "--checkpoint",
        path_str(&run),
        "--out",
        path_str(&file),
    ])?;
    let exported = tensors(&file)?;
    let all = tensors(&run.join("checkpoint/model.safetensors"))?;
    assert!(exported.iter().all(|t| !t.0.starts_with("aux.")));
    assert_eq!(
        exported.len(),
        all.iter().filter(|t| !t.0.starts_with("aux.")).count()
    );
    for t in &exported {
        let same = all.iter().find(|a| a.0 == t.0).unwrap();
        assert_eq!(t, same, "{} differs from the checkpoint", t.0);
    }
    let tracked = exported
        .iter()
        .find(|t| t.0 == "layer2.0.downsample.1.num_batches_tracked")
        .unwrap();
    assert_eq!(tracked.1, "I64");
    assert_eq!(tracked.2, Vec::<usize>::new());
    assert_eq!(
        i64::from_le_bytes(tracked.3[..8].try_into()?),
        3,
        "3 training steps"
    );
    let names: Vec<&str> = exported.iter().map(|t| t.0.as_str()).collect();
    for name in [
        "conv1.weight",
        "bn1.running_var",
        "layer3.0.conv2.weight",
        "fc.weight",
        "fc.bias",
    ] {
        assert!(names.contains(&name), "export lacks {name}");
    }
    let err = common::auglocal_err(&[
        "export",
        "--checkpoint",
        path_str(&run),
        "--out",
        path_str(&tmp.path().join("w.bin")),
    ]);
    assert!(err.contains("must end in .safetensors"), "{err}");

    // Start a new run from the exported backbone: its first evaluation before any step
    // equals the source's (same weights, fresh auxiliary nets).
    let start = tmp.path().join("from-export");
    train(
        &start,
        &[
            "--method",
            "bp",
            "--init-from",
            path_str(&file),
            "--max-steps",
            "0",
            "--epochs",
            "1",
        ],
    )?;
    let a = tensors(&start.join("checkpoint/model.safetensors"))?;
    for t in &exported {
        assert_eq!(
            a.iter().find(|x| x.0 == t.0).unwrap(),
            t,
            "{} not taken from --init-from",
            t.0
        );
    }

    // The same weights as `DataParallel(model).state_dict()` names them (`module.conv1.weight`).
    let wrapped = tmp.path().join("wrapped.safetensors");
    let renamed: std::collections::HashMap<String, candle_core::Tensor> =
        candle_core::safetensors::load(&file, &candle_core::Device::Cpu)?
            .into_iter()
            .map(|(name, tensor)| (format!("module.{name}"), tensor))
            .collect();
    candle_core::safetensors::save(&renamed, &wrapped)?;
    assert!(tensors(&wrapped)?
        .iter()
        .all(|t| t.0.starts_with("module.")));
    let start = tmp.path().join("from-wrapped");
    let init_from = ["--method", "bp", "--init-from", path_str(&wrapped)];
    let args: Vec<&str> = init_from
        .into_iter()
        .chain(["--max-steps", "0", "--epochs", "1"])
        .collect();
    train(&start, &args)?;
    let b = tensors(&start.join("checkpoint/model.safetensors"))?;
    for t in &exported {
        assert_eq!(b.iter().find(|x| x.0 == t.0).unwrap(), t, "{}", t.0);
    }
    Ok(())
}

/// One epoch of ResNet-8 on the CIFAR-10 files in `data`, batches of 10, into `out`.
fn train_on_cifar10(data: &std::path::Path, out: &std::path::Path) -> anyhow::Result<String> {
    auglocal(&[
        "train",
        "--out",
        path_str(out),
        "--dataset",
        "cifar10",
        "--data-dir",
        path_str(data),
        "--model",
        "resnet8",
        "--epochs",
        "1",
        "--batch-size",
        "10",
        "--lr",
        "0.1",
        "--schedule",
        "constant",
    ])
}

#[test]
fn trains_on_cifar10_binary_files() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    write_cifar10(&tmp.path().join("cifar-10-batches-bin"), 8)?;
    let run = tmp.path().join("run");
    train_on_cifar10(tmp.path(), &run)?;
    let m = &metrics(&run)?[0];
    assert_eq!(m["steps"], 4, "40 training images in batches of 10");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json"))?)?;
    assert_eq!(config["data_dir"], path_str(tmp.path()));
    assert_eq!(config["epochs"], 1);
    let out = auglocal(&["eval", "--checkpoint", path_str(&run)])?;
    let line: serde_json::Value = serde_json::from_str(out.trim())?;
    assert_eq!(line["images"], 8);
    Ok(())
}

/// torchvision's download (`cifar-10-python.tar.gz`, still packed) trains to the same bytes as
/// the binary version of the same images.
#[test]
fn trains_on_torchvisions_packed_download_as_on_binary_files() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let binary = write_cifar10(&tmp.path().join("binary"), 8)?;
    let mut members = Vec::new();
    for (bin, py) in [
        ("data_batch_1.bin", "data_batch_1"),
        ("data_batch_2.bin", "data_batch_2"),
        ("data_batch_3.bin", "data_batch_3"),
        ("data_batch_4.bin", "data_batch_4"),
        ("data_batch_5.bin", "data_batch_5"),
        ("test_batch.bin", "test_batch"),
    ] {
        let records = std::fs::read(binary.join(bin))?;
        let labels: Vec<u32> = records.chunks(3073).map(|r| u32::from(r[0])).collect();
        let images: Vec<u8> = records.chunks(3073).flat_map(|r| r[1..].to_vec()).collect();
        let batch = auglocal_data::fixtures::cifar_pickle(&images, &[("labels", &labels)]);
        members.push((format!("cifar-10-batches-py/{py}"), batch));
    }
    let packed = tmp.path().join("packed");
    std::fs::create_dir(&packed)?;
    let members: Vec<(&str, &[u8])> = members
        .iter()
        .map(|(name, bytes)| (name.as_str(), bytes.as_slice()))
        .collect();
    auglocal_data::fixtures::write_tar_gz(&packed.join("cifar-10-python.tar.gz"), &members)?;

    train_on_cifar10(&binary, &tmp.path().join("from-binary"))?;
    train_on_cifar10(&packed, &tmp.path().join("from-packed"))?;
    assert_eq!(
        comparable(&tmp.path().join("from-binary"))?,
        comparable(&tmp.path().join("from-packed"))?
    );
    for file in ["model.safetensors", "optimizer.safetensors"] {
        let a = std::fs::read(tmp.path().join("from-binary/checkpoint").join(file))?;
        let b = std::fs::read(tmp.path().join("from-packed/checkpoint").join(file))?;
        assert!(a == b, "{file} differs between the two downloads");
    }
    Ok(())
}

#[test]
fn config_file_then_flags() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let cfg = tmp.path().join("run.toml");
    std::fs::write(&cfg, "model = \"resnet8\"\nmethod = \"bp\"\nlr = 0.2\nepochs = 3\ntrain_size = 64\ntest_size = 16\nbatch_size = 32\n")?;
    let run = tmp.path().join("run");
    auglocal(&[
        "train",
        "--out",
        path_str(&run),
        "--config",
        path_str(&cfg),
        "--epochs",
        "1",
        "--no-augment",
        "--no-shuffle",
    ])?;
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json"))?)?;
    assert_eq!(config["lr"], 0.2);
    assert_eq!(config["epochs"], 1);
    assert_eq!(config["method"], "bp");
    assert_eq!(config["augment"], false);
    assert_eq!(config["shuffle"], false);
    Ok(())
}

#[test]
fn inspect_prints_the_plan() -> anyhow::Result<()> {
    let json = auglocal(&[
        "inspect",
        "--model",
        "resnet32",
        "--method",
        "auglocal",
        "--aux-depth",
        "2",
        "--pyramid",
        "0.5",
        "--json",
    ])?;
    assert!(json.starts_with(
        r#"{"model":"resnet32","method":"auglocal","units":16,"modules":14,"aux":[{"unit":0,"depth":2,"blocks":[{"copy_of":8,"in":16,"out":32,"stride":2},{"copy_of":15,"in":32,"out":64,"stride":2}],"head":"fc"}"#
    ), "{json}");
    let plan: serde_json::Value = serde_json::from_str(&json)?;
    assert_eq!(plan["aux"].as_array().unwrap().len(), 13);
    let table = auglocal(&["inspect", "--model", "resnet32", "--aux-depth", "1"])?;
    assert!(
        table.contains("resnet32: 16 units, 15 modules; parameters: backbone 466906"),
        "{table}"
    );
    assert!(table.contains("bn_fc   [15:16->64,s2]"), "{table}");
    assert!(table.contains("last module: units 14..=15"), "{table}");
    let bp = auglocal(&["inspect", "--model", "resnet110", "--method", "bp"])?;
    assert!(
        bp.contains("55 units, 1 modules") && bp.contains("no auxiliary networks"),
        "{bp}"
    );
    Ok(())
}

/// `--save-best` keeps, beside the latest checkpoint, the one of the epoch with the best
/// test accuracy (the first of equals); a resumed run knows the best so far.
#[test]
fn save_best_keeps_the_best_epoch() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let run = tmp.path().join("run");
    let flags = [
        "--method",
        "bp",
        "--lr",
        "0.2",
        "--save-best",
        "--threads",
        "1",
    ];
    train(&run, &[&flags[..], &["--epochs", "4"]].concat())?;
    let state = |dir: &str| -> anyhow::Result<serde_json::Value> {
        Ok(serde_json::from_str(&std::fs::read_to_string(
            run.join(dir).join("state.json"),
        )?)?)
    };
    // The best epoch, by the metrics.
    let best_of = |lines: &[serde_json::Value]| {
        let mut best = (0, f64::NEG_INFINITY);
        for m in lines {
            let acc = m["test_acc"].as_f64().unwrap_or(f64::NAN);
            if acc > best.1 {
                best = (m["epoch"].as_u64().unwrap_or(0), acc);
            }
        }
        best
    };
    let (epoch, acc) = best_of(&metrics(&run)?);
    let best = state("checkpoint-best")?;
    assert_eq!(best["epochs_done"].as_u64(), Some(epoch));
    assert_eq!(best["best_test_acc"].as_f64(), Some(acc));
    assert_eq!(state("checkpoint")?["best_test_acc"].as_f64(), Some(acc));
    assert_eq!(state("checkpoint")?["epochs_done"], 4);
    // eval reads it like any checkpoint and scores what the run scored at that epoch.
    let best_dir = run.join("checkpoint-best");
    let out = auglocal(&[
        "eval",
        "--checkpoint",
        path_str(&best_dir),
        "--test-size",
        "32",
    ])?;
    let line: serde_json::Value = serde_json::from_str(out.trim())?;
    assert_eq!(line["accuracy"].as_f64(), Some(acc));

    // Two more epochs: the best checkpoint moves only if one of them beats `acc`.
    auglocal(&["train", "--resume", path_str(&run), "--epochs", "6"])?;
    let lines = metrics(&run)?;
    assert_eq!(lines.len(), 6);
    let (epoch, acc) = best_of(&lines);
    assert_eq!(
        state("checkpoint-best")?["epochs_done"].as_u64(),
        Some(epoch)
    );
    assert_eq!(
        state("checkpoint-best")?["best_test_acc"].as_f64(),
        Some(acc)
    );
    Ok(())
}

/// metrics.jsonl has each module's training loss and accuracy per epoch; the last module's
/// are the output's.
#[test]
fn metrics_have_every_modules_loss_and_accuracy() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let run = tmp.path().join("run");
    train(
        &run,
        &["--method", "auglocal", "--aux-depth", "1", "--epochs", "2"],
    )?;
    for m in metrics(&run)? {
        let losses: Vec<f64> = serde_json::from_value(m["module_train_loss"].clone())?;
        let accs: Vec<f64> = serde_json::from_value(m["module_train_acc"].clone())?;
        assert_eq!(
            (losses.len(), accs.len()),
            (3, 3),
            "ResNet-8, d = 1: 3 modules"
        );
        assert_eq!(losses[2], m["train_loss"].as_f64().unwrap_or(f64::NAN));
        assert_eq!(accs[2], m["train_acc"].as_f64().unwrap_or(f64::NAN));
        for (loss, acc) in losses.iter().zip(&accs) {
            assert!(loss.is_finite() && *loss > 0.0, "{loss}");
            // A count over the epoch's 96 images.
            assert!(((acc * 96.0).round() - acc * 96.0).abs() < 1e-9, "{acc}");
        }
    }
    Ok(())
}

/// `eval --aux` scores every module's classifier on the test set in inference: one entry per
/// module, the last the output layer's (the top-level figures); none for a local loss
/// without a classifier.
#[test]
fn eval_aux_scores_every_modules_classifier() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    for (method, classified) in [("auglocal", true), ("infopro-contrast", false)] {
        let run = tmp.path().join(method);
        train(
            &run,
            &["--method", method, "--aux-depth", "1", "--epochs", "1"],
        )?;
        let out = auglocal(&[
            "eval",
            "--checkpoint",
            path_str(&run),
            "--aux",
            "--test-size",
            "32",
        ])?;
        let line: serde_json::Value = serde_json::from_str(out.trim())?;
        let modules = line["modules"].as_array().cloned().unwrap_or_default();
        let (last, locals) = modules.split_last().expect("modules");
        assert_eq!(last["accuracy"], line["accuracy"], "{method}");
        assert_eq!(last["loss"], line["loss"], "{method}");
        assert!(!locals.is_empty(), "{method}");
        for (m, module) in locals.iter().enumerate() {
            assert_eq!(module["module"], m);
            match (classified, module["accuracy"].as_f64()) {
                (true, Some(acc)) => {
                    assert!(((acc * 32.0).round() - acc * 32.0).abs() < 1e-9, "{acc}")
                }
                (false, None) => {}
                (_, other) => panic!("{method} module {m}: accuracy {other:?}"),
            }
        }
    }
    Ok(())
}

/// `--recompute` changes memory and time, never the numbers: the same checkpoint bytes, and
/// it may be switched on or off when resuming.
#[test]
fn recompute_writes_the_same_checkpoint() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let (plain, recomputed) = (tmp.path().join("plain"), tmp.path().join("recomputed"));
    let args = ["--method", "bp", "--epochs", "1", "--max-steps", "2"];
    train(&plain, &args)?;
    let mut with_flag = args.to_vec();
    with_flag.push("--recompute");
    train(&recomputed, &with_flag)?;
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(recomputed.join("config.json"))?)?;
    assert_eq!(config["recompute"], true);
    for run in [&plain, &recomputed] {
        auglocal(&["train", "--resume", path_str(run), "--recompute"])?;
    }
    for file in ["model.safetensors", "optimizer.safetensors"] {
        let a = std::fs::read(plain.join("checkpoint").join(file))?;
        let b = std::fs::read(recomputed.join("checkpoint").join(file))?;
        assert!(a == b, "{file} differs with --recompute");
    }
    Ok(())
}
