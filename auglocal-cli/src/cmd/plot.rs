//! `auglocal plot`: loss, accuracy and learning-rate curves of one or more runs as a PNG.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;

use crate::charts::write_curves;

#[derive(clap::Args)]
pub struct Args {
    /// Run directory holding metrics.jsonl; repeat to compare runs.
    #[arg(long, required = true)]
    run: Vec<PathBuf>,
    /// Where curves.png goes (default: the first run's directory).
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(args: Args, out: &mut dyn Write) -> Result<()> {
    let dir = args.out.clone().unwrap_or_else(|| args.run[0].clone());
    let path = write_curves(&args.run, &dir)?;
    writeln!(out, "wrote {}", path.display())?;
    Ok(())
}
