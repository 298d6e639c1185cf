//! What the commands share: threads, the engine a [`TrainConfig`] describes, dataset splits
//! and their loaders, and loading a checkpoint back into an engine.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use auglocal_core::dist::partition::{measured_costs, Partition};
use auglocal_core::dist::Comm;
use auglocal_core::methods::InputSpec;
use auglocal_core::trainer::{self, RunState};
use auglocal_core::{Engine, ParamBuilder, ParamStore};
use auglocal_data::{Augment, Dataset, Loader, OpenOptions, Shard, Split};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::settings::TrainConfig;

/// The most classes a checkpoint's model may have: ImageNet-21k's 21,841 with room to
/// spare, while a corrupt count cannot make the output layer exhaust memory.
pub const MAX_CLASSES: usize = 100_000;

/// What the CLI records in a checkpoint's `state.json` beside the progress: enough to
/// rebuild the network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunMeta {
    /// Every setting the run was started with (resumable ones as last resumed).
    pub config: TrainConfig,
    /// Classes of the model's output layer, 1 to [`MAX_CLASSES`].
    pub classes: usize,
    /// Side of the images the run trained on (the local losses are sized from it); absent
    /// in checkpoints of earlier versions, which used [`TrainConfig::input_size`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_size: Option<usize>,
}

impl RunMeta {
    /// Checks what a state read from checkpoint directory `dir` says before a model is
    /// built from it.
    pub fn check(&self, dir: &Path) -> Result<()> {
        if !(1..=MAX_CLASSES).contains(&self.classes) {
            bail!(
                "checkpoint {} says its model has {} classes, expected 1 to {MAX_CLASSES}; {} is damaged, resume from an older checkpoint (checkpoint.old-*) or start again",
                dir.display(),
                self.classes,
                auglocal_core::checkpoint::STATE_FILE
            );
        }
        Ok(())
    }

    /// The side of the images the run's local losses were built for.
    pub fn image_size(&self) -> Result<usize> {
        match self.image_size {
            Some(size) => Ok(size),
            None => self.config.input_size(),
        }
    }
}

/// A checkpoint's state as the CLI writes it.
pub type CliState = RunState<RunMeta>;

/// Reads the state of the newest checkpoint at `path` and checks it.
pub fn read_state(path: &Path) -> Result<(PathBuf, CliState)> {
    let (dir, state) = trainer::read_run_state::<RunMeta>(path)?;
    state.meta.check(&dir)?;
    Ok((dir, state))
}

impl TrainConfig {
    /// Side of the square images the dataset delivers: `--image-size` for image folders,
    /// else its line of the table (96 for STL-10, 32 for the others).
    pub fn input_size(&self) -> Result<usize> {
        let spec = self.dataset_spec()?;
        Ok(match self.dataset.as_str() {
            "imagefolder" => self.image_size.unwrap_or(spec.input_size),
            _ => spec.input_size,
        })
    }

    /// What the local losses need to know about images of side `image_size` of this dataset.
    pub fn input(&self, image_size: usize) -> Result<InputSpec> {
        Ok(self.dataset_spec()?.input(image_size))
    }
}

/// Sets the number of threads of the CPU kernels, Candle's and ours (they share Candle's
/// pool, see [`auglocal_core::parallel`]), and of rayon's pool, which decodes and augments
/// images. 0 leaves the defaults: Candle's pool takes the physical cores, rayon's all
/// logical CPUs, or, where a launcher started several processes of the run on this machine,
/// each pool takes an equal share of the cores; `CANDLE_NUM_THREADS`, when set, sizes Candle's pool whatever is asked
/// here. Must run before any tensor work.
/// The first call in a process decides; later calls (tests running several commands in one
/// process) keep the pool already running.
pub fn set_threads(threads: usize) -> Result<()> {
    static CONFIGURED: std::sync::Once = std::sync::Once::new();
    let threads = if threads > 0 {
        threads
    } else {
        threads_per_process()
    };
    let mut result = Ok(());
    if threads > 0 {
        CONFIGURED.call_once(|| {
            // Candle sizes its worker pool from RAYON_NUM_THREADS at its first use.
            std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
            result = match rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build_global()
            {
                // Something in this process (a test beside this command) already started
                // rayon's pool: it stays, as for any later call.
                Err(e) if e.to_string().contains("already been initialized") => Ok(()),
                other => other.context("cannot start the worker threads"),
            };
        });
    }
    result
}

