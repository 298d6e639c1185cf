//! `auglocal compare`: every method learns the synthetic data on the same seed, and the
//! report says so; bad method lists fail with a message naming the fault.

mod common;

use common::{auglocal, auglocal_err, path_str};

const METHODS: [&str; 8] = [
    "bp",
    "bp+recompute",
    "auglocal",
    "dgl",
    "infopro",
    "infopro-contrast",
    "predsim",
    "greedy",
];

#[test]
fn every_method_learns_and_is_reported() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    // CIFAR-10 files whose classes differ in brightness and texture: 320 training and 64
    // test images that every method learns to 3x chance within 20 steps (39-63% measured).
    let data = common::write_cifar10(&tmp.path().join("data"), 64)?;
    let out = tmp.path().join("cmp");
    let printed = auglocal(&[
        "compare",
        "--dataset",
        "cifar10",
        "--data-dir",
        path_str(&data),
        "--model",
        "resnet8",
        "--methods",
        &METHODS.join(","),
        "--aux-depth",
        "1",
        "--epochs",
        "2",
        "--batch-size",
        "32",
        "--lr",
        "0.05",
        "--schedule",
        "cosine",
        "--seed",
        "5",
        "--out",
        path_str(&out),
    ])?;
    // The table, then the files written.
    let (table, wrote) = printed
        .trim_end()
        .rsplit_once('\n')
        .ok_or_else(|| anyhow::anyhow!("one line printed:\n{printed}"))?;
    let table = format!("{table}\n");
    let files: Vec<String> = [
        "compare.md",
        "compare.csv",
        "epochs.csv",
        "accuracy-memory.png",
    ]
    .iter()
    .map(|f| out.join(f).display().to_string())
    .collect();
    assert_eq!(wrote, format!("wrote {}", files.join(", ")));
    let csv = std::fs::read_to_string(out.join("compare.csv"))?;
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("method,modules,final_test_acc,best_test_acc,peak_heap_bytes,seconds_per_epoch,aux_parameters,backbone_parameters,forward_macs_per_step,backward_macs_per_step")
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(
        rows.iter().map(|r| r[0]).collect::<Vec<_>>(),
        METHODS.to_vec()
    );
    for r in &rows {
        let (method, modules) = (r[0], r[1]);
        // resnet8 has 4 units: BP is one module, AugLocal d=1 has 3, the baselines one per unit.
        let expected_k = match method {
            "bp" | "bp+recompute" => "1",
            "auglocal" => "3",
            _ => "4",
        };
        assert_eq!(modules, expected_k, "{method}");
        let final_acc: f64 = r[2].parse()?;
        let best_acc: f64 = r[3].parse()?;
        assert!(
            final_acc > 0.3,
            "{method}: final test accuracy {final_acc}; chance is 0.1"
        );
        assert!(
            best_acc >= final_acc,
            "{method}: best {best_acc} < final {final_acc}"
        );
        assert!(r[4].parse::<u64>()? > 0, "{method}: peak heap {}", r[4]);
        let aux: usize = r[6].parse()?;
        assert_eq!(
            aux == 0,
            method.starts_with("bp"),
            "{method}: {aux} auxiliary parameters"
        );
        // The same backbone for every method.
        assert_eq!(r[7], rows[0][7], "{method}");
        let (forward, backward): (u64, u64) = (r[8].parse()?, r[9].parse()?);
        if method == "bp" {
            // ResNet-8 at 32x32, by hand: stem 442,368 + layer1 4,718,592 + layer2 3,670,016
            // + layer3 3,670,016 + fc 640 = 12,501,632 per image forward; backward is the
            // weight gradients (the same) plus the input gradients of every layer but the
            // stem, whose input is the detached image. Batch 32.
            assert_eq!(forward, 32 * 12_501_632);
            assert_eq!(backward, 32 * (12_501_632 + 12_501_632 - 442_368));
        } else if method == "bp+recompute" {
            // The same steps, bit for bit; every unit but the last (layer3: two 64->64
            // 3x3 convs at 8x8 and the 1x1 32->64 projection) runs forward twice.
            assert_eq!(&r[2..4], &rows[0][2..4], "recompute changed the accuracy");
            let last_unit = 2 * 8 * 8 * 64 * 64 * 9 - 8 * 8 * 64 * 32 * 9 + 8 * 8 * 64 * 32;
            assert_eq!(forward, 32 * (2 * 12_501_632 - 640 - last_unit));
            assert_eq!(r[9], rows[0][9], "the same backward pass");
        } else {
            // Auxiliary networks add work on top of the same backbone.
            assert!(forward > 32 * 12_501_632, "{method}: {forward}");
        }
    }
    // The same table is printed and written, with one line of settings above it.
    let report = std::fs::read_to_string(out.join("compare.md"))?;
    assert!(report.starts_with("# resnet8 on cifar10\n"));
    assert!(report.contains(&table), "{report}\n---\n{table}");
    assert_eq!(table.lines().count(), 2 + METHODS.len());
    // One point per method on the accuracy-memory figure.
    let png = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(
        out.join("accuracy-memory.png"),
    )?));
    let info = png.read_info()?;
    assert_eq!((info.info().width, info.info().height), (800, 560));
    let epochs = std::fs::read_to_string(out.join("epochs.csv"))?;
    assert_eq!(epochs.lines().count(), 1 + 2 * METHODS.len());
    Ok(())
}

