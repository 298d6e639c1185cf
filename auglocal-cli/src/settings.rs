//! The settings of a training run: [`Settings`] is what the flags or a config file give
//! (every field optional), [`TrainConfig`] the resolved run: the dataset's recipe
//! (auglocal-data's table), then the config file, then the flags, each overriding the one
//! before, field by field, typed all the way.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use auglocal_core::{
    AdamWConfig, AuxPlan, Method, MethodName, MethodSettings, OnNonFinite, OptimizerConfig,
    OptimizerKind, Precision, Schedule, SgdConfig, METHODS,
};
use auglocal_data::{DatasetSpec, RecipeName};
use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use serde::{Deserialize, Serialize};

/// `cpu`, `cuda` (the first GPU; under `mpirun` or `srun`, the GPU of the process's local
/// rank) or `cuda:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DeviceName {
    Cpu,
    /// `cuda` (`None`) or `cuda:N`.
    Cuda(Option<usize>),
}

impl std::str::FromStr for DeviceName {
    type Err = anyhow::Error;

    fn from_str(name: &str) -> Result<Self> {
        match name {
            "cpu" => Ok(DeviceName::Cpu),
            "cuda" => Ok(DeviceName::Cuda(None)),
            _ => match name
                .strip_prefix("cuda:")
                .and_then(|n| n.parse::<usize>().ok())
            {
                Some(n) => Ok(DeviceName::Cuda(Some(n))),
                None => bail!("unknown device `{name}` (valid: cpu, cuda, cuda:N)"),
            },
        }
    }
}

impl TryFrom<String> for DeviceName {
    type Error = anyhow::Error;

    fn try_from(name: String) -> Result<Self> {
        name.parse()
    }
}

impl From<DeviceName> for String {
    fn from(device: DeviceName) -> String {
        device.to_string()
    }
}

impl std::fmt::Display for DeviceName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceName::Cpu => f.write_str("cpu"),
            DeviceName::Cuda(None) => f.write_str("cuda"),
            DeviceName::Cuda(Some(n)) => write!(f, "cuda:{n}"),
        }
    }
}

impl DeviceName {
    /// Opens the device, with an error that says how to get CUDA where this build has none.
    pub fn open(self) -> Result<candle_core::Device> {
        let DeviceName::Cuda(ordinal) = self else {
            return Ok(candle_core::Device::Cpu);
        };
        // Several processes on a machine share its GPUs one each, by local rank.
        let ordinal = ordinal.unwrap_or_else(|| auglocal_core::dist::local_rank().unwrap_or(0));
        if !candle_core::utils::cuda_is_available() {
            bail!("--device {self}: this auglocal was built without CUDA; build it with `--features cuda` (see the README)");
        }
        candle_core::Device::new_cuda(ordinal)
            .with_context(|| format!("--device {self}: no usable CUDA GPU with ordinal {ordinal}"))
    }
}

/// `--method`: a name of the table of methods (listed with its help line), with optional
/// modifiers after `+` (`dgl+man+hpff`).
pub fn method_parser() -> MethodParser {
    MethodParser(PossibleValuesParser::new(
        METHODS
            .iter()
            .map(|m| PossibleValue::new(m.name).help(m.help)),
    ))
}

/// The parser [`method_parser`] gives: clap's own check and message for the method's name,
/// then the modifiers.
#[derive(Clone)]
pub struct MethodParser(PossibleValuesParser);

impl TypedValueParser for MethodParser {
    type Value = MethodName;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> std::result::Result<MethodName, clap::Error> {
        // Names are lower case; `--rule AugLocal` (ignore_case) arrives as written.
        let text = value.to_string_lossy().to_ascii_lowercase();
        let base = text.split('+').next().unwrap_or_default();
        self.0.parse_ref(cmd, arg, std::ffi::OsStr::new(base))?;
        MethodName::parse(&text).map_err(|e| {
            clap::Error::raw(clap::error::ErrorKind::InvalidValue, format!("{e}\n")).with_cmd(cmd)
        })
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        self.0.possible_values()
    }
}

/// `--model`: the registry's names.
/// The network `inspect` and `bench` build: the flags and defaults of `train` on CIFAR
/// (the paper's AugLocal, d = 2, pyramid 0.5, ResNet-32), so the same flags name the same
/// network in every command.
#[derive(clap::Args, Debug, Clone)]
pub struct NetworkArgs {
    /// The backbone (default: train's on CIFAR).
    #[arg(long, default_value = "resnet32", value_parser = model_parser())]
    pub model: String,
    /// Method, with optional modifiers after `+` (`+man`, `+hpff`).
    #[arg(long, default_value = "auglocal", value_parser = method_parser())]
    pub method: MethodName,
    /// Number of modules K of the methods with one head per unit (default: one per unit).
    #[arg(long)]
    pub modules: Option<usize>,
    /// AugLocal's auxiliary depth d.
    #[arg(long, default_value_t = MethodSettings::default().aux_depth)]
    pub aux_depth: usize,
    /// AugLocal's pyramid coefficient (0..1; 0 = the same depth everywhere).
    #[arg(long, default_value_t = MethodSettings::default().pyramid)]
    pub pyramid: f64,
}

