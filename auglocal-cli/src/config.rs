//! The resolved settings of a training run: a recipe chosen by dataset, then a TOML config
//! file, then command-line flags, each overriding the one before.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use auglocal_core::plan::HeadKind;
use auglocal_core::{AuxPlan, Method, OnNonFinite, Precision, Schedule};
use serde::{Deserialize, Serialize};

/// Every method name `--method` accepts.
pub const METHODS: &[&str] = &[
    "bp",
    "auglocal",
    "dgl",
    "infopro",
    "infopro-contrast",
    "predsim",
    "greedy",
];

/// Every setting of `auglocal train`. Written to `config.json` of each run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub dataset: String,
    pub data_dir: Option<PathBuf>,
    pub model: String,
    /// `bp`, `auglocal`, `dgl`, `infopro`, `infopro-contrast`, `predsim` or `greedy`.
    pub method: String,
    /// K for the baselines (None: one module per unit); AugLocal's K is units - aux_depth.
    #[serde(default)]
    pub modules: Option<usize>,
    pub aux_depth: usize,
    pub pyramid: f64,
    pub epochs: usize,
    pub batch_size: usize,
    pub eval_batch_size: usize,
    pub lr: f64,
    pub momentum: f64,
    pub nesterov: bool,
    pub weight_decay: f64,
    /// `warmup-cosine`, `cosine`, `constant` or `step:E1,E2`.
    pub schedule: String,
    pub seed: u64,
    /// Worker threads (0: all cores).
    pub threads: usize,
    /// `cpu`, `cuda` or `cuda:N`.
    #[serde(default = "default_device")]
    pub device: String,
    pub augment: bool,
    pub shuffle: bool,
    /// Train on the first N images only (None: all).
    pub train_size: Option<usize>,
    /// Evaluate on the first N test images only (None: all).
    pub test_size: Option<usize>,
    /// Stop after this many training steps in total (None: run every epoch).
    pub max_steps: Option<u64>,
    /// Write a line to `steps.jsonl` every N steps (None: never).
    pub log_every: Option<u64>,
    /// Also checkpoint every N steps, not only at the end of each epoch (None: per epoch).
    #[serde(default)]
    pub checkpoint_every: Option<u64>,
    /// Checkpoints kept in the run directory, the newest included (older ones as
    /// `checkpoint.old-<seq>/`).
    #[serde(default = "default_keep")]
    pub keep: usize,
    /// On a NaN or infinite loss or gradient: `stop` the run, or `skip` the batch.
    #[serde(default = "default_on_nan")]
    pub on_nan: String,
    /// Activation precision: `f32`, or `bf16` (mixed precision with f32 master weights,
    /// BatchNorm and losses; meant for GPUs).
    #[serde(default = "default_precision")]
    pub precision: String,
    /// Start from these weights (safetensors; backbone names, auxiliary nets optional).
    pub init_from: Option<PathBuf>,
    /// `paper` (the spec's settings for the dataset) or `quick` (minutes on 2 cores).
    #[serde(default = "default_recipe")]
    pub recipe: String,
    /// Side of the square crops of `imagefolder` (None: 224).
    #[serde(default)]
    pub image_size: Option<usize>,
    /// `hub:` datasets: use the Hugging Face cache only.
    #[serde(default)]
    pub offline: bool,
    /// `imagefolder`: leave out files that are not JPEG/PNG images instead of failing.
    #[serde(default)]
    pub skip_bad_images: bool,
    /// `hub:` datasets: the label column (None: `label`, else the only integer column).
    #[serde(default)]
    pub label_column: Option<String>,
}

/// The recipe names `--recipe` accepts.
pub const RECIPES: &[&str] = &["paper", "quick"];

impl TrainConfig {
    /// The default recipe for `dataset`: the paper's for real data; for the embedded
    /// synthetic data, a run that finishes in minutes on 2 cores.
    pub fn recipe(dataset: &str) -> Self {
        let name = if dataset == "synthetic" {
            "quick"
        } else {
            "paper"
        };
        Self::with_recipe(dataset, name).expect("the default recipes exist")
    }