#[test]
fn bad_method_lists_are_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("x");
    let out = path_str(&out);
    let err = auglocal_err(&["compare", "--methods", "bp,dgl,bp", "--out", out]);
    assert_eq!(err, "--methods lists bp twice; list each method once");
    let err = auglocal_err(&["compare", "--methods", "bp,sgd", "--out", out]);
    assert!(
        err.contains("invalid value 'sgd' for '--methods <METHODS>'")
            && err.contains("`sgd` is no method; the methods are bp, auglocal"),
        "{err}"
    );
    let err = auglocal_err(&["compare", "--methods", "bp+fast", "--out", out]);
    assert!(
        err.contains("invalid method modifier: `fast` in `bp+fast` (valid: one of +man, +hpff); compare also takes +recompute (activation checkpointing)"),
        "{err}"
    );
    let err = auglocal_err(&["compare", "--methods", "bp+man", "--out", out]);
    assert!(
        err.contains("invalid method modifier: `bp+man` (valid: modifiers on a method with local losses (auglocal, dgl,")
            && err.contains("bp trains no local loss for them to change)"),
        "{err}"
    );
    let err = auglocal_err(&[
        "compare",
        "--methods",
        "dgl+hpff+man+recompute,dgl+recompute+man+hpff",
        "--out",
        out,
    ]);
    assert_eq!(
        err,
        "--methods lists dgl+man+hpff+recompute twice; list each method once"
    );
    let err = auglocal_err(&[
        "compare",
        "--methods",
        "bp+recompute,bp+recompute",
        "--out",
        out,
    ]);
    assert_eq!(
        err,
        "--methods lists bp+recompute twice; list each method once"
    );
    let err = auglocal_err(&[
        "compare",
        "--model",
        "resnet8",
        "--methods",
        "dgl",
        "--modules",
        "5",
        "--out",
        out,
    ]);
    assert_eq!(
        err,
        "method dgl: invalid number of modules: 5 (valid: 2..=4 for resnet8 (4 units; 1 module is end-to-end backprop, method bp)) (set by --modules)"
    );
    assert!(
        !tmp.path().join("x").exists(),
        "nothing is written on bad input"
    );
}

#[test]
fn modules_flag_sets_the_baselines_split() -> anyhow::Result<()> {
    let json = auglocal(&[
        "inspect",
        "--model",
        "resnet32",
        "--method",
        "dgl",
        "--modules",
        "4",
        "--json",
    ])?;
    assert_eq!(
        json.trim(),
        r#"{"model":"resnet32","method":"dgl","units":16,"modules":4,"aux":[{"unit":0,"depth":0,"blocks":[]},{"unit":1,"depth":0,"blocks":[]},{"unit":2,"depth":0,"blocks":[]}]}"#
    );
    let err = auglocal_err(&[
        "inspect",
        "--model",
        "resnet32",
        "--method",
        "auglocal",
        "--modules",
        "4",
    ]);
    assert_eq!(
        err,
        "invalid number of modules: 4 for method auglocal (valid: no K for auglocal (K = units - d); a K for the methods with one head per unit: dgl, infopro, infopro-contrast, predsim, greedy) (set by --modules)"
    );
    Ok(())
}
