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
use crate::optim::{state_key, Optimizer};
use crate::params::{Owner, ParamStore};

/// File of a checkpoint directory holding every tensor of the store.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// File of a checkpoint directory holding the optimizer's per-parameter state (SGD momentum,
/// AdamW moments), keyed by parameter name with the slot in front where there are several
/// (`exp_avg/<name>`; see [`state_key`]).
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
/// File of a checkpoint directory holding the caller's run state, as JSON.
pub const STATE_FILE: &str = "state.json";
/// Name of the checkpoint directory inside a run directory.
pub const CHECKPOINT_DIR: &str = "checkpoint";
/// Where `train --save-best` keeps the checkpoint of the best test accuracy, beside the
/// latest (a checkpoint folder like any other: `eval` and `export` read it).
pub const BEST_CHECKPOINT_DIR: &str = "checkpoint-best";

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
/// any previous checkpoint there only once the new one is complete. Older checkpoints are
/// deleted; [`save_keeping`] keeps some of them.
pub fn save(
    dir: &Path,
    store: &ParamStore,
    optimizer: &dyn Optimizer,
    state: &impl Serialize,
) -> Result<()> {
    save_keeping(dir, store, optimizer, state, 1)
}

/// [`save`], keeping the `keep` most recent checkpoints (the new one included): the older
/// ones stay beside `dir` as `<dir>.old-<seq>` (seq grows with each save).
///
/// Crash safety: the new checkpoint is written completely into a staging directory (each
/// file fsynced) before anything is renamed; the current one is then renamed aside and the
/// staging directory renamed into place. A kill at any moment leaves at least one complete
/// checkpoint that [`resolve`] finds, and older ones are deleted only after the new one is
/// in place, so the only good checkpoint is never deleted.
pub fn save_keeping(
    dir: &Path,
    store: &ParamStore,
    optimizer: &dyn Optimizer,
    state: &impl Serialize,
    keep: usize,
) -> Result<()> {
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let staging = parent.join(format!(".{name}.tmp"));
    let staged = write_staging(&staging, dir, store, optimizer, state);
    if let Err(e) = staged {
        // A full disk must not leave a half-written staging directory taking space.
        let _ = fs::remove_dir_all(&staging);
        return Err(Error::CheckpointNotWritten {
            dir: dir.to_path_buf(),
            reason: e.to_string(),
            previous_intact: is_complete(dir),
        });
    }

    let older = older_checkpoints(dir);
    if dir.exists() {
        let seq = older.last().map_or(1, |(seq, _)| seq + 1);
        let aside = parent.join(format!("{name}.old-{seq:06}"));
        fs::rename(dir, &aside).map_err(|e| Error::io("moving aside", dir, e))?;
    }
    fs::rename(&staging, dir).map_err(|e| Error::io("renaming into place", dir, e))?;
    sync_dir(parent);
    // Only now that the new checkpoint is in place may old ones go.
    prune(dir, keep)?;
    // The `.prev` of earlier versions of this crate, superseded by the new checkpoint.
    let legacy = parent.join(format!("{name}.prev"));
    if legacy.exists() {
        fs::remove_dir_all(&legacy).map_err(|e| Error::io("removing", &legacy, e))?;
    }
    sync_dir(parent);
    Ok(())
}

/// Writes a complete checkpoint into `staging` (weights, momentum, state; each fsynced).
fn write_staging(
    staging: &Path,
    dir: &Path,
    store: &ParamStore,
    optimizer: &dyn Optimizer,
    state: &impl Serialize,
) -> Result<()> {
    if staging.exists() {
        fs::remove_dir_all(staging).map_err(|e| Error::io("removing stale", staging, e))?;
    }
    fs::create_dir_all(staging).map_err(|e| Error::io("creating", staging, e))?;
    let entries = store.entries();
    let weights = serialize_tensors(
        entries.iter().map(|e| (e.name.clone(), e.var.as_tensor())),
        dir,
    )?;
    write_atomic(&staging.join(WEIGHTS_FILE), &weights)?;
    let optimizer_state = optimizer.state();
    let momentum = serialize_tensors(optimizer_state.iter().map(|(k, v)| (k.clone(), v)), dir)?;
    write_atomic(&staging.join(OPTIMIZER_FILE), &momentum)?;
    let json = serde_json::to_vec_pretty(state)
        .map_err(|e| Error::checkpoint(dir, format!("cannot serialise run state: {e}")))?;
    write_atomic(&staging.join(STATE_FILE), &json)
}

