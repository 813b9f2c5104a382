//! `ssi bench orb`: the ORB against its baselines, on a 2-node local cluster, in one run.
//!
//! Placement: node 1 (the driver) on CPU 0, node 2 (the server) on CPU 1, every case between
//! the same two processes. Cases are interleaved over several rounds; the report gives the
//! median of the rounds and the ratio to raw TCP measured in the same run.

use ssi_trace::stats::median;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;

use crate::error::{Context, Error, Result};
use crate::servant::proto::{Empty, RunReply, RunRequest};
use crate::servant::CASES;
use ssi_node::failed;
use ssi_node::local::{self, UpOptions};

pub struct Options {
    pub json: bool,
    pub rounds: u32,
    pub duration: Duration,
    pub payloads: Vec<u32>,
    pub inflight: u32,
    /// Record the run into this trace directory.
    pub trace: Option<PathBuf>,
}

#[derive(Default, Clone)]
struct Agg {
    p50: Vec<f64>,
    p99: Vec<f64>,
    rate: Vec<f64>,
    requests_sent: u64,
}

pub fn run(o: &Options) -> Result<()> {
    if cfg!(debug_assertions) {
        eprintln!("warning: this is a debug build of ssi; its numbers say little (cargo build --release)");
    }
    let dir = tempdir()?;
    let res = run_in(&dir, o);
    let _ = local::down(&dir);
    let res = res.map(|Run { results, placement, pids }| {
        // Each daemon logs its ORB counters when it stops: totals for checking probe counts.
        let cfg = local::load(&dir).ok();
        let nodes: Vec<NodeTotal> = pids
            .iter()
            .map(|(id, pid)| NodeTotal {
                node: *id,
                pid: *pid,
                requests_sent: cfg.as_ref().and_then(|c| c.node(*id).ok()).and_then(|n| local::final_counter(n, "requests_sent")),
            })
            .collect();
        report(o, &placement, &results, &nodes);
    });
    let _ = std::fs::remove_dir_all(&dir);
    res
}

struct NodeTotal {
    node: u32,
    pid: i32,
    requests_sent: Option<u64>,
}

