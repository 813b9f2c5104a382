//! The study's figures as SVG (plotters), each returned as a string for the HTML page and
//! written beside it.

use std::collections::BTreeMap;

use plotters::prelude::*;

use crate::analysis::{Analysis, Tally, STAGES};

const W: u32 = 640;
const H: u32 = 400;

fn color(i: usize) -> RGBColor {
    // Ten, so that Fig 5.2's ten stages each have their own.
    const C: [RGBColor; 10] = [
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
    C[i % C.len()]
}

/// A figure that could not be drawn: the plotting library's words.
#[derive(Debug, thiserror::Error)]
#[error("plot: {0}")]
pub struct PlotError(pub String);

type R = Result<String, PlotError>;

fn svg(f: impl FnOnce(DrawingArea<SVGBackend, plotters::coord::Shift>) -> Result<(), Box<dyn std::error::Error + '_>>) -> R {
    let mut s = String::new();
    {
        let root = SVGBackend::with_string(&mut s, (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| PlotError(e.to_string()))?;
        f(root).map_err(|e| PlotError(e.to_string()))?;
    }
    Ok(s)
}

/// Figs 4.1 / 4.2: the nodes on a circle, each direction an arrow as thick as its share.
pub fn node_graph(a: &Analysis, title: &str, weight: impl Fn(&Tally) -> u64) -> R {
    let nodes = a.nodes();
    svg(|root| {
        root.draw(&Text::new(title.to_string(), (10, 10), ("sans-serif", 16).into_font()))?;
        let n = nodes.len().max(1) as f64;
        let (cx, cy, rad) = (W as f64 / 2.0, H as f64 / 2.0 + 10.0, 140.0);
        let pos = |i: usize| {
            let ang = std::f64::consts::TAU * i as f64 / n - std::f64::consts::FRAC_PI_2;
            (cx + rad * ang.cos(), cy + rad * ang.sin())
        };
        let max = a.sent.values().map(&weight).max().unwrap_or(1).max(1) as f64;
        for (i, &s) in nodes.iter().enumerate() {
            for (j, &d) in nodes.iter().enumerate() {
                let w = weight(&a.sent_between(s, d)) as f64;
                if i == j || w == 0.0 {
                    continue;
                }
                let ((x0, y0), (x1, y1)) = (pos(i), pos(j));
                // Offset each direction to its own side of the chord.
                let (dx, dy) = (x1 - x0, y1 - y0);
                let len = (dx * dx + dy * dy).sqrt().max(1.0);
                let (ox, oy) = (-dy / len * 6.0, dx / len * 6.0);
                let width = (1.0 + 11.0 * w / max) as u32;
                let style = color(i).stroke_width(width);
                let p0 = ((x0 + ox + dx * 0.12) as i32, (y0 + oy + dy * 0.12) as i32);
                let p1 = ((x1 + ox - dx * 0.12) as i32, (y1 + oy - dy * 0.12) as i32);
                root.draw(&PathElement::new(vec![p0, p1], style))?;
                root.draw(&Circle::new(p1, 3 + width as i32 / 2, color(i).filled()))?;
                let mid = (((p0.0 + p1.0) / 2) + ox as i32 * 2, ((p0.1 + p1.1) / 2) + oy as i32 * 2);
                root.draw(&Text::new(format!("{}", w as u64), mid, ("sans-serif", 11).into_font()))?;
            }
        }
        for (i, &s) in nodes.iter().enumerate() {
            let (x, y) = pos(i);
            root.draw(&Circle::new((x as i32, y as i32), 20, color(i).filled()))?;
            root.draw(&Text::new(format!("{s}"), (x as i32 - 4, y as i32 - 7), ("sans-serif", 15).into_font().color(&WHITE)))?;
        }
        Ok(())
    })
}

/// A CDF of sizes per series, each by count or weighted by bytes (its flag).
pub fn size_cdf(title: &str, series: &[(String, &BTreeMap<u32, u64>, bool)]) -> R {
    let max_size = series.iter().filter_map(|(_, h, _)| h.keys().last().copied()).max().unwrap_or(1).max(2) as f64;
    let ylabel = match (series.iter().all(|s| s.2), series.iter().any(|s| s.2)) {
        (true, _) => "share of bytes",
        (false, true) => "share of messages / of bytes",
        _ => "share of messages",
    };
    svg(|root| {
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d((1f64..max_size * 1.2).log_scale(), 0f64..1.0)?;
        chart.configure_mesh().x_desc("size (bytes, log)").y_desc(ylabel).draw()?;
        for (i, (name, h, by_bytes)) in series.iter().enumerate() {
            let by_bytes = *by_bytes;
            let total: f64 = h.iter().map(|(&k, &v)| if by_bytes { k as f64 * v as f64 } else { v as f64 }).sum();
            let mut acc = 0.0;
            let mut pts = vec![(1.0, 0.0)];
            for (&k, &v) in h.iter() {
                pts.push((k.max(1) as f64, acc / total.max(1.0)));
                acc += if by_bytes { k as f64 * v as f64 } else { v as f64 };
                pts.push((k.max(1) as f64, acc / total.max(1.0)));
            }
            chart
                .draw_series(LineSeries::new(pts, color(i).stroke_width(2)))?
                .label(name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color(i).stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        Ok(())
    })
}

/// Figs 4.6–4.8: messages sent per second per node over the trace.
pub fn rates(a: &Analysis) -> R {
    let secs = a.rates.values().map(|v| v.len()).max().unwrap_or(1).max(1);
    let max = a.rates.values().flat_map(|v| v.iter().copied()).max().unwrap_or(1).max(1) as f64;
    svg(|root| {
        let mut chart = ChartBuilder::on(&root)
            .caption("Figs 4.6–4.8: messages sent per second, per node", ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..secs as f64, 0f64..max * 1.1)?;
        chart.configure_mesh().x_desc("seconds into the trace").y_desc("messages/s").draw()?;
        for (i, (node, v)) in a.rates.iter().enumerate() {
            let pts: Vec<(f64, f64)> = v.iter().enumerate().map(|(s, &n)| (s as f64 + 0.5, n as f64)).collect();
            chart
                .draw_series(LineSeries::new(pts, color(i).stroke_width(2)))?
                .label(format!("node {node}"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color(i).stroke_width(2)));
        }
        chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
        Ok(())
    })
}

/// Fig 5.2: the request-response cost by stage, ours (median µs) beside the paper's.
pub fn stages(a: &Analysis, paper: &[Option<f64>; 10]) -> R {
    let ours: f64 = a.stages.iter().map(|s| s.p50_us).sum::<f64>().max(1e-3);
    let theirs: f64 = paper.iter().flatten().sum::<f64>().max(1e-3);
    svg(|root| {
        root.draw(&Text::new("Fig 5.2: request-response cost by stage (share of the total)", (10, 10), ("sans-serif", 16).into_font()))?;
        let x0 = 150i32;
        let width = (W as i32) - x0 - 20;
        for (row, (label, vals, total)) in [
            (format!("ssi (median, {:.0} µs)", ours), a.stages.iter().map(|s| s.p50_us).collect::<Vec<_>>(), ours),
            (format!("Solaris MC ({:.0} µs)", theirs), paper.iter().map(|v| v.unwrap_or(0.0)).collect(), theirs),
        ]
        .into_iter()
        .enumerate()
        {
            let y = 50 + row as i32 * 70;
            root.draw(&Text::new(label, (10, y + 15), ("sans-serif", 12).into_font()))?;
            let mut x = x0 as f64;
            for (i, v) in vals.iter().enumerate() {
                let w = width as f64 * v / total;
                if w > 0.0 {
                    root.draw(&Rectangle::new([(x as i32, y), ((x + w) as i32, y + 40)], color(i).filled()))?;
                }
                x += w;
            }
        }
        for (i, s) in STAGES.iter().enumerate() {
            let (col, r) = ((i / 5) as i32, (i % 5) as i32);
            let (lx, ly) = (10 + col * 310, 200 + r * 22);
            root.draw(&Rectangle::new([(lx, ly), (lx + 14, ly + 14)], color(i).filled()))?;
            root.draw(&Text::new(s.to_string(), (lx + 20, ly), ("sans-serif", 12).into_font()))?;
        }
        Ok(())
    })
}
