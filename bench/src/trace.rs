//! `ssi bench trace`: what recording costs the ORB. On a 2-node local cluster (node 1 on CPU
//! 0 driving, node 2 on CPU 1 serving, as in `ssi bench orb`), the same cases run with no
//! recorder, with the eBPF recorder attached, and with the in-process recorder, interleaved
//! over rounds (the order turning each round); the recorder is a separate `ssi trace record`
//! process, as a user runs it.
//! Reports two-way p50 and one-way throughput at 128 B with their ratios to the unrecorded
//! run, the cost per recorded event, and checks the eBPF traces' message and byte counts
//! against the ORB's own counters, pair by pair.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::error::{Context, Error, Result};
use crate::servant::proto::{Empty, RunRequest};
use ssi_node::local::{self, UpOptions};
use ssi_node::{bail, failed};
use ssi_trace::stats::median;

pub struct Options {
    pub json: bool,
    pub rounds: u32,
    pub duration: Duration,
}

const MODES: [&str; 3] = ["off", "bpf", "in-process"];
const CASES: [&str; 2] = ["orb_twoway", "orb_oneway"];
/// Records per two-way invocation: batch out and batch in on each side, one request-response
/// record per side (carried by two probe hits, one per node).
const RECORDS_PER_TWOWAY: f64 = 6.0;

#[derive(Default)]
struct Samples {
    p50: Vec<f64>,
    rate: Vec<f64>,
}

pub fn run(o: &Options) -> Result<()> {
    super::in_scratch_dir("trace", "recording with eBPF", |dir| run_in(dir, o))
}

fn run_in(dir: &Path, o: &Options) -> Result<()> {
    let cdir = dir.join("cluster");
    let cfg = local::up(&UpOptions { pin: true, with: vec![crate::servant::NAME.into()], ..UpOptions::new(cdir.clone(), 2) })?.config();
    let s1 = cfg.node(1)?.control_socket.clone();
    let host = cfg.node(2)?.addr.ip().to_string();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut c1 = rt.block_on(crate::servant::connect(&s1))?;
    let mut c2 = rt.block_on(crate::servant::connect(&cfg.node(2)?.control_socket))?;
    let ports = rt.block_on(c2.serve(Empty {}))?.into_inner();
    let mut samples: std::collections::BTreeMap<(usize, usize), Samples> = Default::default();
    let mut checks = Vec::new();
    for round in 0..o.rounds {
        // The order of the modes turns with the rounds, so drift in the machine's load does
        // not always favour the same one.
        for k in 0..MODES.len() {
            let mi = (k + round as usize) % MODES.len();
            let mode = &MODES[mi];
            let tdir = dir.join(format!("trace-{round}-{mode}"));
            let mut rec = if *mode == "off" { None } else { Some(start_recorder(&cdir, &tdir, *mode == "in-process")?) };
            for (ci, case) in CASES.iter().enumerate() {
                if !o.json {
                    eprint!("\rround {}/{}: {case}, recorder {mode}            ", round + 1, o.rounds);
                }
                let req = RunRequest {
                    case: case.to_string(),
                    payload: 128,
                    duration_ms: o.duration.as_millis() as u64,
                    target: 2,
                    target_host: host.clone(),
                    raw_tcp_port: ports.raw_tcp_port,
                    tonic_port: ports.tonic_port,
                    inflight: 1,
                };
                let r = rt.block_on(c1.run(req)).map_err(|s| failed!("{case}: {}", s.message()))?.into_inner();
                let s = samples.entry((ci, mi)).or_default();
                s.p50.push(r.p50_us);
                s.rate.push(r.ops as f64 / r.seconds);
            }
            if let Some(child) = rec.take() {
                stop_recorder(child)?;
                let a = ssi_trace::analysis::analyze(&tdir, 0, |_, _| {})?;
                if a.meta.mode != *mode {
                    bail!("the recorder ran in {} mode, not {mode}: {}", a.meta.mode, a.meta.fallback_reason.clone().unwrap_or_default());
                }
                checks.push((mode.to_string(), a.counters_equal(), a.records, a.meta.recorder.lost));
                let _ = std::fs::remove_dir_all(&tdir);
            }
        }
    }
    if !o.json {
        eprint!("\r{:70}\r", "");
    }
    report(o, &samples, &checks);
    Ok(())
}

