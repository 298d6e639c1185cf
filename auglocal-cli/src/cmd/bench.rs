//! `auglocal bench`: seconds per training step, images per second and peak memory of one
//! model and method on random tensors.

use std::io::Write;
use std::time::Instant;

use anyhow::{bail, Result};
use auglocal_core::{flops, memory};
use candle_core::Tensor;
use serde_json::json;

use auglocal_core::{MethodInfo, Precision};

use crate::session;
use crate::settings::{method_parser, model_parser, precision_parser, DeviceName, TrainConfig};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, default_value = "resnet32", value_parser = model_parser())]
    model: String,
    #[arg(long, default_value = "bp", value_parser = method_parser())]
    method: &'static MethodInfo,
    /// Number of modules K of the methods with one head per unit (default: one per unit).
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
    device: DeviceName,
    /// Activations in f32 or bf16 (mixed precision, f32 master weights).
    #[arg(long, default_value = "f32", value_parser = precision_parser())]
    precision: Precision,
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

pub fn run(args: Args, out: &mut dyn Write) -> Result<()> {
    if args.iters == 0 {
        bail!("--iters must be at least 1");
    }
    session::set_threads(args.threads.unwrap_or(0))?;
    let device = args.device.open()?;
    let settings = TrainConfig {
        model: args.model.clone(),
        method: args.method,
        modules: args.modules,
        aux_depth: args.aux_depth,
        pyramid: args.pyramid,
        batch_size: args.batch_size,
        seed: args.seed,
        device: args.device,
        precision: args.precision,
        ..TrainConfig::recipe("synthetic")?
    };
    settings.validate()?;
    let model = auglocal_models::info(&args.model)?;
    let image_size = args.image_size.unwrap_or(model.input_size);
    let classes = args.classes.unwrap_or(model.default_classes);
    if classes == 0 || image_size == 0 {
        bail!("--classes and --image-size must be at least 1");
    }

    // Everything from here on counts towards the peak: model, optimizer state, activations.
    let peak_reset = memory::reset_peak_rss();
    let baseline = memory::current_rss_bytes();
    // On a GPU: the driver's count of device memory in use before the model exists.
    memory::reset_device_peak(&device);
    let device_baseline = memory::device_memory(&device).map(|m| m.in_use);
    let mut engine = session::build_engine(&settings, classes, image_size, &device)?;
    let images = Tensor::randn(
        0f32,
        1.0,
        (args.batch_size, 3, image_size, image_size),
        &device,
    )?;
    let labels: Vec<u32> = (0..args.batch_size).map(|i| (i % classes) as u32).collect();
    let labels = Tensor::from_vec(labels, args.batch_size, &device)?;

    let macs = flops::step_flops(&engine, [3, image_size, image_size])?.step();
    let batch = args.batch_size as u64;
    let mut times = Vec::with_capacity(args.iters);
    // The largest device memory any one step reached (model and optimizer state included).
    let mut device_peak: Option<u64> = None;
    for i in 0..args.warmup + args.iters {
        memory::reset_device_peak(&device);
        let start = Instant::now();
        engine.train_step(&images, &labels, 0.01)?;
        device.synchronize()?;
        if i >= args.warmup {
            times.push(start.elapsed().as_secs_f64());
        }
        device_peak = device_peak.max(memory::device_memory(&device).map(|m| m.peak));
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let (peak, source) = if device.is_cpu() {
        let peak = match (peak_reset, memory::peak_rss_bytes(), baseline) {
            (true, Some(peak), Some(base)) => Some(peak.saturating_sub(base)),
            _ => None,
        };
        (peak, "process resident set size")
    } else {
        let peak = device_peak
            .zip(device_baseline)
            .map(|(p, b)| p.saturating_sub(b));
        (peak, "CUDA memory pool, bytes in use")
    };
    let (backbone, aux) = engine.parameter_counts();
    let line = json!({
        "model": args.model,
        "method": args.method.name,
        "aux_depth": args.aux_depth,
        "pyramid": args.pyramid,
        "modules": engine.plan().modules,
        "batch_size": args.batch_size,
        "image_size": image_size,
        "threads": auglocal_core::parallel::threads(),
        "device": args.device.to_string(),
        "precision": args.precision,
        "iters": args.iters,
        "median_step_seconds": median,
        "min_step_seconds": times[0],
        "max_step_seconds": times[times.len() - 1],
        "images_per_second": args.batch_size as f64 / median,
        "peak_memory_bytes": peak,
        "peak_memory_source": source,
        "peak_device_memory_bytes": device_peak,
        "backbone_parameters": backbone,
        "aux_parameters": aux,
        "forward_macs_per_step": macs.forward * batch,
        "backward_macs_per_step": macs.backward() * batch,
        "macs_per_second": (macs.total() * batch) as f64 / median,
    });
    if args.json {
        writeln!(out, "{line}")?;
    } else {
        writeln!(
            out,
            "{} {} (K = {}), batch {}, {} threads: median {:.4} s/step over {} steps ({:.1} images/s, {:.1} GMAC/s of {:.2} GMAC/step), peak memory {}",
            args.model,
            args.method.name,
            engine.plan().modules,
            args.batch_size,
            auglocal_core::parallel::threads(),
            median,
            args.iters,
            args.batch_size as f64 / median,
            (macs.total() * batch) as f64 / median / 1e9,
            (macs.total() * batch) as f64 / 1e9,
            peak.map_or("n/a".into(), |b| format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0)))
        )?;
    }
    Ok(())
}