/// Deletes the oldest retained checkpoints of `dir` beyond the `keep` newest (`dir`
/// included), but only while `dir` itself is complete: the only good checkpoint is never
/// deleted. A kill during [`save_keeping`] can leave one too many; a resumed run calls this.
pub fn prune(dir: &Path, keep: usize) -> Result<()> {
    if !is_complete(dir) {
        return Ok(());
    }
    let older = older_checkpoints(dir);
    let excess = older.len().saturating_sub(keep.saturating_sub(1));
    for (_, path) in older.into_iter().take(excess) {
        fs::remove_dir_all(&path).map_err(|e| Error::io("removing old checkpoint", &path, e))?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// The retained older checkpoints of checkpoint directory `dir` (`<dir>.old-<seq>`), oldest
/// first.
pub fn older_checkpoints(dir: &Path) -> Vec<(u64, PathBuf)> {
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let prefix = format!(
        "{}.old-",
        dir.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    );
    let mut found: Vec<(u64, PathBuf)> = fs::read_dir(parent)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let seq = name.strip_prefix(&prefix)?.parse().ok()?;
            Some((seq, e.path()))
        })
        .collect();
    found.sort();
    found
}

fn is_complete(dir: &Path) -> bool {
    dir.join(WEIGHTS_FILE).is_file() && dir.join(STATE_FILE).is_file()
}

/// Finds the newest complete checkpoint for `path`: a checkpoint directory itself, or a run
/// directory holding `checkpoint/`, or, when a save was killed between its two renames, the
/// newest `checkpoint.old-<seq>/` (or an older version's `checkpoint.prev/`).
pub fn resolve(path: &Path) -> Result<PathBuf> {
    if !path.exists() {
        return Err(Error::NoCheckpoint {
            path: path.to_path_buf(),
            exists: false,
        });
    }
    let latest = path.join(CHECKPOINT_DIR);
    let mut candidates = vec![path.to_path_buf(), latest.clone()];
    candidates.extend(older_checkpoints(&latest).into_iter().rev().map(|(_, p)| p));
    candidates.push(path.join(format!("{CHECKPOINT_DIR}.prev")));
    candidates
        .into_iter()
        .find(|c| is_complete(c))
        .ok_or_else(|| Error::NoCheckpoint {
            path: path.to_path_buf(),
            exists: true,
        })
}

/// Reads a safetensors file into named tensors on `device`, with errors that name the file.
pub fn read_tensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    let bytes = fs::read(path).map_err(|e| Error::io("reading", path, e))?;
    parse_tensors(&bytes, path, device)
}

