//! The trend chart of one scenario over a history: each watched figure over the runs,
//! with the runs where the trend test flagged a rise marked.

use std::error::Error;
use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::chart::{PANEL_HEIGHT, WIDTH, byte_axes, draw_legend, register_font};
use crate::history::{Alert, Entry, WATCHED, series};

const COLORS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(230, 120, 0),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];

/// The trend chart of `scenario` as SVG, or `None` when the history has fewer than two
/// runs of it.
pub fn svg(
    history: &[Entry],
    scenario: &str,
    alerts: &[Alert],
) -> Result<Option<String>, Box<dyn Error>> {
    if runs(history, scenario) < 2 {
        return Ok(None);
    }
    register_font();
    let mut text = String::new();
    {
        let area = SVGBackend::with_string(&mut text, (WIDTH, PANEL_HEIGHT)).into_drawing_area();
        draw(&area, history, scenario, alerts)?;
        area.present()?;
    }
    Ok(Some(text))
}

/// Writes the trend chart of `scenario` as a PNG; `false` when there is nothing to draw.
pub fn png(
    history: &[Entry],
    scenario: &str,
    alerts: &[Alert],
    path: &Path,
) -> Result<bool, Box<dyn Error>> {
    if runs(history, scenario) < 2 {
        return Ok(false);
    }
    register_font();
    let area = BitMapBackend::new(path, (WIDTH, PANEL_HEIGHT)).into_drawing_area();
    draw(&area, history, scenario, alerts)?;
    area.present()?;
    Ok(true)
}

fn runs(history: &[Entry], scenario: &str) -> usize {
    history
        .iter()
        .filter(|e| e.figures.iter().any(|f| f.scenario == scenario))
        .count()
}

fn draw<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    history: &[Entry],
    scenario: &str,
    alerts: &[Alert],
) -> Result<(), Box<dyn Error>>
where
    DB::ErrorType: 'static,
{
    area.fill(&WHITE)?;
    // Per-iteration growth is a rate, not an amount: it stays off this chart's axis.
    let lines: Vec<(&str, Vec<(f64, f64)>)> = WATCHED
        .iter()
        .filter(|(name, _)| !name.ends_with("/iteration"))
        .map(|&(name, _)| {
            let points = series(history, scenario, name)
                .iter()
                .enumerate()
                .map(|(run, &(_, value))| (run as f64, value))
                .collect();
            (name, points)
        })
        .collect();
    let last = lines.iter().map(|l| l.1.len()).max().unwrap_or(1).max(2) as f64 - 1.0;
    let (low, high) = lines
        .iter()
        .flat_map(|l| l.1.iter().map(|p| p.1))
        .filter(|v| v.is_finite())
        .fold((0.0f64, 1.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let pad = (high - low) * 0.08;
    let caption = format!("{scenario}: figures over the runs");
    let mut chart = byte_axes(
        area,
        &caption,
        16,
        0.0..last,
        (low - pad)..(high + pad),
        "run",
    )?;
    for ((name, points), color) in lines.into_iter().zip(COLORS) {
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2)));
    }
    for alert in alerts.iter().filter(|a| a.scenario == scenario) {
        let run = alert.run as f64;
        chart
            .draw_series(DashedLineSeries::new(
                [(run, low - pad), (run, high + pad)],
                5,
                4,
                RED.stroke_width(2),
            ))?
            .label(format!("alert: {} rose at run {}", alert.figure, alert.run))
            .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], RED.stroke_width(2)));
    }
    draw_legend(&mut chart, 12)?;
    Ok(())
}