impl NetworkArgs {
    /// The method these flags name, with its settings.
    pub fn method(&self) -> auglocal_core::Result<Method> {
        Method::from_name(
            self.method,
            MethodSettings {
                aux_depth: self.aux_depth,
                pyramid: self.pyramid,
                modules: self.modules,
            },
        )
    }
}

pub fn model_parser() -> PossibleValuesParser {
    PossibleValuesParser::new(auglocal_models::MODELS.iter().copied())
}

/// `--on-nan`: stop or skip.
pub fn on_nan_parser() -> impl TypedValueParser<Value = OnNonFinite> {
    PossibleValuesParser::new(["stop", "skip"]).map(|v| match v.as_str() {
        "skip" => OnNonFinite::Skip,
        _ => OnNonFinite::Stop,
    })
}

/// `--precision`: f32 or bf16.
pub fn precision_parser() -> impl TypedValueParser<Value = Precision> {
    PossibleValuesParser::new(["f32", "bf16"]).map(|v| match v.as_str() {
        "bf16" => Precision::Bf16,
        _ => Precision::F32,
    })
}

/// `--optimizer`: sgd or adamw.
fn optimizer_parser() -> impl TypedValueParser<Value = OptimizerKind> {
    PossibleValuesParser::new(OptimizerKind::NAMES)
        .map(|name| OptimizerKind::parse(&name).unwrap_or_default())
}

/// `--betas B1,B2`.
fn parse_betas(text: &str) -> std::result::Result<[f64; 2], String> {
    let parsed: Option<Vec<f64>> = text.split(',').map(|b| b.trim().parse().ok()).collect();
    match parsed.as_deref() {
        Some(&[b1, b2]) => Ok([b1, b2]),
        _ => Err(format!(
            "`{text}` is not two numbers B1,B2 (PyTorch's default: 0.9,0.999)"
        )),
    }
}

/// `--recipe`: the recipe names of auglocal-data.
fn recipe_parser() -> impl TypedValueParser<Value = RecipeName> {
    PossibleValuesParser::new(RecipeName::NAMES.iter().copied())
        .try_map(|name| RecipeName::parse(&name))
}

