//! `ssi bench net`: what the gateway's dispatcher costs, on a 4-node `--netns` cluster with
//! wrk in `ext` and nginx serving the paper's 1,500-byte document, all in one run:
//! - direct (the baseline): nginx on node 3 at node 3's own address, the gateway a plain IP
//!   router on the way (opened for the benchmark only) — the same path without the dispatcher;
//! - through the gateway: the same nginx at the cluster's global address, every connection
//!   steered by the dispatcher;
//! - a scalable service: nginx on nodes 1, 3 and 4 as one service at the global address;
//! - for reference, nginx on the gateway itself at the global address (a shorter path: no
//!   hop over the interconnect at all).
//!
//! Each case keep-alive and `Connection: close`, interleaved over rounds so a slow spell hits
//! every case alike; the figures are medians of rounds, with the ratio to direct, and the
//! service's per-node request counts come from the nginx access logs.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use serde_json::json;

use crate::error::{Error, Result};
use ssi_netsap::topology::{Topology, GLOBAL_ADDRESS};
use ssi_node::gateway;
use ssi_node::local::{self, UpOptions};
use ssi_node::{bail, failed};
use ssi_trace::stats::median;
use ssi_web::nginx::{paper_document, Nginx, Site};
use ssi_web::wrk::{self, Load};

pub struct Options {
    pub json: bool,
    pub rounds: u32,
    pub seconds: f64,
    pub connections: u32,
    pub dispatch: ssi_netsap::dispatch::Mode,
}

struct Case {
    name: &'static str,
    addr: Ipv4Addr,
    port: u16,
}

/// The nginx instances: (port, nodes, service).
const SERVERS: [(u16, &[u32], Option<&str>); 3] = [(8002, &[3], None), (80, &[1, 3, 4], Some("web")), (8001, &[2], None)];

/// The client's source ports for the baseline and for the cases through the gateway: apart.
/// With nftables DNAT, node 3 sees a connection to the global address as one to its own
/// address, the same 4-tuple the baseline uses; the client's kernel stamps TCP timestamps with
/// an offset per destination address, so a port reused across the two paths while node 3 still
/// holds the last connection in TIME_WAIT has its SYN refused by PAWS (TcpExtPAWSTimewait) and
/// waits a second for the retransmission. Only the benchmark's own route to node 3 makes the
/// two paths meet; apart, each case measures its own path.
const BASELINE_PORTS: (u16, u16) = (20000, 40499);
const GATEWAY_PORTS: (u16, u16) = (40500, 60999);

fn client_ports(ext: &str, (lo, hi): (u16, u16)) -> Result<()> {
    let st = std::process::Command::new("ip")
        .args(["netns", "exec", ext, "sh", "-c", &format!("echo '{lo} {hi}' > /proc/sys/net/ipv4/ip_local_port_range")])
        .status()?;
    if !st.success() {
        bail!("could not set the client's port range in {ext}");
    }
    Ok(())
}

fn cases() -> [Case; 4] {
    [
        Case { name: "direct (node 3's address, routed)", addr: Topology::node_ip(3), port: 8002 },
        Case { name: "through the gateway (node 3)", addr: GLOBAL_ADDRESS, port: 8002 },
        Case { name: "service on nodes 1, 3, 4", addr: GLOBAL_ADDRESS, port: 80 },
        Case { name: "nginx on the gateway itself", addr: GLOBAL_ADDRESS, port: 8001 },
    ]
}

pub fn run(o: &Options) -> Result<()> {
    super::in_scratch_dir("net", "network namespaces, a TC eBPF program", |dir| run_in(dir, o))
}

