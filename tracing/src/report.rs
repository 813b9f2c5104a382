//! `ssi trace report`: the study's tables in the terminal (or as JSON), and with `--html` one
//! self-contained page with the figures (inline SVG), each beside the paper's.

use std::fmt::Write as _;
use std::path::Path;

use crate::error::TraceError;
use serde_json::json;

use crate::analysis::{self, Analysis, Tally};
use crate::plots;
use crate::reference::{self, Paper, WORKLOADS};

pub fn run(dir: &Path, html: Option<&Path>, as_json: bool) -> Result<(), TraceError> {
    let a = load(dir, 0)?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&to_json(&a)).map_err(|source| TraceError::Json { path: dir.to_path_buf(), source })?);
    } else {
        print!("{}", text(&a));
    }
    if let Some(out) = html {
        write_html(out, &[(dir.display().to_string(), &a)])?;
    }
    Ok(())
}

/// Writes the page, and each figure as an SVG file beside it (`<page>-fig4_1.svg`, ...).
pub fn write_html(out: &Path, traces: &[(String, &Analysis)]) -> Result<(), TraceError> {
    std::fs::write(out, html_page(traces)?).map_err(TraceError::io("writing", out))?;
    let stem = out.file_stem().and_then(|s| s.to_str()).unwrap_or("report");
    for (k, (_, a)) in traces.iter().enumerate() {
        for (name, svg) in figures(a) {
            let file = if traces.len() == 1 { format!("{stem}-{name}") } else { format!("{stem}-{}-{name}", k + 1) };
            let path = out.with_file_name(file);
            std::fs::write(&path, svg).map_err(TraceError::io("writing", &path))?;
        }
    }
    eprintln!("ssi trace: HTML report in {} (figures beside it as SVG)", out.display());
    Ok(())
}

/// Reads and analyzes a trace, with a progress bar on a terminal.
pub fn load(dir: &Path, keep: usize) -> Result<Analysis, TraceError> {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("reading {msg} {bar:40} {bytes}/{total_bytes} ({eta})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(dir.display().to_string());
    let a = analysis::analyze(dir, keep, |at, total| {
        bar.set_length(total);
        bar.set_position(at);
    });
    bar.finish_and_clear();
    a
}

/// The workload the trace was taken of, if it says (its command names it).
fn workload_of(a: &Analysis) -> Option<&'static str> {
    let c = a.meta.command.join(" ");
    WORKLOADS.into_iter().find(|w| c.contains(&format!("workload {w}")) || (*w == "database" && c.contains("workload db")))
}

fn kb(b: u64) -> f64 {
    b as f64 / 1024.0
}

