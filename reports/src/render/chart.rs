//! Charts of one scenario with plotters, as SVG and PNG, at pull-request-comment width.
//!
//! A chart stacks up to three panels, each drawn when the report has its data:
//! - **memory**: the Rust heap, the C heap and disk usage above their baselines over the
//!   measured iterations, with the tolerance band, the peak, where the growth the verdict
//!   found began, and a confirmation extension past the planned iterations;
//! - **sites**: the top sites' surviving bytes by the iteration that allocated them,
//!   accumulated: a leak climbs steadily, a bounded cache's churn jumps at the end;
//! - **scaling**: the peak against the input size, with the fitted line and the
//!   declared growth.
//!
//! Text is drawn with DejaVu Sans, bundled and registered before drawing, so charts render
//! the same on a headless CI runner with no fonts installed.

use std::error::Error;
use std::ops::Range;
use std::path::Path;
use std::sync::Once;

use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use crate::schema::{Resource, ScenarioReport, Site};
use crate::text::{bytes, peak_above_baseline};

/// Width of every chart, in pixels: a pull-request comment's width.
pub const WIDTH: u32 = 800;
/// Height of each panel, in pixels.
pub const PANEL_HEIGHT: u32 = 320;
/// Sites drawn in the sites panel at most.
const SITES_DRAWN: usize = 4;
/// The font family registered for the charts' text.
pub(crate) const FONT: &str = "sans-serif";

/// A panel a chart can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Panel {
    /// Memory and disk above baseline over the measured iterations.
    Memory,
    /// The top sites' surviving bytes by allocating iteration.
    Sites,
    /// Peak against input size.
    Scaling,
    /// What happened instead, for a scenario that ended before any measured iteration.
    Nothing,
}

/// The panels `scenario`'s report has data for, in drawing order; [`Panel::Nothing`] alone
/// when it has none (a scenario that crashed before its first measured iteration), so
/// every scenario has a chart.
pub fn panels(scenario: &ScenarioReport) -> Vec<Panel> {
    let mut panels = Vec::new();
    if scenario.series.baseline.is_some() && !scenario.series.iterations.is_empty() {
        panels.push(Panel::Memory);
    }
    if top_sites(scenario).next().is_some() {
        panels.push(Panel::Sites);
    }
    if scenario
        .scaling
        .as_ref()
        .is_some_and(|s| !s.points.is_empty())
    {
        panels.push(Panel::Scaling);
    }
    if panels.is_empty() {
        panels.push(Panel::Nothing);
    }
    panels
}

/// The chart of `scenario` as an SVG document.
pub fn svg(scenario: &ScenarioReport) -> Result<String, Box<dyn Error>> {
    let panels = panels(scenario);
    register_font();
    let mut text = String::new();
    {
        let area = SVGBackend::with_string(&mut text, (WIDTH, height(&panels))).into_drawing_area();
        draw(&area, scenario, &panels)?;
        area.present()?;
    }
    Ok(text)
}

/// Writes the chart of `scenario` as a PNG to `path`.
pub fn png(scenario: &ScenarioReport, path: &Path) -> Result<(), Box<dyn Error>> {
    let panels = panels(scenario);
    register_font();
    let area = BitMapBackend::new(path, (WIDTH, height(&panels))).into_drawing_area();
    draw(&area, scenario, &panels)?;
    area.present()?;
    Ok(())
}

fn height(panels: &[Panel]) -> u32 {
    panels
        .iter()
        .map(|panel| match panel {
            // A caption and a line of text.
            Panel::Nothing => 72,
            _ => PANEL_HEIGHT,
        })
        .sum()
}

pub(crate) fn register_font() {
    static REGISTERED: Once = Once::new();
    REGISTERED.call_once(|| {
        // The bundled font parses; if it did not, text would be missing, not the chart.
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
    });
}

type Drawn = Result<(), Box<dyn Error>>;