    /// The settings of recipe `name` (see [`RECIPES`]) for `dataset`. `paper` follows the
    /// spec's table: CIFAR and SVHN batch 1024, lr 0.8; STL-10 batch 128, lr 0.1 (both a
    /// 10-epoch warm-up, cosine, 400 epochs); ImageNet folders ResNet-34, batch 1024, lr 0.4,
    /// cosine without warm-up, 90 epochs. `quick` trains a small subset for a few epochs.
    pub fn with_recipe(dataset: &str, name: &str) -> Result<Self> {
        let cifar = TrainConfig {
            dataset: dataset.to_string(),
            data_dir: None,
            model: "resnet32".into(),
            method: "auglocal".into(),
            modules: None,
            aux_depth: 2,
            pyramid: 0.5,
            epochs: 400,
            batch_size: 1024,
            eval_batch_size: 1000,
            lr: 0.8,
            momentum: 0.9,
            nesterov: true,
            weight_decay: 1e-4,
            schedule: "warmup-cosine".into(),
            seed: 0,
            threads: 0,
            device: default_device(),
            augment: true,
            shuffle: true,
            train_size: None,
            test_size: None,
            max_steps: None,
            log_every: None,
            checkpoint_every: None,
            keep: default_keep(),
            on_nan: default_on_nan(),
            precision: default_precision(),
            init_from: None,
            recipe: name.to_string(),
            image_size: None,
            offline: false,
            skip_bad_images: false,
            label_column: None,
        };
        let paper = match dataset {
            "stl10" | "hub:stl10" => TrainConfig {
                batch_size: 128,
                lr: 0.1,
                ..cifar
            },
            "imagefolder" => TrainConfig {
                model: "resnet34".into(),
                lr: 0.4,
                schedule: "cosine".into(),
                epochs: 90,
                eval_batch_size: 250,
                ..cifar
            },
            _ => cifar,
        };
        match name {
            "paper" => Ok(paper),
            "quick" => Ok(TrainConfig {
                model: "resnet20".into(),
                epochs: 4,
                batch_size: 64,
                eval_batch_size: 250,
                lr: 0.05,
                schedule: "cosine".into(),
                train_size: Some(2048),
                test_size: Some(500),
                ..paper
            }),
            other => bail!("unknown recipe `{other}` (valid: {})", RECIPES.join(", ")),
        }
    }

    /// The plan method these settings describe.
    pub fn method(&self) -> Result<Method> {
        let baseline = |head| Method::Baseline {
            head,
            modules: self.modules,
        };
        let method = match self.method.as_str() {
            "bp" => Method::Bp,
            "auglocal" => Method::AugLocal {
                depth: self.aux_depth,
                pyramid: self.pyramid,
            },
            "dgl" => baseline(HeadKind::Dgl),
            "infopro" => baseline(HeadKind::InfoPro),
            "infopro-contrast" => baseline(HeadKind::InfoProContrast),
            "predsim" => baseline(HeadKind::PredSim),
            "greedy" => baseline(HeadKind::Linear),
            other => bail!("unknown method `{other}` (valid: {})", METHODS.join(", ")),
        };
        if let (Some(k), Method::Bp | Method::AugLocal { .. }) = (self.modules, method) {
            bail!(
                "--modules {k} applies to the baselines only: bp is one module, and AugLocal has K = units - --aux-depth modules"
            );
        }
        Ok(method)
    }

    /// Side of the square images the network sees: `--image-size` for image folders
    /// (default 224), 96 for STL-10, 32 for the other datasets. The baselines' heads size
    /// their pooling from it.
    pub fn input_size(&self) -> usize {
        match self.dataset.as_str() {
            "imagefolder" => self.image_size.unwrap_or(224),
            "stl10" | "hub:stl10" => 96,
            _ => 32,
        }
    }

    /// What a training step does on a NaN or infinite loss or gradient.
    pub fn on_non_finite(&self) -> Result<OnNonFinite> {
        match self.on_nan.as_str() {
            "stop" => Ok(OnNonFinite::Stop),
            "skip" => Ok(OnNonFinite::Skip),
            other => bail!("unknown --on-nan `{other}` (valid: stop, skip)"),
        }
    }

    /// The type activations are computed in.
    pub fn precision(&self) -> Result<Precision> {
        match self.precision.as_str() {
            "f32" => Ok(Precision::F32),
            "bf16" => Ok(Precision::Bf16),
            other => bail!("unknown --precision `{other}` (valid: f32, bf16)"),
        }
    }

    pub fn schedule(&self) -> Result<Schedule> {
        Ok(Schedule::parse(&self.schedule)?)
    }

