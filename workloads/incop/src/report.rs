//! A run's report for people: totals, latency percentiles, and the share of calls meeting
//! the deadline per interval (the paper's Fig. 4(b)/(c)) as text and as an SVG plot.

use plotters::prelude::*;

use crate::proto::{Interval, Report};

pub fn share(i: &Interval) -> f64 {
    if i.calls == 0 {
        1.0
    } else {
        i.ok as f64 / i.calls as f64
    }
}

/// One line per interval: its first call, when it was offered, the share in deadline, a bar.
pub fn intervals_text(r: &Report) -> String {
    let mut s = String::new();
    for i in &r.intervals {
        let sh = share(i);
        let bar = "#".repeat((sh * 40.0).round() as usize);
        s.push_str(&format!("  {:>9} {:>7.2} s {:>8.3}% {bar}\n", i.first_seq, i.issued_s, sh * 100.0));
    }
    s
}

/// The per-interval share in deadline against calls offered, one series per run.
pub fn intervals_svg(title: &str, series: &[(String, &Report)]) -> Result<String, crate::IncopError> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (720, 400)).into_drawing_area();
        root.fill(&WHITE).map_err(plot)?;
        let max_x = series.iter().flat_map(|(_, r)| r.intervals.iter().map(|i| i.first_seq + i.calls)).max().unwrap_or(1) as f64;
        let min_y = series.iter().flat_map(|(_, r)| r.intervals.iter().map(share)).fold(1.0f64, f64::min);
        let lo = ((min_y * 100.0 - 1.0).floor()).clamp(0.0, 99.0);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(55)
            .build_cartesian_2d(0f64..max_x, lo..100.5f64)
            .map_err(plot)?;
        chart
            .configure_mesh()
            .x_label_formatter(&|v| format!("{:.0}", v))
            .x_desc("calls offered")
            .y_desc("% of calls within the deadline")
            .draw()
            .map_err(plot)?;
        for (k, (name, r)) in series.iter().enumerate() {
            let c = Palette99::pick(k).to_rgba();
            let pts: Vec<(f64, f64)> = r.intervals.iter().map(|i| ((i.first_seq + i.calls) as f64, share(i) * 100.0)).collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
                .map_err(plot)?
                .label(name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
            chart.draw_series(pts.iter().map(|p| Circle::new(*p, 2, c.filled()))).map_err(plot)?;
        }
        chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw().map_err(plot)?;
        root.present().map_err(plot)?;
    }
    Ok(out)
}

/// Fig. 4(a): the best rate per threshold (all, 97%, 95% in deadline) against the number of
/// QEs, the paper's level marked.
pub fn fig4a_svg(rows: &[(u32, [f64; 3])], paper_rate: f64) -> Result<String, crate::IncopError> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (640, 400)).into_drawing_area();
        root.fill(&WHITE).map_err(plot)?;
        let x0 = rows.first().map(|r| r.0).unwrap_or(2) as f64 - 0.5;
        let x1 = rows.last().map(|r| r.0).unwrap_or(2) as f64 + 0.5;
        let ymax = rows.iter().map(|r| r.1[2]).fold(paper_rate, f64::max) * 1.15;
        let mut chart = ChartBuilder::on(&root)
            .caption("IN coprocessor on ssi: highest rate meeting the deadline (cf. paper Fig. 4(a))", ("sans-serif", 15))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(x0..x1, 0f64..ymax)
            .map_err(plot)?;
        chart
            .configure_mesh()
            .x_labels(rows.len() + 1)
            .x_label_formatter(&|v| if v.fract() == 0.0 { format!("{v:.0}") } else { String::new() })
            .y_label_formatter(&|v| format!("{:.0}", v))
            .x_desc("QEs")
            .y_desc("calls/s")
            .draw()
            .map_err(plot)?;
        for (k, name) in ["all", "97%", "95%"].iter().enumerate() {
            let c = Palette99::pick(k).to_rgba();
            let pts: Vec<(f64, f64)> = rows.iter().map(|r| (r.0 as f64, r.1[k])).collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
                .map_err(plot)?
                .label(format!("{name} in deadline"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
            chart.draw_series(pts.iter().map(|p| Circle::new(*p, 3, c.filled()))).map_err(plot)?;
        }
        let grey = RGBColor(120, 120, 120);
        chart
            .draw_series(LineSeries::new(vec![(x0, paper_rate), (x1, paper_rate)], grey.stroke_width(1)))
            .map_err(plot)?
            .label(format!("paper: {paper_rate:.0} (all, 12 nodes)"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], grey.stroke_width(1)));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(plot)?;
        root.present().map_err(plot)?;
    }
    Ok(out)
}

fn plot(e: impl std::fmt::Display) -> crate::IncopError {
    crate::IncopError::Plot(e.to_string())
}
