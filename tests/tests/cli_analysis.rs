//! probe, similarity and plot end to end on tiny checkpoints trained here, and the curves
//! `train` draws at the end of a run.

mod common;

use std::path::Path;

use common::{auglocal, auglocal_err, path_str};

/// Decodes a PNG whole (a truncated or corrupt file fails) and returns its size and pixels
/// (RGB).
fn read_png(path: &Path) -> anyhow::Result<((u32, u32), Vec<u8>)> {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path)?));
    let mut reader = decoder.read_info()?;
    let mut pixels = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut pixels)?;
    assert_eq!(info.color_type, png::ColorType::Rgb);
    pixels.truncate(info.buffer_size());
    Ok(((info.width, info.height), pixels))
}

/// Pixels of exactly this colour.
fn count_color(pixels: &[u8], rgb: [u8; 3]) -> usize {
    pixels.chunks(3).filter(|p| *p == rgb).count()
}

const BLUE: [u8; 3] = [31, 119, 180]; // the first run's colour
const ORANGE: [u8; 3] = [255, 127, 14]; // the second's
const BLACK: [u8; 3] = [0, 0, 0]; // text and axes

fn train(out: &Path, method: &str) -> anyhow::Result<String> {
    auglocal(&[
        "train",
        "--out",
        path_str(out),
        "--model",
        "resnet8",
        "--method",
        method,
        "--aux-depth",
        "1",
        "--train-size",
        "96",
        "--test-size",
        "40",
        "--batch-size",
        "32",
        "--epochs",
        "2",
    ])
}

