//! Checkpoint rotation and crash safety: `--keep N` keeps the newest N, a save killed at
//! any point leaves a complete checkpoint that `resolve` finds, and the only good
//! checkpoint is never deleted.

use std::fs;
use std::path::Path;

use auglocal_core::checkpoint::{self, older_checkpoints};
use auglocal_core::params::Init;
use auglocal_core::{ParamBuilder, ParamStore, Sgd, SgdConfig};
use candle_core::{Device, Tensor};
use serde_json::json;

fn store_with(value: f32) -> anyhow::Result<ParamStore> {
    let store = ParamStore::new();
    let pb = ParamBuilder::new(&store, &Device::Cpu, 0);
    let w = pb.param("fc.weight", &[3], Init::Const(0.0))?;
    w.set(&Tensor::new(&[value; 3], &Device::Cpu)?)?;
    Ok(store)
}

fn step_of(dir: &Path) -> anyhow::Result<u64> {
    let state: serde_json::Value = checkpoint::read_state(dir)?;
    Ok(state["step"].as_u64().unwrap())
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn keep_retains_the_newest_checkpoints_in_order() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("checkpoint");
    let sgd = Sgd::new(SgdConfig::default())?;
    for step in 1..=5u64 {
        let store = store_with(step as f32)?;
        checkpoint::save_keeping(&dir, &store, &sgd, &json!({ "step": step }), 3)?;
    }
    assert_eq!(
        names(tmp.path()),
        [
            "checkpoint",
            "checkpoint.old-000003",
            "checkpoint.old-000004"
        ]
    );
    assert_eq!(step_of(&dir)?, 5);
    let older = older_checkpoints(&dir);
    assert_eq!(step_of(&older[0].1)?, 3);
    assert_eq!(step_of(&older[1].1)?, 4);
    // Each retained checkpoint holds its own weights.
    let store = store_with(0.0)?;
    checkpoint::load_weights(
        &older[0].1.join(checkpoint::WEIGHTS_FILE),
        &store,
        checkpoint::Coverage::Everything,
    )?;
    let w = store
        .get("fc.weight")
        .unwrap()
        .var
        .as_tensor()
        .to_vec1::<f32>()?;
    assert_eq!(w, vec![3.0; 3]);

    // Keep 1 (the default `save`): the history goes once a new checkpoint is in place.
    checkpoint::save(&dir, &store_with(6.0)?, &sgd, &json!({ "step": 6 }))?;
    assert_eq!(names(tmp.path()), ["checkpoint"]);
    assert_eq!(step_of(&dir)?, 6);
    Ok(())
}

#[test]
fn a_save_killed_between_its_renames_still_resolves_and_recovers() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("checkpoint");
    let sgd = Sgd::new(SgdConfig::default())?;
    checkpoint::save(&dir, &store_with(1.0)?, &sgd, &json!({ "step": 1 }))?;
    // What a kill -9 after the first rename leaves: the current checkpoint moved aside, a
    // complete (or partial) staging directory, no `checkpoint/`.
    fs::rename(&dir, tmp.path().join("checkpoint.old-000001"))?;
    fs::create_dir(tmp.path().join(".checkpoint.tmp"))?;
    fs::write(
        tmp.path().join(".checkpoint.tmp/model.safetensors"),
        b"partial",
    )?;
    let found = checkpoint::resolve(tmp.path())?;
    assert_eq!(found, tmp.path().join("checkpoint.old-000001"));
    assert_eq!(step_of(&found)?, 1);

    // The next save cleans the staging directory, puts the new checkpoint in place and
    // only then drops the old one.
    checkpoint::save(&dir, &store_with(2.0)?, &sgd, &json!({ "step": 2 }))?;
    assert_eq!(names(tmp.path()), ["checkpoint"]);
    assert_eq!(checkpoint::resolve(tmp.path())?, dir);
    assert_eq!(step_of(&dir)?, 2);
    Ok(())
}