/// A panel's chart: x from `x`, byte amounts on y.
pub(crate) type BytePanel<'a, DB> =
    ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// The axes every panel here draws on: a caption of `caption_size` points, `x` labelled
/// `x_desc` in whole numbers, `y` in bytes, no minor grid lines.
pub(crate) fn byte_axes<'a, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    caption: &str,
    caption_size: u32,
    x: Range<f64>,
    y: Range<f64>,
    x_desc: &str,
) -> Result<BytePanel<'a, DB>, Box<dyn Error>>
where
    DB::ErrorType: 'static,
{
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, caption_size))
        .margin(8)
        .x_label_area_size(32)
        .y_label_area_size(72)
        .build_cartesian_2d(x, y)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| bytes(*v as i64))
        .label_style((FONT, 12))
        .axis_desc_style((FONT, 12))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    Ok(chart)
}

/// The legend of the series drawn on `chart`, in its upper left corner.
pub(crate) fn draw_legend<'a, DB: DrawingBackend + 'a>(
    chart: &mut BytePanel<'a, DB>,
    font_size: u32,
) -> Drawn
where
    DB::ErrorType: 'static,
{
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font((FONT, font_size))
        .draw()?;
    Ok(())
}

fn draw<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    scenario: &ScenarioReport,
    panels: &[Panel],
) -> Drawn
where
    DB::ErrorType: 'static,
{
    area.fill(&WHITE)?;
    for (panel, part) in panels.iter().zip(area.split_evenly((panels.len(), 1))) {
        match panel {
            Panel::Memory => memory(&part, scenario)?,
            Panel::Sites => sites(&part, scenario)?,
            Panel::Scaling => scaling(&part, scenario)?,
            Panel::Nothing => nothing(&part, scenario)?,
        }
    }
    Ok(())
}

/// The scenario's name and what ended it, where the other panels would be.
fn nothing<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, scenario: &ScenarioReport) -> Drawn
where
    DB::ErrorType: 'static,
{
    let area = area.titled(
        &format!("{}: no measured iteration to draw", scenario.name),
        (FONT, 16),
    )?;
    let mut summary: String = scenario.summary.chars().take(110).collect();
    if scenario.summary.chars().count() > 110 {
        summary.push('…');
    }
    area.draw(&Text::new(summary, (20, 12), (FONT, 14)))?;
    Ok(())
}

/// A series above its baseline, one point per measured iteration.
struct Line {
    label: &'static str,
    color: RGBColor,
    points: Vec<(f64, f64)>,
}