/// What flags or a config file set: every setting of `auglocal train`, each optional. The
/// flags are these fields (`--aux-depth` is `aux_depth`); a config file is a TOML table of
/// the same names. Unknown keys are errors, so a typo never passes silently.
#[derive(Debug, Clone, Default, PartialEq, clap::Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Dataset: synthetic (embedded, the default), cifar10, cifar100, svhn, svhn-extra,
    /// stl10, imagefolder, hub:OWNER/NAME[/CONFIG] or hub:cifar10|cifar100|svhn|stl10.
    #[arg(long)]
    pub dataset: Option<String>,
    /// Directory holding the dataset files (cifar10: data_batch_1.bin ... test_batch.bin).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Settings recipe: paper (the spec's for the dataset; default for real data) or quick.
    #[arg(long, value_parser = recipe_parser())]
    pub recipe: Option<RecipeName>,
    /// imagefolder: side of the square crops (default 224; resize 256 scales with it).
    #[arg(long)]
    pub image_size: Option<usize>,
    /// hub: datasets: use the Hugging Face cache only (also HF_HUB_OFFLINE=1).
    #[arg(long, num_args = 0, default_missing_value = "true")]
    pub offline: Option<bool>,
    /// imagefolder: leave out files that are not JPEG/PNG images (counted and reported).
    #[arg(long, num_args = 0, default_missing_value = "true")]
    pub skip_bad_images: Option<bool>,
    /// hub: datasets: the label column (default `label`, else the only integer column).
    #[arg(long)]
    pub label_column: Option<String>,
    /// Backbone (`auglocal models` lists them).
    #[arg(long, value_parser = model_parser())]
    pub model: Option<String>,
    /// Training method (the reference's `--rule AugLocal` works too), with optional
    /// modifiers after `+`: `+man` (momentum auxiliary network), `+hpff` (patch feature
    /// fusion), e.g. `dgl+man`.
    #[arg(long, alias = "rule", ignore_case = true, value_parser = method_parser())]
    pub method: Option<MethodName>,
    /// Number of modules K of the methods with one head per unit (default: one per unit).
    #[arg(long)]
    pub modules: Option<usize>,
    /// AugLocal auxiliary depth d (K = units - d modules; alias `--aux_net_depth`).
    #[arg(long, alias = "aux_net_depth")]
    pub aux_depth: Option<usize>,
    /// Pyramid coefficient in [0, 1] (0: same depth everywhere; `--pyramid` alone, the
    /// reference's switch, is 0.5).
    #[arg(long, num_args = 0..=1, default_missing_value = "0.5")]
    pub pyramid: Option<f64>,
    /// The reference's `--pyramid_coeff C`: the pyramid coefficient, as `--pyramid C`.
    #[arg(long = "pyramid_coeff", hide = true)]
    #[serde(skip)]
    pub pyramid_coeff: Option<f64>,
    /// Epochs to train (synthetic default 6; CIFAR 400).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Training batch size (synthetic default 64; CIFAR 1024).
    #[arg(long, alias = "batch_size")]
    pub batch_size: Option<usize>,
    /// Batch size for evaluation.
    #[arg(long)]
    pub eval_batch_size: Option<usize>,
    /// Initial learning rate.
    #[arg(long)]
    pub lr: Option<f64>,
    /// SGD momentum (default 0.9).
    #[arg(long)]
    pub momentum: Option<f64>,
    /// Plain momentum instead of Nesterov (config file: `nesterov = false`).
    #[arg(long = "no-nesterov", num_args = 0, default_missing_value = "false")]
    pub nesterov: Option<bool>,
    /// Weight decay on every parameter, never on BatchNorm statistics (default 1e-4;
    /// alias `--wd`).
    #[arg(long, alias = "wd")]
    pub weight_decay: Option<f64>,
    /// sgd (the paper's: momentum, Nesterov) or adamw (PyTorch's AdamW: weight decay
    /// decoupled, `--weight-decay` still sets it).
    #[arg(long, value_parser = optimizer_parser())]
    pub optimizer: Option<OptimizerKind>,
    /// AdamW's decay rates of the moment averages, B1,B2 (default 0.9,0.999; config file:
    /// `betas = [0.9, 0.999]`).
    #[arg(long, value_parser = parse_betas)]
    pub betas: Option<[f64; 2]>,
    /// AdamW's epsilon (default 1e-8).
    #[arg(long)]
    pub eps: Option<f64>,
    /// Clip each module's gradients to this joint L2 norm before its step (default: no
    /// clipping).
    #[arg(long, alias = "clip_grad_norm")]
    pub clip_grad_norm: Option<f64>,
    /// warmup-cosine, warmup-cosine:N, cosine, constant or step:E1,E2,...
    #[arg(long)]
    pub schedule: Option<Schedule>,
    /// Epochs of warmup-cosine's linear warm-up (default: the recipe's, the paper's 10).
    #[arg(long)]
    pub warmup_epochs: Option<usize>,
    /// The reference's `--cos_lr`: the paper's warm-up cosine (`--schedule warmup-cosine`).
    #[arg(long = "cos_lr", hide = true)]
    #[serde(skip)]
    pub cos_lr: bool,
    /// The reference's `--layers N` (with `--model resnet`): refused, naming `--model resnetN`.
    #[arg(long, hide = true)]
    #[serde(skip)]
    pub layers: Option<usize>,
    /// The reference's `--local_module_num`: refused, naming what gives K here.
    #[arg(long = "local_module_num", hide = true)]
    #[serde(skip)]
    pub local_module_num: Option<usize>,
    /// Seed of initialisation, shuffling and augmentation (default 0).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// cpu, cuda or cuda:N (CUDA needs a build with `--features cuda`).
    #[arg(long)]
    pub device: Option<DeviceName>,
    /// Train on the first N training images only.
    #[arg(long)]
    pub train_size: Option<usize>,
    /// Evaluate on the first N test images only.
    #[arg(long)]
    pub test_size: Option<usize>,
    /// Stop after N training steps in total (a checkpoint is written there).
    #[arg(long)]
    pub max_steps: Option<u64>,
    /// Append each module's loss to steps.jsonl every N steps.
    #[arg(long)]
    pub log_every: Option<u64>,
    /// Also write a checkpoint every N steps (always at the end of each epoch).
    #[arg(long)]
    pub checkpoint_every: Option<u64>,
    /// Checkpoints to keep in the run directory, the newest included (default 1).
    #[arg(long)]
    pub keep: Option<usize>,
    /// Also keep the checkpoint of the best test accuracy in checkpoint-best/ (config file:
    /// `save_best = true`).
    #[arg(long = "save-best", num_args = 0, default_missing_value = "true")]
    pub save_best: Option<bool>,
    /// On a NaN or infinite loss or gradient: stop (default) or skip the batch.
    #[arg(long, value_parser = on_nan_parser())]
    pub on_nan: Option<OnNonFinite>,
    /// Drop each unit's activations in the forward pass and recompute them in the backward
    /// pass (activation checkpointing; e.g. `--method bp --recompute`): the same steps, bit
    /// for bit, in less memory, for a second forward pass (config file: `recompute = true`).
    #[arg(long, num_args = 0, default_missing_value = "true")]
    pub recompute: Option<bool>,
    /// Activations in f32 (default) or bf16 (mixed precision, f32 master weights; for GPUs).
    #[arg(long, value_parser = precision_parser())]
    pub precision: Option<Precision>,
    /// Turn off training augmentation (config file: `augment = false`).
    #[arg(long = "no-augment", num_args = 0, default_missing_value = "false")]
    pub augment: Option<bool>,
    /// Keep the dataset order in every epoch (config file: `shuffle = false`).
    #[arg(long = "no-shuffle", num_args = 0, default_missing_value = "false")]
    pub shuffle: Option<bool>,
    /// Start from these weights (safetensors with the backbone's PyTorch names).
    #[arg(long)]
    pub init_from: Option<PathBuf>,
    /// Pipeline stages S of a run of N processes started by `mpirun -np N` or `srun`:
    /// S stages x N/S data-parallel replicas (default 1; needs a build with `--features mpi`).
    #[arg(long)]
    pub stages: Option<usize>,
}

