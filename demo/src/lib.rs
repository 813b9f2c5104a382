//! `ssi demo`: the main job. It starts a 4-node local cluster with every node in its own
//! network namespace behind a gateway (the paper's setup), walks through what the foundation
//! gives every subsystem — invocations between nodes, references passed and counted across
//! nodes, a node killed and its calls failing fast, the node rejoining as a new incarnation —
//! then PXFS and global processes, and finally runs the paper's three workloads (make, web,
//! database) traced as the Solaris MC study traced them (`study`): one HTML report, and the
//! terminal summary beside the paper's Tables 3.1 and 4.1. Then `ssi down`.

pub mod error;
mod study;

pub use error::Error;

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use ssi_orb::proto::diag::{Blob, DiagStub, GiveRequest, RefMsg, SleepRequest};
use ssi_orb::proto::Empty;
use ssi_orb::{Orb, OrbError};

use crate::error::{Context, Result};
use ssi_node::local::{self, UpOptions};
use ssi_node::{bail, failed};

fn step(n: u32, what: &str) {
    println!("\n[{n}] {what}");
}

pub fn run(dir: &Path, full: bool) -> Result<()> {
    if local::config_path(dir).exists() && local::load(dir)?.nodes.values().any(|n| ssi_node::pidfile::node_pid(n).is_some()) {
        bail!("a cluster is already running in {}; `ssi down` it or give `ssi demo --dir` another directory", dir.display());
    }
    if !nix::unistd::geteuid().is_root() {
        bail!("ssi demo needs root: network namespaces, FUSE mounts, eBPF (sudo ssi demo)");
    }
    step(1, "ssi up --netns --nodes 4: four node daemons, each its own process, directory and network namespace");
    let t0 = Instant::now();
    let cfg = local::up(&UpOptions { netns: true, ..UpOptions::new(dir.to_path_buf(), 4) })?.config();
    println!(
        "    all 4 nodes members of one view after {:.2} s; node 2 is the gateway, the cluster's address {}",
        t0.elapsed().as_secs_f64(),
        ssi_netsap::topology::GLOBAL_ADDRESS
    );
    let guard = DownOnDrop(dir.to_path_buf());
    ssi_node::status::print_status(&local::status(dir)?);
    let res = ssi_node::tool::on_cluster_network(&cfg, || tour(dir, &cfg));
    let res = res.and_then(|_| processes_tour(dir, &cfg));
    let res = res.and_then(|_| networking_tour(dir));
    let res = res.and_then(|_| the_study(dir, full));
    std::mem::forget(guard);
    step(10, "ssi down");
    let r = local::down(dir)?;
    println!(
        "    stopped {} daemons ({} needed SIGKILL), {} mounts and {} network namespaces removed",
        r.stopped, r.killed, r.unmounted, r.namespaces
    );
    res
}

/// Global networking: where the cluster's ports are, and how the gateway steers.
fn networking_tour(dir: &Path) -> Result<()> {
    step(8, "Global networking: one port namespace (the SAP), a dispatcher on the gateway");
    println!("    {}", ssi_netsap::STATUS);
    println!(
        "    the gateway's dispatcher: {} (ssi bench net measures it; the web workload below uses it)",
        ssi_node::gateway::mechanism(dir)
    );
    Ok(())
}

/// The paper's three workloads traced, one report, the summary beside the paper.
fn the_study(dir: &Path, full: bool) -> Result<()> {
    let how = if full { "--full: the paper's lengths" } else { "short runs; --full for the paper's lengths" };
    step(9, &format!("The study: make, web and database traced with ssi trace record ({how})"));
    let (done, failed) = study::run(dir, full);
    if !done.is_empty() {
        println!();
        print!("{}", study::summary(&done));
        let page = study::report(dir, &done)?;
        println!("\n    The whole study (sizes, rates, Fig 5.2, Tables 6.1/6.2, for every workload): {}", page.display());
    }
    if !failed.is_empty() {
        bail!("{} of the 3 workloads failed: {}", failed.len(), failed.join("; "));
    }
    Ok(())
}