const HEAP_COLOR: RGBColor = RGBColor(31, 119, 180);
const C_HEAP_COLOR: RGBColor = RGBColor(230, 120, 0);
const DISK_COLOR: RGBColor = RGBColor(120, 60, 160);
const SITE_COLORS: [RGBColor; SITES_DRAWN] = [
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

fn memory_lines(scenario: &ScenarioReport) -> Vec<Line> {
    let series = &scenario.series;
    let Some(baseline) = series.baseline else {
        return Vec::new();
    };
    let above = |value: fn(&crate::schema::Sample) -> Option<u64>| -> Vec<(f64, f64)> {
        let Some(base) = value(&baseline) else {
            return Vec::new();
        };
        series
            .iterations
            .iter()
            .enumerate()
            .filter_map(|(i, s)| Some((i as f64, value(s)? as f64 - base as f64)))
            .collect()
    };
    [
        Line {
            label: "Rust heap",
            color: HEAP_COLOR,
            points: above(|s| Some(s.heap_bytes)),
        },
        Line {
            label: "C heap",
            color: C_HEAP_COLOR,
            points: above(|s| s.c_heap_bytes),
        },
        Line {
            label: "disk",
            color: DISK_COLOR,
            points: above(|s| s.disk_bytes),
        },
    ]
    .into_iter()
    // A probe that reads flat at zero (no C code, no watched directory) adds nothing.
    .filter(|line| line.points.iter().any(|&(_, y)| y != 0.0) || line.label == "Rust heap")
    .collect()
}

fn memory<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, scenario: &ScenarioReport) -> Drawn
where
    DB::ErrorType: 'static,
{
    let lines = memory_lines(scenario);
    // Points sit at 0-based iterations: the last is one short of the count.
    let measured = (scenario.series.iterations.len() as f64 - 1.0).max(1.0);
    let tolerance = scenario
        .trend(Resource::Heap)
        .map_or(0.0, |t| t.tolerance as f64);
    let peak = peak_above_baseline(scenario).map(|p| p as f64);
    let values = lines.iter().flat_map(|l| l.points.iter().map(|p| p.1));
    let (low, high) = values
        .chain([0.0, tolerance])
        .chain(peak)
        .fold((0.0f64, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let pad = ((high - low) * 0.08).max(64.0);
    let caption = format!("{}: memory above baseline", scenario.name);
    let mut chart = byte_axes(
        area,
        &caption,
        16,
        0.0..measured,
        (low - pad)..(high + pad),
        "measured iteration",
    )?;
    if tolerance > 0.0 {
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(0.0, 0.0), (measured, tolerance)],
                GREEN.mix(0.12).filled(),
            )))?
            .label(format!("tolerance ({})", bytes(tolerance as i64)))
            .legend(|(x, y)| {
                Rectangle::new([(x, y - 5), (x + 16, y + 5)], GREEN.mix(0.3).filled())
            });
    }
    let (planned, ran) = (
        f64::from(scenario.iterations),
        scenario.series.iterations.len() as f64,
    );
    if planned > 0.0 && ran > planned {
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(planned - 0.5, low - pad), (measured, high + pad)],
                BLACK.mix(0.07).filled(),
            )))?
            .label(format!(
                "confirmation extension ({} iterations)",
                ran - planned
            ))
            .legend(|(x, y)| {
                Rectangle::new([(x, y - 5), (x + 16, y + 5)], BLACK.mix(0.2).filled())
            });
    }
    chart.draw_series(LineSeries::new(
        [(0.0, 0.0), (measured, 0.0)],
        BLACK.mix(0.5).stroke_width(1),
    ))?;
    for line in &lines {
        let color = line.color;
        chart
            .draw_series(LineSeries::new(
                line.points.iter().copied(),
                color.stroke_width(2),
            ))?
            .label(line.label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2)));
        if line.points.len() < 3 {
            // Too few points for a line to show: mark them.
            chart.draw_series(
                line.points
                    .iter()
                    .map(|&p| Circle::new(p, 3, color.filled())),
            )?;
        }
    }
    if let Some(peak) = peak {
        chart
            .draw_series(DashedLineSeries::new(
                [(0.0, peak), (measured, peak)],
                6,
                4,
                RED.stroke_width(1),
            ))?
            .label(format!("peak {}", bytes(peak as i64)))
            .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], RED.stroke_width(1)));
    }
    if let Some(start) = growth_start(scenario) {
        chart
            .draw_series(DashedLineSeries::new(
                [(start, low - pad), (start, high + pad)],
                4,
                4,
                BLACK.stroke_width(1),
            ))?
            .label(format!("growth from iteration {start}"))
            .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], BLACK.stroke_width(1)));
    }
    draw_legend(&mut chart, 12)?;
    Ok(())
}

/// Where the growth that the verdict found began: the first new high of a series that
/// reads as growth (heap first).
fn growth_start(scenario: &ScenarioReport) -> Option<f64> {
    scenario
        .statistics
        .iter()
        .filter(|t| t.growth || scenario.finding(t.resource).is_some())
        .find_map(|t| t.first_high)
        .map(f64::from)
}

/// The sites of the first finding that recorded surviving bytes by iteration.
fn top_sites(scenario: &ScenarioReport) -> impl Iterator<Item = &Site> {
    scenario
        .findings
        .iter()
        .find(|f| f.sites.iter().any(|s| !s.bytes_by_iteration.is_empty()))
        .into_iter()
        .flat_map(|f| &f.sites)
        .filter(|s| !s.bytes_by_iteration.is_empty())
        .take(SITES_DRAWN)
}