/// The settings that may change when a run is resumed; everything else is fixed by the run.
pub const RESUMABLE: &[&str] = &[
    "checkpoint_every",
    "keep",
    "save_best",
    "on_nan",
    "recompute",
    "precision",
    "epochs",
    "max_steps",
    "log_every",
    "threads",
    "device",
    "eval_batch_size",
    "offline",
    "stages",
];

impl Settings {
    /// Reads a TOML config file: a table of these fields, any subset of them.
    pub fn read_toml(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        Self::parse_toml(&text, path)
    }

    /// [`Settings::read_toml`] on the text of the file; `path` only names it in errors.
    pub fn parse_toml(text: &str, path: &Path) -> Result<Self> {
        toml::from_str(text).map_err(|e| {
            let message = e.to_string().trim().replace('\n', " ");
            if toml::from_str::<toml::Table>(text).is_err() {
                anyhow::anyhow!(
                    "config file {} is not valid TOML: {message}",
                    path.display()
                )
            } else {
                anyhow::anyhow!("config file {}: {message}", path.display())
            }
        })
    }

    /// The names of the settings given (`aux_depth` for `--aux-depth`).
    pub fn given(&self) -> Vec<String> {
        let mut given: Vec<String> = match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(map)) => map
                .into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, _)| k)
                .collect(),
            _ => Vec::new(),
        };
        // The reference's flags, by the setting each changes.
        let aliases = [
            (self.cos_lr, "schedule"),
            (self.pyramid_coeff.is_some(), "pyramid"),
            (self.layers.is_some(), "model"),
            (self.local_module_num.is_some(), "modules"),
        ];
        for (set, key) in aliases {
            if set && !given.iter().any(|k| k == key) {
                given.push(key.to_string());
            }
        }
        given
    }
}

/// Every setting of `auglocal train`, resolved. Written to `config.json` of each run and
/// into each checkpoint's `state.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Dataset name, as `--dataset` takes it (`synthetic`, `cifar10`,
    /// `hub:<owner>/<name>`, ...).
    pub dataset: String,
    /// Directory holding the dataset files (None for `synthetic` and `hub:`, which need
    /// none).
    pub data_dir: Option<PathBuf>,
    /// Backbone, a name of `auglocal_models::MODELS`.
    pub model: String,
    /// Training method, a line of the table of methods and its modifiers (written as its
    /// full name, `dgl+man`).
    pub method: MethodName,
    /// K of the methods with one head per unit (None: one module per unit); AugLocal's K
    /// is units - aux_depth.
    #[serde(default)]
    pub modules: Option<usize>,
    /// AugLocal's maximum auxiliary depth d (K = units - d).
    pub aux_depth: usize,
    /// AugLocal's pyramid coefficient in [0, 1] (0: every auxiliary network d deep).
    pub pyramid: f64,
    /// Epochs to train in all (a resumed run counts the ones done).
    pub epochs: usize,
    /// Training images per step, over all data-parallel replicas.
    pub batch_size: usize,
    /// Images per evaluation batch.
    pub eval_batch_size: usize,
    /// Learning rate the schedule starts from.
    pub lr: f64,
    /// SGD's momentum factor, in [0, 1).
    pub momentum: f64,
    /// SGD with Nesterov momentum (false: plain momentum).
    pub nesterov: bool,
    /// Weight decay on every parameter, never on BatchNorm statistics: SGD's L2 penalty,
    /// AdamW's decoupled decay.
    pub weight_decay: f64,
    /// Which optimizer trains the run (SGD in runs written before AdamW existed).
    #[serde(default)]
    pub optimizer: OptimizerKind,
    /// AdamW's moment decay rates.
    #[serde(default = "default_betas")]
    pub betas: [f64; 2],
    /// AdamW's epsilon.
    #[serde(default = "default_eps")]
    pub eps: f64,
    /// Each module's gradients are clipped to this L2 norm before its step (None: never).
    #[serde(default)]
    pub clip_grad_norm: Option<f64>,
    /// How the learning rate moves from `lr` over the epochs.
    pub schedule: Schedule,
    /// Seed of initialisation, shuffling and augmentation.
    pub seed: u64,
    /// Worker threads (0: all cores).
    pub threads: usize,
    /// Where the tensors live: the CPU, or a CUDA device (CPU in runs written before the
    /// setting existed).
    #[serde(default = "default_device")]
    pub device: DeviceName,
    /// Whether training images are augmented (the dataset's random crops, and flips where
    /// it has them).
    pub augment: bool,
    /// Whether every epoch visits the training images in a fresh seeded order.
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
    /// Also keep the checkpoint of the best test accuracy in `checkpoint-best/`.
    #[serde(default)]
    pub save_best: bool,
    /// On a NaN or infinite loss or gradient: stop the run, or skip the batch.
    #[serde(default)]
    pub on_nan: OnNonFinite,
    /// Activation checkpointing per unit (changes memory and time, never the numbers).
    #[serde(default)]
    pub recompute: bool,
    /// Activation precision: f32, or bf16 (mixed precision with f32 master weights,
    /// BatchNorm and losses; meant for GPUs).
    #[serde(default)]
    pub precision: Precision,
    /// Start from these weights (safetensors; backbone names, auxiliary nets optional).
    pub init_from: Option<PathBuf>,
    /// Pipeline stages of a run of several processes (1: one stage, data parallel only).
    #[serde(default = "default_stages")]
    pub stages: usize,
    /// The recipe the settings started from.
    #[serde(default = "default_recipe")]
    pub recipe: RecipeName,
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

