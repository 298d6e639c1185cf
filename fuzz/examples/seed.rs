//! Writes the seed inputs of every fuzz target into `corpus/<target>/seed-*`: small valid
//! files from the crates' own writers (`auglocal_data::fixtures`, `checkpoint::save`, the
//! CLI's recipes). Deterministic: the same files on every run.
//!
//! Run from `fuzz/`: `cargo run --example seed` (then `cargo +nightly fuzz cmin <target>`).

use std::fs;
use std::path::Path;

use auglocal_cli::{CliState, TrainConfig};
use auglocal_core::checkpoint;
use auglocal_core::{Optimizer, Sgd, SgdConfig};
use auglocal_data::fixtures::{self, mi};
use auglocal_data_fuzz::{join_checkpoint, split_checkpoint, tiny_store};
use candle_core::Tensor;

fn write(target: &str, name: &str, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = Path::new("corpus").join(target);
    fs::create_dir_all(&dir)?;
    fs::write(dir.join(format!("seed-{name}")), bytes)?;
    Ok(())
}

fn pixel(i: usize, c: usize, row: usize, col: usize) -> u8 {
    (i * 31 + c * 7 + row * 3 + col) as u8
}

fn mat() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let path = tmp.path().join("test_32x32.mat");
    fixtures::write_svhn(&path, &[1, 10], pixel)?;
    write("mat", "svhn-compressed", &fs::read(&path)?)?;
    // Uncompressed variables too: the fuzzer cannot mutate through zlib.
    let mut bytes = fixtures::mat_header();
    bytes.extend(fixtures::mat_variable(
        "X",
        9,
        &[2, 2],
        mi::UINT8,
        &[1, 2, 3, 4],
        false,
    ));
    let y: Vec<u8> = [1.0f64, 10.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    bytes.extend(fixtures::mat_variable(
        "y",
        6,
        &[2, 1],
        mi::DOUBLE,
        &y,
        false,
    ));
    write("mat", "uncompressed", &bytes)
}

fn stl10() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    fixtures::write_stl10(tmp.path(), "test", &[1], pixel)?;
    // The target cuts its input at `first byte % length`: label 1 of 1 + 27648 bytes cuts
    // right after the label file.
    let mut data = fs::read(tmp.path().join("test_y.bin"))?;
    data.extend(fs::read(tmp.path().join("test_X.bin"))?);
    write("stl10", "one-image", &data)
}

fn cifar() -> anyhow::Result<()> {
    // CIFAR-10 records are label + 3072 pixels; CIFAR-100's coarse + fine label + 3072.
    let image: Vec<u8> = (0..3072)
        .map(|i| pixel(0, i / 1024, i / 32 % 32, i % 32))
        .collect();
    let mut ten = Vec::new();
    for label in [3u8, 9] {
        ten.push(label);
        ten.extend(&image);
    }
    write("cifar", "cifar10-two-records", &ten)?;
    let mut hundred = vec![4u8, 99];
    hundred.extend(&image);
    write("cifar", "cifar100-one-record", &hundred)?;
    // torchvision's python version: one pickled batch each.
    let two: Vec<u8> = image.iter().chain(&image).copied().collect();
    let ten = fixtures::cifar_pickle(&two, &[("labels", &[3, 9])]);
    write("cifar_python", "cifar10-batch", &ten)?;
    let hundred =
        fixtures::cifar_pickle(&image, &[("fine_labels", &[99]), ("coarse_labels", &[19])]);
    write("cifar_python", "cifar100-batch", &hundred)
}

fn parquet() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let png = |x: usize| {
        fixtures::encode(2, 2, image::ImageFormat::Png, |a, b| {
            [(a + x) as u8, b as u8, 7]
        })
    };
    let jpeg = fixtures::encode(2, 2, image::ImageFormat::Jpeg, |a, b| [a as u8, b as u8, 9]);
    let path = tmp.path().join("png.parquet");
    fixtures::write_image_parquet(&path, "image", &[png(0), png(1)], &[("label", vec![0, 1])])?;
    write("parquet", "two-png-rows", &fs::read(&path)?)?;
    let path = tmp.path().join("jpeg.parquet");
    fixtures::write_image_parquet(&path, "img", &[jpeg], &[("fine_label", vec![2])])?;
    write("parquet", "jpeg-row-other-names", &fs::read(&path)?)
}

