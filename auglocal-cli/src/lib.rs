#![warn(missing_docs)]
//! The `auglocal` command line as a library: [`run`] parses arguments and executes one
//! command, so the binary is one line and tests can drive every command in-process. Each
//! command is a file of [`cmd`]: its flags and a body that parses, wires the library crates
//! and prints; the training loop itself is `auglocal_core::Trainer`.

mod charts;
pub mod cmd;
pub mod console;
pub mod heap;
mod hints;
mod launch;
mod session;
mod settings;

// What reads the files a user passes, for the fuzz targets (`fuzz/`).
pub use session::{CliState, RunMeta, MAX_CLASSES};
pub use settings::{Settings, TrainConfig};
// The one error the binary ends on without a word: another rank reports it.
pub use launch::Interrupted;

use std::ffi::OsString;
use std::io::Write;

use clap::{Parser, Subcommand};

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

/// The command to run, one variant per file of [`cmd`] holding that command's flags.
#[derive(Subcommand)]
pub enum Command {
    /// Train a model with BP, AugLocal or a baseline local loss; writes metrics, config and checkpoints to --out.
    Train(Box<cmd::train::Args>),
    /// Evaluate a checkpoint's backbone on a test set; prints one JSON line.
    Eval(cmd::eval::Args),
    /// Print the auxiliary-network layout of a model and method.
    Inspect(cmd::inspect::Args),
    /// Write a checkpoint's backbone (PyTorch names) to a safetensors file.
    Export(cmd::export::Args),
    /// Time training steps on random tensors: seconds per step, images/s, peak memory.
    Bench(cmd::bench::Args),
    /// Train several methods on the same data and seed; writes compare.md and compare.csv.
    Compare(cmd::compare::Args),
    /// List every model: input size, units, parameters.
    Models(cmd::models::Args),
    /// Linear probe of every unit of one or more checkpoints: accuracy table, JSON and PNG.
    Probe(cmd::probe::Args),
    /// Linear CKA between every unit of two checkpoints on the same images: JSON and PNG.
    Similarity(cmd::similarity::Args),
    /// Loss, accuracy and learning-rate curves of one or more runs as a PNG.
    Plot(cmd::plot::Args),
}

/// Executes a parsed command line. Results meant for other programs (`eval`'s JSON line,
/// `inspect`'s table or JSON) go to `out`; training progress goes to the terminal. A
/// library error comes back with the flag that changes the setting at fault.
pub fn execute(cli: Cli, out: &mut dyn Write) -> anyhow::Result<()> {
    let result = match cli.command {
        Command::Train(args) => cmd::train::run(*args),
        Command::Eval(args) => cmd::eval::run(args, out),
        Command::Inspect(args) => cmd::inspect::run(args, out),
        Command::Export(args) => cmd::export::run(args, out),
        Command::Bench(args) => cmd::bench::run(args, out),
        Command::Compare(args) => cmd::compare::run(args, out),
        Command::Models(args) => cmd::models::run(args, out),
        Command::Probe(args) => cmd::probe::run(args, out),
        Command::Similarity(args) => cmd::similarity::run(args, out),
        Command::Plot(args) => cmd::plot::run(args, out),
    };
    result.map_err(hints::with_flag)
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
