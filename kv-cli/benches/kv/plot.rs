//! The benchmarks' curves as PNG line charts (docs/benchmarks.md), shared by the `kv` and
//! `serve` benches. Text is drawn with DejaVu Sans, read at run time (Debian's
//! `fonts-dejavu-core`, which `scripts/setup.sh` installs).

use std::path::Path;

use plotters::prelude::*;

/// One line of a chart: its label and its points (x, y), in x order.
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

/// One chart: what it shows and how its axes are scaled.
pub struct Chart<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    /// Logarithmic axes (clients 1…64, keys 10k…1M): equal ratios get equal space.
    pub log_x: bool,
    pub log_y: bool,
}

const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// Registers the font once; charts cannot be drawn without it.
fn font() -> anyhow::Result<()> {
    static REGISTERED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            let bytes = std::fs::read(FONT)
                .map_err(|err| format!("{FONT}: {err} (apt install fonts-dejavu-core)"))?;
            plotters::style::register_font(
                "sans-serif",
                FontStyle::Normal,
                Box::leak(bytes.into_boxed_slice()),
            )
            .map_err(|_| format!("{FONT}: not a TrueType font"))
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

/// Draws `series` into the PNG `path` (1000 × 560): the chart, and its legend to the right.
pub fn line_chart(path: &Path, chart: &Chart<'_>, series: &[Series]) -> anyhow::Result<()> {
    font()?;
    let points = || series.iter().flat_map(|line| line.points.iter());
    let (x_min, x_max) = bounds(points().map(|&(x, _)| x), chart.log_x);
    let (y_min, y_max) = bounds(points().map(|&(_, y)| y), chart.log_y);
    let root = BitMapBackend::new(path, (1000, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_error)?;
    let (plot_area, legend_area) = root.split_horizontally(790);
    let color = |index: usize| Palette99::pick(index).to_rgba();
    for (index, line) in series.iter().enumerate() {
        let y = 70 + 26 * index as i32;
        let style = ShapeStyle::from(&color(index)).stroke_width(3);
        legend_area
            .draw(&PathElement::new([(4, y), (28, y)], style))
            .map_err(draw_error)?;
        legend_area
            .draw(&Text::new(
                line.label.as_str(),
                (36, y - 8),
                ("sans-serif", 15).into_font(),
            ))
            .map_err(draw_error)?;
    }
    let mut builder = ChartBuilder::on(&plot_area);
    builder
        .caption(chart.title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(72);
    // The four axis kinds are four types; one macro draws each the same way.
    macro_rules! draw {
        ($x:expr, $y:expr) => {{
            let mut context = builder.build_cartesian_2d($x, $y).map_err(draw_error)?;
            context
                .configure_mesh()
                .x_desc(chart.x_label)
                .y_desc(chart.y_label)
                .label_style(("sans-serif", 14))
                .axis_desc_style(("sans-serif", 16))
                .x_label_formatter(&|x| short(*x))
                .y_label_formatter(&|y| short(*y))
                .draw()
                .map_err(draw_error)?;
            for (index, line) in series.iter().enumerate() {
                let style = ShapeStyle::from(&color(index)).stroke_width(2);
                context
                    .draw_series(LineSeries::new(line.points.iter().copied(), style))
                    .map_err(draw_error)?;
                context
                    .draw_series(
                        line.points
                            .iter()
                            .map(|&(x, y)| Circle::new((x, y), 3, color(index).filled())),
                    )
                    .map_err(draw_error)?;
            }
        }};
    }
    match (chart.log_x, chart.log_y) {
        (true, true) => draw!((x_min..x_max).log_scale(), (y_min..y_max).log_scale()),
        (true, false) => draw!((x_min..x_max).log_scale(), y_min..y_max),
        (false, true) => draw!(x_min..x_max, (y_min..y_max).log_scale()),
        (false, false) => draw!(x_min..x_max, y_min..y_max),
    }
    root.present().map_err(draw_error)?;
    Ok(())
}

/// An axis range holding every value with a margin; from 0 on a linear axis.
fn bounds(values: impl Iterator<Item = f64>, log: bool) -> (f64, f64) {
    let (low, high) = values
        .filter(|v| v.is_finite() && (!log || *v > 0.0))
        .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if low > high {
        return (if log { 1.0 } else { 0.0 }, 10.0);
    }
    if log {
        (low / 1.5, high * 1.5)
    } else {
        (0.0, high * 1.1)
    }
}

/// 1,500 → "1.5k", 2,000,000 → "2M", 0.012 → "0.012": tick labels that fit.
fn short(value: f64) -> String {
    let abs = value.abs();
    let decimals = |scaled: f64| {
        if scaled.fract().abs() < 0.05 || scaled.abs() >= 100.0 {
            0
        } else {
            1
        }
    };
    let (scaled, unit) = if abs >= 1e6 {
        (value / 1e6, "M")
    } else if abs >= 1e3 {
        (value / 1e3, "k")
    } else if abs >= 1.0 || abs == 0.0 {
        (value, "")
    } else {
        // Two significant digits below 1.
        let digits = (-abs.log10()).ceil().max(0.0) as usize + 1;
        return format!("{value:.digits$}");
    };
    format!("{scaled:.*}{unit}", decimals(scaled))
}

fn draw_error<E: std::fmt::Debug>(err: E) -> anyhow::Error {
    anyhow::anyhow!("drawing a chart: {err:?}")
}