fn default_device() -> DeviceName {
    DeviceName::Cpu
}

fn default_betas() -> [f64; 2] {
    let (b1, b2) = AdamWConfig::default().betas;
    [b1, b2]
}

fn default_eps() -> f64 {
    AdamWConfig::default().eps
}

fn default_keep() -> usize {
    1
}

fn default_stages() -> usize {
    1
}

fn default_recipe() -> RecipeName {
    RecipeName::Paper
}

impl TrainConfig {
    /// The settings of recipe `recipe` of dataset `dataset` (its line of auglocal-data's
    /// table), before any file or flag.
    pub fn from_recipe(dataset: &str, spec: &DatasetSpec, recipe: RecipeName) -> Result<Self> {
        let r = spec.recipe(recipe);
        Ok(TrainConfig {
            dataset: dataset.to_string(),
            data_dir: None,
            model: r.model.to_string(),
            method: MethodName::parse("auglocal")?,
            modules: None,
            aux_depth: MethodSettings::default().aux_depth,
            pyramid: MethodSettings::default().pyramid,
            epochs: r.epochs,
            batch_size: r.batch_size,
            eval_batch_size: r.eval_batch_size,
            lr: r.lr,
            momentum: 0.9,
            nesterov: true,
            weight_decay: 1e-4,
            optimizer: OptimizerKind::Sgd,
            betas: default_betas(),
            eps: default_eps(),
            clip_grad_norm: None,
            schedule: r.schedule,
            seed: 0,
            threads: 0,
            device: DeviceName::Cpu,
            augment: true,
            shuffle: true,
            train_size: r.train_size,
            test_size: r.test_size,
            max_steps: None,
            log_every: None,
            checkpoint_every: None,
            keep: default_keep(),
            save_best: false,
            on_nan: OnNonFinite::Stop,
            recompute: false,
            precision: Precision::F32,
            init_from: None,
            stages: default_stages(),
            recipe,
            image_size: None,
            offline: false,
            skip_bad_images: false,
            label_column: None,
        })
    }

    /// The default settings of `dataset`: its default recipe.
    pub fn recipe(dataset: &str) -> Result<Self> {
        let spec = auglocal_data::spec(dataset)?;
        Self::from_recipe(dataset, &spec, spec.default_recipe)
    }

    /// The settings of a new run: the recipe that the dataset and recipe of `flags`, else of
    /// `file`, pick (default: `synthetic` and its default recipe), then `file`, then
    /// `flags`, validated.
    pub fn resolve(file: &Settings, flags: &Settings) -> Result<Self> {
        let dataset = flags
            .dataset
            .clone()
            .or_else(|| file.dataset.clone())
            .unwrap_or_else(|| "synthetic".to_string());
        let spec = auglocal_data::spec(&dataset)?;
        let recipe = flags.recipe.or(file.recipe).unwrap_or(spec.default_recipe);
        let mut config = Self::from_recipe(&dataset, &spec, recipe)?;
        config.apply(file)?;
        config.apply(flags)?;
        config.validate()?;
        Ok(config)
    }

