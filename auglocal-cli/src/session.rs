//! What `train`, `eval` and `export` share: building an engine from settings, the run state
//! saved in checkpoints, evaluation, and the `eval` / `export` commands.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use auglocal_core::checkpoint::{self, Coverage};
use auglocal_core::local::{BuiltinLosses, InputSpec};
use auglocal_core::{AuxPlan, Engine, EvalTotals, ParamBuilder, ParamStore, Sgd, SgdConfig};
use auglocal_data::{Augment, Dataset, Loader, LoaderConfig, OpenOptions, Split};
use candle_core::Device;
use serde::{Deserialize, Serialize};

use crate::config::TrainConfig;
use crate::{EvalArgs, ExportArgs};

/// Version of the checkpoint's `state.json` layout.
pub const STATE_VERSION: u32 = 1;

/// Training-set sums of the epoch in progress, so a resumed epoch reports the whole epoch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochSums {
    pub loss_sum: f64,
    pub correct: usize,
    pub images: usize,
    pub seconds: f64,
    /// Batches skipped for a non-finite loss or gradient (`--on-nan skip`).
    #[serde(default)]
    pub skipped: usize,
}

/// Where a run stands; saved as the checkpoint's `state.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    pub version: u32,
    pub config: TrainConfig,
    pub classes: usize,
    /// Epochs fully completed.
    pub epochs_done: usize,
    /// Batches of epoch `epochs_done + 1` already trained (resume continues there).
    pub batches_done: usize,
    /// Training steps taken so far.
    pub steps: u64,
    pub partial: EpochSums,
}

/// The most classes a checkpoint's model may have: ImageNet-21k's 21,841 with room to
/// spare, while a corrupt count cannot make the output layer exhaust memory.
pub const MAX_CLASSES: usize = 100_000;

impl RunState {
    /// Checks a state read from checkpoint directory `dir` before a model is built from
    /// it: the layout version this auglocal reads and a class count a model can have.
    pub fn check(&self, dir: &Path) -> Result<()> {
        if self.version != STATE_VERSION {
            bail!(
                "checkpoint {} has state version {}, this auglocal reads version {STATE_VERSION}; use the auglocal release that wrote it",
                dir.display(),
                self.version
            );
        }
        if !(1..=MAX_CLASSES).contains(&self.classes) {
            bail!(
                "checkpoint {} says its model has {} classes, expected 1 to {MAX_CLASSES}; {} is damaged, resume from an older checkpoint (checkpoint.old-*) or start again",
                dir.display(),
                self.classes,
                checkpoint::STATE_FILE
            );
        }
        Ok(())
    }
}

/// Sets the number of threads of the CPU kernels, Candle's and ours (they share Candle's
/// pool, see [`auglocal_core::parallel`]), and of rayon's pool, which decodes and augments
/// images. 0 leaves the defaults: Candle's pool takes the physical cores, rayon's all
/// logical CPUs; `CANDLE_NUM_THREADS`, when set, sizes Candle's pool whatever is asked
/// here. Must run before any tensor work.
/// The first call in a process decides; later calls (tests running several commands in one
/// process) keep the pool already running.
pub fn set_threads(threads: usize) -> Result<()> {
    static CONFIGURED: std::sync::Once = std::sync::Once::new();
    let mut result = Ok(());
    if threads > 0 {
        CONFIGURED.call_once(|| {
            // Candle sizes its worker pool from RAYON_NUM_THREADS at its first use.
            std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
            result = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build_global()
                .context("cannot start the worker threads");
        });
    }
    result
}

/// Builds the model, its auxiliary networks and the optimizer that `config` describes,
/// freshly initialised from `config.seed`.
pub fn build_engine(config: &TrainConfig, classes: usize, device: &Device) -> Result<Engine> {
    build_engine_sized(config, classes, config.input_size(), device)
}

/// [`build_engine`] for square inputs of side `image_size`: the local losses size their
/// pooling from it, and InfoPro's reconstruction undoes the dataset's normalisation.
pub fn build_engine_sized(
    config: &TrainConfig,
    classes: usize,
    image_size: usize,
    device: &Device,
) -> Result<Engine> {
    let (normalize, _) = auglocal_data::recipe(&config.dataset)?;
    let losses = BuiltinLosses {
        input: InputSpec {
            image_size,
            mean: normalize.mean,
            std: normalize.std,
        },
    };
    let store = ParamStore::new();
    let pb = ParamBuilder::new(&store, device, config.seed);
    let net = auglocal_models::build(&config.model, classes, &pb)?;
    let plan = AuxPlan::for_net(net.as_ref(), config.method()?)?;
    let sgd = Sgd::new(SgdConfig {
        momentum: config.momentum,
        nesterov: config.nesterov,
        weight_decay: config.weight_decay,
    })?;
    let mut engine = Engine::with_losses(net, plan, &pb, sgd, &losses)?;
    engine.set_precision(config.precision()?);
    Ok(engine)
}

