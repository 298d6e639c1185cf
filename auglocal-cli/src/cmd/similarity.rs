//! `auglocal similarity`: linear CKA between every unit of checkpoint A and every unit of
//! checkpoint B on the same test images (the paper's comparison of AugLocal's layers with
//! BP's). By default each unit's whole output (C x H x W values per image) is compared, as
//! Kornblith et al. do; `--features pooled` compares globally pooled outputs. Prints the
//! matrix, writes `similarity.json` and the heatmap `similarity.png`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Result};
use auglocal_core::analysis::{linear_cka, Features, Gram};
use auglocal_data::Split;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde_json::json;

use super::probe::{extract, load_run, open_images, FeatureArgs};
use crate::charts::{self as plot, drawing, FONT};

/// `--features`: what of a unit's output CKA compares.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum FeaturesArg {
    /// Every value of a unit's output (C x H x W per image).
    Flat,
    /// Global average pooling (C per image).
    Pooled,
}

/// Flags of `auglocal similarity`: the two runs, the images and the features compared.
#[derive(clap::Args)]
pub struct Args {
    /// First run directory (rows of the matrix).
    #[arg(long)]
    a: PathBuf,
    /// Second run directory (columns).
    #[arg(long)]
    b: PathBuf,
    #[command(flatten)]
    extraction: FeatureArgs,
    /// The first N test images.
    #[arg(long, default_value_t = 500)]
    images: usize,
    /// How a unit's output becomes a vector per image.
    #[arg(long, value_enum, default_value = "flat")]
    features: FeaturesArg,
    /// Where similarity.json and similarity.png go (default: run A's directory).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Pixel size of `similarity.png`.
pub const SIMILARITY_SIZE: (u32, u32) = (900, 760);

/// Computes linear CKA between every unit of run A and every unit of run B, writes the
/// matrix to `out`, and `similarity.json` and `similarity.png` to `--out`.
pub fn run(args: Args, out: &mut dyn Write) -> Result<()> {
    if args.images < 2 {
        bail!("--images must be at least 2 (CKA compares images with each other)");
    }
    let device = args.extraction.start()?;
    let features = match args.features {
        FeaturesArg::Flat => Features::Flattened,
        FeaturesArg::Pooled => Features::Pooled,
    };
    let mut grams = Vec::new();
    let mut labels = Vec::new();
    let mut run_dirs = Vec::new();
    let mut dataset_name = String::new();
    let mut images = 0;
    for path in [&args.a, &args.b] {
        let run = load_run(path, &device)?;
        // Both runs see the dataset run A trained on, unless --dataset names another.
        let dataset = args
            .extraction
            .dataset
            .clone()
            .or_else(|| (!dataset_name.is_empty()).then(|| dataset_name.clone()));
        let (name, data) = open_images(
            &run,
            dataset.as_deref(),
            args.extraction.data_dir.as_deref(),
            Split::Test,
            Some(args.images),
        )?;
        images = data.len();
        let (per_unit, _) = extract(
            &run,
            &name,
            data,
            features,
            args.extraction.batch_size,
            &device,
        )?;
        grams.push(
            per_unit
                .iter()
                .map(Gram::new)
                .collect::<candle_core::Result<Vec<_>>>()?,
        );
        labels.push(plot::run_label(&run.run_dir));
        run_dirs.push(run.run_dir);
        dataset_name = name;
    }
    let (a, b) = (&grams[0], &grams[1]);
    let mut matrix = Vec::with_capacity(a.len());
    for ga in a {
        let row = b
            .iter()
            .map(|gb| linear_cka(ga, gb).unwrap_or(f64::NAN))
            .collect::<Vec<_>>();
        matrix.push(row);
    }

    let feature_name = match features {
        Features::Flattened => "flat",
        Features::Pooled => "pooled",
    };
    writeln!(
        out,
        "linear CKA ({feature_name} unit outputs, {images} {dataset_name} test images); rows: units of A = {}, columns: units of B = {}",
        labels[0], labels[1]
    )?;
    write!(out, "{:>4}", "A\\B")?;
    for j in 0..b.len() {
        write!(out, "{j:>5}")?;
    }
    writeln!(out)?;
    for (i, row) in matrix.iter().enumerate() {
        write!(out, "{i:>4}")?;
        for v in row {
            write!(out, "{v:>5.2}")?;
        }
        writeln!(out)?;
    }

    let out_dir = args.out.clone().unwrap_or_else(|| run_dirs[0].clone());
    let report = json!({
        "a": run_dirs[0],
        "b": run_dirs[1],
        "label_a": labels[0],
        "label_b": labels[1],
        "dataset": dataset_name,
        "images": images,
        "features": feature_name,
        "cka": matrix,
    });
    plot::write_report(&out_dir, "similarity", &report, out, |png| {
        heatmap(png, &matrix, &labels[0], &labels[1])
    })
}

/// Viridis (perceptually uniform, readable in grey and by colour-blind readers) at `t` in
/// [0, 1], interpolated between five of its colours.
fn viridis(t: f64) -> RGBColor {
    const STOPS: [(f64, f64, f64); 5] = [
        (68.0, 1.0, 84.0),
        (59.0, 82.0, 139.0),
        (33.0, 145.0, 140.0),
        (94.0, 201.0, 98.0),
        (253.0, 231.0, 37.0),
    ];
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let x = t * (STOPS.len() - 1) as f64;
    let i = (x.floor() as usize).min(STOPS.len() - 2);
    let f = x - i as f64;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    let mix = |p: f64, q: f64| (p + (q - p) * f).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// Draws `matrix` (rows: units of A, columns: units of B; values in [0, 1]) as a heatmap
/// with a colour bar.
fn heatmap(
    path: &std::path::Path,
    matrix: &[Vec<f64>],
    label_a: &str,
    label_b: &str,
) -> Result<()> {
    let what = path.display().to_string();
    let rows = matrix.len();
    let cols = matrix.first().map_or(0, Vec::len);
    plot::render_png(path, SIMILARITY_SIZE, |root| {
        let (main, bar) = root.split_horizontally((SIMILARITY_SIZE.0 - 130) as i32);
        let mut chart = drawing(
            ChartBuilder::on(&main)
                .caption("Linear CKA between units", (FONT, 24))
                .margin(14)
                .x_label_area_size(56)
                .y_label_area_size(70)
                // Cell (i, j) is centred on the point (j, i), so ticks land on unit indices.
                .build_cartesian_2d(
                    -0.5..cols.max(1) as f64 - 0.5,
                    -0.5..rows.max(1) as f64 - 0.5,
                ),
            &what,
        )?;
        drawing(
            chart
                .configure_mesh()
                .disable_mesh()
                .x_desc(format!("unit of B: {label_b}"))
                .y_desc(format!("unit of A: {label_a}"))
                .x_labels(cols.clamp(2, 20))
                .y_labels(rows.clamp(2, 20))
                .x_label_formatter(&plot::whole_number)
                .y_label_formatter(&plot::whole_number)
                .label_style((FONT, 15))
                .axis_desc_style((FONT, 17))
                .draw(),
            &what,
        )?;
        drawing(
            chart.draw_series(matrix.iter().enumerate().flat_map(|(i, row)| {
                row.iter().enumerate().map(move |(j, &v)| {
                    let (x, y) = (j as f64, i as f64);
                    Rectangle::new(
                        [(x - 0.5, y - 0.5), (x + 0.5, y + 0.5)],
                        viridis(v).filled(),
                    )
                })
            })),
            &what,
        )?;
        if rows <= 12 && cols <= 12 {
            // Small matrices carry their values, dark text on the light end of the map.
            drawing(
                chart.draw_series(matrix.iter().enumerate().flat_map(|(i, row)| {
                    row.iter().enumerate().map(move |(j, &v)| {
                        let color = if v > 0.6 { &BLACK } else { &WHITE };
                        let style = TextStyle::from((FONT, 14).into_font())
                            .color(color)
                            .pos(Pos::new(HPos::Center, VPos::Center));
                        Text::new(format!("{v:.2}"), (j as f64, i as f64), style)
                    })
                })),
                &what,
            )?;
        }

        let mut scale = drawing(
            ChartBuilder::on(&bar)
                .margin_top(52)
                .margin_bottom(70)
                .margin_right(40)
                .y_label_area_size(50)
                .build_cartesian_2d(0f64..1f64, 0f64..1f64),
            &what,
        )?;
        drawing(
            scale
                .configure_mesh()
                .disable_mesh()
                .disable_x_axis()
                .y_labels(6)
                .y_desc("CKA")
                .label_style((FONT, 15))
                .axis_desc_style((FONT, 17))
                .draw(),
            &what,
        )?;
        const STEPS: usize = 100;
        drawing(
            scale.draw_series((0..STEPS).map(|k| {
                let lo = k as f64 / STEPS as f64;
                let hi = (k + 1) as f64 / STEPS as f64;
                Rectangle::new([(0.0, lo), (1.0, hi)], viridis((lo + hi) / 2.0).filled())
            })),
            &what,
        )?;
        Ok(())
    })
}
