//! The `auglocal` command line as a library: [`run`] parses arguments and executes one
//! command, so the binary is one line and tests can drive every command in-process.

mod bench;
mod compare;
mod config;
mod heap;
mod inspect;
mod models;
mod plot;
mod probe;
mod session;
mod similarity;
mod train;

// What reads the files a user passes, for the fuzz targets (`fuzz/`).
pub use config::{parse_toml, resolve_new, TrainConfig};
pub use session::{RunState, MAX_CLASSES};

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The command line.
#[derive(Parser)]
#[command(
    name = "auglocal",
    version,
    about = "Supervised local learning (AugLocal) for deep CNNs on Candle"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Train a model with BP, AugLocal or a baseline local loss; writes metrics, config and checkpoints to --out.
    Train(Box<TrainArgs>),
    /// Evaluate a checkpoint's backbone on a test set; prints one JSON line.
    Eval(EvalArgs),
    /// Print the auxiliary-network layout of a model and method.
    Inspect(InspectArgs),
    /// Write a checkpoint's backbone (PyTorch names) to a safetensors file.
    Export(ExportArgs),
    /// Time training steps on random tensors: seconds per step, images/s, peak memory.
    Bench(BenchArgs),
    /// Train several methods on the same data and seed; writes compare.md and compare.csv.
    Compare(CompareArgs),
    /// List every model: input size, units, parameters.
    Models(ModelsArgs),
    /// Linear probe of every unit of one or more checkpoints: accuracy table, JSON and PNG.
    Probe(ProbeArgs),
    /// Linear CKA between every unit of two checkpoints on the same images: JSON and PNG.
    Similarity(SimilarityArgs),
    /// Loss, accuracy and learning-rate curves of one or more runs as a PNG.
    Plot(PlotArgs),
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MethodArg {
    /// End-to-end backpropagation.
    Bp,
    /// AugLocal (--aux-depth, --pyramid).
    Auglocal,
    /// DGL's pooled conv + MLP heads.
    Dgl,
    /// InfoPro, softmax form (reconstruction + cross-entropy).
    Infopro,
    /// InfoPro, contrastive form (reconstruction + supervised contrastive).
    InfoproContrast,
    /// PredSim (0.99 similarity matching + 0.01 prediction).
    Predsim,
    /// Greedy supervised learning (a linear classifier per module).
    Greedy,
}

impl MethodArg {
    fn as_str(self) -> &'static str {
        match self {
            MethodArg::Bp => "bp",
            MethodArg::Auglocal => "auglocal",
            MethodArg::Dgl => "dgl",
            MethodArg::Infopro => "infopro",
            MethodArg::InfoproContrast => "infopro-contrast",
            MethodArg::Predsim => "predsim",
            MethodArg::Greedy => "greedy",
        }
    }
}

