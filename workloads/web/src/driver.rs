//! `ssi workload web`: the paper's web workload on a running `--netns` cluster. nginx on every
//! member node joins one scalable service on port 80 (through `ssi run`, so the SAP knows it
//! and the gateway's dispatcher spreads connections over it), all serving one document tree
//! on `/www` — PXFS, on the gateway's disk; wrk in `ext` loads the cluster's global address
//! for a fixed time. Beside it, in the same run, the baseline: one nginx on node 3 serving the
//! same tree, reached at node 3's own address (the gateway a plain router for it).
//!
//! Documents: `paper` — one 1,500-byte file, as the study used; `mix` — a SPECweb99-like file
//! set (35% of requests for files of 0.1–0.9 KB, 50% for 1–9 KB, 14% for 10–90 KB, 1% for
//! 100–900 KB), picked per request by a wrk script.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

use crate::error::{Context, Error, Result};
use crate::nginx::{Nginx, Site};
use crate::wrk::{self, Load, Report};
use ssi_netsap::topology::{Topology, GLOBAL_ADDRESS};
use ssi_node::{bail, failed};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mix {
    /// One 1,500-byte file (the study's).
    Paper,
    /// A SPECweb99-like set of 36 files from 102 B to 900 KiB.
    Mix,
}

pub struct WebOptions {
    pub dir: PathBuf,
    pub seconds: f64,
    pub connections: u32,
    pub mix: Mix,
    /// A new connection per request (HTTP/1.0, as in 1997), else keep-alive.
    pub close: bool,
    pub json: bool,
}

/// The tree, relative to a node's mountpoint.
const TREE: &str = "www/ssi-web";
/// The baseline nginx's port (node 3, reached at its own address).
const BASELINE_PORT: u16 = 8080;
/// The request shares of the mix's four classes, and each class's first file size.
const CLASSES: [(f64, u64); 4] = [(0.35, 102), (0.50, 1024), (0.14, 10 * 1024), (0.01, 100 * 1024)];

/// Writes the document tree under `root` (a directory on PXFS) and, for the mix, the wrk
/// script that picks a file per request; returns the script's path.
fn write_tree(root: &Path, scratch: &Path, mix: Mix) -> Result<Option<PathBuf>> {
    crate::nginx::paper_document(root)?;
    if mix == Mix::Paper {
        return Ok(None);
    }
    let mut entries = Vec::new();
    let mut cum = 0.0;
    for (class, (share, first)) in CLASSES.iter().enumerate() {
        for i in 1..=9u64 {
            let name = format!("class{class}_{i}");
            let size = (first * i) as usize;
            let body: Vec<u8> = (0..size).map(|k| b"0123456789abcdef\n"[k % 17]).collect();
            std::fs::write(root.join(&name), body)?;
            cum += share / 9.0;
            entries.push(format!("  {{\"/{name}\", {cum:.6}}}"));
        }
    }
    let script = scratch.join("mix.lua");
    std::fs::write(
        &script,
        format!(
            "-- ssi workload web: a SPECweb99-like request mix (cumulative shares).\nlocal files = {{\n{}\n}}\n\
             request = function()\n  local r = math.random()\n  for _, f in ipairs(files) do\n    if r <= f[2] then return wrk.format(nil, f[1]) end\n  end\n  return wrk.format(nil, files[#files][1])\nend\n",
            entries.join(",\n")
        ),
    )?;
    Ok(Some(script))
}

