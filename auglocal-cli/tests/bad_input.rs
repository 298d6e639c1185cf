//! Bad input, everywhere, on the real binary: every case exits non-zero (2 for flags clap
//! rejects, 1 otherwise) with a message naming the thing at fault and what to do, never
//! panics, and leaves every file that existed before byte for byte as it was.
//!
//! Loading a checkpoint never executes anything from the file: weights are safetensors
//! (a JSON header and raw little-endian tensors) and run state is JSON, both parsed as data.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

struct Case {
    name: &'static str,
    /// Arguments; `{t}` stands for the fixture directory.
    args: &'static [&'static str],
    code: i32,
    /// Substrings the message must hold (`{t}` expanded).
    expect: &'static [&'static str],
    /// Limit on the size of any file written, in KiB (simulates a full disk).
    file_size_limit_kib: Option<u64>,
}

const fn case(
    name: &'static str,
    args: &'static [&'static str],
    code: i32,
    expect: &'static [&'static str],
) -> Case {
    Case {
        name,
        args,
        code,
        expect,
        file_size_limit_kib: None,
    }
}

const CASES: &[Case] = &[
    // Flags.
    case("unknown method", &["train", "--out", "{t}/new", "--method", "sgd"], 2,
        &["invalid value 'sgd' for '--method <METHOD>'", "[possible values: bp, auglocal"]),
    case("unknown modifier", &["train", "--out", "{t}/new", "--method", "dgl+ema"], 2,
        &["invalid method modifier: `ema` in `dgl+ema` (valid: one of +man, +hpff)"]),
    case("modifier on backprop", &["inspect", "--method", "bp+man"], 2,
        &["invalid method modifier: `bp+man` (valid: modifiers on a method with local losses"]),
    case("patches of odd features", &["inspect", "--model", "resnet18", "--method", "dgl+hpff"], 1,
        &["invalid image size for +hpff: 224x224 (7x7 features after unit 7 of resnet18)", "(set by --image-size, or --method without +hpff)"]),
    case("unknown model", &["train", "--out", "{t}/new", "--model", "resnet33"], 2,
        &["invalid value 'resnet33' for '--model <MODEL>'", "[possible values: resnet8, resnet20"]),
    case("unknown model in a config file", &["train", "--out", "{t}/new", "--config", "{t}/model33.toml"], 1,
        &["unknown model `resnet33` (valid: resnet8, resnet20"]),
    case("unknown dataset", &["train", "--out", "{t}/new", "--dataset", "mnist"], 1,
        &["unknown dataset `mnist`; valid names are: synthetic, cifar10"]),
    case("unknown schedule", &["train", "--out", "{t}/new", "--schedule", "linear"], 2,
        &["invalid schedule: linear (valid: warmup-cosine, warmup-cosine:N (N warm-up epochs), cosine, constant, or step:"]),
    case("pyramid out of range", &["train", "--out", "{t}/new", "--pyramid", "2"], 1,
        &["invalid pyramid coefficient: 2 (valid: a number in [0, 1]"]),
    case("aux depth 0", &["train", "--out", "{t}/new", "--model", "resnet8", "--aux-depth", "0"], 1,
        &["invalid auxiliary depth: 0 (valid: 1..=2 for resnet8"]),
    case("aux depth too deep", &["inspect", "--model", "resnet32", "--aux-depth", "15"], 1,
        &["invalid auxiliary depth: 15 (valid: 1..=14 for resnet32"]),
    case("batch size 1", &["train", "--out", "{t}/new", "--batch-size", "1"], 1,
        &["--batch-size must be at least 2 (BatchNorm needs two samples"]),
    case("non-numeric epochs", &["train", "--out", "{t}/new", "--epochs", "three"], 2,
        &["invalid value 'three' for '--epochs <EPOCHS>'"]),
    case("negative learning rate", &["train", "--out", "{t}/new", "--lr=-1"], 1,
        &["--lr must be a positive finite number, got -1"]),
    case("unknown device", &["train", "--out", "{t}/new", "--device", "tpu"], 2,
        &["unknown device `tpu` (valid: cpu, cuda, cuda:N)"]),
    case("keep 0", &["train", "--out", "{t}/new", "--keep", "0"], 1,
        &["--keep must be at least 1"]),
    case("unknown --on-nan", &["train", "--out", "{t}/new", "--on-nan", "ignore"], 2,
        &["invalid value 'ignore' for '--on-nan <ON_NAN>'", "[possible values: stop, skip]"]),
    case("checkpoint every 0", &["train", "--out", "{t}/new", "--checkpoint-every", "0"], 1,
        &["--checkpoint-every must be at least 1"]),
    case("no --out", &["train"], 1, &["--out DIR is required"]),
    case("unknown subcommand", &["fit"], 2, &["unrecognized subcommand 'fit'"]),
    case("--out of an existing run", &["train", "--out", "{t}/run"], 1,
        &["--out {t}/run already holds a training run; continue it with --resume {t}/run"]),
    case("changing the model on resume", &["train", "--resume", "{t}/run", "--model", "resnet20"], 1,
        &["--model cannot change when resuming"]),
    // Config files.
    case("config file missing", &["train", "--out", "{t}/new", "--config", "{t}/absent.toml"], 1,
        &["cannot read config file {t}/absent.toml"]),
    case("unknown --precision", &["train", "--out", "{t}/new", "--precision", "fp16"], 2,
        &["invalid value 'fp16' for '--precision <PRECISION>'", "[possible values: f32, bf16]"]),
    case("config file unknown precision", &["train", "--out", "{t}/new", "--config", "{t}/fp8.toml"], 1,
        &["{t}/fp8.toml", "unknown variant `fp8`, expected `f32` or `bf16`"]),
    case("config file not TOML", &["train", "--out", "{t}/new", "--config", "{t}/broken.toml"], 1,
        &["{t}/broken.toml", "is not valid TOML"]),
    case("config file unknown key", &["train", "--out", "{t}/new", "--config", "{t}/unknown.toml"], 1,
        &["{t}/unknown.toml", "learning_rate"]),
    case("config file wrong type", &["train", "--out", "{t}/new", "--config", "{t}/wrongtype.toml"], 1,
        &["{t}/wrongtype.toml", "batch_size"]),
    // Dataset files.
    case("dataset without --data-dir", &["train", "--out", "{t}/new", "--dataset", "cifar10"], 1,
        &["no data directory given for cifar10", "pass it with --data-dir DIR"]),
    case("dataset directory missing", &["train", "--out", "{t}/new", "--dataset", "cifar10", "--data-dir", "{t}/no-such-dir"], 1,
        &["{t}/no-such-dir", "data_batch_1.bin"]),
    case("dataset file truncated", &["train", "--out", "{t}/new", "--dataset", "cifar10", "--data-dir", "{t}/cifar-truncated"], 1,
        &["{t}/cifar-truncated/data_batch_3.bin", "3073"]),
    case(
        "hub dataset missing from the cache, offline",
        &["train", "--out", "{t}/new", "--dataset", "hub:someone/nothing", "--offline"],
        1,
        &["someone/nothing", "offline"],
    ),
    // Checkpoints.
    case("checkpoint directory missing", &["eval", "--checkpoint", "{t}/nothing-here"], 1,
        &["checkpoint {t}/nothing-here: no such directory; pass the --out directory of a training run"]),
    case("directory without a checkpoint", &["train", "--resume", "{t}/empty"], 1,
        &["checkpoint {t}/empty: no checkpoint here: expected checkpoint/model.safetensors"]),
    case("truncated weights", &["eval", "--checkpoint", "{t}/truncated"], 1,
        &["{t}/truncated/checkpoint/model.safetensors", "not a valid safetensors file", "truncated"]),
    case("weights not safetensors", &["train", "--resume", "{t}/garbage"], 1,
        &["{t}/garbage/checkpoint/model.safetensors", "not a valid safetensors file"]),
    case("another model's checkpoint", &["export", "--checkpoint", "{t}/other-model", "--out", "{t}/x.safetensors"], 1,
        &["{t}/other-model/checkpoint/model.safetensors", "saved from another model or method"]),
    case("another version's checkpoint", &["eval", "--checkpoint", "{t}/version99"], 1,
        &["{t}/version99/checkpoint: state version 99, this auglocal reads version 1; use the auglocal release that wrote it"]),
    case("a run state with an impossible class count", &["eval", "--checkpoint", "{t}/classes-huge"], 1,
        &["{t}/classes-huge/checkpoint says its model has 1000000000000 classes, expected 1 to 100000; state.json is damaged"]),
    case("unreadable run state", &["eval", "--checkpoint", "{t}/bad-state"], 1,
        &["{t}/bad-state/checkpoint/state.json", "unreadable run state"]),
    case("missing momentum file", &["train", "--resume", "{t}/no-optimizer"], 1,
        &["{t}/no-optimizer/checkpoint/optimizer.safetensors"]),
    case("init weights of another model", &["train", "--out", "{t}/new", "--model", "resnet20", "--init-from", "{t}/resnet8.safetensors"], 1,
        &["{t}/resnet8.safetensors", "saved from another model or method"]),
    case("init weights missing", &["train", "--out", "{t}/new", "--init-from", "{t}/absent.safetensors"], 1,
        &["{t}/absent.safetensors"]),
    // Output locations.
    case("unwritable output directory", &["train", "--out", "{t}/a-file/run", "--max-steps", "1"], 1,
        &["cannot create run directory {t}/a-file/run"]),
    case("export to a wrong extension", &["export", "--checkpoint", "{t}/run", "--out", "{t}/weights.bin"], 1,
        &["--out {t}/weights.bin must end in .safetensors"]),
    case("export into a missing directory", &["export", "--checkpoint", "{t}/run", "--out", "{t}/no-dir/w.safetensors"], 1,
        &["{t}/no-dir/w.safetensors"]),
    Case {
        name: "disk full while checkpointing",
        args: &["train", "--resume", "{t}/full", "--max-steps", "2"],
        code: 1,
        expect: &["cannot write the new checkpoint", "the previous checkpoint in {t}/full/checkpoint is intact", "free disk space"],
        file_size_limit_kib: Some(64),
    },
];

