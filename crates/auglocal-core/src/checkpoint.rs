//! Checkpoints: weights and optimizer state as safetensors, run state as JSON, written
//! atomically so that an interrupted write never destroys the previous checkpoint.
//!
//! Layout of a checkpoint directory:
//! - `model.safetensors`: every tensor of the store (backbone with PyTorch names, output
//!   layer, auxiliary networks under `aux.<unit>.`), BatchNorm buffers included;
//! - `optimizer.safetensors`: SGD momentum buffers, keyed by parameter name;
//! - `state.json`: the caller's run state (epoch, step, settings).

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::optim::Sgd;
use crate::params::{Owner, ParamStore};

pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const STATE_FILE: &str = "state.json";
/// Name of the checkpoint directory inside a run directory.
pub const CHECKPOINT_DIR: &str = "checkpoint";

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename,
/// so readers see either the old or the new content, never a partial file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io("writing", path, e));
    }
    Ok(())
}

fn serialize_tensors<'a>(
    tensors: impl IntoIterator<Item = (String, &'a Tensor)>,
    path: &Path,
) -> Result<Vec<u8>> {
    let tensors: Vec<(String, &Tensor)> = tensors.into_iter().collect();
    safetensors::tensor::serialize(tensors, None)
        .map_err(|e| Error::checkpoint(path, format!("cannot serialise tensors: {e}")))
}

/// Writes weights, optimizer state and `state` into checkpoint directory `dir`, replacing
/// any previous checkpoint there only once the new one is complete.
pub fn save(dir: &Path, store: &ParamStore, optimizer: &Sgd, state: &impl Serialize) -> Result<()> {
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let staging = parent.join(format!(".{name}.tmp"));
    let previous = parent.join(format!("{name}.prev"));
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(|e| Error::io("removing stale", &staging, e))?;
    }
    fs::create_dir_all(&staging).map_err(|e| Error::io("creating", &staging, e))?;

    let entries = store.entries();
    let weights = serialize_tensors(
        entries.iter().map(|e| (e.name.clone(), e.var.as_tensor())),
        dir,
    )?;
    write_atomic(&staging.join(WEIGHTS_FILE), &weights)?;
    let momentum = serialize_tensors(optimizer.state().iter().map(|(k, v)| (k.clone(), v)), dir)?;
    write_atomic(&staging.join(OPTIMIZER_FILE), &momentum)?;
    let json = serde_json::to_vec_pretty(state)
        .map_err(|e| Error::checkpoint(dir, format!("cannot serialise run state: {e}")))?;
    write_atomic(&staging.join(STATE_FILE), &json)?;

    // Swap: the old checkpoint stays on disk (as `.prev`) until the new one is in place.
    if dir.exists() {
        if previous.exists() {
            fs::remove_dir_all(&previous).map_err(|e| Error::io("removing", &previous, e))?;
        }
        fs::rename(dir, &previous).map_err(|e| Error::io("moving aside", dir, e))?;
    }
    fs::rename(&staging, dir).map_err(|e| Error::io("renaming into place", dir, e))?;
    if previous.exists() {
        fs::remove_dir_all(&previous).map_err(|e| Error::io("removing", &previous, e))?;
    }
    if let Ok(d) = fs::File::open(parent) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Finds the checkpoint directory for `path`: a checkpoint directory itself, or a run
/// directory holding `checkpoint/` (or the `checkpoint.prev/` an interrupted save left).
pub fn resolve(path: &Path) -> Result<PathBuf> {
    if !path.exists() {
        return Err(Error::checkpoint(
            path,
            "no such directory; pass the --out directory of a training run (or its checkpoint/ folder)",
        ));
    }
    let candidates = [
        path.to_path_buf(),
        path.join(CHECKPOINT_DIR),
        path.join(format!("{CHECKPOINT_DIR}.prev")),
    ];
    candidates
        .into_iter()
        .find(|c| c.join(WEIGHTS_FILE).is_file() && c.join(STATE_FILE).is_file())
        .ok_or_else(|| {
            Error::checkpoint(
                path,
                format!(
                    "no checkpoint here: expected {CHECKPOINT_DIR}/{WEIGHTS_FILE} and {CHECKPOINT_DIR}/{STATE_FILE}, \
                     written by `auglocal train --out DIR` at the end of each epoch"
                ),
            )
        })
}