/// Global processes: a command run on node 3 from node 1, and the cluster's `ps -ef`.
fn processes_tour(dir: &Path, cfg: &ssi_node::config::Config) -> Result<()> {
    step(7, "Global processes: ssi rexec, ssi ps -ef over the global /proc");
    let m1 = cfg.node(1)?.mountpoint.clone();
    if !ssi_node::local::mounts_under(&m1).contains(&m1) {
        println!("    (skipped: they need node 1's mount of the namespace)");
        return Ok(());
    }
    let ssi = |args: &[&str]| {
        let mut c = std::process::Command::new(std::env::current_exe().expect("own path"));
        c.args(args).env("SSI_DIR", dir).env_remove("SSI_NODE").current_dir(&m1);
        c
    };
    let script = "echo \"    ran on node $SSI_NODE as $(id -un) in $(pwd), pid $$\"; exit 3";
    println!("    $ ssi rexec -n 3 -- sh -c '...; exit 3'");
    let st = ssi(&["rexec", "-n", "3", "--", "sh", "-c", script]).status()?;
    println!("    the local ssi exited with the remote code: {}", st.code().unwrap_or(-1));
    let out = ssi(&["ps", "-ef"]).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    println!("    $ ssi ps -ef | grep 'ssi node'   (PID is the global pid, NODE where it runs)");
    if let Some(h) = lines.next() {
        println!("    {h}");
    }
    for l in lines.filter(|l| l.contains(" node --config ")) {
        println!("    {}", l.chars().take(110).collect::<String>());
    }
    Ok(())
}

/// Takes the demo's cluster down when the demo fails half-way (also on panic).
struct DownOnDrop(std::path::PathBuf);

impl Drop for DownOnDrop {
    fn drop(&mut self) {
        let _ = local::down(&self.0);
    }
}

/// Writes through one node's mount, reads through another, shows where the bytes live.
fn pxfs_tour(cfg: &ssi_node::config::Config) -> Result<()> {
    let m = |n: u32| cfg.node(n).map(|x| x.mountpoint.clone()).map_err(Error::from);
    let (m1, m3) = (m(1)?, m(3)?);
    if !ssi_node::local::mounts_under(&m1).contains(&m1) {
        println!("    (not mounted here: PXFS needs root and /dev/fuse — see the node logs)");
        return Ok(());
    }
    let names: Vec<String> = std::fs::read_dir(&m1)?.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect();
    println!("    ls {}: {}", m1.display(), names.join(" "));
    let text = "served by node 2, written through node 1, read through node 3\n";
    std::fs::write(m1.join("www/index.html"), text)?;
    let back = std::fs::read_to_string(m3.join("www/index.html"))?;
    println!("    wrote {}/www/index.html; node 3 reads: {}", m1.display(), back.trim());
    let www = cfg.volumes.iter().find(|v| v.path == "/www").map(|v| v.dir.join("index.html"));
    if let Some(p) = www {
        println!("    the bytes are on node 2's disk: {} ({} bytes)", p.display(), std::fs::metadata(&p)?.len());
    }
    Ok(())
}

async fn diag(orb: &Orb, node: u32) -> Result<DiagStub> {
    Ok(ssi_orb::diag::stub(orb, node).await?)
}

