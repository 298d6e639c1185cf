//! `auglocal inspect`: the auxiliary plan as a table or JSON.

use std::io::Write;

use anyhow::Result;
use auglocal_core::{AuxPlan, Engine, ParamBuilder, Sgd, SgdConfig};

use crate::InspectArgs;

pub fn run(args: InspectArgs, out: &mut dyn Write) -> Result<()> {
    let method = crate::config::TrainConfig {
        method: args.method.as_str().into(),
        modules: args.modules,
        aux_depth: args.aux_depth,
        pyramid: args.pyramid,
        ..crate::config::TrainConfig::recipe("synthetic")
    }
    .method()?;
    let classes = match args.classes {
        Some(c) => c,
        None => auglocal_models::info(&args.model)?.default_classes,
    };
    // Zero-filled parameters: the structure is all that is printed, and even VGG-13 builds
    // this way in milliseconds.
    let (net, store) = auglocal_models::build_zeroed(&args.model, classes)?;
    let channels = net.unit_channels();
    let plan = AuxPlan::for_net(net.as_ref(), method)?;
    if args.json {
        writeln!(out, "{}", serde_json::to_string(&plan)?)?;
        return Ok(());
    }
    let pb = ParamBuilder::zeros(&store, &candle_core::Device::Cpu);
    let engine = Engine::new(net, plan.clone(), &pb, Sgd::new(SgdConfig::default())?)?;
    let (backbone, aux) = engine.parameter_counts();
    writeln!(
        out,
        "{}: {} units, {} modules; parameters: backbone {backbone}, auxiliary {aux}",
        plan.model, plan.units, plan.modules
    )?;
    if plan.aux.is_empty() {
        writeln!(out, "end-to-end backprop: no auxiliary networks")?;
        return Ok(());
    }
    writeln!(
        out,
        "{:>5} {:>6} {:>5}  {:<6}  blocks [copy_of:in->out,stride]",
        "unit", "depth", "ch", "head"
    )?;
    for a in &plan.aux {
        let blocks: Vec<String> = a
            .blocks
            .iter()
            .map(|b| {
                format!(
                    "[{}:{}->{},s{}]",
                    b.copy_of, b.in_channels, b.out_channels, b.stride
                )
            })
            .collect();
        let head = a.head.name();
        writeln!(
            out,
            "{:>5} {:>6} {:>5}  {:<6}  {}",
            a.unit,
            a.depth,
            channels[a.unit],
            head,
            blocks.join(" ")
        )?;
    }
    let last = plan.module_units().pop().unwrap_or(0..0);
    writeln!(
        out,
        "last module: units {}..={} + output layer, trained by the output cross-entropy",
        last.start,
        last.end.saturating_sub(1)
    )?;
    Ok(())
}
