//! Shared plotters setup for Corral's SVG plots (the `simulate timeline` plot in
//! [`crate::simulate::plot`] and the benchmark plots of `corral-benches`): an SVG
//! document rendered into a string, one colour palette, titled charts with the same
//! margins and fonts, and the same legend box. SVG backend only, so no system fonts
//! are needed.

use plotters::coord::Shift;
use plotters::prelude::*;

/// Series colours, in order (matplotlib's tab10 without the near-duplicates).
pub const PALETTE: &[RGBColor] = &[
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// The palette's `i`-th colour (wrapping).
pub fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// A plotters error as the `plot: …` message the callers return.
pub fn err<E: std::fmt::Debug>(e: E) -> String {
    format!("plot: {e:?}")
}

/// Renders one SVG document of `size` pixels: a white drawing area is handed to
/// `draw`, then presented.
pub fn svg(
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> Result<(), String>,
) -> Result<String, String> {
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, size).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        draw(&root)?;
        root.present().map_err(err)?;
    }
    Ok(buf)
}

/// A chart builder with a caption (sans-serif 18), `margin` and label areas of
/// `x_label` / `y_label` pixels; the caller picks the coordinates.
pub fn titled<'a, 'b, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    caption: &str,
    margin: u32,
    (x_label, y_label): (u32, u32),
) -> ChartBuilder<'a, 'b, DB> {
    let mut b = ChartBuilder::on(area);
    b.caption(caption, ("sans-serif", 18))
        .margin(margin)
        .x_label_area_size(x_label)
        .y_label_area_size(y_label);
    b
}

/// A legend marker: a 20-pixel line in `style`.
pub fn legend_line<S: Into<ShapeStyle> + Clone>(
    style: S,
) -> impl Fn((i32, i32)) -> PathElement<(i32, i32)> {
    move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style.clone())
}

/// Draws the labelled series' legend at `position`: translucent white box, black
/// border, 12-pixel labels.
pub fn legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
) -> Result<(), String> {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 12))
        .draw()
        .map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_titled_chart_with_a_legend_renders_as_svg() {
        let out = svg((300, 200), |root| {
            let mut chart = titled(root, "a caption", 5, (20, 30))
                .build_cartesian_2d(0f64..1.0, 0f64..1.0)
                .map_err(err)?;
            chart
                .draw_series(LineSeries::new(vec![(0.0, 0.0), (1.0, 1.0)], color(9)))
                .map_err(err)?
                .label("a series")
                .legend(legend_line(color(9).stroke_width(2)));
            legend(&mut chart, SeriesLabelPosition::UpperLeft)
        })
        .expect("svg");
        assert!(out.starts_with("<svg"), "{out}");
        assert!(out.contains("a caption") && out.contains("a series"));
        // color(9) wraps to the palette's second colour.
        assert_eq!(color(9), PALETTE[1]);
    }
}
