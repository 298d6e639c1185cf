//! Line charts as PNG files, and the loss, accuracy and learning-rate curves of training
//! runs (`curves.png`, drawn by `train` and `plot`).
//!
//! Text is drawn with DejaVu Sans embedded in the binary (the `dejavu` crate, under the
//! DejaVu fonts licence), through plotters' `ab_glyph` feature: no system font is needed.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{anyhow, bail, Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use serde::Deserialize;

/// The font family every chart uses.
pub const FONT: &str = "sans-serif";

/// Colours told apart by most readers, colour-blind ones included (Tableau 10).
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// The colour of the `i`-th run of a chart.
pub fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// Registers the embedded font under [`FONT`], once per process.
pub fn register_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).is_ok()
    });
    if !ok {
        bail!("the embedded DejaVu Sans font could not be loaded");
    }
    Ok(())
}

/// Turns a plotters error into one that names the picture.
pub fn drawing<T, E: std::fmt::Display>(
    result: std::result::Result<T, E>,
    what: &str,
) -> Result<T> {
    result.map_err(|e| anyhow!("cannot draw {what}: {e}"))
}

/// Writes `<name>.json` (pretty `report`) and `<name>.png` (drawn by `draw`) into `dir`,
/// created when missing, and says so on `out`.
pub fn write_report(
    dir: &Path,
    name: &str,
    report: &serde_json::Value,
    out: &mut dyn std::io::Write,
    draw: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create output directory {}", dir.display()))?;
    let json_path = dir.join(format!("{name}.json"));
    auglocal_core::checkpoint::write_atomic(&json_path, &serde_json::to_vec_pretty(report)?)?;
    let png_path = dir.join(format!("{name}.png"));
    draw(&png_path)?;
    writeln!(
        out,
        "wrote {} and {}",
        json_path.display(),
        png_path.display()
    )?;
    Ok(())
}

/// One line of a chart.
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    pub color: RGBColor,
    pub dashed: bool,
    /// Draw a dot at every point (few points, such as units).
    pub markers: bool,
}

/// One chart: axes, lines and a legend.
pub struct Panel {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    /// Fixed y range (accuracy in %, labelled without decimals); otherwise fitted to the data.
    pub y_range: Option<(f64, f64)>,
    /// The x values are whole numbers (epochs, units): ticks only there.
    pub integer_x: bool,
    pub legend: SeriesLabelPosition,
}

/// Draws `panels` side by side into a PNG of `size` pixels at `path`.
pub fn line_charts(path: &Path, size: (u32, u32), panels: &[Panel]) -> Result<()> {
    let what = path.display().to_string();
    render_png(path, size, |root| {
        let areas = root.split_evenly((1, panels.len().max(1)));
        for (area, panel) in areas.iter().zip(panels) {
            draw_panel(area, panel, &what)?;
        }
        Ok(())
    })
}

/// Renders `draw` on a white canvas of `size` pixels and writes it as a PNG at `path`.
pub fn render_png(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<BitMapBackend, Shift>) -> Result<()>,
) -> Result<()> {
    register_font()?;
    let what = path.display().to_string();
    let (width, height) = size;
    let mut pixels = vec![0u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, size).into_drawing_area();
        drawing(root.fill(&WHITE), &what)?;
        draw(&root)?;
        drawing(root.present(), &what)?;
    }
    let mut bytes = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut bytes, width, height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder
            .write_header()
            .with_context(|| format!("cannot encode {what}"))?;
        writer
            .write_image_data(&pixels)
            .with_context(|| format!("cannot encode {what}"))?;
    }
    auglocal_core::checkpoint::write_atomic(path, &bytes)?;
    Ok(())
}

/// Tick labels of whole-number axes: the integers, nothing between them.
pub fn whole_number(v: &f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        String::new()
    }
}

