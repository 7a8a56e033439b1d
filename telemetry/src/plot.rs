//! Percentile plots: latency against percentile, the percentile axis on a log
//! scale of 1/(1-p) (HdrHistogram's plotter's axis), so the tail from P90 to
//! P99.999 gets as much room as the median. Latency is on a log scale too:
//! engine latencies span sub-microsecond routes and millisecond stalls.
//!
//! The plot is an SVG drawn here; a PNG is that SVG rendered by resvg with the
//! system's fonts.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

/// One curve: its legend label and its histogram (nanoseconds).
pub struct Series {
    /// Legend text, e.g. `run-a.hlog routing_latency`.
    pub label: String,
    /// The distribution.
    pub histogram: Histogram<u64>,
}

/// Why a plot could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// Nothing to draw.
    #[error("no histogram has any values to plot")]
    Empty,
    /// The output name ends in neither `.svg` nor `.png`.
    #[error("cannot tell the image format of `{0}`: name it .svg or .png")]
    Format(String),
    /// The SVG could not be rendered.
    #[error("cannot render the PNG: {0}")]
    Render(String),
    /// Writing failed.
    #[error("cannot write `{path}`: {error}")]
    Write {
        /// The output path.
        path: String,
        /// Why.
        error: std::io::Error,
    },
}

const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 600.0;
const LEFT: f64 = 90.0;
const RIGHT: f64 = 50.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 70.0;
const COLOURS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];
/// Furthest percentile drawn: 99.9999%.
const MAX_NINES: f64 = 6.0;

/// The points of `histogram`'s curve: (log10 of 1/(1-p), value in ns).
fn curve(histogram: &Histogram<u64>) -> Vec<(f64, f64)> {
    let mut points = Vec::new();
    for step in crate::report::percentile_steps(histogram, crate::report::TICKS_PER_HALF_DISTANCE) {
        let quantile = step.quantile;
        let x = if quantile >= 1.0 {
            MAX_NINES
        } else {
            (1.0 / (1.0 - quantile)).log10().min(MAX_NINES)
        };
        points.push((x, step.value as f64));
    }
    points
}

/// Pick the unit that makes `nanos` read as a small number.
fn unit_for(nanos: f64) -> (&'static str, f64) {
    match nanos {
        n if n >= 1e9 => ("s", 1e9),
        n if n >= 1e6 => ("ms", 1e6),
        n if n >= 1e3 => ("µs", 1e3),
        _ => ("ns", 1.0),
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The SVG of `series` under `title`.
pub fn svg(title: &str, series: &[Series]) -> Result<String, PlotError> {
    let drawn: Vec<(&Series, Vec<(f64, f64)>)> = series
        .iter()
        .filter(|series| !series.histogram.is_empty())
        .map(|series| (series, curve(&series.histogram)))
        .collect();
    if drawn.is_empty() {
        return Err(PlotError::Empty);
    }
    let values = drawn
        .iter()
        .flat_map(|(_, points)| points.iter().map(|point| point.1));
    let low = values.clone().fold(f64::INFINITY, f64::min).max(1.0);
    let high = values.fold(0.0, f64::max).max(low * 10.0);
    let (y_low, y_high) = (low.log10().floor(), high.log10().ceil());
    let x_high = drawn
        .iter()
        .flat_map(|(_, points)| points.iter().map(|point| point.0))
        .fold(1.0, f64::max)
        .ceil()
        .min(MAX_NINES);
    let plot_width = WIDTH - LEFT - RIGHT;
    let plot_height = HEIGHT - TOP - BOTTOM;
    // The legend has rows of its own above the curves, so it never hides
    // the highest one (the tail of the slowest run).
    let legend_height = 18.0 * drawn.len() as f64 + 8.0;
    let data_height = (plot_height - legend_height).max(plot_height / 2.0);
    let px = |x: f64| LEFT + x / x_high * plot_width;
    let py = |nanos: f64| {
        TOP + plot_height - (nanos.max(1.0).log10() - y_low) / (y_high - y_low) * data_height
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="13">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{}" y="28" text-anchor="middle" font-size="17">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
    // Percentile grid: 0%, 90%, 99%, ...
    for nines in 0..=(x_high as u32) {
        let x = px(f64::from(nines));
        let label = match nines {
            0 => "0%".to_owned(),
            n => {
                let percent = 100.0 * (1.0 - 10f64.powi(-(n as i32)));
                format!("{percent:.*}%", (n as usize).saturating_sub(2))
            }
        };
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{label}</text>"##,
            TOP + plot_height,
            TOP + plot_height + 20.0
        );
    }
    // Latency grid: one line per decade.
    for decade in (y_low as i32)..=(y_high as i32) {
        let nanos = 10f64.powi(decade);
        let y = py(nanos);
        let (unit, scale) = unit_for(nanos);
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{} {unit}</text>"##,
            LEFT + plot_width,
            LEFT - 8.0,
            y + 4.0,
            nanos / scale
        );
    }
    let _ = writeln!(
        out,
        r##"<rect x="{LEFT}" y="{TOP}" width="{plot_width}" height="{plot_height}" fill="none" stroke="#444"/>"##
    );
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">Percentile</text>"#,
        LEFT + plot_width / 2.0,
        HEIGHT - 18.0
    );
    let _ = writeln!(
        out,
        r#"<text x="20" y="{:.1}" text-anchor="middle" transform="rotate(-90 20 {:.1})">Latency</text>"#,
        TOP + plot_height / 2.0,
        TOP + plot_height / 2.0
    );
    for (index, (series, points)) in drawn.iter().enumerate() {
        let colour = COLOURS[index % COLOURS.len()];
        let path: String = points
            .iter()
            .map(|&(x, nanos)| format!("{:.1},{:.1}", px(x), py(nanos)))
            .collect::<Vec<_>>()
            .join(" ");
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{path}"/>"#
        );
        let histogram = &series.histogram;
        let describe = |nanos: u64| {
            let (unit, scale) = unit_for(nanos as f64);
            let value = nanos as f64 / scale;
            // Three significant digits, as the histogram keeps.
            let decimals = if value < 10.0 {
                2
            } else if value < 100.0 {
                1
            } else {
                0
            };
            format!("{value:.decimals$} {unit}")
        };
        let legend = format!(
            "{}: P50 {}, P99 {}, P99.9 {}, max {} ({} values)",
            series.label,
            describe(histogram.value_at_quantile(0.5)),
            describe(histogram.value_at_quantile(0.99)),
            describe(histogram.value_at_quantile(0.999)),
            describe(histogram.max()),
            histogram.len()
        );
        let y = TOP + 18.0 + 18.0 * index as f64;
        let _ = writeln!(
            out,
            r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="18" fill="white" fill-opacity="0.8"/>"##,
            LEFT + 4.0,
            y - 14.0,
            plot_width - 8.0
        );
        let _ = writeln!(
            out,
            r#"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{colour}" stroke-width="3"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            LEFT + 10.0,
            y - 4.0,
            LEFT + 34.0,
            y - 4.0,
            LEFT + 40.0,
            y,
            escape(&legend)
        );
    }
    out.push_str("</svg>\n");
    Ok(out)
}

