//! SVG plot of a timeline run (plotters, SVG backend only: no system fonts needed).
//! Top: placement share per node over time (smoothed solid, naive pale) with the
//! fair share; bottom: the raw health signal that crossed and the node's health
//! weight.

use plotters::prelude::*;

use super::timeline::{Mode, TimelineReport};
use crate::svg_plot::{color, err, legend, legend_line, svg, titled};

/// Renders the report as an SVG document.
pub fn render_svg(r: &TimelineReport) -> Result<String, String> {
    let Some(first) = r.runs.first() else {
        return Err("plot: no runs".into());
    };
    let xmax = first.duration_seconds / 60.0;
    let nodes: Vec<&String> = first.metrics.iter().map(|m| &m.node).collect();
    let mut ymax = first.fair_share * 100.0 * 2.0;
    for run in &r.runs {
        for n in &nodes {
            if let Some(s) = run.shares.get(*n) {
                for v in s.iter().filter(|v| v.is_finite()) {
                    ymax = ymax.max(v * 100.0);
                }
            }
        }
    }
    let ymax = (ymax * 1.1).min(100.0);
    svg((1000, 720), |root| {
        let (top, bottom) = root.split_vertically(420);
        let mut chart = titled(
            &top,
            "Placement share per node (solid: health-weighted, pale: naive filter)",
            10,
            (35, 55),
        )
        .build_cartesian_2d(0f64..xmax, 0f64..ymax)
        .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("time (min)")
            .y_desc("share of new pods (%)")
            .draw()
            .map_err(err)?;
        let fair = first.fair_share * 100.0;
        chart
            .draw_series(LineSeries::new(
                vec![(0.0, fair), (xmax, fair)],
                BLACK.mix(0.6).stroke_width(1),
            ))
            .map_err(err)?
            .label("fair share")
            .legend(legend_line(BLACK.mix(0.6)));
        for run in r.runs.iter().rev() {
            for (i, n) in nodes.iter().enumerate() {
                let c = color(i);
                let Some(s) = run.shares.get(*n) else {
                    continue;
                };
                let pts: Vec<(f64, f64)> = run
                    .times
                    .iter()
                    .zip(s)
                    .filter(|(_, v)| v.is_finite())
                    .map(|(t, v)| (t / 60.0, v * 100.0))
                    .collect();
                let (style, label) = match run.mode {
                    Mode::Smoothed => (c.stroke_width(2), format!("{n} (health-weighted)")),
                    Mode::Naive => (c.mix(0.3).stroke_width(1), format!("{n} (naive)")),
                };
                chart
                    .draw_series(LineSeries::new(pts, style))
                    .map_err(err)?
                    .label(label)
                    .legend(legend_line(style));
            }
        }
        legend(&mut chart, SeriesLabelPosition::UpperRight)?;

        let mut chart = titled(&bottom, "Raw health signal and health weight", 10, (35, 55))
            .build_cartesian_2d(0f64..xmax, 0f64..105f64)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("time (min)")
            .y_desc("signal / weight (0-100)")
            .draw()
            .map_err(err)?;
        for (i, n) in nodes.iter().enumerate() {
            let c = color(i);
            if let Some(s) = first.signal.get(*n) {
                let pts: Vec<(f64, f64)> = first
                    .times
                    .iter()
                    .zip(s)
                    .filter(|(_, v)| v.is_finite())
                    .map(|(t, v)| (t / 60.0, v.min(105.0)))
                    .collect();
                let name = first.signal_name.get(*n).cloned().unwrap_or_default();
                chart
                    .draw_series(LineSeries::new(pts, c.mix(0.45).stroke_width(1)))
                    .map_err(err)?
                    .label(format!("{n} raw {name}"))
                    .legend(legend_line(c.mix(0.45)));
            }
            if let Some(w) = first.health_weight.get(*n) {
                let pts: Vec<(f64, f64)> = first
                    .times
                    .iter()
                    .zip(w)
                    .map(|(t, v)| (t / 60.0, *v))
                    .collect();
                chart
                    .draw_series(LineSeries::new(pts, c.stroke_width(2)))
                    .map_err(err)?
                    .label(format!("{n} health weight"))
                    .legend(legend_line(c.stroke_width(2)));
            }
        }
        legend(&mut chart, SeriesLabelPosition::LowerLeft)
    })
}