    /// Takes every setting `s` gives.
    pub fn apply(&mut self, s: &Settings) -> Result<()> {
        fn set<T: Clone>(field: &mut T, value: &Option<T>) {
            if let Some(v) = value {
                *field = v.clone();
            }
        }
        fn set_some<T: Clone>(field: &mut Option<T>, value: &Option<T>) {
            if value.is_some() {
                field.clone_from(value);
            }
        }
        set(&mut self.dataset, &s.dataset);
        set_some(&mut self.data_dir, &s.data_dir);
        set(&mut self.recipe, &s.recipe);
        set_some(&mut self.image_size, &s.image_size);
        set(&mut self.offline, &s.offline);
        set(&mut self.skip_bad_images, &s.skip_bad_images);
        set_some(&mut self.label_column, &s.label_column);
        set(&mut self.model, &s.model);
        set(&mut self.method, &s.method);
        set_some(&mut self.modules, &s.modules);
        set(&mut self.aux_depth, &s.aux_depth);
        set(&mut self.pyramid, &s.pyramid);
        set(&mut self.epochs, &s.epochs);
        set(&mut self.batch_size, &s.batch_size);
        set(&mut self.eval_batch_size, &s.eval_batch_size);
        set(&mut self.lr, &s.lr);
        set(&mut self.momentum, &s.momentum);
        set(&mut self.nesterov, &s.nesterov);
        set(&mut self.weight_decay, &s.weight_decay);
        set(&mut self.optimizer, &s.optimizer);
        set(&mut self.betas, &s.betas);
        set(&mut self.eps, &s.eps);
        set_some(&mut self.clip_grad_norm, &s.clip_grad_norm);
        if self.optimizer == OptimizerKind::AdamW && (s.momentum.is_some() || s.nesterov.is_some())
        {
            bail!("--momentum and --no-nesterov are SGD's settings; AdamW's are --betas B1,B2 and --eps");
        }
        if self.optimizer == OptimizerKind::Sgd && (s.betas.is_some() || s.eps.is_some()) {
            bail!("--betas and --eps are AdamW's settings; add --optimizer adamw, or use --momentum with SGD");
        }
        set(&mut self.schedule, &s.schedule);
        set(&mut self.pyramid, &s.pyramid_coeff);
        if s.cos_lr {
            if let Some(other) = &s.schedule {
                bail!("--cos_lr (the reference's warm-up cosine) and --schedule {other} both set the schedule; keep one");
            }
            self.schedule = Schedule::PAPER;
        }
        if let Some(n) = s.layers {
            bail!("--layers {n}: name the model whole here, --model resnet{n} (`auglocal models` lists them)");
        }
        if let Some(k) = s.local_module_num {
            bail!(
                "--local_module_num {k}: here K follows from the model for AugLocal (K = units - --aux-depth, so the reference's --local_module_num 16 --aux_net_depth 2 on ResNet-32 is --model resnet32 --aux-depth 2) and is --modules {k} for dgl, infopro and predsim"
            );
        }
        if let Some(epochs) = s.warmup_epochs {
            match &mut self.schedule {
                Schedule::WarmupCosine { warmup } => *warmup = epochs,
                other => bail!(
                    "--warmup-epochs {epochs} needs --schedule warmup-cosine (the schedule is {other})"
                ),
            }
        }
        set(&mut self.seed, &s.seed);
        set(&mut self.threads, &s.threads);
        set(&mut self.device, &s.device);
        set_some(&mut self.train_size, &s.train_size);
        set_some(&mut self.test_size, &s.test_size);
        set_some(&mut self.max_steps, &s.max_steps);
        set_some(&mut self.log_every, &s.log_every);
        set_some(&mut self.checkpoint_every, &s.checkpoint_every);
        set(&mut self.keep, &s.keep);
        set(&mut self.save_best, &s.save_best);
        set(&mut self.on_nan, &s.on_nan);
        set(&mut self.recompute, &s.recompute);
        set(&mut self.precision, &s.precision);
        set(&mut self.augment, &s.augment);
        set(&mut self.shuffle, &s.shuffle);
        set_some(&mut self.init_from, &s.init_from);
        set(&mut self.stages, &s.stages);
        Ok(())
    }

    /// The method these settings describe.
    pub fn method(&self) -> Result<Method> {
        Ok(Method::from_name(
            self.method,
            MethodSettings {
                aux_depth: self.aux_depth,
                pyramid: self.pyramid,
                modules: self.modules,
            },
        )?)
    }

    /// This dataset's line of auglocal-data's table.
    pub fn dataset_spec(&self) -> Result<DatasetSpec> {
        Ok(auglocal_data::spec(&self.dataset)?)
    }

    /// The optimizer these settings describe.
    pub fn optimizer_config(&self) -> OptimizerConfig {
        match self.optimizer {
            OptimizerKind::Sgd => OptimizerConfig::Sgd(SgdConfig {
                momentum: self.momentum,
                nesterov: self.nesterov,
                weight_decay: self.weight_decay,
            }),
            OptimizerKind::AdamW => OptimizerConfig::AdamW(AdamWConfig {
                betas: (self.betas[0], self.betas[1]),
                eps: self.eps,
                weight_decay: self.weight_decay,
            }),
        }
    }

    /// Checks every setting that can be checked before any data is read.
    pub fn validate(&self) -> Result<()> {
        if !auglocal_models::MODELS.contains(&self.model.as_str()) {
            bail!(
                "unknown model `{}` (valid: {})",
                self.model,
                auglocal_models::MODELS.join(", ")
            );
        }
        // The method's and the plan's own checks (K, depth, pyramid) before any data is read.
        let (net, _) = auglocal_models::build_zeroed(&self.model, 10)?;
        AuxPlan::new(net.as_ref(), &self.method()?)?;
        if self.method.modifiers.man && self.stages > 1 {
            bail!(
                "--method {} with --stages {}: MAN's moving average follows the first unit of the next module, which another pipeline stage would train, so it would follow a copy that never moves; use --stages 1 (data parallel over every process) or a method without +man",
                self.method,
                self.stages
            );
        }
        auglocal_data::check_name(&self.dataset)?;
        if self.image_size == Some(0) {
            bail!("--image-size must be at least 1 pixel");
        }
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
        if self.stages == 0 {
            bail!("--stages must be at least 1");
        }
        if let Some(norm) = self.clip_grad_norm {
            if !(norm > 0.0 && norm.is_finite()) {
                bail!("--clip-grad-norm {norm}: the norm must be a finite number above 0");
            }
        }
        self.optimizer_config().validate()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        settings: Settings,
    }