/// `ssi trace record` in the background; returns once it says it is recording.
pub(crate) fn start_recorder(cluster: &Path, out: &Path, in_process: bool) -> Result<Child> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(["trace", "record", "--dir"]).arg(cluster).arg("-o").arg(out);
    if in_process {
        cmd.arg("--in-process");
    }
    let mut child = cmd.stderr(Stdio::piped()).stdout(Stdio::null()).spawn().context("starting ssi trace record")?;
    let mut lines = BufReader::new(child.stderr.take().expect("piped")).lines();
    loop {
        match lines.next() {
            Some(Ok(l)) if l.contains("recording") => break,
            Some(Ok(_)) => {}
            _ => {
                let _ = child.wait();
                bail!("ssi trace record stopped before recording");
            }
        }
    }
    // Keep draining its stderr so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Ok(child)
}

pub(crate) fn stop_recorder(child: Child) -> Result<()> {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGINT)?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("ssi trace record failed ({})", out.status);
    }
    Ok(())
}

fn report(o: &Options, s: &std::collections::BTreeMap<(usize, usize), Samples>, checks: &[(String, bool, u64, u64)]) {
    let p50 = |m: usize| median(&s[&(0, m)].p50);
    let rate = |m: usize| median(&s[&(1, m)].rate);
    let per_event = |m: usize| (p50(m) - p50(0)) / RECORDS_PER_TWOWAY;
    if o.json {
        let modes: Vec<_> = MODES
            .iter()
            .enumerate()
            .map(|(m, name)| {
                json!({"recorder": name, "twoway_p50_us": p50(m), "twoway_p50_ratio": p50(m) / p50(0),
                       "oneway_per_s": rate(m), "oneway_ratio": rate(m) / rate(0), "us_per_event": if m == 0 { 0.0 } else { per_event(m) }})
            })
            .collect();
        let checks: Vec<_> =
            checks.iter().map(|(m, ok, n, lost)| json!({"recorder": m, "counters_equal": ok, "records": n, "lost": lost})).collect();
        println!(
            "{}",
            json!({"bench": "trace", "rounds": o.rounds, "case_seconds": o.duration.as_secs_f64(), "modes": modes, "checks": checks})
        );
        return;
    }
    println!("ssi bench trace — 2-node local cluster, node 1 (driver) on CPU 0, node 2 (server) on CPU 1; 128 B payloads");
    println!("{} rounds × {:.1} s per case, recorder modes interleaved (order turning each round); medians over rounds; ratio to no recorder (same run)", o.rounds, o.duration.as_secs_f64());
    println!();
    println!("{:<12} {:>14} {:>8} {:>16} {:>8} {:>12}", "recorder", "two-way p50 µs", "ratio", "one-way msgs/s", "ratio", "µs/event");
    for (m, name) in MODES.iter().enumerate() {
        let ev = if m == 0 { "-".to_string() } else { format!("{:.2}", per_event(m)) };
        println!("{:<12} {:>14.1} {:>8.3} {:>16.0} {:>8.3} {:>12}", name, p50(m), p50(m) / p50(0), rate(m), rate(m) / rate(0), ev);
    }
    println!();
    println!("µs/event: the two-way p50's rise over the {RECORDS_PER_TWOWAY} records of one invocation (batch out and in on each side, one request-response record per side), all costs included: building the records, the probe hits that carry them (one per 5 ms or 12 KiB of records per node), the kernel's side, the recorder process.");
    for (m, ok, n, lost) in checks {
        println!(
            "{m} trace: {n} records, {lost} lost; messages and bytes per node pair {} the ORB's counters",
            if *ok { "equal" } else { "DIFFER FROM" }
        );
    }
}