/// A dataset split of `config.dataset`, cut to `limit` images when asked (folders: taken
/// round-robin over the classes). Files skipped by `--skip-bad-images` are reported.
pub fn open_split(
    config: &TrainConfig,
    split: Split,
    limit: Option<usize>,
) -> Result<Arc<dyn Dataset>> {
    let name = config.dataset.as_str();
    let data: Arc<dyn Dataset> = match (name, limit) {
        // Synthetic image i depends only on (seed, split, i): generate exactly what is asked,
        // more than the default size too.
        ("synthetic", Some(n)) => {
            let synthetic = auglocal_data::synthetic::SyntheticConfig {
                train_size: n,
                test_size: n,
                ..Default::default()
            };
            Arc::new(auglocal_data::synthetic::generate(&synthetic, split))
        }
        _ => {
            let options = OpenOptions {
                data_dir: config.data_dir.clone(),
                image_size: config.image_size,
                skip_bad_images: config.skip_bad_images,
                hub: auglocal_data::hub::HubOptions {
                    offline: config.offline,
                    cache: None,
                    label_column: config.label_column.clone(),
                },
                limit,
            };
            let opened = auglocal_data::open_with(name, split, &options)?;
            if let Some((path, reason)) = opened.skipped.first() {
                eprintln!(
                    "--skip-bad-images: left out {} files of the {split} split that are not images (first: {}: {reason})",
                    opened.skipped.len(),
                    path.display()
                );
            }
            opened.data
        }
    };
    if data.is_empty() {
        bail!("the {name} {split} split has no images");
    }
    Ok(data)
}

/// The loader for evaluation: no augmentation, no shuffling.
/// The training loader of `config`: its batch size, shuffling, seed, and the dataset's
/// augmentation and normalisation (augmentation off with `--no-augment`).
pub fn train_loader(
    config: &TrainConfig,
    data: Arc<dyn Dataset>,
    device: &Device,
) -> Result<Loader> {
    let (normalize, augment) = auglocal_data::recipe(&config.dataset)?;
    Ok(Loader::new(
        data,
        LoaderConfig {
            batch_size: config.batch_size,
            shuffle: config.shuffle,
            augment: if config.augment {
                augment
            } else {
                Augment::None
            },
            normalize,
            seed: config.seed,
        },
        device.clone(),
    )?)
}

pub fn eval_loader(
    data: Arc<dyn Dataset>,
    dataset: &str,
    batch_size: usize,
    device: &Device,
) -> Result<Loader> {
    let (normalize, _) = auglocal_data::recipe(dataset)?;
    Ok(Loader::new(
        data,
        LoaderConfig {
            batch_size,
            shuffle: false,
            augment: Augment::None,
            normalize,
            seed: 0,
        },
        device.clone(),
    )?)
}

/// Backbone-only evaluation over a whole loader.
pub fn evaluate(engine: &Engine, loader: &Loader) -> Result<EvalTotals> {
    let mut totals = EvalTotals::default();
    for batch in loader.epoch(1, 0) {
        let batch = batch?;
        totals.add(engine.eval_batch(&batch.images, &batch.labels)?);
    }
    Ok(totals)
}

/// Loads the run state and rebuilds the engine with every tensor of the checkpoint.
pub fn load_checkpoint(path: &Path, device: &Device) -> Result<(PathBuf, RunState, Engine)> {
    let dir = checkpoint::resolve(path)?;
    let state: RunState = checkpoint::read_state(&dir)?;
    state.check(&dir)?;
    let mut engine = build_engine(&state.config, state.classes, device)?;
    checkpoint::load_weights(
        &dir.join(checkpoint::WEIGHTS_FILE),
        engine.store(),
        Coverage::Everything,
    )?;
    let store = engine.store().clone();
    checkpoint::load_optimizer(
        &dir.join(checkpoint::OPTIMIZER_FILE),
        &store,
        engine.optimizer_mut(),
    )?;
    engine.set_steps(state.steps);
    Ok((dir, state, engine))
}

pub fn eval(args: EvalArgs, out: &mut dyn std::io::Write) -> Result<()> {
    set_threads(args.threads.unwrap_or(0))?;
    let device = crate::config::parse_device(&args.device)?;
    let (dir, state, engine) = load_checkpoint(&args.checkpoint, &device)?;
    let dataset = args.dataset.unwrap_or_else(|| state.config.dataset.clone());
    let same_dataset = dataset == state.config.dataset;
    let limit = if same_dataset {
        state.config.test_size
    } else {
        None
    };
    let source = TrainConfig {
        dataset: dataset.clone(),
        data_dir: args.data_dir.or_else(|| state.config.data_dir.clone()),
        offline: args.offline || state.config.offline,
        skip_bad_images: args.skip_bad_images || state.config.skip_bad_images,
        ..state.config.clone()
    };
    let data = open_split(&source, Split::Test, limit)?;
    if data.classes() != state.classes {
        bail!(
            "the checkpoint's model has {} classes but {dataset} has {}; evaluate it on a dataset with the same classes",
            state.classes,
            data.classes()
        );
    }
    let loader = eval_loader(
        data,
        &dataset,
        args.batch_size.unwrap_or(state.config.eval_batch_size),
        &device,
    )?;
    let totals = evaluate(&engine, &loader)?;
    let line = serde_json::json!({
        "checkpoint": dir,
        "dataset": dataset,
        "images": totals.images,
        "accuracy": totals.accuracy(),
        "loss": totals.mean_loss(),
    });
    writeln!(out, "{line}")?;
    Ok(())
}

pub fn export(args: ExportArgs) -> Result<()> {
    let (_, state, engine) = load_checkpoint(&args.checkpoint, &Device::Cpu)?;
    if args.out.extension().and_then(|e| e.to_str()) != Some("safetensors") {
        bail!("--out {} must end in .safetensors", args.out.display());
    }
    let count = checkpoint::export_backbone(engine.store(), &args.out)?;
    eprintln!(
        "wrote {} tensors of {} ({} classes) to {}",
        count,
        state.config.model,
        state.classes,
        args.out.display()
    );
    Ok(())
}