/// Write the plot of `series` to `path`, as SVG or PNG by its extension.
pub fn write(path: &std::path::Path, title: &str, series: &[Series]) -> Result<(), PlotError> {
    let name = path.display().to_string();
    let extension = path
        .extension()
        .and_then(|extension| extension.to_str())
        .map(str::to_ascii_lowercase);
    let svg = svg(title, series)?;
    let bytes = match extension.as_deref() {
        Some("svg") => svg.into_bytes(),
        Some("png") => png(&svg)?,
        _ => return Err(PlotError::Format(name)),
    };
    std::fs::write(path, bytes).map_err(|error| PlotError::Write { path: name, error })
}

/// `svg` rendered to PNG with the system's fonts.
pub fn png(svg: &str) -> Result<Vec<u8>, PlotError> {
    use resvg::{tiny_skia, usvg};
    let mut options = usvg::Options::default();
    options.fontdb_mut().load_system_fonts();
    if options.fontdb.is_empty() {
        return Err(PlotError::Render(
            "no system fonts for the labels; install a font package such as fonts-dejavu-core"
                .into(),
        ));
    }
    let tree = usvg::Tree::from_str(svg, &options)
        .map_err(|error| PlotError::Render(error.to_string()))?;
    let size = tree.size().to_int_size();
    let mut pixmap = tiny_skia::Pixmap::new(size.width(), size.height())
        .ok_or_else(|| PlotError::Render("empty image".into()))?;
    resvg::render(&tree, tiny_skia::Transform::default(), &mut pixmap.as_mut());
    pixmap
        .encode_png()
        .map_err(|error| PlotError::Render(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(label: &str, scale: u64) -> Series {
        let mut histogram = crate::nanosecond_histogram();
        for value in 1..=10_000u64 {
            histogram.record(value * scale).expect("in range");
        }
        Series {
            label: label.into(),
            histogram,
        }
    }

    #[test]
    fn two_runs_make_two_curves_with_legends() {
        let text = svg("t", &[series("fast", 10), series("slow & late", 100)]).expect("svg");
        assert_eq!(text.matches("<polyline").count(), 2);
        assert!(text.contains("slow &amp; late: P50 500 "), "{text}");
        assert!(text.contains(">99.9%<"), "{text}");
        assert!(matches!(svg("t", &[]), Err(PlotError::Empty)));
    }

    /// No point of any curve lies under the legend's rows.
    #[test]
    fn the_legend_never_covers_a_curve() {
        let runs = [series("a", 10), series("b", 100), series("c", 1000)];
        let text = svg("t", &runs).expect("svg");
        let legend_bottom = TOP + 18.0 * runs.len() as f64 + 8.0;
        let heights: Vec<f64> = text
            .lines()
            .filter_map(|line| line.split("points=\"").nth(1))
            .flat_map(|points| points.trim_end_matches("\"/>").split(' '))
            .filter_map(|point| point.split(',').nth(1)?.parse::<f64>().ok())
            .collect();
        assert!(
            heights.len() >= runs.len(),
            "every curve has points: {text}"
        );
        let highest = heights.iter().copied().fold(f64::INFINITY, f64::min);
        assert!(highest >= legend_bottom, "{highest} above {legend_bottom}");
    }

    #[test]
    fn png_is_a_png() {
        let text = svg("t", &[series("a", 10)]).expect("svg");
        match png(&text) {
            Ok(bytes) => assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n"),
            // A machine without fonts must say so rather than draw no labels.
            Err(PlotError::Render(reason)) => assert!(reason.contains("fonts"), "{reason}"),
            Err(other) => panic!("{other}"),
        }
    }
}
