//! `auglocal inspect`: the auxiliary plan as a table or JSON.

use std::io::Write;

use anyhow::Result;
use auglocal_core::dist::partition::{self, Partition};
use auglocal_core::flops::StepFlops;
use auglocal_core::methods::InputSpec;
use auglocal_core::{flops, AuxPlan, Engine, ParamBuilder, Sgd, SgdConfig};

use crate::settings::NetworkArgs;

/// Flags of `auglocal inspect`: the network and method, and how to print the plan.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    net: NetworkArgs,
    /// Classes of the output layer, for parameter counts (default: the model's, 10 or 1000).
    #[arg(long)]
    classes: Option<usize>,
    /// Image side for the multiply-add counts (default: the model's input size).
    #[arg(long)]
    image_size: Option<usize>,
    /// Print the plan as JSON.
    #[arg(long)]
    json: bool,
    /// Also print how S pipeline stages would cut the modules (by multiply-adds; `train`
    /// and `bench` time the modules instead).
    #[arg(long, default_value_t = 1)]
    stages: usize,
}

/// Builds the plan of the method for the model (on zero-filled weights) and writes it to
/// `out`: a table with parameter and multiply-add counts, or the plan as JSON.
pub fn run(args: Args, out: &mut dyn Write) -> Result<()> {
    let method = args.net.method()?;
    let model = auglocal_models::info(&args.net.model)?;
    let classes = args.classes.unwrap_or(model.default_classes);
    let size = args.image_size.unwrap_or(model.input_size);
    // Zero-filled parameters: the structure is all that is printed, and even VGG-13 builds
    // this way in milliseconds.
    let (net, store) = auglocal_models::build_zeroed(&args.net.model, classes)?;
    let channels = net.unit_channels();
    let plan = AuxPlan::new(net.as_ref(), &method)?;
    if args.json {
        writeln!(out, "{}", serde_json::to_string(&plan)?)?;
        return Ok(());
    }
    let pb = ParamBuilder::zeros(&store, &candle_core::Device::Cpu);
    // The baselines' heads size their pooling from the input; the normalisation does not
    // change a count.
    let input = InputSpec {
        image_size: size,
        mean: [0.0; 3],
        std: [1.0; 3],
    };
    let sgd = Sgd::new(SgdConfig::default())?;
    let engine = Engine::new(net, method, input, &pb, sgd)?;
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
        if args.stages > 1 {
            write_stages(&plan, &macs, args.stages, out)?;
        }
        return Ok(());
    }
    writeln!(
        out,
        "{:>5} {:>6} {:>5} {:>10}  {:<6}  blocks [copy_of:in->out,stride]",
        "unit", "depth", "ch", "aux fwd", "head"
    )?;
    for a in &plan.aux {
        let show = |b: &auglocal_core::plan::AuxBlock| {
            format!(
                "[{}:{}->{},s{}]",
                b.copy_of, b.in_channels, b.out_channels, b.stride
            )
        };
        // MAN's LB + EMA pair comes first: the method's network reads its sum.
        let blocks: Vec<String> = a
            .man
            .iter()
            .map(|b| format!("man{}", show(b)))
            .chain(a.blocks.iter().map(show))
            .collect();
        let head = a
            .head
            .map_or(plan.method.split('+').next().unwrap_or_default(), |h| {
                h.name()
            });
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
    if args.stages > 1 {
        write_stages(&plan, &macs, args.stages, out)?;
    }
    Ok(())
}

/// The partition of the modules into `stages` pipeline stages by multiply-adds.
fn write_stages(
    plan: &AuxPlan,
    macs: &StepFlops,
    stages: usize,
    out: &mut dyn Write,
) -> Result<()> {
    let costs = partition::module_costs(macs);
    let cut = Partition::balanced(&costs, stages)?;
    let units = plan.module_units();
    writeln!(
        out,
        "{stages} pipeline stages (by multiply-adds + {} per layer call):",
        flops::human(partition::LAYER_OVERHEAD_MACS as u64)
    )?;
    for (s, (modules, busy)) in cut.stages.iter().zip(cut.busy_shares()).enumerate() {
        writeln!(
            out,
            "  stage {s}: modules {}..={} (units {}..={}), predicted busy {:.0}%",
            modules.start,
            modules.end - 1,
            units[modules.start].start,
            units[modules.end - 1].end - 1,
            100.0 * busy
        )?;
    }
    Ok(())
}