pub fn web(o: &WebOptions) -> Result<()> {
    let cfg = ssi_node::local::load(&o.dir)?;
    if !cfg.uses_netns() {
        bail!("ssi workload web needs a --netns cluster (ssi up --netns): clients reach it from ext through the gateway");
    }
    let members = ssi_node::local::status(&o.dir).context("the cluster must be running (ssi up --netns)")?.view_members;
    if !members.contains(&3) {
        bail!("the baseline runs on node 3, which is not a member (ssi up --netns --nodes 4)");
    }
    let gateway = *cfg.gateways.first().ok_or_else(|| failed!("the cluster has no gateway"))?;
    let mount = |n: u32| cfg.node(n).map(|c| c.mountpoint.clone()).map_err(|e| Error::Node(e.into()));
    let scratch = o.dir.join("web");
    std::fs::create_dir_all(&scratch)?;
    // Written through the gateway's own mount: /www is on its disk.
    let script = write_tree(&mount(gateway)?.join(TREE), &scratch, o.mix)?;
    let me = std::env::current_exe()?;
    let mut servers: Vec<Nginx> = Vec::new();
    for &n in &members {
        let root = mount(n)?.join(TREE);
        servers.push(Nginx::start(
            &me,
            &o.dir,
            &scratch.join(format!("nginx{n}")),
            &Site { node: n, port: 80, root: &root, service: Some("web") },
        )?);
    }
    let root3 = mount(3)?.join(TREE);
    let baseline =
        Nginx::start(&me, &o.dir, &scratch.join("nginx-baseline"), &Site { node: 3, port: BASELINE_PORT, root: &root3, service: None })?;
    let slots: Vec<String> = members.iter().map(|&n| Topology::node_ip(n).to_string()).collect();
    ssi_node::gateway::wait_steering(&o.dir, &[&format!("tcp/80 rr [{}]", slots.join(" "))])?;

    let ext = ssi_node::local::ext_namespace(&o.dir)?;
    let topo = ssi_node::local::topology(&o.dir, &cfg);
    let path = if o.mix == Mix::Paper { "index.html" } else { "" };
    let load = |url| Load {
        url,
        connections: o.connections,
        threads: 1,
        duration: Duration::from_secs_f64(o.seconds),
        close: o.close,
        script: script.as_deref(),
    };
    // The baseline first, through a route opened for it alone.
    topo.route_ext_to(3, true).map_err(|e| failed!("opening the baseline's route: {e}"))?;
    if !o.json {
        eprintln!("baseline: nginx on node 3 at its own address, {} s...", o.seconds);
    }
    let base_url = format!("http://{}:{BASELINE_PORT}/{path}", Topology::node_ip(3));
    let base = wrk::run(&ext, &load(&base_url));
    let _ = topo.route_ext_to(3, false);
    let base = base?;
    drop(baseline);
    for s in &servers {
        s.clear_log();
    }
    if !o.json {
        eprintln!("the cluster: nginx on nodes {members:?} as one service at {GLOBAL_ADDRESS}, {} s...", o.seconds);
    }
    let cluster_url = format!("http://{GLOBAL_ADDRESS}/{path}");
    let cluster = wrk::run(&ext, &load(&cluster_url))?;
    let per_node: BTreeMap<u32, u64> = servers.iter().map(|s| (s.node, s.requests())).collect();
    report(o, &members, &base, &cluster, &per_node);
    for (what, r) in [("the cluster", &cluster), ("the baseline", &base)] {
        if r.socket_errors + r.non_2xx > 0 {
            bail!("wrk saw socket errors ({}) or non-2xx responses ({}) against {what}", r.socket_errors_detail, r.non_2xx);
        }
    }
    Ok(())
}

/// The largest distance of a node's request count from an even share, as a fraction of it.
pub fn spread(per_node: &BTreeMap<u32, u64>) -> f64 {
    let total: u64 = per_node.values().sum();
    let even = total as f64 / per_node.len().max(1) as f64;
    per_node.values().map(|&c| (c as f64 - even).abs() / even.max(1e-9)).fold(0.0, f64::max)
}

fn report(o: &WebOptions, members: &[u32], base: &Report, cluster: &Report, per_node: &BTreeMap<u32, u64>) {
    let total: u64 = per_node.values().sum();
    let mix = if o.mix == Mix::Paper { "one 1,500-byte file" } else { "a SPECweb99-like mix" };
    let mode = if o.close { "Connection: close" } else { "keep-alive" };
    if o.json {
        println!(
            "{}",
            json!({"workload": "web", "seconds": o.seconds, "connections": o.connections, "documents": mix, "mode": mode,
                   "dispatcher": ssi_node::gateway::mechanism(&o.dir), "nodes": members,
                   "cluster": cluster, "baseline_node3_direct": base, "ratio": cluster.per_sec / base.per_sec.max(1e-9),
                   "per_node": per_node, "spread": spread(per_node)})
        );
        return;
    }
    println!(
        "ssi workload web — {} s, wrk -c{} ({mode}) from ext, {mix} on /www; dispatcher: {}",
        o.seconds,
        o.connections,
        ssi_node::gateway::mechanism(&o.dir)
    );
    let line = |name: &str, r: &Report| {
        println!(
            "  {name:<44} {:>9.0} req/s  p50 {:>6.2} ms  p99 {:>7.2} ms  socket errors {}  non-2xx {}",
            r.per_sec, r.p50_ms, r.p99_ms, r.socket_errors, r.non_2xx
        )
    };
    line("nginx on node 3, reached at its own address", base);
    line(&format!("the cluster: nginx on nodes {members:?} via the gateway"), cluster);
    println!("  ratio cluster / one node: {:.2}", cluster.per_sec / base.per_sec.max(1e-9));
    let shares: Vec<String> =
        per_node.iter().map(|(n, c)| format!("node {n} {c} ({:.1}%)", 100.0 * *c as f64 / total.max(1) as f64)).collect();
    println!("  requests per node (nginx logs): {}; the farthest from even: {:.1}%", shares.join(", "), 100.0 * spread(per_node));
}