fn auglocal(args: &[String], file_size_limit_kib: Option<u64>) -> std::process::Output {
    let bin = env!("CARGO_BIN_EXE_auglocal");
    let mut cmd = match file_size_limit_kib {
        // Past the limit a write fails with EFBIG, as on a full disk (SIGXFSZ ignored).
        Some(kib) => {
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg(format!(
                    "trap '' XFSZ; ulimit -f {}; exec \"$0\" \"$@\"",
                    kib * 2
                ))
                .arg(bin);
            c
        }
        None => Command::new(bin),
    };
    // An empty Hugging Face cache of the test's own, whatever the machine has.
    let hf_home = std::env::temp_dir().join("auglocal-bad-input-hf-home");
    cmd.env("HF_HOME", hf_home).env_remove("HF_HUB_CACHE");
    cmd.args(args).output().expect("the binary runs")
}

fn must(args: &[&str]) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let out = auglocal(&args, None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    files
}

fn edit_state(run: &Path, edit: impl Fn(&mut serde_json::Value)) {
    let path = run.join("checkpoint/state.json");
    let mut state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut state);
    std::fs::write(path, serde_json::to_vec(&state).unwrap()).unwrap();
}

/// A run, broken copies of it, broken datasets and config files.
fn fixture(t: &Path) {
    let s = |p: &str| t.join(p).to_str().unwrap().to_string();
    must(&[
        "train",
        "--out",
        &s("run"),
        "--model",
        "resnet8",
        "--train-size",
        "64",
        "--test-size",
        "16",
        "--batch-size",
        "16",
        "--max-steps",
        "1",
        "--threads",
        "1",
    ]);
    must(&[
        "export",
        "--checkpoint",
        &s("run"),
        "--out",
        &s("resnet8.safetensors"),
    ]);
    for copy in [
        "truncated",
        "garbage",
        "other-model",
        "version99",
        "classes-huge",
        "bad-state",
        "no-optimizer",
        "full",
    ] {
        copy_dir(&t.join("run"), &t.join(copy));
    }
    let weights = t.join("truncated/checkpoint/model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    std::fs::write(
        t.join("garbage/checkpoint/model.safetensors"),
        b"#!/bin/sh\necho hi\n",
    )
    .unwrap();
    edit_state(&t.join("other-model"), |s| {
        s["config"]["model"] = "resnet20".into()
    });
    edit_state(&t.join("version99"), |s| s["version"] = 99.into());
    edit_state(&t.join("classes-huge"), |s| {
        s["classes"] = 1_000_000_000_000u64.into()
    });
    std::fs::write(
        t.join("bad-state/checkpoint/state.json"),
        b"{\"version\": 1, ",
    )
    .unwrap();
    std::fs::remove_file(t.join("no-optimizer/checkpoint/optimizer.safetensors")).unwrap();
    std::fs::create_dir(t.join("empty")).unwrap();
    std::fs::write(t.join("a-file"), b"not a directory").unwrap();
    std::fs::write(t.join("broken.toml"), b"model = [").unwrap();
    std::fs::write(
        t.join("unknown.toml"),
        b"model = \"resnet8\"\nlearning_rate = 0.1\n",
    )
    .unwrap();
    std::fs::write(t.join("wrongtype.toml"), b"batch_size = \"big\"\n").unwrap();
    std::fs::write(t.join("fp8.toml"), b"precision = \"fp8\"\n").unwrap();
    std::fs::write(t.join("model33.toml"), b"model = \"resnet33\"\n").unwrap();
    // CIFAR-10 binary files (a label byte and 3072 pixel bytes per record), one truncated.
    let cifar = t.join("cifar-truncated");
    std::fs::create_dir(&cifar).unwrap();
    for name in [
        "data_batch_1",
        "data_batch_2",
        "data_batch_3",
        "data_batch_4",
        "data_batch_5",
        "test_batch",
    ] {
        let mut bytes = Vec::new();
        for r in 0..4u8 {
            bytes.push(r % 10);
            bytes.extend(std::iter::repeat_n(r * 40, 3072));
        }
        if name == "data_batch_3" {
            bytes.truncate(bytes.len() - 100);
        }
        std::fs::write(cifar.join(format!("{name}.bin")), bytes).unwrap();
    }
}