/// With several processes of a run on this machine, each takes an equal share of its cores
/// (at least one) unless `--threads` says otherwise, so they do not fight over them; alone,
/// 0 (every core).
fn threads_per_process() -> usize {
    match auglocal_core::dist::local_processes() {
        Some(local) if local > 1 => {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            (cores / local).max(1)
        }
        _ => 0,
    }
}

/// Builds the model, its auxiliary networks (sized for images of side `image_size`) and
/// the optimizer that `config` describes, freshly initialised from `config.seed`.
pub fn build_engine(
    config: &TrainConfig,
    classes: usize,
    image_size: usize,
    device: &Device,
) -> Result<Engine> {
    let store = ParamStore::new();
    let pb = ParamBuilder::new(&store, device, config.seed);
    let net = auglocal_models::build(&config.model, classes, &pb)?;
    let optimizer = config.optimizer_config().build()?;
    let input = config.input(image_size)?;
    let mut engine = Engine::new(net, config.method()?, input, &pb, optimizer)?;
    engine.set_precision(config.precision);
    engine.set_clip_grad_norm(config.clip_grad_norm);
    engine.set_recompute(config.recompute);
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

/// The training loader of `config`: its batch size, shuffling, seed, and the dataset's
/// augmentation (off with `--no-augment`) and normalisation.
pub fn train_loader(
    config: &TrainConfig,
    data: Arc<dyn Dataset>,
    device: &Device,
) -> Result<Loader> {
    let mut loader = config
        .dataset_spec()?
        .train_loader(config.batch_size, config.seed);
    loader.shuffle = config.shuffle;
    if !config.augment {
        loader.augment = Augment::None;
    }
    Ok(Loader::new(data, loader, device.clone())?)
}

/// The loader for evaluation on `dataset`: its normalisation, no augmentation, in order.
pub fn eval_loader(
    data: Arc<dyn Dataset>,
    dataset: &str,
    batch_size: usize,
    device: &Device,
) -> Result<Loader> {
    let loader = auglocal_data::spec(dataset)?.eval_loader(batch_size);
    Ok(Loader::new(data, loader, device.clone())?)
}

/// The stages of a run of several processes: rank 0 times each module's forward pass, loss
/// and backward pass on a random batch of a replica's shape (`batch` images over all
/// replicas) and tells the others, so every rank cuts the same balanced partition.
pub fn partition(
    comm: &mut dyn Comm,
    engine: &Engine,
    batch: usize,
    image_size: usize,
) -> Result<Partition> {
    let t = comm.topology();
    let mut costs = vec![0.0; engine.module_count()];
    if t.rank == 0 {
        let shard = Shard {
            replica: 0,
            replicas: t.replicas(),
        };
        let n = shard.range(batch).len();
        let device = engine.device();
        let images = Tensor::randn(0f32, 1.0, (n, 3, image_size, image_size), device)?;
        let classes = engine.net().classes() as u32;
        let labels: Vec<u32> = (0..n as u32).map(|i| i % classes).collect();
        let labels = Tensor::from_vec(labels, n, device)?;
        costs = measured_costs(engine, &images, &labels, 2)?;
    }
    comm.broadcast_f64(0, &mut costs)?;
    Ok(Partition::balanced(&costs, t.stages)?)
}

/// Loads the run state and rebuilds the engine with every tensor of the checkpoint.
pub fn load_checkpoint(path: &Path, device: &Device) -> Result<(PathBuf, CliState, Engine)> {
    let (dir, state) = read_state(path)?;
    let meta = &state.meta;
    let mut engine = build_engine(&meta.config, meta.classes, meta.image_size()?, device)?;
    trainer::restore(&dir, &mut engine)?;
    Ok((dir, state, engine))
}