#[derive(Args)]
pub struct TrainArgs {
    /// Dataset: synthetic (embedded, the default), cifar10, cifar100, svhn, svhn-extra,
    /// stl10, imagefolder, hub:<owner>/<name>[/<config>] or hub:cifar10|cifar100|svhn|stl10.
    #[arg(long)]
    dataset: Option<String>,
    /// Directory holding the dataset files (cifar10: data_batch_1.bin ... test_batch.bin).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Settings recipe: paper (the spec's for the dataset; default for real data) or quick.
    #[arg(long)]
    recipe: Option<String>,
    /// imagefolder: side of the square crops (default 224; resize 256 scales with it).
    #[arg(long)]
    image_size: Option<usize>,
    /// hub: datasets: use the Hugging Face cache only (also HF_HUB_OFFLINE=1).
    #[arg(long)]
    offline: bool,
    /// imagefolder: leave out files that are not JPEG/PNG images (counted and reported).
    #[arg(long)]
    skip_bad_images: bool,
    /// hub: datasets: the label column (default `label`, else the only integer column).
    #[arg(long)]
    label_column: Option<String>,
    /// Backbone (`auglocal models` lists them): resnet8, resnet20, resnet32, resnet56,
    /// resnet110, vgg19, mobilenetv2; ImageNet: resnet18, resnet34, resnet50, resnet101, vgg13.
    #[arg(long)]
    model: Option<String>,
    /// Training method.
    #[arg(long, value_enum)]
    method: Option<MethodArg>,
    /// Number of modules K of the baselines (default: one per unit).
    #[arg(long)]
    modules: Option<usize>,
    /// AugLocal auxiliary depth d (K = units - d modules).
    #[arg(long)]
    aux_depth: Option<usize>,
    /// Pyramid coefficient in [0, 1] (0: same depth everywhere).
    #[arg(long)]
    pyramid: Option<f64>,
    /// Epochs to train (synthetic default 4; CIFAR 400).
    #[arg(long)]
    epochs: Option<usize>,
    /// Training batch size (synthetic default 64; CIFAR 1024).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Batch size for evaluation.
    #[arg(long)]
    eval_batch_size: Option<usize>,
    /// Initial learning rate.
    #[arg(long)]
    lr: Option<f64>,
    /// SGD momentum (default 0.9).
    #[arg(long)]
    momentum: Option<f64>,
    /// Plain momentum instead of Nesterov.
    #[arg(long)]
    no_nesterov: bool,
    /// Weight decay on every parameter, never on BatchNorm statistics (default 1e-4).
    #[arg(long)]
    weight_decay: Option<f64>,
    /// warmup-cosine, cosine, constant or step:E1,E2,...
    #[arg(long)]
    schedule: Option<String>,
    /// Seed of initialisation, shuffling and augmentation (default 0).
    #[arg(long)]
    seed: Option<u64>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// cpu, cuda or cuda:N (CUDA needs a build with `--features cuda`).
    #[arg(long)]
    device: Option<String>,
    /// Train on the first N training images only.
    #[arg(long)]
    train_size: Option<usize>,
    /// Evaluate on the first N test images only.
    #[arg(long)]
    test_size: Option<usize>,
    /// Stop after N training steps in total (a checkpoint is written there).
    #[arg(long)]
    max_steps: Option<u64>,
    /// Append each module's loss to steps.jsonl every N steps.
    #[arg(long)]
    log_every: Option<u64>,
    /// Also write a checkpoint every N steps (always at the end of each epoch).
    #[arg(long)]
    checkpoint_every: Option<u64>,
    /// Checkpoints to keep in the run directory, the newest included (default 1).
    #[arg(long)]
    keep: Option<usize>,
    /// On a NaN or infinite loss or gradient: stop (default) or skip the batch.
    #[arg(long, value_parser = ["stop", "skip"])]
    on_nan: Option<String>,
    /// Activations in f32 (default) or bf16 (mixed precision, f32 master weights; for GPUs).
    #[arg(long, value_parser = ["f32", "bf16"])]
    precision: Option<String>,
    /// Turn off training augmentation.
    #[arg(long)]
    no_augment: bool,
    /// Keep the dataset order in every epoch.
    #[arg(long)]
    no_shuffle: bool,
    /// Start from these weights (safetensors with the backbone's PyTorch names).
    #[arg(long)]
    init_from: Option<PathBuf>,
    /// TOML file with any of the settings above (snake_case keys); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Run directory to create (metrics.jsonl, config.json, checkpoint/).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the run in this directory from its last checkpoint.
    #[arg(long, conflicts_with_all = ["config", "init_from"])]
    resume: Option<PathBuf>,
}

#[derive(Args)]
pub struct EvalArgs {
    /// Run directory (or its checkpoint/ folder).
    #[arg(long)]
    checkpoint: PathBuf,
    /// Dataset to evaluate on (default: the one the run trained on).
    #[arg(long)]
    dataset: Option<String>,
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// hub: datasets: use the Hugging Face cache only (also HF_HUB_OFFLINE=1).
    #[arg(long)]
    offline: bool,
    /// imagefolder: leave out files that are not JPEG/PNG images.
    #[arg(long)]
    skip_bad_images: bool,
    #[arg(long)]
    batch_size: Option<usize>,
    #[arg(long)]
    threads: Option<usize>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
}

