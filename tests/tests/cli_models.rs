//! The model zoo through the CLI: `models`, `inspect`, `bench`, `train` and `export` take
//! every new name.

mod common;

use common::{auglocal, auglocal_err, path_str};

#[test]
fn models_lists_every_model() -> anyhow::Result<()> {
    let json: serde_json::Value = serde_json::from_str(&auglocal(&["models", "--json"])?)?;
    let rows = json.as_array().unwrap();
    assert_eq!(rows.len(), 12);
    let row = |name: &str| rows.iter().find(|r| r["name"] == name).unwrap().clone();
    assert_eq!(
        row("vgg19"),
        serde_json::json!({"name": "vgg19", "input_size": 32, "units": 16, "parameters": 20_040_522})
    );
    assert_eq!(
        row("mobilenetv2"),
        serde_json::json!({"name": "mobilenetv2", "input_size": 32, "units": 19, "parameters": 2_296_922})
    );
    assert_eq!(
        row("vgg13"),
        serde_json::json!({"name": "vgg13", "input_size": 224, "units": 10, "parameters": 133_053_736})
    );
    assert_eq!(
        row("resnet101"),
        serde_json::json!({"name": "resnet101", "input_size": 224, "units": 34, "parameters": 44_549_160})
    );
    assert_eq!(row("resnet32")["parameters"], 466_906);
    let table = auglocal(&["models"])?;
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines[0], "model         input  units   parameters");
    assert_eq!(lines[6], "vgg19            32     16     20040522");
    assert_eq!(lines.len(), 13);
    Ok(())
}

#[test]
fn inspect_takes_the_new_models() -> anyhow::Result<()> {
    let out = auglocal(&["inspect", "--model", "resnet50", "--aux-depth", "2"])?;
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with(
            "resnet50: 17 units, 15 modules; parameters: backbone 25557032, auxiliary "
        ),
        "{}",
        lines[0]
    );
    // ResNet-50's 4.09 G multiply-adds at 224x224, as torchvision's model is counted.
    assert!(
        lines[1].starts_with("multiply-adds per image at 224x224: inference 4089.18 M;"),
        "{}",
        lines[1]
    );
    assert_eq!(
        lines[3],
        "    0      2    64  2262.78 M  fc      [8:64->1024,s2] [16:1024->2048,s2]"
    );
    let json: serde_json::Value = serde_json::from_str(&auglocal(&[
        "inspect",
        "--model",
        "vgg13",
        "--aux-depth",
        "2",
        "--json",
    ])?)?;
    assert_eq!(json["modules"], 8);
    assert_eq!(
        json["aux"][0],
        serde_json::json!({"unit": 0, "depth": 2, "head": "mlp", "blocks": [
            {"copy_of": 4, "in": 64, "out": 256, "stride": 2},
            {"copy_of": 9, "in": 256, "out": 512, "stride": 2}]})
    );
    Ok(())
}

#[test]
fn bench_uses_each_model_input_size() -> anyhow::Result<()> {
    let run = |args: &[&str]| -> anyhow::Result<serde_json::Value> {
        let mut all = vec![
            "bench",
            "--iters",
            "1",
            "--warmup",
            "0",
            "--batch-size",
            "2",
            "--json",
        ];
        all.extend_from_slice(args);
        Ok(serde_json::from_str(&auglocal(&all)?)?)
    };
    let mobile = run(&["--model", "mobilenetv2", "--method", "auglocal"])?;
    assert_eq!(
        (mobile["image_size"].as_u64(), mobile["modules"].as_u64()),
        (Some(32), Some(17))
    );
    assert_eq!(mobile["backbone_parameters"], 2_296_922);
    // On the CPU the peak is the resident set; no device counters.
    assert_eq!(mobile["precision"], "f32");
    assert_eq!(mobile["peak_memory_source"], "process resident set size");
    assert!(mobile["peak_device_memory_bytes"].is_null());
    let mixed = run(&["--model", "resnet8", "--precision", "bf16"])?;
    assert_eq!(mixed["precision"], "bf16");
    assert!(mixed["median_step_seconds"]
        .as_f64()
        .is_some_and(|s| s > 0.0));
    let r18 = run(&["--model", "resnet18", "--image-size", "64"])?;
    assert_eq!(r18["image_size"], 64);
    assert_eq!(r18["backbone_parameters"], 11_689_512);
    Ok(())
}

#[test]
fn train_and_export_an_imagenet_resnet() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let run = tmp.path().join("r18");
    auglocal(&[
        "train",
        "--out",
        path_str(&run),
        "--model",
        "resnet18",
        "--aux-depth",
        "2",
        "--train-size",
        "8",
        "--test-size",
        "8",
        "--batch-size",
        "4",
        "--epochs",
        "1",
    ])?;
    let file = tmp.path().join("r18.safetensors");
    auglocal(&[
        "export",
        "--checkpoint",
        path_str(&run),
        "--out",
        path_str(&file),
    ])?;
    let bytes = std::fs::read(&file)?;
    let tensors = safetensors::SafeTensors::deserialize(&bytes)?;
    let mut names: Vec<String> = tensors.names().into_iter().map(String::from).collect();
    names.sort();
    // torchvision resnet18's 122 state_dict keys (20 convs, 20 BNs of 5, fc), no aux.
    assert_eq!(names.len(), 122);
    assert!(names.iter().all(|n| !n.starts_with("aux.")));
    assert_eq!(tensors.tensor("fc.weight")?.shape(), &[10, 512]);
    assert_eq!(
        tensors.tensor("layer2.0.downsample.0.weight")?.shape(),
        &[128, 64, 1, 1]
    );
    Ok(())
}

#[test]
fn a_bad_bench_size_is_named() {
    let err = auglocal_err(&[
        "bench",
        "--model",
        "vgg19",
        "--image-size",
        "0",
        "--iters",
        "1",
    ]);
    assert_eq!(err, "--classes and --image-size must be at least 1");
}