/// A site's name on the chart: its first frame, shortened.
fn site_label(rank: usize, site: &Site) -> String {
    let name = site
        .frames
        .first()
        .map_or("(no frames)", |f| f.function.as_str());
    let short: String = name.chars().take(60).collect();
    let ellipsis = if name.chars().count() > 60 { "…" } else { "" };
    format!("#{} {short}{ellipsis}", rank + 1)
}

fn sites<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, scenario: &ScenarioReport) -> Drawn
where
    DB::ErrorType: 'static,
{
    let measured = scenario.series.iterations.len().max(1) as f64;
    let curves: Vec<(String, Vec<(f64, f64)>)> = top_sites(scenario)
        .enumerate()
        .map(|(rank, site)| {
            let width = (measured / site.bytes_by_iteration.len() as f64).ceil();
            let mut total = 0.0;
            let mut points = vec![(0.0, 0.0)];
            for (bucket, &amount) in site.bytes_by_iteration.iter().enumerate() {
                total += amount as f64;
                points.push((((bucket + 1) as f64 * width).min(measured), total));
            }
            (site_label(rank, site), points)
        })
        .collect();
    let high = curves
        .iter()
        .flat_map(|(_, points)| points.iter().map(|p| p.1))
        .fold(1.0f64, f64::max);
    let caption = "surviving bytes by the iteration that allocated them (accumulated), top sites";
    let mut chart = byte_axes(
        area,
        caption,
        14,
        0.0..measured,
        0.0..high * 1.1,
        "measured iteration",
    )?;
    for ((label, points), color) in curves.into_iter().zip(SITE_COLORS) {
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2)));
    }
    draw_legend(&mut chart, 11)?;
    Ok(())
}

fn scaling<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, scenario: &ScenarioReport) -> Drawn
where
    DB::ErrorType: 'static,
{
    let Some(scaling) = &scenario.scaling else {
        return Ok(());
    };
    let points: Vec<(f64, f64)> = scaling
        .points
        .iter()
        .map(|p| (p.size as f64, p.peak_bytes as f64))
        .collect();
    let largest = points.iter().map(|p| p.0).fold(1.0f64, f64::max);
    let fitted = |x: f64| scaling.peak_intercept + scaling.peak_bytes_per_unit * x;
    // A report is input like any other: a fit that is not a finite line is not drawn.
    let fit = [(0.0, fitted(0.0)), (largest, fitted(largest))];
    let fit = fit
        .iter()
        .all(|p| p.1.is_finite() && p.1.abs() < 1e18)
        .then_some(fit);
    let high = points
        .iter()
        .map(|p| p.1)
        .chain(fit.iter().flatten().map(|p| p.1))
        .fold(1.0f64, f64::max);
    let declared = scaling
        .expected
        .as_deref()
        .map_or(String::new(), |e| format!(", declared {e}"));
    let caption = format!(
        "peak against input size: exponent {:.2} ({}{declared})",
        scaling.peak_exponent, scaling.growth
    );
    let mut chart = byte_axes(
        area,
        &caption,
        14,
        0.0..largest * 1.05,
        0.0..high * 1.1,
        "input size",
    )?;
    if let Some(fit) = fit {
        chart
            .draw_series(LineSeries::new(fit, HEAP_COLOR.stroke_width(1)))?
            .label(format!(
                "fit: {} + {}/unit",
                bytes(scaling.peak_intercept as i64),
                bytes(scaling.peak_bytes_per_unit as i64)
            ))
            .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], HEAP_COLOR.stroke_width(1)));
    }
    chart
        .draw_series(points.iter().map(|&p| Circle::new(p, 4, RED.filled())))?
        .label("peak at each size")
        .legend(|(x, y)| Circle::new((x + 8, y), 4, RED.filled()));
    draw_legend(&mut chart, 12)?;
    Ok(())
}
