//! Helpers shared by the tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use std::ops::Range;

use auglocal_core::params::{Entry, Owner};
use auglocal_core::{Engine, Method, ParamBuilder, ParamStore, Sgd, SgdConfig};
use candle_core::backprop::GradStore;
use candle_core::Device;

/// A fresh `model` (10 classes) on `device`, initialised from `seed`, trained by `method`
/// on 32x32 CIFAR-normalised images with the paper's SGD.
pub fn engine(device: &Device, model: &str, method: Method, seed: u64) -> anyhow::Result<Engine> {
    let store = ParamStore::new();
    let pb = ParamBuilder::new(&store, device, seed);
    let net = auglocal_models::build(model, 10, &pb)?;
    let input = auglocal_data::spec("cifar10")?.input(32);
    Ok(Engine::new(
        net,
        method,
        input,
        &pb,
        Sgd::new(SgdConfig::default())?,
    )?)
}

/// Runs `auglocal ARGS...` in-process and returns what it wrote to its output.
pub fn auglocal(args: &[&str]) -> anyhow::Result<String> {
    let mut out = Vec::new();
    let mut argv = vec!["auglocal"];
    argv.extend_from_slice(args);
    auglocal_cli::run(argv, &mut out)?;
    Ok(String::from_utf8(out)?)
}

/// The error message of a command that must fail.
pub fn auglocal_err(args: &[&str]) -> String {
    match auglocal(args) {
        Ok(out) => panic!(
            "`auglocal {}` succeeded but should fail; output: {out}",
            args.join(" ")
        ),
        Err(e) => format!("{e:#}"),
    }
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("temporary paths are UTF-8")
}

/// The lines of a run's metrics.jsonl.
pub fn metrics(run: &Path) -> anyhow::Result<Vec<serde_json::Value>> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl"))?;
    Ok(text
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?)
}

/// The lines of a run's metrics.jsonl without the fields that measure time and memory,
/// for comparing two runs that must have trained the same.
pub fn metrics_without_timings(run: &Path) -> anyhow::Result<Vec<serde_json::Value>> {
    let mut lines = metrics(run)?;
    for line in &mut lines {
        let map = line
            .as_object_mut()
            .ok_or_else(|| anyhow::anyhow!("a metrics line is not an object"))?;
        for timing in [
            "seconds",
            "images_per_second",
            "peak_rss_bytes",
            "data_wait_seconds",
        ] {
            map.remove(timing);
        }
    }
    Ok(lines)
}

/// Writes a CIFAR-10 binary dataset (the real format: a label byte, then 3072 CHW pixel
/// bytes per record) with `per_file` records in each of the six files.
pub fn write_cifar10(dir: &Path, per_file: usize) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let names = [
        "data_batch_1.bin",
        "data_batch_2.bin",
        "data_batch_3.bin",
        "data_batch_4.bin",
        "data_batch_5.bin",
        "test_batch.bin",
    ];
    for (f, name) in names.iter().enumerate() {
        let mut bytes = Vec::with_capacity(per_file * 3073);
        for r in 0..per_file {
            let label = ((r + f) % 10) as u8;
            bytes.push(label);
            // A class-dependent brightness so a model could in principle learn it.
            bytes.extend((0..3072).map(|i| (label as usize * 20 + (i * 7 + r) % 50) as u8));
        }
        std::fs::write(dir.join(name), bytes)?;
    }
    Ok(dir.to_path_buf())
}

/// One stored tensor: name, dtype, shape, raw little-endian bytes.
pub type StoredTensor = (String, String, Vec<usize>, Vec<u8>);

/// The tensors of a safetensors file, sorted by name.
pub fn tensors(path: &Path) -> anyhow::Result<Vec<StoredTensor>> {
    let bytes = std::fs::read(path)?;
    let st = safetensors::SafeTensors::deserialize(&bytes)?;
    let mut out: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            (
                name,
                format!("{:?}", view.dtype()),
                view.shape().to_vec(),
                view.data().to_vec(),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Asserts that module `m`'s backward pass gave gradients to exactly its own parameters
/// among `params`: its units (`ranges[m]`), its auxiliary network (after unit
/// `aux_units[m]`) or, for the last module, the output layer. `what` names the run.
pub fn assert_gradients_stay_in_module(
    params: &[Entry],
    ranges: &[Range<usize>],
    aux_units: &[usize],
    m: usize,
    grads: &GradStore,
    what: &str,
) {
    let last = m == ranges.len() - 1;
    for e in params {
        let mine = match e.owner {
            Some(Owner::Unit(u)) => ranges[m].contains(&u),
            Some(Owner::Aux(u)) => !last && u == aux_units[m],
            Some(Owner::Head) => last,
            None => panic!("{} has no owner", e.name),
        };
        assert_eq!(
            grads.get(e.var.as_tensor()).is_some(),
            mine,
            "{what} module {m}: gradient of {}",
            e.name
        );
    }
}