#[test]
fn a_partial_checkpoint_is_never_chosen() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("checkpoint");
    let sgd = Sgd::new(SgdConfig::default())?;
    checkpoint::save_keeping(&dir, &store_with(1.0)?, &sgd, &json!({ "step": 1 }), 2)?;
    checkpoint::save_keeping(&dir, &store_with(2.0)?, &sgd, &json!({ "step": 2 }), 2)?;
    // A checkpoint/ without its state file (something else damaged it) is skipped for the
    // newest complete one.
    fs::remove_file(dir.join(checkpoint::STATE_FILE))?;
    let found = checkpoint::resolve(tmp.path())?;
    assert_eq!(found, tmp.path().join("checkpoint.old-000001"));
    assert_eq!(step_of(&found)?, 1);
    Ok(())
}

#[test]
fn prune_drops_what_a_kill_left_but_never_the_only_good_checkpoint() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("checkpoint");
    let sgd = Sgd::new(SgdConfig::default())?;
    for step in 1..=3u64 {
        checkpoint::save_keeping(&dir, &store_with(1.0)?, &sgd, &json!({ "step": step }), 3)?;
    }
    // A kill between a save's renames and its pruning leaves more than `keep` allows.
    checkpoint::prune(&dir, 2)?;
    assert_eq!(names(tmp.path()), ["checkpoint", "checkpoint.old-000002"]);
    // Without a complete newest checkpoint nothing is deleted.
    fs::remove_file(dir.join(checkpoint::STATE_FILE))?;
    checkpoint::prune(&dir, 1)?;
    assert_eq!(names(tmp.path()), ["checkpoint", "checkpoint.old-000002"]);
    Ok(())
}

/// AdamW's state round-trips through `optimizer.safetensors`; a file of the other optimizer
/// (or of a parameter the model lacks) is refused, naming the key.
#[test]
fn optimizer_state_is_checked_against_the_optimizer_and_the_model() -> anyhow::Result<()> {
    use auglocal_core::{AdamW, AdamWConfig, Optimizer};
    let tmp = tempfile::tempdir()?;
    let store = store_with(1.0)?;
    let w = store.get("fc.weight").unwrap().var;
    let grads = (w.as_tensor() * 2.0)?.sum_all()?.backward()?;
    let mut adamw = AdamW::new(AdamWConfig::default())?;
    adamw.step(&store.entries(), &grads, 0.1)?;
    let mut sgd = Sgd::new(SgdConfig::default())?;
    sgd.step(&store.entries(), &grads, 0.1)?;

    let adam_dir = tmp.path().join("adamw");
    checkpoint::save(&adam_dir, &store, &adamw, &json!({ "step": 1 }))?;
    let file = adam_dir.join(checkpoint::OPTIMIZER_FILE);
    let mut restored = AdamW::new(AdamWConfig::default())?;
    checkpoint::load_optimizer(&file, &store, &mut restored)?;
    assert_eq!(restored.state().len(), 3);
    for (key, tensor) in adamw.state() {
        let again = &restored.state()[&key];
        let bytes = |t: &Tensor| {
            t.flatten_all()?
                .to_dtype(candle_core::DType::F64)?
                .to_vec1::<f64>()
        };
        assert_eq!(bytes(&tensor)?, bytes(again)?, "{key}");
    }

    let error = checkpoint::load_optimizer(&file, &store, &mut sgd).unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("optimizer state `exp_avg/fc.weight` is not one sgd keeps")
            && message.contains("resume with the same one"),
        "{message}"
    );
    let sgd_dir = tmp.path().join("sgd");
    checkpoint::save(&sgd_dir, &store, &sgd, &json!({ "step": 1 }))?;
    let sgd_file = sgd_dir.join(checkpoint::OPTIMIZER_FILE);
    let message = checkpoint::load_optimizer(&sgd_file, &store, &mut restored)
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("`fc.weight` is not one adamw keeps"),
        "{message}"
    );
    let other = ParamStore::new();
    ParamBuilder::new(&other, &Device::Cpu, 0).param("conv.weight", &[3], Init::Const(0.0))?;
    let message = checkpoint::load_optimizer(&file, &other, &mut restored)
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("optimizer state `exp_avg/fc.weight` for unknown parameter `fc.weight`"),
        "{message}"
    );
    Ok(())
}
