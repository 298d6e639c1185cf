//! `auglocal plot`: loss, accuracy and learning-rate curves of one or more runs as a PNG,
//! and each run's accuracy by module as a second.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;

use crate::charts::{write_curves, write_module_accuracy};

/// Flags of `auglocal plot`: the runs to draw and where the images go.
#[derive(clap::Args)]
pub struct Args {
    /// Run directory holding metrics.jsonl; repeat to compare runs.
    #[arg(long, required = true)]
    run: Vec<PathBuf>,
    /// Where curves.png and modules.png go (default: the first run's directory).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Draws `curves.png` (and `modules.png` where the runs recorded accuracy by module) from
/// the runs' metrics into `--out`, and writes a line naming each file to `out`.
pub fn run(args: Args, out: &mut dyn Write) -> Result<()> {
    let dir = args.out.clone().unwrap_or_else(|| args.run[0].clone());
    let path = write_curves(&args.run, &dir)?;
    writeln!(out, "wrote {}", path.display())?;
    if let Some(path) = write_module_accuracy(&args.run, &dir)? {
        writeln!(out, "wrote {}", path.display())?;
    }
    Ok(())
}