    fn flags(args: &[&str]) -> Settings {
        let mut argv = vec!["auglocal"];
        argv.extend_from_slice(args);
        Flags::try_parse_from(argv).unwrap().settings
    }

    #[test]
    fn switches_set_their_field_only_when_given() {
        let none = flags(&[]);
        assert_eq!(none, Settings::default());
        assert!(none.given().is_empty());
        let given = flags(&["--no-nesterov", "--offline", "--no-augment", "--lr", "0.1"]);
        assert_eq!(given.nesterov, Some(false));
        assert_eq!(given.offline, Some(true));
        assert_eq!(given.augment, Some(false));
        assert_eq!(given.shuffle, None);
        let mut names = given.given();
        names.sort();
        assert_eq!(names, ["augment", "lr", "nesterov", "offline"]);
    }

    #[test]
    fn optimizer_flags_and_file_keys() -> Result<()> {
        let file = Settings::parse_toml(
            "optimizer = \"adamw\"\nbetas = [0.8, 0.99]\nclip_grad_norm = 2.0\n",
            Path::new("a.toml"),
        )?;
        let config = TrainConfig::resolve(&file, &flags(&["--eps", "1e-6", "--wd", "0.05"]))?;
        assert_eq!(
            config.optimizer_config(),
            OptimizerConfig::AdamW(AdamWConfig {
                betas: (0.8, 0.99),
                eps: 1e-6,
                weight_decay: 0.05,
            })
        );
        assert_eq!(config.clip_grad_norm, Some(2.0));
        let flagged = flags(&["--optimizer", "adamw", "--betas", "0.5,0.9"]);
        let config = TrainConfig::resolve(&Settings::default(), &flagged)?;
        assert_eq!(config.betas, [0.5, 0.9]);

        let refused = |args: &[&str]| {
            TrainConfig::resolve(&Settings::default(), &flags(args))
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            refused(&["--optimizer", "adamw", "--momentum", "0.5"]),
            "--momentum and --no-nesterov are SGD's settings; AdamW's are --betas B1,B2 and --eps"
        );
        assert!(refused(&["--betas", "0.9,0.99"]).starts_with("--betas and --eps are AdamW's"));
        assert_eq!(
            refused(&["--clip-grad-norm", "0"]),
            "--clip-grad-norm 0: the norm must be a finite number above 0"
        );
        let message = refused(&["--optimizer", "adamw", "--betas", "0.9,1"]);
        assert!(
            message.contains("beta2") && message.contains("[0, 1)"),
            "{message}"
        );
        let mut argv = vec!["auglocal", "--betas", "0.9"];
        let error = Flags::try_parse_from(&argv).err().unwrap().to_string();
        assert!(error.contains("`0.9` is not two numbers B1,B2"), "{error}");
        argv[1] = "--optimizer";
        argv[2] = "adam";
        let error = Flags::try_parse_from(&argv).err().unwrap().to_string();
        assert!(error.contains("[possible values: sgd, adamw]"), "{error}");
        Ok(())
    }

    #[test]
    fn recipe_then_file_then_flags() -> Result<()> {
        let file = Settings::parse_toml(
            "dataset = \"cifar10\"\nlr = 0.1\nepochs = 7\nschedule = \"step:3,5\"\nmethod = \"dgl\"\nmodules = 4\nnesterov = false\n",
            Path::new("c.toml"),
        )?;
        let config = TrainConfig::resolve(&file, &flags(&["--epochs", "9", "--device", "cuda:1"]))?;
        // The CIFAR paper recipe under the file under the flags.
        assert_eq!(config.batch_size, 1024);
        assert_eq!(config.model, "resnet32");
        assert_eq!(config.lr, 0.1);
        assert_eq!(config.epochs, 9);
        assert_eq!(
            config.schedule,
            Schedule::Step {
                milestones: vec![3, 5]
            }
        );
        assert_eq!(config.method.to_string(), "dgl");
        assert_eq!(config.modules, Some(4));
        assert!(!config.nesterov);
        assert_eq!(config.device, DeviceName::Cuda(Some(1)));
        assert_eq!(config.recipe, RecipeName::Paper);
        // Written as text, read back the same.
        let json = serde_json::to_value(&config)?;
        assert_eq!(json["schedule"], "step:3,5");
        assert_eq!(json["method"], "dgl");
        assert_eq!(json["device"], "cuda:1");
        assert_eq!(json["on_nan"], "stop");
        assert_eq!(serde_json::from_value::<TrainConfig>(json)?, config);
        Ok(())
    }