#[test]
fn every_bad_input_is_named_and_changes_nothing() {
    assert!(CASES.len() >= 30);
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    fixture(t);
    let t_str = t.to_str().unwrap();
    let before = snapshot(t);
    let mut failures = Vec::new();
    for case in CASES {
        let args: Vec<String> = case.args.iter().map(|a| a.replace("{t}", t_str)).collect();
        let out = auglocal(&args, case.file_size_limit_kib);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let mut problems = Vec::new();
        if out.status.code() != Some(case.code) {
            problems.push(format!(
                "exit status {:?}, expected {}",
                out.status.code(),
                case.code
            ));
        }
        if stderr.contains("panicked") {
            problems.push("panicked".to_string());
        }
        for want in case.expect {
            let want = want.replace("{t}", t_str);
            if !stderr.contains(&want) {
                problems.push(format!("message lacks `{want}`"));
            }
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{}: {}\n  stderr: {}",
                case.name,
                problems.join("; "),
                stderr.trim()
            ));
        }
    }
    let after = snapshot(t);
    // The resumed run records the settings it ran with (its --max-steps); that is the
    // run's own bookkeeping, not something the user had.
    let rewritten = t.join("full/config.json");
    for (path, bytes) in before.iter().filter(|(p, _)| **p != rewritten) {
        match after.get(path) {
            None => failures.push(format!("{} was deleted", path.display())),
            Some(now) if now != bytes => failures.push(format!("{} was changed", path.display())),
            _ => {}
        }
    }
    assert!(
        failures.is_empty(),
        "{} problem(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}