fn run_in(dir: &Path, o: &Options) -> Result<()> {
    let cdir = dir.join("cluster");
    local::up(&UpOptions { netns: true, dispatch: o.dispatch, ..UpOptions::new(cdir.clone(), 4) })?;
    let mechanism = gateway::mechanism(&cdir);
    let ext = local::ext_namespace(&cdir)?;
    let root = dir.join("www");
    paper_document(&root)?;
    let me = std::env::current_exe()?;
    let mut servers: Vec<Vec<Nginx>> = Vec::new();
    for (port, nodes, service) in SERVERS {
        let mut v = Vec::new();
        for &n in nodes {
            v.push(Nginx::start(&me, &cdir, &dir.join(format!("nginx-{port}-{n}")), &Site { node: n, port, root: &root, service })?);
        }
        servers.push(v);
    }
    gateway::wait_steering(&cdir, &["tcp/8002 rr [10.99.0.3]", "tcp/80 rr [10.99.0.1 10.99.0.3 10.99.0.4]"])?;
    let topo = local::topology(&cdir, &local::load(&cdir)?);
    topo.route_ext_to(3, true).map_err(|e| failed!("opening the baseline's route: {e}"))?;
    for s in servers.iter().flatten() {
        s.clear_log();
    }
    let cases = cases();
    // [case][close] → per-round req/s; latency p50/p99 of the median round.
    let mut rates: Vec<[Vec<f64>; 2]> = cases.iter().map(|_| [Vec::new(), Vec::new()]).collect();
    let mut lat: Vec<[Vec<(f64, f64)>; 2]> = cases.iter().map(|_| [Vec::new(), Vec::new()]).collect();
    let mut errors = 0u64;
    for round in 0..o.rounds {
        for (ci, c) in cases.iter().enumerate() {
            for close in [false, true] {
                if !o.json {
                    eprint!("\rround {}/{}: {} {}            ", round + 1, o.rounds, c.name, if close { "close" } else { "keep-alive" });
                }
                let url = format!("http://{}:{}/", c.addr, c.port);
                client_ports(&ext, if ci == 0 { BASELINE_PORTS } else { GATEWAY_PORTS })?;
                let r = wrk::run(
                    &ext,
                    &Load {
                        url: &url,
                        connections: o.connections,
                        threads: 1,
                        duration: Duration::from_secs_f64(o.seconds),
                        close,
                        script: None,
                    },
                )?;
                errors += r.socket_errors + r.non_2xx;
                rates[ci][close as usize].push(r.per_sec);
                lat[ci][close as usize].push((r.p50_ms, r.p99_ms));
            }
        }
    }
    if !o.json {
        eprintln!();
    }
    let _ = topo.route_ext_to(3, false);
    let per_node: BTreeMap<u32, u64> = servers[1].iter().map(|s| (s.node, s.requests())).collect();
    let med = |ci: usize, close: usize| median(&rates[ci][close]);
    let lat_med = |ci: usize, close: usize| {
        let mut v = lat[ci][close].clone();
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        v[v.len() / 2]
    };
    if o.json {
        let cases: Vec<_> = cases
            .iter()
            .enumerate()
            .map(|(ci, c)| {
                json!({
                    "case": c.name, "addr": c.addr.to_string(), "port": c.port,
                    "keepalive_rps": med(ci, 0), "close_rps": med(ci, 1),
                    "keepalive_ratio": med(ci, 0) / med(0, 0), "close_ratio": med(ci, 1) / med(0, 1),
                    "keepalive_p50_ms": lat_med(ci, 0).0, "keepalive_p99_ms": lat_med(ci, 0).1,
                    "close_p50_ms": lat_med(ci, 1).0, "close_p99_ms": lat_med(ci, 1).1,
                    "keepalive_rounds": rates[ci][0], "close_rounds": rates[ci][1],
                })
            })
            .collect();
        println!(
            "{}",
            json!({"dispatcher": mechanism, "rounds": o.rounds, "seconds": o.seconds, "connections": o.connections,
                   "cases": cases, "service_requests_per_node": per_node, "errors": errors})
        );
        return Ok(());
    }
    println!(
        "ssi bench net: wrk -t1 -c{} in ext, {} s per run, medians of {} rounds; dispatcher: {mechanism}",
        o.connections, o.seconds, o.rounds
    );
    println!(
        "{:<36} {:>12} {:>7} {:>16}   {:>12} {:>7} {:>16}",
        "case", "keep-alive/s", "ratio", "p50/p99 ms", "close/s", "ratio", "p50/p99 ms"
    );
    for (ci, c) in cases.iter().enumerate() {
        let (k50, k99) = lat_med(ci, 0);
        let (c50, c99) = lat_med(ci, 1);
        println!(
            "{:<36} {:>12.0} {:>7.2} {:>16}   {:>12.0} {:>7.2} {:>16}",
            c.name,
            med(ci, 0),
            med(ci, 0) / med(0, 0),
            format!("{k50:.2}/{k99:.2}"),
            med(ci, 1),
            med(ci, 1) / med(0, 1),
            format!("{c50:.2}/{c99:.2}")
        );
    }
    let total: u64 = per_node.values().sum();
    let shares: Vec<String> =
        per_node.iter().map(|(n, c)| format!("node {n}: {c} ({:.1}%)", 100.0 * *c as f64 / total.max(1) as f64)).collect();
    println!("service requests per node (nginx logs): {}", shares.join(", "));
    println!("socket errors and non-2xx responses over all runs: {errors}");
    Ok(())
}