    /// Checks every setting that can be checked before any data is read.
    pub fn validate(&self) -> Result<()> {
        self.method()?;
        self.schedule()?;
        self.on_non_finite()?;
        self.precision()?;
        if !auglocal_models::MODELS.contains(&self.model.as_str()) {
            bail!(
                "unknown model `{}` (valid: {})",
                self.model,
                auglocal_models::MODELS.join(", ")
            );
        }
        // The plan's own checks (depth, K) before any data is read.
        let channels = auglocal_models::unit_channels(&self.model)?;
        AuxPlan::new(&self.model, &channels, self.method()?)?;
        auglocal_data::check_name(&self.dataset)?;
        if !RECIPES.contains(&self.recipe.as_str()) {
            bail!(
                "unknown recipe `{}` (valid: {})",
                self.recipe,
                RECIPES.join(", ")
            );
        }
        if self.image_size == Some(0) {
            bail!("--image-size must be at least 1 pixel");
        }
        parse_device(&self.device)?;
        if self.epochs == 0 {
            bail!("--epochs must be at least 1");
        }
        if self.batch_size < 2 || self.eval_batch_size == 0 {
            bail!("--batch-size must be at least 2 (BatchNorm needs two samples to train)");
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            bail!("--lr must be a positive finite number, got {}", self.lr);
        }
        if self.log_every == Some(0) {
            bail!("--log-every must be at least 1");
        }
        if self.checkpoint_every == Some(0) {
            bail!("--checkpoint-every must be at least 1");
        }
        if self.keep == 0 {
            bail!("--keep must be at least 1 (the newest checkpoint is always kept)");
        }
        Ok(())
    }
}

fn default_device() -> String {
    "cpu".into()
}

fn default_keep() -> usize {
    1
}

fn default_on_nan() -> String {
    "stop".into()
}

fn default_precision() -> String {
    "f32".into()
}

fn default_recipe() -> String {
    "paper".into()
}

/// Parses `cpu`, `cuda` or `cuda:N` into a device, with an error that says how to get CUDA
/// where this build has none.
pub fn parse_device(name: &str) -> Result<candle_core::Device> {
    let ordinal = match name {
        "cpu" => return Ok(candle_core::Device::Cpu),
        "cuda" => 0,
        _ => match name
            .strip_prefix("cuda:")
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(n) => n,
            None => bail!("unknown device `{name}` (valid: cpu, cuda, cuda:N)"),
        },
    };
    if !candle_core::utils::cuda_is_available() {
        bail!("--device {name}: this auglocal was built without CUDA; build it with `--features cuda` (see the README)");
    }
    candle_core::Device::new_cuda(ordinal)
        .with_context(|| format!("--device {name}: no usable CUDA GPU with ordinal {ordinal}"))
}

/// Reads a TOML config file: a table of [`TrainConfig`] fields, any subset of them.
/// Unknown keys are errors, so a typo never passes silently.
pub fn read_toml(path: &std::path::Path) -> Result<toml::Table> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    parse_toml(&text, path)
}

/// [`read_toml`] on the text of the file; `path` only names it in errors.
pub fn parse_toml(text: &str, path: &std::path::Path) -> Result<toml::Table> {
    toml::from_str(text)
        .with_context(|| format!("config file {} is not valid TOML", path.display()))
}

/// The settings of a new run: the recipe that `dataset` and `recipe` pick (from `flags`,
/// else `file`; default `synthetic` and its default recipe), then `file` (read from
/// `origin`), then `flags` over it, validated.
pub fn resolve_new(file: &toml::Table, flags: &toml::Table, origin: &str) -> Result<TrainConfig> {
    let dataset = flags
        .get("dataset")
        .or_else(|| file.get("dataset"))
        .and_then(|v| v.as_str())
        .unwrap_or("synthetic")
        .to_string();
    let base = match flags.get("recipe").or_else(|| file.get("recipe")) {
        Some(name) => TrainConfig::with_recipe(&dataset, name.as_str().unwrap_or_default())?,
        None => TrainConfig::recipe(&dataset),
    };
    let config = apply_table(&base, file, origin)?;
    let config = apply_table(&config, flags, "flags")?;
    config.validate()?;
    Ok(config)
}

/// Applies `overrides` (TOML table with the field names of [`TrainConfig`]) over `base`.
pub fn apply_table(
    base: &TrainConfig,
    overrides: &toml::Table,
    origin: &str,
) -> Result<TrainConfig> {
    let mut merged = toml::Table::try_from(base).context("internal: config is not a TOML table")?;
    for (key, value) in overrides {
        merged.insert(key.clone(), value.clone());
    }
    toml::Value::Table(merged)
        .try_into::<TrainConfig>()
        .map_err(|e| anyhow::anyhow!("{origin}: {}", e.to_string().trim().replace('\n', " ")))
}