#[test]
fn probe_similarity_and_plots_of_trained_runs() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let (bp, al) = (tmp.path().join("bp"), tmp.path().join("al"));
    train(&bp, "bp")?;
    train(&al, "auglocal")?;

    // train drew its curves: 3 panels, one run in blue, black text.
    let (size, pixels) = read_png(&bp.join("curves.png"))?;
    assert_eq!(size, (1800, 560));
    assert!(count_color(&pixels, BLUE) > 500);
    assert_eq!(count_color(&pixels, ORANGE), 0);
    assert!(count_color(&pixels, BLACK) > 500);

    let cmp = tmp.path().join("cmp");
    let printed = auglocal(&[
        "plot",
        "--run",
        path_str(&bp),
        "--run",
        path_str(&al),
        "--out",
        path_str(&cmp),
    ])?;
    assert_eq!(
        printed.trim(),
        format!(
            "wrote {}\nwrote {}",
            cmp.join("curves.png").display(),
            cmp.join("modules.png").display()
        )
    );
    // Accuracy by module: BP's single module (blue) and AugLocal's three (orange).
    let (size, pixels) = read_png(&cmp.join("modules.png"))?;
    assert_eq!(size, (800, 560));
    assert!(count_color(&pixels, BLUE) > 20 && count_color(&pixels, ORANGE) > 100);
    let (size, pixels) = read_png(&cmp.join("curves.png"))?;
    assert_eq!(size, (1800, 560));
    assert!(count_color(&pixels, BLUE) > 500 && count_color(&pixels, ORANGE) > 500);

    // Probes of both runs, one curve each.
    let table = auglocal(&[
        "probe",
        "--checkpoint",
        path_str(&bp),
        "--checkpoint",
        path_str(&al),
        "--out",
        path_str(&cmp),
    ])?;
    assert!(
        table.contains("on synthetic: 96 train / 40 test images"),
        "{table}"
    );
    assert!(table.contains("bp (resnet8 bp)") && table.contains("al (resnet8 auglocal d=1)"));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cmp.join("probe.json"))?)?;
    assert_eq!(report["train_images"], 96);
    assert_eq!(report["test_images"], 40);
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    for run in runs {
        let units = run["units"].as_array().unwrap();
        let channels: Vec<u64> = units
            .iter()
            .map(|u| u["channels"].as_u64().unwrap())
            .collect();
        assert_eq!(channels, [16, 16, 32, 64]);
        for u in units {
            // Accuracies are multiples of 1/96 and 1/40.
            let train = u["train_acc"].as_f64().unwrap() * 96.0;
            let test = u["test_acc"].as_f64().unwrap() * 40.0;
            assert!((train - train.round()).abs() < 1e-9 && (0.0..=96.0).contains(&train));
            assert!((test - test.round()).abs() < 1e-9 && (0.0..=40.0).contains(&test));
        }
    }
    let (size, pixels) = read_png(&cmp.join("probe.png"))?;
    assert_eq!(size, (1000, 640));
    assert!(count_color(&pixels, BLUE) > 200 && count_color(&pixels, ORANGE) > 200);

    // A run against itself: 1 on the diagonal; written next to run A by default.
    let printed = auglocal(&[
        "similarity",
        "--a",
        path_str(&al),
        "--b",
        path_str(&al),
        "--images",
        "40",
    ])?;
    assert!(printed.contains("linear CKA (flat unit outputs, 40 synthetic test images)"));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(al.join("similarity.json"))?)?;
    let cka = report["cka"].as_array().unwrap();
    assert_eq!(cka.len(), 4);
    for (i, row) in cka.iter().enumerate() {
        let row = row.as_array().unwrap();
        assert_eq!(row.len(), 4);
        assert!((row[i].as_f64().unwrap() - 1.0).abs() < 1e-4, "{row:?}");
        for v in row {
            assert!((0.0..=1.0 + 1e-6).contains(&v.as_f64().unwrap()));
        }
    }
    let (size, _) = read_png(&al.join("similarity.png"))?;
    assert_eq!(size, (900, 760));

    // BP against AugLocal, pooled features, 20 images.
    auglocal(&[
        "similarity",
        "--a",
        path_str(&bp),
        "--b",
        path_str(&al),
        "--features",
        "pooled",
        "--images",
        "20",
        "--out",
        path_str(&cmp),
    ])?;
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cmp.join("similarity.json"))?)?;
    assert_eq!(report["images"], 20);
    assert_eq!(report["features"], "pooled");
    assert_eq!(report["label_b"], "al (resnet8 auglocal d=1)");
    let (size, _) = read_png(&cmp.join("similarity.png"))?;
    assert_eq!(size, (900, 760));

    // Bad input: named and explained.
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty)?;
    let err = auglocal_err(&["plot", "--run", path_str(&empty)]);
    assert!(
        err.contains("metrics.jsonl") && err.contains("finished at least one epoch"),
        "{err}"
    );
    std::fs::write(empty.join("metrics.jsonl"), "{\"epoch\": 1}\n")?;
    let err = auglocal_err(&["plot", "--run", path_str(&empty)]);
    assert!(err.contains("line 1 is not an epoch record"), "{err}");
    let err = auglocal_err(&[
        "similarity",
        "--a",
        path_str(&bp),
        "--b",
        path_str(&al),
        "--images",
        "1",
    ]);
    assert!(err.contains("--images must be at least 2"), "{err}");
    let err = auglocal_err(&["probe", "--checkpoint", path_str(&bp), "--ridge", "0"]);
    assert!(err.contains("invalid ridge strength: 0"), "{err}");
    let err = auglocal_err(&["probe", "--checkpoint", path_str(&empty)]);
    assert!(err.contains("empty"), "{err}");
    Ok(())
}

#[test]
fn inspect_shows_multiply_adds() -> anyhow::Result<()> {
    let bp = auglocal(&["inspect", "--model", "resnet32", "--method", "bp"])?;
    assert!(
        bp.contains("multiply-adds per image at 32x32: inference 69.12 M; training step 206.93 M = forward 69.12 M (auxiliary 0.00 M) + backward 137.81 M"),
        "{bp}"
    );
    Ok(())
}