#[derive(Args)]
pub struct InspectArgs {
    #[arg(long, default_value = "resnet32")]
    model: String,
    #[arg(long, value_enum, default_value = "auglocal")]
    method: MethodArg,
    /// Number of modules K of the baselines (default: one per unit).
    #[arg(long)]
    modules: Option<usize>,
    #[arg(long, default_value_t = 2)]
    aux_depth: usize,
    #[arg(long, default_value_t = 0.0)]
    pyramid: f64,
    /// Classes of the output layer, for parameter counts (default: the model's, 10 or 1000).
    #[arg(long)]
    classes: Option<usize>,
    /// Image side for the multiply-add counts (default: the model's input size).
    #[arg(long)]
    image_size: Option<usize>,
    /// Print the plan as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct BenchArgs {
    #[arg(long, default_value = "resnet32")]
    model: String,
    #[arg(long, value_enum, default_value = "bp")]
    method: MethodArg,
    /// Number of modules K of the baselines (default: one per unit).
    #[arg(long)]
    modules: Option<usize>,
    #[arg(long, default_value_t = 2)]
    aux_depth: usize,
    #[arg(long, default_value_t = 0.5)]
    pyramid: f64,
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    /// Timed steps (the median is reported).
    #[arg(long, default_value_t = 10)]
    iters: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Activations in f32 or bf16 (mixed precision, f32 master weights).
    #[arg(long, default_value = "f32", value_parser = ["f32", "bf16"])]
    precision: String,
    /// Classes of the output layer (default: the model's, 10 or 1000).
    #[arg(long)]
    classes: Option<usize>,
    /// Side of the random square images (default: the model's, 32 or 224).
    #[arg(long)]
    image_size: Option<usize>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print one JSON line.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct CompareArgs {
    /// Methods to train, comma-separated (bp, auglocal, dgl, infopro, infopro-contrast,
    /// predsim, greedy).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "bp,auglocal,dgl,infopro,predsim,greedy"
    )]
    methods: Vec<MethodArg>,
    /// Dataset: synthetic (the default), cifar10, cifar100.
    #[arg(long, default_value = "synthetic")]
    dataset: String,
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Backbone (default: the dataset's recipe).
    #[arg(long)]
    model: Option<String>,
    /// K of the baselines (default: one module per unit).
    #[arg(long)]
    modules: Option<usize>,
    /// AugLocal's auxiliary depth.
    #[arg(long)]
    aux_depth: Option<usize>,
    /// AugLocal's pyramid coefficient.
    #[arg(long)]
    pyramid: Option<f64>,
    #[arg(long)]
    epochs: Option<usize>,
    #[arg(long)]
    batch_size: Option<usize>,
    #[arg(long)]
    lr: Option<f64>,
    /// warmup-cosine, cosine, constant or step:E1,E2,...
    #[arg(long)]
    schedule: Option<String>,
    #[arg(long)]
    train_size: Option<usize>,
    #[arg(long)]
    test_size: Option<usize>,
    /// Seed of initialisation, shuffling and augmentation, the same for every method.
    #[arg(long)]
    seed: Option<u64>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// cpu, cuda or cuda:N.
    #[arg(long)]
    device: Option<String>,
    /// Directory to create for compare.md, compare.csv and each method's metrics.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
pub struct ModelsArgs {
    /// Print one JSON array.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ProbeArgs {
    /// Run directory (or its checkpoint/ folder); repeat to compare runs on one plot.
    #[arg(long, required = true)]
    checkpoint: Vec<PathBuf>,
    #[command(flatten)]
    features: FeatureArgs,
    /// Training images for the probes (default: the run's --train-size; all when it had none).
    #[arg(long)]
    train_size: Option<usize>,
    /// Test images (default: the run's --test-size; all when it had none).
    #[arg(long)]
    test_size: Option<usize>,
    /// Ridge strength, relative to the number of training images.
    #[arg(long, default_value_t = 1e-3)]
    ridge: f64,
    /// Where probe.json and probe.png go (default: the first run's directory).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Where `probe` and `similarity` read images and how they run the backbones.
#[derive(Args)]
pub struct FeatureArgs {
    /// Dataset of the images (default: the one the first run trained on).
    #[arg(long)]
    dataset: Option<String>,
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Images per forward pass when extracting features.
    #[arg(long, default_value_t = 250)]
    batch_size: usize,
    #[arg(long)]
    threads: Option<usize>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum FeaturesArg {
    /// Every value of a unit's output (C x H x W per image).
    Flat,
    /// Global average pooling (C per image).
    Pooled,
}

#[derive(Args)]
pub struct SimilarityArgs {
    /// First run directory (rows of the matrix).
    #[arg(long)]
    a: PathBuf,
    /// Second run directory (columns).
    #[arg(long)]
    b: PathBuf,
    #[command(flatten)]
    extraction: FeatureArgs,
    /// The first N test images.
    #[arg(long, default_value_t = 500)]
    images: usize,
    /// How a unit's output becomes a vector per image.
    #[arg(long, value_enum, default_value = "flat")]
    features: FeaturesArg,
    /// Where similarity.json and similarity.png go (default: run A's directory).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Args)]
pub struct PlotArgs {
    /// Run directory holding metrics.jsonl; repeat to compare runs.
    #[arg(long, required = true)]
    run: Vec<PathBuf>,
    /// Where curves.png goes (default: the first run's directory).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Args)]
pub struct ExportArgs {
    /// Run directory (or its checkpoint/ folder).
    #[arg(long)]
    checkpoint: PathBuf,
    /// Output .safetensors file.
    #[arg(long)]
    out: PathBuf,
}

/// Executes a parsed command line. Results meant for other programs (`eval`'s JSON line,
/// `inspect`'s table or JSON) go to `out`; training progress goes to the terminal.
pub fn execute(cli: Cli, out: &mut dyn Write) -> anyhow::Result<()> {
    match cli.command {
        Command::Train(args) => train::run(*args),
        Command::Eval(args) => session::eval(args, out),
        Command::Inspect(args) => inspect::run(args, out),
        Command::Export(args) => session::export(args),
        Command::Bench(args) => bench::run(args, out),
        Command::Compare(args) => compare::run(args, out),
        Command::Models(args) => models::run(args, out),
        Command::Probe(args) => probe::run(args, out),
        Command::Similarity(args) => similarity::run(args, out),
        Command::Plot(args) => plot::run(args, out),
    }
}

/// Parses `args` (the first is the program name) and executes the command, writing its
/// results to `out`. Flag errors come back as errors carrying clap's message instead of
/// exiting the process, so tests can drive every command in-process.
pub fn run<I, T>(args: I, out: &mut dyn Write) -> anyhow::Result<()>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = Cli::try_parse_from(args)
        .map_err(|e| anyhow::anyhow!("{}", e.render().to_string().trim_end()))?;
    execute(cli, out)
}