    #[test]
    fn the_references_flags_resolve_to_ours() -> Result<()> {
        let none = Settings::default();
        // run.sh's CIFAR-10 line of the reference, and ours.
        let reference = TrainConfig::resolve(
            &none,
            &flags(&[
                "--dataset",
                "cifar10",
                "--rule",
                "AugLocal",
                "--aux_net_depth",
                "3",
                "--pyramid",
                "--pyramid_coeff",
                "0.25",
                "--cos_lr",
                "--batch_size",
                "512",
                "--lr",
                "0.4",
                "--wd",
                "5e-4",
                "--epochs",
                "300",
            ]),
        )?;
        let ours = TrainConfig::resolve(
            &none,
            &flags(&[
                "--dataset",
                "cifar10",
                "--method",
                "auglocal",
                "--aux-depth",
                "3",
                "--pyramid",
                "0.25",
                "--schedule",
                "warmup-cosine",
                "--batch-size",
                "512",
                "--lr",
                "0.4",
                "--weight-decay",
                "5e-4",
                "--epochs",
                "300",
            ]),
        )?;
        assert_eq!(reference, ours);
        // The switch alone is the reference's default coefficient; rules ignore case.
        let switch = TrainConfig::resolve(&none, &flags(&["--pyramid", "--rule", "InfoPro"]))?;
        assert_eq!(
            (switch.pyramid, switch.method.to_string()),
            (0.5, "infopro".to_string())
        );
        // Flags whose meaning differs say what to write instead.
        let err = |args: &[&str]| {
            TrainConfig::resolve(&none, &flags(args))
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err(&["--layers", "110"]),
            "--layers 110: name the model whole here, --model resnet110 (`auglocal models` lists them)"
        );
        assert!(err(&["--local_module_num", "16"]).contains("--modules 16 for dgl"));
        assert!(err(&["--cos_lr", "--schedule", "constant"]).contains("keep one"));
        // On a resume they count as the settings they change.
        let mut given = flags(&["--cos_lr", "--pyramid_coeff", "0.3"]).given();
        given.sort();
        assert_eq!(given, ["pyramid", "schedule"]);
        Ok(())
    }

    #[test]
    fn warmup_epochs_set_the_warm_up_of_warmup_cosine_only() -> Result<()> {
        let none = Settings::default();
        let config = TrainConfig::resolve(
            &none,
            &flags(&["--dataset", "cifar10", "--warmup-epochs", "3"]),
        )?;
        assert_eq!(config.schedule, Schedule::WarmupCosine { warmup: 3 });
        assert_eq!(
            serde_json::to_value(&config)?["schedule"],
            "warmup-cosine:3"
        );
        // The paper's 10 when not given; the file's setting, the flag over it.
        let paper = TrainConfig::resolve(&none, &flags(&["--dataset", "cifar10"]))?;
        assert_eq!(paper.schedule, Schedule::PAPER);
        let file = Settings::parse_toml(
            "dataset = \"cifar10\"\nwarmup_epochs = 5\n",
            Path::new("w.toml"),
        )?;
        let from_file = TrainConfig::resolve(&file, &none)?;
        assert_eq!(from_file.schedule, Schedule::WarmupCosine { warmup: 5 });
        // The synthetic recipe's cosine has no warm-up to set.
        let err = TrainConfig::resolve(&none, &flags(&["--warmup-epochs", "3"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--warmup-epochs 3 needs --schedule warmup-cosine (the schedule is cosine)"
        );
        Ok(())
    }

    #[test]
    fn config_file_errors_name_the_file_and_key() {
        let err = Settings::parse_toml("learning_rate = 1", Path::new("x.toml")).unwrap_err();
        let message = err.to_string();
        assert!(message.starts_with("config file x.toml: "), "{message}");
        assert!(
            message.contains("unknown field `learning_rate`"),
            "{message}"
        );
        let err = Settings::parse_toml("precision = \"fp8\"", Path::new("x.toml")).unwrap_err();
        assert!(err.to_string().contains("fp8"), "{err}");
        let err = Settings::parse_toml("method = \"sgd\"", Path::new("x.toml")).unwrap_err();
        assert!(
            err.to_string()
                .contains("unknown method `sgd` (known methods: bp, auglocal, dgl"),
            "{err}"
        );
        let err = Settings::parse_toml("method = \"dgl+ema\"", Path::new("x.toml")).unwrap_err();
        assert!(
            err.to_string().contains(
                "invalid method modifier: `ema` in `dgl+ema` (valid: one of +man, +hpff)"
            ),
            "{err}"
        );
        let err = Settings::parse_toml("lr = [", Path::new("x.toml")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("config file x.toml is not valid TOML"),
            "{err}"
        );
    }

    #[test]
    fn modifiers_ride_on_the_method_name() -> Result<()> {
        let none = Settings::default();
        let config = TrainConfig::resolve(&none, &flags(&["--method", "InfoPro+HPFF+man"]))?;
        assert_eq!(config.method.to_string(), "infopro+man+hpff");
        assert_eq!(serde_json::to_value(&config)?["method"], "infopro+man+hpff");
        let file = Settings::parse_toml("method = \"dgl+man\"\nstages = 2\n", Path::new("x.toml"))?;
        let err = TrainConfig::resolve(&file, &none).unwrap_err().to_string();
        assert!(
            err.starts_with("--method dgl+man with --stages 2: MAN's moving average follows the first unit of the next module"),
            "{err}"
        );
        let file =
            Settings::parse_toml("method = \"dgl+hpff\"\nstages = 2\n", Path::new("x.toml"))?;
        TrainConfig::resolve(&file, &none)?;
        Ok(())
    }
}