fn tempdir() -> Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("ssi-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

type Results = BTreeMap<(u32, usize), Agg>;

/// What a run yields: the results, the placement, each node's daemon pid.
struct Run {
    results: Results,
    placement: String,
    pids: Vec<(u32, i32)>,
}

fn run_in(dir: &std::path::Path, o: &Options) -> Result<Run> {
    let cfg =
        local::up(&UpOptions { pin: true, with: vec![crate::servant::NAME.into()], ..UpOptions::new(dir.to_path_buf(), 2) })?.config();
    let ncpu = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let placement = if ncpu >= 2 {
        "node 1 (driver) on CPU 0, node 2 (server) on CPU 1".to_string()
    } else {
        "both nodes on CPU 0 (one CPU)".to_string()
    };
    let pids: Vec<(u32, i32)> = cfg.nodes.values().filter_map(|n| ssi_node::pidfile::node_pid(n).map(|p| (n.id, p))).collect();
    let s1 = cfg.node(1)?.control_socket.clone();
    let s2 = cfg.node(2)?.control_socket.clone();
    let host = cfg.node(2)?.addr.ip().to_string();
    let recorder = match &o.trace {
        Some(t) => Some(crate::trace::start_recorder(dir, t, false)?),
        None => None,
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let results: BTreeMap<(u32, usize), Agg> = rt.block_on(async {
        let mut c1 = crate::servant::connect(&s1).await?;
        let mut c2 = crate::servant::connect(&s2).await?;
        let ports = c2.serve(Empty {}).await.context("starting the echo servers on node 2")?.into_inner();
        let mut agg: BTreeMap<(u32, usize), Agg> = BTreeMap::new();
        for round in 0..o.rounds {
            for &payload in &o.payloads {
                for (ci, case) in CASES.iter().enumerate() {
                    if !o.json {
                        eprint!("\rround {}/{}: {case} {payload} B            ", round + 1, o.rounds);
                    }
                    let req = RunRequest {
                        case: case.to_string(),
                        payload,
                        duration_ms: o.duration.as_millis() as u64,
                        target: 2,
                        target_host: host.clone(),
                        raw_tcp_port: ports.raw_tcp_port,
                        tonic_port: ports.tonic_port,
                        inflight: o.inflight,
                    };
                    let r: RunReply = c1.run(req).await.map_err(|s| failed!("{case} {payload} B: {}", s.message()))?.into_inner();
                    let a = agg.entry((payload, ci)).or_default();
                    a.p50.push(r.p50_us);
                    a.p99.push(r.p99_us);
                    a.rate.push(r.ops as f64 / r.seconds);
                    a.requests_sent += r.requests_sent;
                }
            }
        }
        if !o.json {
            eprint!("\r{:60}\r", "");
        }
        Ok::<_, Error>(agg)
    })?;
    if let (Some(child), Some(t)) = (recorder, &o.trace) {
        crate::trace::stop_recorder(child)?;
        let a = ssi_trace::analysis::analyze(t, 0, |_, _| {})?;
        let total = a.total_sent();
        eprintln!(
            "trace {} ({} mode): {} messages, {} bytes between nodes; per node pair {} the ORB's own counters",
            t.display(),
            a.meta.mode,
            total.messages,
            total.bytes,
            if a.counters_equal() { "equal to" } else { "DIFFERENT FROM" }
        );
    }
    Ok(Run { results, placement, pids })
}

fn report(o: &Options, placement: &str, r: &Results, nodes: &[NodeTotal]) {
    let mut out = Vec::new();
    let mut total_requests = 0u64;
    for (&(payload, ci), a) in r {
        let case = CASES[ci];
        let base = &r[&(payload, 0)];
        let (p50, p99, rate) = (median(&a.p50), median(&a.p99), median(&a.rate));
        total_requests += a.requests_sent;
        let latency_case = !matches!(case, "orb_oneway");
        if latency_case {
            out.push(json!({"case": case, "metric": "p50_us", "value": p50, "unit": "us", "payload": payload}));
            out.push(json!({"case": case, "metric": "p99_us", "value": p99, "unit": "us", "payload": payload}));
            out.push(
                json!({"case": case, "metric": "p50_ratio_to_raw_tcp", "value": p50 / median(&base.p50), "unit": "x", "payload": payload}),
            );
        }
        out.push(json!({"case": case, "metric": "ops_per_s", "value": rate, "unit": "1/s", "payload": payload}));
    }
    if o.json {
        let v = json!({
            "bench": "orb",
            "placement": placement,
            "rounds": o.rounds,
            "case_seconds": o.duration.as_secs_f64(),
            "inflight": o.inflight,
            "orb_requests_sent": total_requests,
            "nodes": nodes.iter().map(|n| json!({"node": n.node, "pid": n.pid, "requests_sent": n.requests_sent})).collect::<Vec<_>>(),
            "results": out,
        });
        println!("{v}");
        return;
    }
    println!("ssi bench orb — 2-node local cluster; {placement}");
    println!(
        "{} rounds × {:.1} s per case, cases interleaved; medians over rounds; ratio = p50 / raw_tcp p50 (same run)",
        o.rounds,
        o.duration.as_secs_f64()
    );
    println!();
    println!("{:<22} {:>7} {:>10} {:>10} {:>8} {:>14}", "case", "payload", "p50 µs", "p99 µs", "ratio", "ops/s");
    for (&(payload, ci), a) in r {
        let case = CASES[ci];
        let base = median(&r[&(payload, 0)].p50);
        let rate = median(&a.rate);
        if case == "orb_oneway" {
            println!("{:<22} {:>7} {:>10} {:>10} {:>8} {:>14.0}", case, payload, "-", "-", "-", rate);
        } else {
            let p50 = median(&a.p50);
            println!("{:<22} {:>7} {:>10.1} {:>10.1} {:>8.2} {:>14.0}", case, payload, p50, median(&a.p99), p50 / base, rate);
        }
    }
    println!();
    println!(
        "orb_twoway_pipelined keeps {} invocations in flight. ORB requests sent by node 1 during the cases: {total_requests}",
        o.inflight
    );
    for n in nodes {
        let total = n.requests_sent.map(|v| v.to_string()).unwrap_or_else(|| "?".into());
        println!("node {} (pid {}): {total} ORB requests sent over its life", n.node, n.pid);
    }
}
