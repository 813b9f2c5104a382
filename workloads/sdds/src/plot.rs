//! The AMOS-SDDS paper's Figs 3–4 for our runs: elapsed time and time per tuple against the
//! file size, each series beside the paper's (SVG, plotters; log-scale time).

use plotters::prelude::*;

/// One line of a figure: its name and (tuples, seconds) points.
pub type Series = (String, Vec<(f64, f64)>);

/// Seconds (or µs per tuple when `per_tuple`) against tuples, log-scale y.
pub fn svg(title: &str, series: &[Series], per_tuple: bool) -> Result<String, crate::SddsError> {
    let pts = |s: &Series| -> Vec<(f64, f64)> {
        s.1.iter().map(|(n, t)| (*n, if per_tuple { t / n * 1e6 } else { *t })).filter(|p| p.1 > 0.0).collect()
    };
    let all: Vec<(f64, f64)> = series.iter().flat_map(pts).collect();
    let (x1, y0, y1) = all.iter().fold((1.0f64, f64::MAX, 0f64), |(x, lo, hi), p| (x.max(p.0), lo.min(p.1), hi.max(p.1)));
    let (y0, y1) = if all.is_empty() { (1e-3, 1.0) } else { (y0 / 2.0, y1 * 2.0) };
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (720, 440)).into_drawing_area();
        root.fill(&WHITE).map_err(plot)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..x1 * 1.05, (y0..y1).log_scale())
            .map_err(plot)?;
        chart
            .configure_mesh()
            .x_desc("tuples")
            .y_desc(if per_tuple { "µs per tuple" } else { "seconds" })
            .x_label_formatter(&|v| format!("{:.0}", v))
            .y_label_formatter(&|v| format!("{v:.3}"))
            .draw()
            .map_err(plot)?;
        for (k, s) in series.iter().enumerate() {
            let c = Palette99::pick(k).to_rgba();
            let p = pts(s);
            chart
                .draw_series(LineSeries::new(p.clone(), c.stroke_width(2)))
                .map_err(plot)?
                .label(s.0.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
            chart.draw_series(p.iter().map(|q| Circle::new(*q, 3, c.filled()))).map_err(plot)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(plot)?;
        root.present().map_err(plot)?;
    }
    Ok(out)
}

fn plot(e: impl std::fmt::Display) -> crate::SddsError {
    crate::SddsError::Plot(e.to_string())
}
