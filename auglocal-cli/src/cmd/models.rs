//! `auglocal models`: every model the other commands take, with its input size, units and
//! parameters (default output layer: 10 classes for CIFAR-size models, 1000 for ImageNet).

use std::io::Write;

use anyhow::Result;
use auglocal_core::ParamStore;
use serde::Serialize;

/// Flags of `auglocal models`.
#[derive(clap::Args)]
pub struct Args {
    /// Print one JSON array.
    #[arg(long)]
    json: bool,
}

/// One row of the listing.
#[derive(Serialize)]
struct Row {
    name: &'static str,
    input_size: usize,
    units: usize,
    parameters: usize,
}

/// Writes every model of `auglocal_models::MODELS` to `out`, one row each: name, input
/// size, units and parameters; as one JSON array with `--json`.
pub fn run(args: Args, out: &mut dyn Write) -> Result<()> {
    let rows = auglocal_models::MODELS
        .iter()
        .map(|&name| {
            let info = auglocal_models::info(name)?;
            let (net, store) = auglocal_models::build_zeroed(name, info.default_classes)?;
            Ok(Row {
                name,
                input_size: info.input_size,
                units: net.units().len(),
                parameters: ParamStore::count_params(&store.entries()),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    if args.json {
        writeln!(out, "{}", serde_json::to_string(&rows)?)?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<12} {:>6} {:>6} {:>12}",
        "model", "input", "units", "parameters"
    )?;
    for r in &rows {
        writeln!(
            out,
            "{:<12} {:>6} {:>6} {:>12}",
            r.name, r.input_size, r.units, r.parameters
        )?;
    }
    Ok(())
}
