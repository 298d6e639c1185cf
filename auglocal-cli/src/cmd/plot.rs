//! `auglocal plot`: loss, accuracy and learning-rate curves of one or more runs as a PNG,
//! and each run's accuracy by module as a second.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;

use crate::charts::{write_curves, write_module_accuracy};

#[derive(clap::Args)]
pub struct Args {
    /// Run directory holding metrics.jsonl; repeat to compare runs.
    #[arg(long, required = true)]
    run: Vec<PathBuf>,
    /// Where curves.png and modules.png go (default: the first run's directory).
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(args: Args, out: &mut dyn Write) -> Result<()> {
    let dir = args.out.clone().unwrap_or_else(|| args.run[0].clone());
    let path = write_curves(&args.run, &dir)?;
    writeln!(out, "wrote {}", path.display())?;
    if let Some(path) = write_module_accuracy(&args.run, &dir)? {
        writeln!(out, "wrote {}", path.display())?;
    }
    Ok(())
}
