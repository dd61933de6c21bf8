//! SVG plot of a timeline run (plotters, SVG backend only: no system fonts needed).
//! Top: placement share per node over time (smoothed solid, naive pale) with the
//! fair share; bottom: the raw health signal that crossed and the node's health
//! weight.

use plotters::prelude::*;

use super::timeline::{Mode, TimelineReport};

const PALETTE: &[RGBColor] = &[
    RGBColor(214, 39, 40),
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
];

fn err<E: std::fmt::Debug>(e: E) -> String {
    format!("plot: {e:?}")
}

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
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, (1000, 720)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let (top, bottom) = root.split_vertically(420);
        let mut chart = ChartBuilder::on(&top)
            .caption(
                "Placement share per node (solid: health-weighted, pale: naive filter)",
                ("sans-serif", 18),
            )
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(55)
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
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.6)));
        for run in r.runs.iter().rev() {
            for (i, n) in nodes.iter().enumerate() {
                let c = PALETTE[i % PALETTE.len()];
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
                let leg = style;
                chart
                    .draw_series(LineSeries::new(pts, style))
                    .map_err(err)?
                    .label(label)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], leg));
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 12))
            .draw()
            .map_err(err)?;

        let mut chart = ChartBuilder::on(&bottom)
            .caption("Raw health signal and health weight", ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(55)
            .build_cartesian_2d(0f64..xmax, 0f64..105f64)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("time (min)")
            .y_desc("signal / weight (0-100)")
            .draw()
            .map_err(err)?;
        for (i, n) in nodes.iter().enumerate() {
            let c = PALETTE[i % PALETTE.len()];
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
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.mix(0.45)));
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
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                    });
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 12))
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(buf)
}
