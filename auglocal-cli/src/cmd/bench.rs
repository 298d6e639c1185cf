//! `auglocal bench`: seconds per training step, images per second and peak memory of one
//! model and method on random tensors.

use std::io::Write;
use std::time::Instant;

use anyhow::{bail, Result};
use auglocal_core::{flops, memory};
use candle_core::Tensor;
use serde_json::json;

use auglocal_core::dist::partition::Partition;
use auglocal_core::trainer::{
    Batch, BatchSource, Observer, Stage, StepEvent, Trainer, TrainerConfig,
};
use auglocal_core::{Engine, Precision};

use crate::launch::{self, Processes};
use crate::session;
use crate::settings::{precision_parser, DeviceName, NetworkArgs, TrainConfig};

/// Flags of `auglocal bench`: the network, the batch, how many steps to time, and the
/// pipeline to run or to project.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    net: NetworkArgs,
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
    /// Recompute each unit's activations in the backward pass (activation checkpointing).
    #[arg(long)]
    recompute: bool,
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
    /// Pipeline stages of a run of N processes (`mpirun -np N auglocal bench --stages S`;
    /// needs a build with `--features mpi`): S stages x N/S data-parallel replicas.
    #[arg(long, default_value_t = 1)]
    stages: usize,
    /// Also predict pipelines of these numbers of devices (e.g. 2,4,8) from this process's
    /// measured time per module and the activations each stage sends on.
    #[arg(long, value_delimiter = ',')]
    project: Vec<usize>,
    /// Link bandwidth between devices for --project, in gigabits per second.
    #[arg(long, default_value_t = 10.0)]
    link_gbps: f64,
}