pub fn text(a: &Analysis) -> String {
    let p = Paper::load();
    let wl = workload_of(a);
    let nodes = a.nodes();
    let mut o = String::new();
    let m = &a.meta;
    let _ = writeln!(
        o,
        "ssi trace report — {} mode, {:.1} s, {} records, {} nodes{}",
        m.mode,
        a.seconds,
        a.records,
        nodes.len(),
        if m.command.is_empty() { String::new() } else { format!(", command: {}", m.command.join(" ")) }
    );
    if let Some(why) = &m.fallback_reason {
        let _ = writeln!(o, "(in-process because: {why})");
    }
    if m.recorder.lost > 0 || m.recorder.refused > 0 {
        let _ = writeln!(
            o,
            "WARNING: {} records lost (ring buffer full), {} refused — counts below are short",
            m.recorder.lost, m.recorder.refused
        );
    }
    let paper_wl = wl.unwrap_or("make");
    let _ = writeln!(
        o,
        "Paper figures beside ours are the Solaris MC study's {} workload{}.",
        paper_wl,
        if wl.is_none() { " (the trace does not name a workload)" } else { "" }
    );

    // The recorder against the ORB's own counters.
    let _ = writeln!(o, "\nRecorded vs the ORB's own counters (messages / bytes sent, per node pair, inside the window)");
    let _ = writeln!(o, "{:<7} {:>12} {:>14} {:>12} {:>14}  ", "pair", "trace msgs", "trace bytes", "ORB msgs", "ORB bytes");
    for c in a.counter_check().iter().filter(|c| c.orb.messages > 0 || c.trace.messages > 0) {
        let (t, orb) = (c.trace, c.orb);
        let _ = writeln!(
            o,
            "{:<7} {:>12} {:>14} {:>12} {:>14}  {}",
            analysis::pair(c.src, c.dst),
            t.messages,
            t.bytes,
            orb.messages,
            orb.bytes,
            if c.equal() { "equal" } else { "DIFFERENT" }
        );
    }
    let _ = writeln!(
        o,
        "{} ({} messages had records outside the window)",
        if a.counters_equal() { "every pair equal" } else { "some pairs differ" },
        a.outside_window.messages
    );

    // Table 4.1.
    let _ = writeln!(o, "\nTable 4.1: messages and KB sent from node to node (ours | paper's {paper_wl})");
    let _ = writeln!(o, "{:<7} {:>10} {:>10} | {:>8} {:>8}", "from:to", "msgs", "KB", "msgs", "KB");
    for &s in &nodes {
        for &d in &nodes {
            if s == d {
                continue;
            }
            let t = a.sent_between(s, d);
            let (pm, pk) =
                p.table_4_1(paper_wl, s, d).map(|(m, k)| (format!("{m:.0}"), format!("{k:.0}"))).unwrap_or(("-".into(), "-".into()));
            let _ = writeln!(o, "{:<7} {:>10} {:>10.0} | {:>8} {:>8}", analysis::pair(s, d), t.messages, kb(t.bytes), pm, pk);
        }
    }
    let tot = a.total_sent();
    let _ = writeln!(
        o,
        "total   {:>10} {:>10.0}   ({} batches: {:.1} messages per transport write)",
        tot.messages,
        kb(tot.bytes),
        a.batches_out,
        tot.messages as f64 / a.batches_out.max(1) as f64
    );

    // Wire level.
    if !m.wire.is_empty() {
        let _ = writeln!(
            o,
            "\nWire level (the daemons' send/write syscalls on the ORB connections, at the socket layer) vs ORB level (encoded messages)"
        );
        let _ = writeln!(
            o,
            "{:<7} {:>14} {:>14} {:>9} {:>10} {:>12}{}",
            "pair",
            "wire bytes",
            "ORB bytes",
            "overhead",
            "syscalls",
            "msgs/syscall",
            if m.syscalls { "  iovecs/syscall" } else { "" }
        );
        for w in &m.wire {
            let orb = a.sent_between(w.src, w.dst);
            let iov = if m.syscalls { format!(" {:>13.2}", w.t.iovecs_out as f64 / w.t.calls_out.max(1) as f64) } else { String::new() };
            let _ = writeln!(
                o,
                "{:<7} {:>14} {:>14} {:>8.3}× {:>10} {:>12.2}{iov}",
                analysis::pair(w.src, w.dst),
                w.t.bytes_out,
                orb.bytes,
                w.t.bytes_out as f64 / orb.bytes.max(1) as f64,
                w.t.calls_out,
                orb.messages as f64 / w.t.calls_out.max(1) as f64
            );
        }
        let wire: u64 = m.wire.iter().map(|w| w.t.bytes_out).sum();
        let _ = writeln!(
            o,
            "all     {:>14} {:>14} {:>8.3}×  (HTTP/2 + gRPC framing, and the links' own traffic)",
            wire,
            tot.bytes,
            wire as f64 / tot.bytes.max(1) as f64
        );
    } else {
        let _ = writeln!(o, "\nWire level: not recorded ({} mode has no kernel tracepoints)", m.mode);
    }

    // Message sizes.
    let _ = writeln!(o, "\nFigs 4.3–4.5: message sizes (bytes, whole message with its framing), per sending node");
    let _ = writeln!(
        o,
        "{:<6} {:>10} {:>6} {:>6} {:>6} {:>8} {:>10} {:>12}",
        "node", "messages", "min", "p50", "p80", "max", "≤256 B", "bytes ≥4KB"
    );
    let mut rows: Vec<(String, std::collections::BTreeMap<u32, u64>)> = a.sizes.iter().map(|(n, h)| (format!("{n}"), h.clone())).collect();
    rows.push(("all".into(), a.all_sizes()));
    for (name, h) in &rows {
        let n: u64 = h.values().sum();
        let (small, big) = analysis::shares(h, 0, 256, 4096);
        let _ = writeln!(
            o,
            "{:<6} {:>10} {:>6} {:>6} {:>6} {:>8} {:>9.1}% {:>11.1}%",
            name,
            n,
            h.keys().next().copied().unwrap_or(0),
            analysis::quantile(h, 0.5),
            analysis::quantile(h, 0.8),
            h.keys().last().copied().unwrap_or(0),
            small * 100.0,
            big * 100.0
        );
    }
    let pk = |k: &str| p.num(&["message_sizes", paper_wl, k]);
    let _ = writeln!(
        o,
        "paper ({paper_wl}): min {} B, p80 {} B, {} of all workloads' messages 68–256 B{}",
        p.num(&["message_sizes", "min_message_bytes"]).unwrap_or(0.0),
        pk("p80_bytes").unwrap_or(0.0),
        pct(p.num(&["message_sizes", "all_workloads_share_68_to_256"])),
        pk("share_of_bytes_in_msgs_ge_4KB").map(|v| format!(", {:.0}% of bytes in messages ≥ 4 KB", v * 100.0)).unwrap_or_default()
    );

    // Rates.
    let _ = writeln!(o, "\nFigs 4.6–4.8: messages sent per second, per node (ours: mean / peak | paper's mean)");
    for &n in &nodes {
        let v = a.rates.get(&n).cloned().unwrap_or_default();
        let mean = v.iter().sum::<u64>() as f64 / a.seconds.max(1e-9);
        let _ = writeln!(
            o,
            "node {n}: {:>10.0} / {:>8} | {}",
            mean,
            v.iter().max().copied().unwrap_or(0),
            p.num(&["message_rates", paper_wl, &format!("node{n}")]).map(|v| format!("{v:.0}")).unwrap_or("-".into())
        );
    }

    // Fig 5.2.
    let paper = reference::fig_5_2(&p);
    let _ = writeln!(
        o,
        "\nFig 5.2: request-response cost by stage ({} complete two-way invocations, {} without every stage)",
        a.rr_complete, a.rr_incomplete
    );
    let _ =
        writeln!(o, "{:<30} {:>9} {:>9} {:>9} {:>7} | {:>8} {:>7}", "stage", "p50 µs", "mean µs", "p99 µs", "share", "paper µs", "share");
    let total_mean: f64 = a.stages.iter().map(|s| s.mean_us).sum::<f64>().max(1e-9);
    let paper_total: f64 = paper.iter().flatten().sum();
    for (s, pv) in a.stages.iter().zip(paper) {
        let _ = writeln!(
            o,
            "{:<30} {:>9.1} {:>9.1} {:>9.1} {:>6.1}% | {:>8} {:>7}",
            s.name,
            s.p50_us,
            s.mean_us,
            s.p99_us,
            100.0 * s.mean_us / total_mean,
            pv.map(|v| format!("{v:.0}")).unwrap_or("-".into()),
            pv.map(|v| format!("{:.1}%", 100.0 * v / paper_total)).unwrap_or("-".into())
        );
    }
    let _ = writeln!(
        o,
        "{:<30} {:>9.1} {:>9.1} {:>9.1} {:>7} | {:>8.0}",
        "total (start → completion)", a.rr_total.p50_us, a.rr_total.mean_us, a.rr_total.p99_us, "", paper_total
    );
    let transport: f64 = [1, 2, 7, 8].iter().map(|&i| a.stages[i].mean_us).sum();
    let _ = writeln!(
        o,
        "transport share (queue → transport → peer, both ways): {:.0}% (paper {}); invocation {:.1} µs of {:.1} µs",
        100.0 * transport / total_mean,
        pct(p.num(&["request_response", "transport_share"])),
        a.stages[5].mean_us,
        a.rr_total.mean_us
    );

    // Tables 6.1 / 6.2, Fig 6.2.
    let n: u64 = a.nbufs.iter().sum();
    let pt = p.triple("table_6_1", paper_wl);
    let _ = writeln!(o, "\nTable 6.1: share of messages with 1, 2, 3 buffers");
    for i in 0..3 {
        let _ = writeln!(
            o,
            "{} buffer{}: {:>6.1}% | paper {}",
            i + 1,
            if i == 0 { " " } else { "s" },
            100.0 * a.nbufs[i] as f64 / n.max(1) as f64,
            pct(pt.map(|t| t[i]))
        );
    }
    let b: u64 = a.position_bytes.iter().sum();
    let pt = p.triple("table_6_2", paper_wl);
    let _ = writeln!(o, "\nTable 6.2 and Fig 6.2: bytes by buffer position");
    let _ = writeln!(o, "{:<22} {:>8} {:>6} {:>6} {:>8} {:>8} | {:>7}", "buffer", "share", "p50", "p80", "max", "present", "paper");
    for (i, name) in ["1 (ORB header)", "2 (payload)", "3 (object protocol)"].iter().enumerate() {
        let h = &a.position_sizes[i];
        let _ = writeln!(
            o,
            "{:<22} {:>7.1}% {:>6} {:>6} {:>8} {:>8} | {:>7}",
            name,
            100.0 * a.position_bytes[i] as f64 / b.max(1) as f64,
            analysis::quantile(h, 0.5),
            analysis::quantile(h, 0.8),
            h.keys().last().copied().unwrap_or(0),
            h.values().sum::<u64>(),
            pct(pt.map(|t| t[i]))
        );
    }
    o
}