async fn tour(dir: &Path, cfg: &ssi_node::config::Config) -> Result<()> {
    let orb = ssi_node::tool::connect(cfg).await?;

    step(2, "Invocations: this tool (an authenticated ORB client) calls `diag.Echo` on node 3");
    let d3 = diag(&orb, 3).await?;
    let mut lat = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        d3.echo(Blob { data: Bytes::from(vec![0u8; 4096]) }).await?;
        lat.push(t.elapsed());
    }
    lat.sort();
    println!("    200 two-way invocations with 4 KiB payloads: median {:.0} µs", lat[100].as_secs_f64() * 1e6);
    for _ in 0..10_000 {
        d3.sink(Blob { data: Bytes::from_static(b"one-way") }).await?;
    }
    println!("    10,000 one-way invocations queued; node 3 counted {}", d3.sink_count(Empty {}).await?.n);

    step(3, "References: node 2 creates an object and passes the reference 2 → 1 → 3");
    let d1 = diag(&orb, 1).await?;
    let d2 = diag(&orb, 2).await?;
    let r = d2.spawn(Empty {}).await?.obj.ok_or_else(|| failed!("no reference"))?;
    println!("    object {r} (node:object@incarnation) created on node 2");
    d2.give(GiveRequest { obj: Some(r), to: 1 }).await?;
    d1.give(GiveRequest { obj: Some(r), to: 3 }).await?;
    d1.drop_ref(RefMsg { obj: Some(r) }).await?;
    d2.drop_ref(RefMsg { obj: Some(r) }).await?;
    println!("    nodes 1 and 2 dropped theirs; node 3 invokes it: counter = {}", d3.invoke_held(RefMsg { obj: Some(r) }).await?.n);
    d3.drop_ref(RefMsg { obj: Some(r) }).await?;
    let t = Instant::now();
    while !d2.unreferenced_log(Empty {}).await?.objects.contains(&r.object) {
        if t.elapsed() > Duration::from_secs(5) {
            bail!("unreferenced() was not delivered");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("    node 3 dropped the last reference: unreferenced() delivered on node 2 after {:.1} ms", t.elapsed().as_secs_f64() * 1e3);

    step(4, "Failure: kill -9 node 4 while a call to it is outstanding");
    let view_before = orb.view().number;
    let d4 = diag(&orb, 4).await?;
    let call = tokio::spawn(async move { d4.sleep(SleepRequest { ms: 30_000 }).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let pid = ssi_node::pidfile::node_pid(cfg.node(4)?).context("node 4 is not running")?;
    let killed = Instant::now();
    kill(Pid::from_raw(pid), Signal::SIGKILL)?;
    match call.await? {
        Err(OrbError::NodeDown { reason, .. }) => {
            println!("    the caller got NodeDown after {:.1} ms ({reason})", killed.elapsed().as_secs_f64() * 1e3)
        }
        other => bail!("expected NodeDown, got {other:?}"),
    }
    let t = Instant::now();
    while orb.view().members.iter().any(|m| m.node == 4) || orb.view().number == view_before {
        if t.elapsed() > Duration::from_secs(5) {
            bail!("no view without node 4");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let v = orb.view();
    println!(
        "    view {} → {}: members {:?} ({:.0} ms after the kill)",
        view_before,
        v.number,
        v.members.iter().map(|m| m.node).collect::<Vec<_>>(),
        killed.elapsed().as_secs_f64() * 1e3
    );

    step(5, "Rejoin: ssi up restarts the missing node with a new incarnation");
    let d = dir.to_path_buf();
    // `up` runs its own runtime: keep it off this one.
    let up = tokio::task::spawn_blocking(move || local::up(&UpOptions::new(d, 4))).await?;
    match up? {
        local::UpOutcome::Restarted(_, nodes) => println!("    restarted node(s) {nodes:?}"),
        local::UpOutcome::Started(_) => bail!("expected a restart"),
    }
    let t = Instant::now();
    while orb.view().members.len() != 4 {
        if t.elapsed() > Duration::from_secs(5) {
            bail!("node 4 did not rejoin");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let v = orb.view();
    let m4 = v.members.iter().find(|m| m.node == 4).map(|m| m.incarnation).unwrap_or(0);
    println!("    view {}: members {:?}; node 4 is incarnation {m4:x}", v.number, v.members.iter().map(|m| m.node).collect::<Vec<_>>());

    step(6, "PXFS: one namespace on every node, each file on its owner's disk");
    pxfs_tour(cfg)?;
    orb.shutdown();
    Ok(())
}