/// Times training steps of the network on random images and writes the figures to `out`:
/// one line of text, or one JSON line with `--json`; with `--project`, the predicted
/// pipelines too. Under `mpirun`, every process runs its stage and the writer reports.
pub fn run(args: Args, out: &mut dyn Write) -> Result<()> {
    if args.iters == 0 {
        bail!("--iters must be at least 1");
    }
    let Processes { comm, ending } = launch::start(args.stages)?;
    if comm.topology().is_distributed() {
        return run_distributed(&args, comm, out).map_err(|e| ending.fail(e));
    }
    let Setup {
        device,
        settings,
        image_size,
        classes,
    } = setup(&args)?;

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
    // Per timed step: the moment each module's backward pass ended (for --project).
    let mut module_ends: Vec<Vec<Instant>> = Vec::with_capacity(args.iters);
    // The largest device memory any one step reached (model and optimizer state included).
    let mut device_peak: Option<u64> = None;
    for i in 0..args.warmup + args.iters {
        memory::reset_device_peak(&device);
        let mut ends = Vec::with_capacity(engine.module_count());
        let start = Instant::now();
        engine.train_step_observed(&images, &labels, 0.01, &mut |_, _| {
            ends.push(Instant::now())
        })?;
        device.synchronize()?;
        if i >= args.warmup {
            times.push(start.elapsed().as_secs_f64());
            ends.insert(0, start);
            module_ends.push(ends);
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
        "model": args.net.model,
        "method": args.net.method.to_string(),
        "aux_depth": args.net.aux_depth,
        "pyramid": args.net.pyramid,
        "modules": engine.plan().modules,
        "batch_size": args.batch_size,
        "image_size": image_size,
        "threads": auglocal_core::parallel::threads(),
        "device": args.device.to_string(),
        "precision": args.precision,
        "recompute": args.recompute,
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
    if !args.project.is_empty() {
        let times = module_times(&module_ends);
        project(&args, &engine, &images, &times, out)?;
    }
    if args.json {
        writeln!(out, "{line}")?;
    } else {
        writeln!(
            out,
            "{} {}{} (K = {}), batch {}, {} threads: median {:.4} s/step over {} steps ({:.1} images/s, {:.1} GMAC/s of {:.2} GMAC/step), peak memory {}",
            args.net.model,
            args.net.method,
            if args.recompute { " --recompute" } else { "" },
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

/// Each module's median seconds per step, from the moments each module's backward pass
/// ended (a module's time also holds the update of the module before it).
fn module_times(ends: &[Vec<Instant>]) -> Vec<f64> {
    let modules = ends.first().map_or(0, |e| e.len().saturating_sub(1));
    (0..modules)
        .map(|m| {
            let mut t: Vec<f64> = ends
                .iter()
                .map(|e| (e[m + 1] - e[m]).as_secs_f64())
                .collect();
            t.sort_by(f64::total_cmp);
            t[t.len() / 2]
        })
        .collect()
}

/// Predicts pipelines of `args.project` devices: the modules cut by their measured `times`,
/// each stage's step its compute plus sending its output over the link; the pipeline runs at
/// its slowest stage's pace.
fn project(
    args: &Args,
    engine: &Engine,
    images: &Tensor,
    times: &[f64],
    out: &mut dyn Write,
) -> Result<()> {
    // The bytes each module hands on: its output, the labels, and the images where a later
    // loss reads them.
    let mut sent = Vec::with_capacity(times.len());
    let mut x = images.clone();
    let labels = images.dim(0)? * 4;
    let image_bytes = images.elem_count() * 4;
    for m in 0..engine.module_count() {
        x = engine.module_forward(m, &x)?.detach();
        let later = engine.needs_images(m + 1..engine.module_count());
        sent.push(
            x.elem_count() * x.dtype().size_in_bytes()
                + labels
                + if later { image_bytes } else { 0 },
        );
    }
    let one_device: f64 = times.iter().sum();
    let bytes_per_second = args.link_gbps * 1e9 / 8.0;
    writeln!(
        out,
        "projection ({} modules measured here, {:.4} s/step on one device; links of {} Gbit/s):",
        times.len(),
        one_device,
        args.link_gbps
    )?;
    writeln!(
        out,
        "{:>7}  {:>10}  {:>8}  {:>12}  stages (modules)",
        "devices", "images/s", "speed-up", "bottleneck"
    )?;
    let mut rows = Vec::new();
    for &devices in &args.project {
        let partition = Partition::balanced(times, devices)?;
        let stage_step: Vec<f64> = partition
            .stages
            .iter()
            .zip(&partition.costs)
            .map(|(r, compute)| {
                let last = r.end - 1 == times.len() - 1;
                compute
                    + if last {
                        0.0
                    } else {
                        sent[r.end - 1] as f64 / bytes_per_second
                    }
            })
            .collect();
        let (slowest, step) =
            stage_step
                .iter()
                .copied()
                .enumerate()
                .fold(
                    (0, 0.0),
                    |best, (i, t)| if t > best.1 { (i, t) } else { best },
                );
        let stages: Vec<String> = partition
            .stages
            .iter()
            .map(|r| format!("{}..={}", r.start, r.end - 1))
            .collect();
        writeln!(
            out,
            "{devices:>7}  {:>10.1}  {:>7.2}x  {:>12}  {}",
            args.batch_size as f64 / step,
            one_device / step,
            format!("stage {slowest}"),
            stages.join(" ")
        )?;
        rows.push(json!({
            "devices": devices,
            "images_per_second": args.batch_size as f64 / step,
            "speed_up": one_device / step,
            "stages": partition.stages,
            "stage_seconds": stage_step,
        }));
    }
    if args.json {
        writeln!(
            out,
            "{}",
            json!({ "projection": rows, "module_seconds": times, "module_bytes_sent": sent })
        )?;
    }
    Ok(())
}

/// The same batch every step, a replica's slice of it.
struct Repeated {
    images: Tensor,
    labels: Tensor,
    /// Images of the whole batch, over all replicas.
    global: usize,
    steps: usize,
}

impl BatchSource for Repeated {
    fn batches_per_epoch(&self) -> usize {
        self.steps
    }

    fn batches(
        &self,
        _epoch: usize,
        start: usize,
    ) -> Box<dyn Iterator<Item = auglocal_core::Result<Batch>> + '_> {
        let global = self.global;
        Box::new((start..self.steps).map(move |_| {
            Ok(Batch {
                images: self.images.clone(),
                labels: self.labels.clone(),
                global_images: global,
            })
        }))
    }
}

/// When each step ended, on the writer.
struct StepClock(Vec<Instant>);

impl Observer for StepClock {
    fn step(&mut self, _event: &StepEvent<'_>) -> auglocal_core::Result<()> {
        self.0.push(Instant::now());
        Ok(())
    }
}

/// What both the single-process and the distributed bench build from the flags.
struct Setup {
    device: candle_core::Device,
    settings: TrainConfig,
    image_size: usize,
    classes: usize,
}

fn setup(args: &Args) -> Result<Setup> {
    session::set_threads(args.threads.unwrap_or(0))?;
    let device = args.device.open()?;
    let settings = TrainConfig {
        model: args.net.model.clone(),
        method: args.net.method,
        modules: args.net.modules,
        aux_depth: args.net.aux_depth,
        pyramid: args.net.pyramid,
        batch_size: args.batch_size,
        seed: args.seed,
        device: args.device,
        precision: args.precision,
        recompute: args.recompute,
        ..TrainConfig::recipe("synthetic")?
    };
    settings.validate()?;
    let model = auglocal_models::info(&args.net.model)?;
    let image_size = args.image_size.unwrap_or(model.input_size);
    let classes = args.classes.unwrap_or(model.default_classes);
    if classes == 0 || image_size == 0 {
        bail!("--classes and --image-size must be at least 1");
    }
    Ok(Setup {
        device,
        settings,
        image_size,
        classes,
    })
}

/// `mpirun -np N auglocal bench --stages S`: steps of the pipeline on random tensors, timed
/// on the writer; each rank's busy share, bytes sent per step and peak memory.
fn run_distributed(
    args: &Args,
    mut comm: Box<dyn auglocal_core::dist::Comm>,
    out: &mut dyn Write,
) -> Result<()> {
    let t = comm.topology();
    let Setup {
        device,
        settings,
        image_size,
        classes,
    } = setup(args)?;
    let engine = session::build_engine(&settings, classes, image_size, &device)?;
    let partition = session::partition(comm.as_mut(), &engine, args.batch_size, image_size)?;
    let modules = engine.plan().modules;
    let config = TrainerConfig {
        epochs: 1,
        lr: 0.01,
        schedule: auglocal_core::Schedule::Constant,
        ..TrainerConfig::default()
    };
    let mut trainer = Trainer::new(engine, config)?.in_stage(Stage::new(comm, partition)?)?;
    // Each replica's slice of the batch (random values: only the time is measured).
    let shard = auglocal_data::Shard {
        replica: t.replica(),
        replicas: t.replicas(),
    };
    let slice = shard.range(args.batch_size);
    let images = Tensor::randn(0f32, 1.0, (slice.len(), 3, image_size, image_size), &device)?;
    let labels: Vec<u32> = slice.clone().map(|i| (i % classes) as u32).collect();
    let labels = Tensor::from_vec(labels, slice.len(), &device)?;
    let steps = args.warmup + args.iters;
    let source = Repeated {
        images,
        labels,
        global: args.batch_size,
        steps,
    };
    let mut clock = StepClock(Vec::with_capacity(steps));
    let started = Instant::now();
    trainer.fit(&source, None, &mut clock)?;
    let wall = started.elapsed().as_secs_f64();
    let stage = trainer.stage();
    let mut fields = std::collections::HashMap::new();
    fields.insert("rank".to_string(), t.rank.to_string());
    fields.insert("stage".to_string(), t.stage().to_string());
    fields.insert("replica".to_string(), t.replica().to_string());
    fields.insert(
        "busy_share".to_string(),
        (stage.busy_seconds() / wall).to_string(),
    );
    fields.insert(
        "bytes_sent_per_step".to_string(),
        (stage.bytes_sent() / steps as u64).to_string(),
    );
    fields.insert(
        "peak_rss_bytes".to_string(),
        memory::peak_rss_bytes().unwrap_or(0).to_string(),
    );
    let partition = stage.partition().clone();
    let ranks = trainer.stage_mut().gather_fields(fields)?;
    let Some(ranks) = ranks else {
        return Ok(());
    };
    // Steps after the warm-up, timed between the ends of consecutive steps at the writer.
    let mut times: Vec<f64> = clock
        .0
        .windows(2)
        .skip(args.warmup.saturating_sub(1))
        .map(|w| (w[1] - w[0]).as_secs_f64())
        .collect();
    if times.is_empty() {
        times.push(wall);
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let per_rank: Vec<serde_json::Value> = ranks
        .iter()
        .map(|r| {
            let number = |k: &str| {
                r.get(k)
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(f64::NAN)
            };
            json!({
                "rank": number("rank"),
                "stage": number("stage"),
                "replica": number("replica"),
                "busy_share": number("busy_share"),
                "bytes_sent_per_step": number("bytes_sent_per_step"),
                "peak_rss_bytes": number("peak_rss_bytes"),
            })
        })
        .collect();
    let line = json!({
        "model": args.net.model,
        "method": args.net.method.to_string(),
        "modules": modules,
        "processes": t.world,
        "stages": t.stages,
        "replicas": t.replicas(),
        "partition": partition.stages,
        "predicted_busy_shares": partition.busy_shares(),
        "batch_size": args.batch_size,
        "threads": auglocal_core::parallel::threads(),
        "iters": args.iters,
        "median_step_seconds": median,
        "images_per_second": args.batch_size as f64 / median,
        "ranks": per_rank,
    });
    if args.json {
        writeln!(out, "{line}")?;
        return Ok(());
    }
    writeln!(
        out,
        "{} {} (K = {modules}), batch {}, {} processes ({} stages x {} replicas), {} threads each: median {median:.4} s/step ({:.1} images/s)",
        args.net.model,
        args.net.method,
        args.batch_size,
        t.world,
        t.stages,
        t.replicas(),
        auglocal_core::parallel::threads(),
        args.batch_size as f64 / median
    )?;
    for r in &per_rank {
        writeln!(
            out,
            "  rank {} (stage {}, replica {}): busy {:.0}%, {:.2} MB sent per step, peak memory {:.1} MiB",
            r["rank"].as_f64().unwrap_or(f64::NAN),
            r["stage"].as_f64().unwrap_or(f64::NAN),
            r["replica"].as_f64().unwrap_or(f64::NAN),
            100.0 * r["busy_share"].as_f64().unwrap_or(f64::NAN),
            r["bytes_sent_per_step"].as_f64().unwrap_or(f64::NAN) / 1e6,
            r["peak_rss_bytes"].as_f64().unwrap_or(f64::NAN) / (1024.0 * 1024.0)
        )?;
    }
    Ok(())
}