fn pct(v: Option<f64>) -> String {
    v.map(|v| format!("{:.1}%", v * 100.0)).unwrap_or_else(|| "-".into())
}

pub fn to_json(a: &Analysis) -> serde_json::Value {
    let deltas: Vec<_> = a
        .counter_check()
        .iter()
        .map(|c| {
            json!({"src": c.src, "dst": c.dst, "orb_messages": c.orb.messages, "orb_bytes": c.orb.bytes, "trace_messages": c.trace.messages, "trace_bytes": c.trace.bytes})
        })
        .collect();
    json!({
        "mode": a.meta.mode,
        "fallback_reason": a.meta.fallback_reason,
        "command": a.meta.command,
        "recorder": a.meta.recorder,
        "wire": a.meta.wire,
        "counters_vs_trace": deltas,
        "analysis": a,
    })
}

fn table_html(head: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut s = String::from("<table><tr>");
    for h in head {
        let _ = write!(s, "<th>{h}</th>");
    }
    s.push_str("</tr>");
    for r in rows {
        s.push_str("<tr>");
        for c in r {
            let _ = write!(s, "<td>{c}</td>");
        }
        s.push_str("</tr>");
    }
    s.push_str("</table>");
    s
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The study's figures for one trace, as (file name, SVG).
pub fn figures(a: &Analysis) -> Vec<(&'static str, String)> {
    let p = Paper::load();
    let fig = |r: Result<String, crate::plots::PlotError>| r.unwrap_or_else(|e| format!("<p>plot failed: {}</p>", esc(&e.0)));
    let per_node = |bytes: bool| -> Vec<(String, &std::collections::BTreeMap<u32, u64>, bool)> {
        a.sizes.iter().map(|(n, h)| (format!("node {n}"), h, bytes)).collect()
    };
    let all = a.all_sizes();
    let pos: Vec<(String, &std::collections::BTreeMap<u32, u64>, bool)> =
        ["buffer 1 (header)", "buffer 2 (payload)", "buffer 3 (protocol)"]
            .iter()
            .zip(&a.position_sizes)
            .filter(|(_, h)| !h.is_empty())
            .map(|(n, h)| (n.to_string(), h, false))
            .collect();
    vec![
        ("fig4_1.svg", fig(plots::node_graph(a, "Fig 4.1: messages between nodes", |t: &Tally| t.messages))),
        ("fig4_2.svg", fig(plots::node_graph(a, "Fig 4.2: KB between nodes", |t: &Tally| t.bytes / 1024))),
        ("fig4_3.svg", fig(plots::size_cdf("Fig 4.3: message sizes by count, per node", &per_node(false)))),
        ("fig4_4.svg", fig(plots::size_cdf("Fig 4.4: message sizes weighted by bytes, per node", &per_node(true)))),
        (
            "fig4_5.svg",
            fig(plots::size_cdf(
                "Fig 4.5: all nodes, by count and by bytes",
                &[("by count".into(), &all, false), ("by bytes".into(), &all, true)],
            )),
        ),
        ("fig4_6.svg", fig(plots::rates(a))),
        ("fig5_2.svg", fig(plots::stages(a, &reference::fig_5_2(&p)))),
        ("fig6_2.svg", fig(plots::size_cdf("Fig 6.2: buffer sizes by position", &pos))),
    ]
}

/// One self-contained page for one or more traces (the demo puts its workloads on one).
pub fn html_page(traces: &[(String, &Analysis)]) -> Result<String, TraceError> {
    let p = Paper::load();
    let mut body = String::new();
    for (name, a) in traces {
        let wl = workload_of(a).unwrap_or("make");
        let f = figures(a);
        let _ = write!(body, "<h2>{}</h2><pre>{}</pre>", esc(name), esc(&text(a)));
        let _ = write!(body, "<h3>Figs 4.1 / 4.2: who talks to whom</h3><div class=row>{}{}</div>", f[0].1, f[1].1);
        let _ = write!(body, "<h3>Figs 4.3–4.5: message-size CDFs</h3><div class=row>{}{}{}</div>", f[2].1, f[3].1, f[4].1);
        let _ = write!(body, "<h3>Figs 4.6–4.8: message rates</h3>{}", f[5].1);
        let _ = write!(body, "<h3>Fig 5.2: request-response breakdown</h3>{}", f[6].1);
        let _ = write!(body, "<h3>Fig 6.2: size by buffer position</h3>{}", f[7].1);
        let n: u64 = a.nbufs.iter().sum::<u64>().max(1);
        let t61 = p.triple("table_6_1", wl);
        let rows = (0..3)
            .map(|i| vec![format!("{}", i + 1), format!("{:.1}%", 100.0 * a.nbufs[i] as f64 / n as f64), pct(t61.map(|t| t[i]))])
            .collect();
        let _ = write!(body, "<h3>Table 6.1</h3>{}", table_html(&["buffers", "ssi", &format!("paper ({wl})")], rows));
    }
    Ok(format!(
        "<!doctype html><html><head><meta charset=utf-8><title>ssi trace report</title><style>\
         body{{font-family:sans-serif;margin:2em;max-width:1400px}} pre{{background:#f6f6f6;padding:1em;overflow-x:auto;font-size:12px}}\
         .row{{display:flex;flex-wrap:wrap;gap:1em}} table{{border-collapse:collapse}} td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}\
         </style></head><body><h1>ssi: the Solaris MC communication study on this cluster</h1>{body}</body></html>\n"
    ))
}