fn image() -> anyhow::Result<()> {
    let png = fixtures::encode(5, 3, image::ImageFormat::Png, |x, y| {
        [x as u8 * 40, y as u8 * 80, 3]
    });
    write("image", "png-5x3", &png)?;
    let jpeg = fixtures::encode(8, 8, image::ImageFormat::Jpeg, |x, y| {
        [(x * y) as u8, 0, 200]
    });
    write("image", "jpeg-8x8", &jpeg)?;
    // Long and thin: the evaluation resize makes it 37 pixels high and 37 * 300 wide.
    let thin = fixtures::encode(300, 1, image::ImageFormat::Png, |x, _| [x as u8, 1, 2]);
    write("image", "png-300x1", &thin)
}

fn config() -> anyhow::Result<()> {
    write(
        "config",
        "small",
        b"dataset = \"synthetic\"\nmodel = \"resnet8\"\nmethod = \"dgl\"\nmodules = 2\nepochs = 2\nschedule = \"step:1\"\n",
    )?;
    write(
        "config",
        "hub",
        b"dataset = \"hub:uoft-cs/cifar10\"\nrecipe = \"quick\"\nlabel_column = \"label\"\non_nan = \"skip\"\n",
    )?;
    let imagefolder = auglocal_data::spec("imagefolder")?;
    let paper = auglocal_data::RecipeName::Paper;
    let full = toml::to_string(&TrainConfig::from_recipe(
        "imagefolder",
        &imagefolder,
        paper,
    )?)?;
    write("config", "full-imagefolder", full.as_bytes())
}

fn checkpoint() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let store = tiny_store();
    let mut sgd = Sgd::new(SgdConfig::default())?;
    let momentum = store
        .entries()
        .into_iter()
        .filter(|e| e.var.dtype() == candle_core::DType::F32)
        .map(|e| Ok((e.name.clone(), Tensor::ones_like(e.var.as_tensor())?)))
        .collect::<candle_core::Result<_>>()?;
    sgd.load_state(momentum)?;
    let config = serde_json::to_value(TrainConfig::recipe("synthetic")?)?;
    let state = serde_json::json!({
        "version": 1,
        "config": config,
        "classes": 3,
        "epochs_done": 1,
        "batches_done": 2,
        "steps": 34,
        "partial": { "loss_sum": 1.5, "correct": 3, "images": 8, "seconds": 0.25, "skipped": 0 }
    });
    let dir = tmp.path().join("checkpoint");
    checkpoint::save(&dir, &store, &sgd, &state)?;
    let weights = fs::read(dir.join(checkpoint::WEIGHTS_FILE))?;
    let optimizer = fs::read(dir.join(checkpoint::OPTIMIZER_FILE))?;
    let state = fs::read(dir.join(checkpoint::STATE_FILE))?;
    let data = join_checkpoint(&weights, &optimizer, &state);
    // The seed is a checkpoint the loader accepts whole.
    let files = split_checkpoint(&data);
    let parsed: CliState = checkpoint::parse_state(files.state, &dir)?;
    parsed.meta.check(&dir)?;
    let fresh = tiny_store();
    let everything = checkpoint::Coverage::Everything;
    checkpoint::load_weights_from_bytes(files.weights, &dir, &fresh, everything)?;
    checkpoint::load_optimizer_from_bytes(files.optimizer, &dir, &fresh, &mut sgd)?;
    write("checkpoint", "tiny-model", &data)
}

fn main() -> anyhow::Result<()> {
    mat()?;
    stl10()?;
    cifar()?;
    parquet()?;
    image()?;
    config()?;
    checkpoint()?;
    println!("seeds written under corpus/");
    Ok(())
}
