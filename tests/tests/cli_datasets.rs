//! A tiny training run through the CLI on every dataset format, from files written in the
//! real formats: SVHN MAT-files, STL-10 binaries, a folder of JPEGs, a Hugging Face cache of
//! parquet shards. Each run is resnet8 for 2 steps.

mod common;

use std::path::Path;

use auglocal_data::fixtures;
use common::{auglocal, auglocal_err, metrics, path_str};

/// Trains resnet8 with BP for 2 steps of 4 images and returns the run's config.json.
fn train_two_steps(run: &Path, extra: &[&str]) -> anyhow::Result<serde_json::Value> {
    let mut args = vec![
        "train",
        "--out",
        path_str(run),
        "--model",
        "resnet8",
        "--method",
        "bp",
        "--epochs",
        "1",
        "--max-steps",
        "2",
        "--batch-size",
        "4",
        "--eval-batch-size",
        "4",
    ];
    args.extend_from_slice(extra);
    auglocal(&args)?;
    Ok(serde_json::from_str(&std::fs::read_to_string(
        run.join("config.json"),
    )?)?)
}

/// Steps recorded in the run's checkpoint.
fn steps(run: &Path) -> anyhow::Result<u64> {
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("checkpoint/state.json"))?)?;
    Ok(state["steps"].as_u64().unwrap_or(0))
}

fn pixel(image: usize, c: usize, row: usize, col: usize) -> u8 {
    ((image * 50 + c * 30 + row + col) % 256) as u8
}

#[test]
fn trains_on_svhn_mat_files() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    fixtures::write_svhn(
        &tmp.path().join("train_32x32.mat"),
        &[1, 2, 10, 4, 5, 6, 7, 8, 9, 10],
        pixel,
    )?;
    fixtures::write_svhn(&tmp.path().join("test_32x32.mat"), &[3, 10, 1], pixel)?;
    let run = tmp.path().join("run");
    let config = train_two_steps(
        &run,
        &["--dataset", "svhn", "--data-dir", path_str(tmp.path())],
    )?;
    assert_eq!(steps(&run)?, 2);
    // The paper recipe for SVHN, the flags above on top.
    assert_eq!(
        (config["recipe"].as_str(), config["lr"].as_f64()),
        (Some("paper"), Some(0.8))
    );
    assert_eq!(config["schedule"], "warmup-cosine");
    let out = auglocal(&["eval", "--checkpoint", path_str(&run)])?;
    let line: serde_json::Value = serde_json::from_str(out.trim())?;
    assert_eq!(line["images"], 3);
    Ok(())
}

#[test]
fn trains_on_stl10_binaries_with_the_paper_recipe() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("stl10_binary");
    std::fs::create_dir(&dir)?;
    fixtures::write_stl10(&dir, "train", &[1, 2, 3, 4, 5, 6, 7, 8], pixel)?;
    fixtures::write_stl10(&dir, "test", &[10, 9], pixel)?;
    let run = tmp.path().join("run");
    // --recipe paper names STL-10's batch 128 and lr 0.1; --batch-size then overrides.
    let config = train_two_steps(
        &run,
        &[
            "--dataset",
            "stl10",
            "--data-dir",
            path_str(tmp.path()),
            "--recipe",
            "paper",
        ],
    )?;
    assert_eq!(config["lr"], 0.1);
    assert_eq!(config["batch_size"], 4);
    assert_eq!(config["schedule"], "warmup-cosine");
    assert_eq!(steps(&run)?, 2);
    Ok(())
}

/// train/{class_a,class_b} with 4 JPEGs each and val/ with 2 each, 64x64 (48x64 for some).
fn write_folders(root: &Path) -> anyhow::Result<()> {
    for (split, per_class) in [("train", 4), ("val", 2)] {
        for (label, class) in ["class_a", "class_b"].iter().enumerate() {
            let dir = root.join(split).join(class);
            std::fs::create_dir_all(&dir)?;
            for i in 0..per_class {
                let height = if i % 2 == 0 { 64 } else { 48 };
                let bytes = fixtures::encode(64, height, image::ImageFormat::Jpeg, |x, y| {
                    let v = (label * 120 + x + y) as u8;
                    [v, v / 2, 255 - v]
                });
                std::fs::write(dir.join(format!("{i}.jpg")), bytes)?;
            }
        }
    }
    Ok(())
}

