//! `auglocal inspect`: the auxiliary plan as a table or JSON.

use std::io::Write;

use anyhow::Result;
use auglocal_core::local::{BuiltinLosses, InputSpec};
use auglocal_core::{flops, AuxPlan, Engine, ParamBuilder, Sgd, SgdConfig};

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
    let model = auglocal_models::info(&args.model)?;
    let classes = args.classes.unwrap_or(model.default_classes);
    let size = args.image_size.unwrap_or(model.input_size);
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
    // The baselines' heads size their pooling from the input.
    let losses = BuiltinLosses {
        input: InputSpec {
            image_size: size,
            ..InputSpec::default()
        },
    };
    let sgd = Sgd::new(SgdConfig::default())?;
    let engine = Engine::with_losses(net, plan.clone(), &pb, sgd, &losses)?;
    let (backbone, aux) = engine.parameter_counts();
    writeln!(
        out,
        "{}: {} units, {} modules; parameters: backbone {backbone}, auxiliary {aux}",
        plan.model, plan.units, plan.modules
    )?;
    let macs = flops::step_flops(&engine, [3, size, size])?;
    let step = macs.step();
    writeln!(
        out,
        "multiply-adds per image at {size}x{size}: inference {}; training step {} = forward {} (auxiliary {}) + backward {} (input gradients {}, weight gradients {})",
        flops::human(macs.inference()),
        flops::human(step.total()),
        flops::human(step.forward),
        flops::human(macs.auxiliary().forward),
        flops::human(step.backward()),
        flops::human(step.input_grad),
        flops::human(step.weight_grad),
    )?;
    if plan.aux.is_empty() {
        writeln!(out, "end-to-end backprop: no auxiliary networks")?;
        return Ok(());
    }
    writeln!(
        out,
        "{:>5} {:>6} {:>5} {:>10}  {:<6}  blocks [copy_of:in->out,stride]",
        "unit", "depth", "ch", "aux fwd", "head"
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
        // The module that ends at this unit is trained by this auxiliary network.
        let aux_macs = macs
            .modules
            .iter()
            .find(|m| m.last_unit == a.unit)
            .map_or(0, |m| m.loss.forward);
        writeln!(
            out,
            "{:>5} {:>6} {:>5} {:>10}  {:<6}  {}",
            a.unit,
            a.depth,
            channels[a.unit],
            flops::human(aux_macs),
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