/// `v` with four significant digits at most and no trailing zeros (tick labels such as
/// 0.045 instead of 0.045000000000000005).
pub fn short_number(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let decimals = (3 - v.abs().log10().floor() as i32).max(0) as usize;
    let text = format!("{v:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

/// The smallest and largest finite value, widened when they coincide.
fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if lo > hi {
        (0.0, 1.0)
    } else if lo == hi {
        let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        (lo - pad, hi + pad)
    } else {
        (lo, hi)
    }
}

fn draw_panel(area: &DrawingArea<BitMapBackend, Shift>, panel: &Panel, what: &str) -> Result<()> {
    let finite = |s: &Series| -> Vec<(f64, f64)> {
        s.points
            .iter()
            .copied()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect()
    };
    let (x0, x1) = bounds(
        panel
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0)),
    );
    // A scatter of points (one per run) keeps the dots at its edges whole.
    let scatter = !panel.integer_x && panel.series.iter().all(|s| s.markers);
    let (x0, x1) = match scatter {
        true => (x0 - (x1 - x0) * 0.05, x1 + (x1 - x0) * 0.05),
        false => (x0, x1),
    };
    let (y0, y1) = panel.y_range.unwrap_or_else(|| {
        let (lo, hi) = bounds(
            panel
                .series
                .iter()
                .flat_map(|s| s.points.iter().map(|p| p.1)),
        );
        let pad = (hi - lo) * 0.05;
        (lo - pad, hi + pad)
    });
    let mut chart = drawing(
        ChartBuilder::on(area)
            .caption(&panel.title, (FONT, 24))
            .margin(14)
            .x_label_area_size(48)
            .y_label_area_size(72)
            .build_cartesian_2d(x0..x1, y0..y1),
        what,
    )?;
    let decimals = |v: &f64| short_number(*v);
    let percent = |v: &f64| format!("{v:.0}");
    let x_format: &dyn Fn(&f64) -> String = if panel.integer_x {
        &whole_number
    } else {
        &decimals
    };
    let y_format: &dyn Fn(&f64) -> String = if panel.y_range.is_some() {
        &percent
    } else {
        &decimals
    };
    let x_ticks = if panel.integer_x {
        ((x1 - x0).round() as usize + 1).clamp(2, 12)
    } else {
        10
    };
    drawing(
        chart
            .configure_mesh()
            .x_labels(x_ticks)
            .x_label_formatter(x_format)
            .y_label_formatter(y_format)
            .x_desc(panel.x_label.as_str())
            .y_desc(panel.y_label.as_str())
            .label_style((FONT, 15))
            .axis_desc_style((FONT, 18))
            .light_line_style(RGBColor(235, 235, 235))
            .bold_line_style(RGBColor(215, 215, 215))
            .draw(),
        what,
    )?;
    for series in &panel.series {
        let points = finite(series);
        let style = ShapeStyle {
            color: series.color.to_rgba(),
            filled: false,
            stroke_width: 2,
        };
        let annotation = if series.dashed {
            drawing(
                chart.draw_series(DashedLineSeries::new(points.clone(), 9, 6, style)),
                what,
            )?
            .legend(move |(x, y)| {
                EmptyElement::at((x, y))
                    + PathElement::new(vec![(0, 0), (9, 0)], style)
                    + PathElement::new(vec![(15, 0), (24, 0)], style)
            })
        } else {
            drawing(
                chart.draw_series(LineSeries::new(points.clone(), style)),
                what,
            )?
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style))
        };
        annotation.label(series.label.as_str());
        if series.markers {
            drawing(
                chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, style.filled()))),
                what,
            )?;
        }
        if scatter {
            // Each dot carries its name: a legend box would hide the dots under it.
            let label = series.label.clone();
            let color = series.color;
            drawing(
                chart.draw_series(points.iter().map(|&p| {
                    EmptyElement::at(p)
                        + Text::new(
                            label.clone(),
                            (7, -18),
                            (FONT, 14).into_font().color(&color),
                        )
                })),
                what,
            )?;
        }
    }
    if !scatter && panel.series.iter().any(|s| !s.label.is_empty()) {
        drawing(
            chart
                .configure_series_labels()
                .position(panel.legend.clone())
                .label_font((FONT, 15))
                .background_style(WHITE.mix(0.9))
                .border_style(BLACK.mix(0.3))
                .margin(12)
                .legend_area_size(30)
                .draw(),
            what,
        )?;
    }
    Ok(())
}

/// One line of a run's `metrics.jsonl`.
#[derive(Debug, Clone, Deserialize)]
struct EpochMetrics {
    epoch: f64,
    lr: f64,
    train_loss: f64,
    train_acc: f64,
    test_loss: f64,
    test_acc: f64,
    /// Each module's training accuracy (runs of this version; `null` without a classifier).
    #[serde(default)]
    module_train_acc: Vec<Option<f64>>,
}

fn read_metrics(run: &Path) -> Result<Vec<EpochMetrics>> {
    let path = run.join("metrics.jsonl");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "cannot read {}; give a run directory of `auglocal train` that finished at least one epoch",
            path.display()
        )
    })?;
    let lines: Vec<EpochMetrics> = text
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line).with_context(|| {
                format!(
                    "{} line {} is not an epoch record of `auglocal train`",
                    path.display(),
                    i + 1
                )
            })
        })
        .collect::<Result<_>>()?;
    if lines.is_empty() {
        bail!(
            "{} has no epochs yet; plot a run after its first epoch",
            path.display()
        );
    }
    Ok(lines)
}