/// [`read_tensors`] on the bytes of a safetensors file; `path` only names it in errors.
pub fn parse_tensors(
    bytes: &[u8],
    path: &Path,
    device: &Device,
) -> Result<HashMap<String, Tensor>> {
    candle_core::safetensors::load_buffer(bytes, device).map_err(|e| {
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
/// the store does not know, or missing ones, are errors that list them. A `module.` (or
/// `_orig_mod.`) prefix on every name, as PyTorch's wrappers save them, is taken off.
pub fn load_weights(path: &Path, store: &ParamStore, coverage: Coverage) -> Result<()> {
    let bytes = fs::read(path).map_err(|e| Error::io("reading", path, e))?;
    load_weights_from_bytes(&bytes, path, store, coverage)
}

/// [`load_weights`] from the bytes of the weights file; `path` only names it in errors.
pub fn load_weights_from_bytes(
    bytes: &[u8],
    path: &Path,
    store: &ParamStore,
    coverage: Coverage,
) -> Result<()> {
    let entries = store.entries();
    let mut tensors = without_wrapper_prefix(parse_tensors(bytes, path, &store_device(store))?);
    let mut missing = Vec::new();
    for entry in &entries {
        let Some(t) = tensors.remove(&entry.name) else {
            let optional =
                coverage == Coverage::Backbone && matches!(entry.owner, Some(Owner::Aux(_)));
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

/// Prefixes PyTorch puts before every name of a wrapped model's `state_dict()`:
/// `DataParallel` and `DistributedDataParallel` add `module.`, `torch.compile` `_orig_mod.`.
const WRAPPER_PREFIXES: [&str; 2] = ["module.", "_orig_mod."];

/// The tensors with a wrapper's prefix taken off, where every name carries it (so a state
/// dict saved from `DataParallel(model)` loads like one saved from `model`).
fn without_wrapper_prefix(mut tensors: HashMap<String, Tensor>) -> HashMap<String, Tensor> {
    while let Some(prefix) = WRAPPER_PREFIXES
        .iter()
        .find(|prefix| !tensors.is_empty() && tensors.keys().all(|name| name.starts_with(**prefix)))
    {
        tensors = tensors
            .into_iter()
            .map(|(name, tensor)| (name[prefix.len()..].to_string(), tensor))
            .collect();
    }
    tensors
}

/// Restores the optimizer state saved in `path` (`optimizer.safetensors`) into `optimizer`.
pub fn load_optimizer(
    path: &Path,
    store: &ParamStore,
    optimizer: &mut dyn Optimizer,
) -> Result<()> {
    let bytes = fs::read(path).map_err(|e| Error::io("reading", path, e))?;
    load_optimizer_from_bytes(&bytes, path, store, optimizer)
}

/// [`load_optimizer`] from the bytes of the optimizer file; `path` only names it in errors.
/// Every key must be a slot `optimizer` keeps for a parameter of `store`, with the shape it
/// gives.
pub fn load_optimizer_from_bytes(
    bytes: &[u8],
    path: &Path,
    store: &ParamStore,
    optimizer: &mut dyn Optimizer,
) -> Result<()> {
    let entries = store.entries();
    // Sorted, so that the first bad key named is the same every time.
    let tensors: BTreeMap<String, Tensor> = parse_tensors(bytes, path, &store_device(store))?
        .into_iter()
        .collect();
    let mut state = BTreeMap::new();
    for (key, t) in tensors {
        let (slot, name) = state_key(&key);
        let Some(entry) = entries.iter().find(|e| e.name == name) else {
            return Err(Error::checkpoint(
                path,
                format!("optimizer state `{key}` for unknown parameter `{name}`"),
            ));
        };
        let Some(dims) = optimizer.slot_dims(slot, entry.var.dims()) else {
            return Err(Error::checkpoint(
                path,
                format!(
                    "optimizer state `{key}` is not one {} keeps; the run was saved with \
                     another optimizer: resume with the same one",
                    optimizer.name()
                ),
            ));
        };
        if t.dims() != dims.as_slice() {
            return Err(Error::checkpoint(
                path,
                format!(
                    "optimizer state `{key}` is {:?} but {} keeps {:?} for this parameter",
                    t.dims(),
                    optimizer.name(),
                    dims
                ),
            ));
        }
        state.insert(key, t);
    }
    optimizer
        .load_state(state)
        .map_err(|e| Error::checkpoint(path, format!("unreadable optimizer state: {e}")))
}

/// Reads `state.json` of checkpoint directory `dir`.
pub fn read_state<T: DeserializeOwned>(dir: &Path) -> Result<T> {
    let path = dir.join(STATE_FILE);
    let bytes = fs::read(&path).map_err(|e| Error::io("reading", &path, e))?;
    parse_state(&bytes, &path)
}

/// [`read_state`] on the bytes of `state.json`; `path` only names it in errors.
pub fn parse_state<T: DeserializeOwned>(bytes: &[u8], path: &Path) -> Result<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::checkpoint(path, format!("unreadable run state: {e}")))
}

/// The device the store's tensors live on (CPU for an empty store).
fn store_device(store: &ParamStore) -> Device {
    store
        .entries()
        .first()
        .map(|e| e.var.device().clone())
        .unwrap_or(Device::Cpu)
}

/// Writes the backbone and output layer alone (no auxiliary networks), with PyTorch's names
/// and `num_batches_tracked` as i64, so the file loads with `strict=True` into the
/// equivalent PyTorch model.
pub fn export_backbone(store: &ParamStore, path: &Path) -> Result<usize> {
    let entries: Vec<_> = store
        .entries()
        .into_iter()
        .filter(|e| !matches!(e.owner, Some(Owner::Aux(_))))
        .collect();
    let bytes = serialize_tensors(
        entries.iter().map(|e| (e.name.clone(), e.var.as_tensor())),
        path,
    )?;
    write_atomic(path, &bytes)?;
    Ok(entries.len())
}