/// Reads a safetensors file into named tensors on `device`, with errors that name the file.
pub fn read_tensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    let bytes = fs::read(path).map_err(|e| Error::io("reading", path, e))?;
    candle_core::safetensors::load_buffer(&bytes, device).map_err(|e| {
        Error::checkpoint(
            path,
            format!("not a valid safetensors file ({e}); it may be truncated or of another format"),
        )
    })
}

/// Which tensors of the store a weights file must provide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coverage {
    /// Every tensor, auxiliary networks included (resuming a run).
    Everything,
    /// Backbone and output layer; auxiliary networks keep their fresh values if absent
    /// (starting from exported weights).
    Backbone,
}

/// Copies the tensors of `path` into `store`. Shapes and dtypes must match exactly; names
/// the store does not know, or missing ones, are errors that list them.
pub fn load_weights(path: &Path, store: &ParamStore, coverage: Coverage) -> Result<()> {
    let entries = store.entries();
    let device = entries
        .first()
        .map(|e| e.var.device().clone())
        .unwrap_or(Device::Cpu);
    let mut tensors = read_tensors(path, &device)?;
    let mut missing = Vec::new();
    for entry in &entries {
        let Some(t) = tensors.remove(&entry.name) else {
            let optional = coverage == Coverage::Backbone && matches!(entry.owner, Owner::Aux(_));
            if !optional {
                missing.push(entry.name.clone());
            }
            continue;
        };
        let want = entry.var.as_tensor();
        if t.dims() != want.dims() || t.dtype() != want.dtype() {
            return Err(Error::checkpoint(
                path,
                format!(
                    "tensor `{}` is {:?} {:?} but the model expects {:?} {:?}; the file was saved from another model or method",
                    entry.name,
                    t.dtype(),
                    t.dims(),
                    want.dtype(),
                    want.dims()
                ),
            ));
        }
        entry.var.set(&t)?;
    }
    if !missing.is_empty() {
        return Err(Error::checkpoint(
            path,
            format!(
                "{} tensor(s) the model needs are missing (first: {}); the file was saved from another model or method",
                missing.len(),
                missing.iter().take(3).cloned().collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    if !tensors.is_empty() {
        let mut extra: Vec<String> = tensors.into_keys().collect();
        extra.sort();
        return Err(Error::checkpoint(
            path,
            format!(
                "{} tensor(s) the model does not have (first: {}); the file was saved from another model or method",
                extra.len(),
                extra.iter().take(3).cloned().collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    Ok(())
}

/// Restores momentum buffers from `path` into `optimizer`.
pub fn load_optimizer(path: &Path, store: &ParamStore, optimizer: &mut Sgd) -> Result<()> {
    let entries = store.entries();
    let device = entries
        .first()
        .map(|e| e.var.device().clone())
        .unwrap_or(Device::Cpu);
    let tensors = read_tensors(path, &device)?;
    let mut buffers = BTreeMap::new();
    for (name, t) in tensors {
        let Some(entry) = entries.iter().find(|e| e.name == name) else {
            return Err(Error::checkpoint(
                path,
                format!("momentum buffer for unknown parameter `{name}`"),
            ));
        };
        if t.dims() != entry.var.dims() {
            return Err(Error::checkpoint(
                path,
                format!(
                    "momentum buffer `{name}` is {:?} but the parameter is {:?}",
                    t.dims(),
                    entry.var.dims()
                ),
            ));
        }
        buffers.insert(name, t);
    }
    optimizer.load_state(buffers);
    Ok(())
}

/// Reads `state.json` of checkpoint directory `dir`.
pub fn read_state<T: DeserializeOwned>(dir: &Path) -> Result<T> {
    let path = dir.join(STATE_FILE);
    let bytes = fs::read(&path).map_err(|e| Error::io("reading", &path, e))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::checkpoint(&path, format!("unreadable run state: {e}")))
}

/// Writes the backbone and output layer alone (no auxiliary networks), with PyTorch's names
/// and `num_batches_tracked` as i64, so the file loads with `strict=True` into the
/// equivalent PyTorch model.
pub fn export_backbone(store: &ParamStore, path: &Path) -> Result<usize> {
    let entries: Vec<_> = store
        .entries()
        .into_iter()
        .filter(|e| !matches!(e.owner, Owner::Aux(_)))
        .collect();
    let bytes = serialize_tensors(
        entries.iter().map(|e| (e.name.clone(), e.var.as_tensor())),
        path,
    )?;
    write_atomic(path, &bytes)?;
    Ok(entries.len())
}