/// A short name for a run in legends: its directory name and, from its `config.json`, the
/// model and method.
pub fn run_label(run: &Path) -> String {
    let name = run
        .file_name()
        .map_or_else(|| run.display().to_string(), |n| n.to_string_lossy().into());
    let config: Option<serde_json::Value> = std::fs::read(run.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    match config {
        Some(c) => {
            let text = |k: &str| c[k].as_str().unwrap_or("?").to_string();
            let method = text("method");
            let method = match method.split('+').next() {
                Some("auglocal") => format!("{method} d={}", c["aux_depth"]),
                _ => method,
            };
            format!("{name} ({} {method})", text("model"))
        }
        None => name,
    }
}

/// Writes `curves.png` into `out`: loss, accuracy and learning rate by epoch of each run
/// (training solid, test dashed). Returns the file's path.
pub fn write_curves(runs: &[PathBuf], out: &Path) -> Result<PathBuf> {
    let mut loss = Vec::new();
    let mut accuracy = Vec::new();
    let mut lr = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        let metrics = read_metrics(run)?;
        let label = run_label(run);
        let series = |label: String, dashed: bool, y: &dyn Fn(&EpochMetrics) -> f64| Series {
            label,
            points: metrics.iter().map(|m| (m.epoch, y(m))).collect(),
            color: color(i),
            dashed,
            markers: metrics.len() <= 30,
        };
        loss.push(series(format!("{label} train"), false, &|m| m.train_loss));
        loss.push(series(format!("{label} test"), true, &|m| m.test_loss));
        accuracy.push(series(format!("{label} train"), false, &|m| {
            100.0 * m.train_acc
        }));
        accuracy.push(series(format!("{label} test"), true, &|m| {
            100.0 * m.test_acc
        }));
        lr.push(series(label, false, &|m| m.lr));
    }
    let panel = |title: &str, y_label: &str, series, y_range, legend| Panel {
        title: title.into(),
        x_label: "epoch".into(),
        y_label: y_label.into(),
        series,
        y_range,
        integer_x: true,
        legend,
    };
    let panels = [
        panel(
            "Loss",
            "cross-entropy",
            loss,
            None,
            SeriesLabelPosition::UpperRight,
        ),
        panel(
            "Accuracy",
            "accuracy (%)",
            accuracy,
            Some((0.0, 100.0)),
            SeriesLabelPosition::UpperLeft,
        ),
        panel(
            "Learning rate",
            "learning rate",
            lr,
            None,
            SeriesLabelPosition::UpperRight,
        ),
    ];
    std::fs::create_dir_all(out)
        .with_context(|| format!("cannot create output directory {}", out.display()))?;
    let path = out.join(CURVES_FILE);
    line_charts(&path, CURVES_SIZE, &panels)?;
    Ok(path)
}

/// Writes `modules.png` into `out`: each run's training accuracy by module in its last epoch
/// (the reference's per-module Prec@1; a module without a classifier is left out). Returns
/// the file's path, or `None` when no run recorded module figures.
pub fn write_module_accuracy(runs: &[PathBuf], out: &Path) -> Result<Option<PathBuf>> {
    let mut series = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        let metrics = read_metrics(run)?;
        let Some(last) = metrics.last().filter(|m| !m.module_train_acc.is_empty()) else {
            continue;
        };
        series.push(Series {
            label: format!("{} epoch {}", run_label(run), last.epoch),
            points: last
                .module_train_acc
                .iter()
                .enumerate()
                .filter_map(|(m, acc)| acc.map(|a| (m as f64, 100.0 * a)))
                .collect(),
            color: color(i),
            dashed: false,
            markers: true,
        });
    }
    if series.is_empty() {
        return Ok(None);
    }
    let panel = Panel {
        title: "Training accuracy by module".into(),
        x_label: "module".into(),
        y_label: "accuracy (%)".into(),
        series,
        y_range: Some((0.0, 100.0)),
        integer_x: true,
        legend: SeriesLabelPosition::UpperLeft,
    };
    std::fs::create_dir_all(out)
        .with_context(|| format!("cannot create output directory {}", out.display()))?;
    let path = out.join(MODULES_FILE);
    line_charts(&path, MODULES_SIZE, &[panel])?;
    Ok(Some(path))
}

/// The file [`write_module_accuracy`] writes.
pub const MODULES_FILE: &str = "modules.png";

/// Pixel size of `modules.png`.
pub const MODULES_SIZE: (u32, u32) = (800, 560);

/// The file [`write_curves`] writes.
pub const CURVES_FILE: &str = "curves.png";

/// Pixel size of `curves.png`.
pub const CURVES_SIZE: (u32, u32) = (1800, 560);