#[test]
fn trains_on_an_image_folder_and_skips_bad_files_when_asked() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("images");
    write_folders(&data)?;
    let stray = data.join("train/class_b/readme.txt");
    std::fs::write(&stray, "not an image")?;
    let flags = [
        "--dataset",
        "imagefolder",
        "--data-dir",
        path_str(&data),
        "--image-size",
        "32",
    ];
    let fails = tmp.path().join("fails");
    let mut args = vec!["train", "--out", path_str(&fails), "--model", "resnet8"];
    args.extend_from_slice(&flags);
    let err = auglocal_err(&args);
    assert!(
        err.contains(&format!(
            "{}: not an image (no JPEG or PNG signature); expected a JPEG or PNG image; remove \
             the file or pass --skip-bad-images",
            stray.display()
        )),
        "{err}"
    );

    let run = tmp.path().join("run");
    let mut args = flags.to_vec();
    args.push("--skip-bad-images");
    let config = train_two_steps(&run, &args)?;
    assert_eq!(config["skip_bad_images"], true);
    assert_eq!(config["image_size"], 32);
    assert_eq!(steps(&run)?, 2);
    let out = auglocal(&["eval", "--checkpoint", path_str(&run)])?;
    let line: serde_json::Value = serde_json::from_str(out.trim())?;
    assert_eq!(line["images"], 4);
    // Two classes: the head has two outputs.
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("checkpoint/state.json"))?)?;
    assert_eq!(state["classes"], 2);
    Ok(())
}

#[test]
fn trains_on_a_hub_preset_from_the_cache_offline() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let cache = tmp.path().join("hf/hub");
    let snapshot = fixtures::hub_snapshot(&cache, "uoft-cs/cifar10", "abc123")?;
    for (split, n) in [("train", 8), ("test", 4)] {
        let images: Vec<Vec<u8>> = (0..n)
            .map(|i| {
                fixtures::encode(32, 32, image::ImageFormat::Png, |x, y| {
                    [(i * 20 + x) as u8, y as u8, 9]
                })
            })
            .collect();
        let name = format!("plain_text/{split}-00000-of-00001.parquet");
        fixtures::write_image_parquet(
            &snapshot.join(&name),
            "img",
            &images,
            &[("label", (0..n as i64).map(|i| i % 10).collect())],
        )?;
        fixtures::hub_blob(&snapshot, &name)?;
    }
    // HF_HOME points the default cache at tmp/hf; this test alone sets it.
    std::env::set_var("HF_HOME", tmp.path().join("hf"));
    let run = tmp.path().join("run");
    let result = train_two_steps(&run, &["--dataset", "hub:cifar10", "--offline"]);
    std::env::remove_var("HF_HOME");
    let config = result?;
    assert_eq!(config["offline"], true);
    assert_eq!(steps(&run)?, 2);
    // 8 images in batches of 4: the epoch ends with the second step.
    let m = metrics(&run)?;
    assert_eq!((m.len(), m[0]["steps"].as_u64()), (1, Some(2)));
    assert!(m[0]["data_wait_seconds"].as_f64().is_some(), "{}", m[0]);
    Ok(())
}

/// With more than 10 classes, training logs top-5 test accuracy (the reference's Prec@5)
/// beside top-1, and `eval` reports both; the values are what the logits give.
#[test]
fn more_than_ten_classes_log_top5() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("images");
    for split in ["train", "val"] {
        for label in 0..12usize {
            let dir = data.join(split).join(format!("class_{label:02}"));
            std::fs::create_dir_all(&dir)?;
            let bytes = fixtures::encode(32, 32, image::ImageFormat::Png, |x, y| {
                let v = (label * 20 + x + y) as u8;
                [v, 255 - v, v / 2]
            });
            std::fs::write(dir.join("0.png"), bytes)?;
        }
    }
    let run = tmp.path().join("run");
    auglocal(&[
        "train",
        "--out",
        path_str(&run),
        "--model",
        "resnet8",
        "--method",
        "bp",
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--eval-batch-size",
        "5",
        "--dataset",
        "imagefolder",
        "--data-dir",
        path_str(&data),
        "--image-size",
        "32",
        "--threads",
        "1",
    ])?;
    let text = std::fs::read_to_string(run.join("metrics.jsonl"))?;
    let m: serde_json::Value = serde_json::from_str(text.lines().next().unwrap_or(""))?;
    let (top1, top5) = (
        m["test_acc"].as_f64().unwrap_or(f64::NAN),
        m["test_top5"].as_f64().unwrap_or(f64::NAN),
    );
    // 12 test images: each accuracy is a count over 12, top-5 at least top-1.
    for acc in [top1, top5] {
        assert!(((acc * 12.0).round() - acc * 12.0).abs() < 1e-9, "{acc}");
    }
    assert!(top5 >= top1, "top-1 {top1}, top-5 {top5}");
    let out = auglocal(&["eval", "--checkpoint", path_str(&run)])?;
    let line: serde_json::Value = serde_json::from_str(out.trim())?;
    assert_eq!(line["images"], 12);
    assert_eq!(line["accuracy"].as_f64(), Some(top1));
    assert_eq!(line["top5_accuracy"].as_f64(), Some(top5));
    Ok(())
}
