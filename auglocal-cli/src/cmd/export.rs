//! `auglocal export`: a checkpoint's backbone, PyTorch names, to a safetensors file.

use std::path::PathBuf;

use anyhow::{bail, Result};
use auglocal_core::checkpoint;
use candle_core::Device;

use crate::session;

/// Flags of `auglocal export`: the checkpoint and the file to write.
#[derive(clap::Args)]
pub struct Args {
    /// Run directory (or its checkpoint/ folder).
    #[arg(long)]
    checkpoint: PathBuf,
    /// Output .safetensors file.
    #[arg(long)]
    out: PathBuf,
}

/// Writes the checkpoint's backbone and output layer, under PyTorch's names, to `--out`
/// (which must end in `.safetensors`) and one line saying so to `out`.
pub fn run(args: Args, out: &mut dyn std::io::Write) -> Result<()> {
    if args.out.extension().and_then(|e| e.to_str()) != Some("safetensors") {
        bail!("--out {} must end in .safetensors", args.out.display());
    }
    let (_, state, engine) = session::load_checkpoint(&args.checkpoint, &Device::Cpu)?;
    let count = checkpoint::export_backbone(engine.store(), &args.out)?;
    writeln!(
        out,
        "wrote {} tensors of {} ({} classes) to {}",
        count,
        state.meta.config.model,
        state.meta.classes,
        args.out.display()
    )?;
    Ok(())
}
