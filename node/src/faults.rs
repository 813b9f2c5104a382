//! The faults a local cluster can be made to suffer, for tests and for people who want to
//! see it survive them: a node's power cut (`crash`) and a cut interconnect (`partition`,
//! `heal`).
//!
//! `ssi crash N`: a power cut of one node of a local cluster, not a polite exit. Every
//! process of the node (its daemon and everything it started, all in the node's cgroup) is
//! killed at once with `cgroup.kill`, and its FUSE mount is aborted, so nothing the node
//! held is handed over cleanly: peers learn of the death from missing heartbeats and broken
//! links only. The node's disk stays; `ssi up` starts it again as a new incarnation.
//!
//! What a real power cut would also lose and this does not: the host's page cache (writes a
//! node acknowledged without fsync survive here).
//!
//! `ssi partition A / B` (on a `--netns` cluster): frames between the groups are dropped on
//! the bridge (`ssi_netsap::partition`); the daemons see silent peers, as behind a failed
//! switch. `ssi heal` takes the cut away.

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::bail;
use crate::error::{Context, Error, Result};
use crate::local::{abort_fuse_connections, fuse_connections_under, load, mounts_under, topology};
use crate::pidfile::{is_running, node_pid};

/// What a crash took down.
#[derive(Debug)]
pub struct CrashReport {
    /// Processes killed with the node's cgroup (the daemon among them).
    pub killed: usize,
    /// Mounts of the node's file system torn down (aborted, then detached).
    pub unmounted: usize,
}

/// How long the processes of a cgroup may take to die once killed.
const DEATH: Duration = Duration::from_secs(5);

/// Crashes node `id` of the cluster in `dir`.
pub fn crash(dir: &Path, id: u32) -> Result<CrashReport> {
    let cfg = load(dir)?;
    let nc = cfg.node(id)?;
    let daemon = node_pid(nc);
    let Some(cgroup) = ssi_netsap::bindguard::cgroup_of(&nc.dir) else {
        bail!("ssi crash needs cgroup v2 (the node's processes are found through its cgroup)")
    };
    let procs = ssi_netsap::bindguard::cgroup_procs(&cgroup);
    if procs.is_empty() && daemon.is_none() {
        bail!("node {id} is not running");
    }
    let fuse = fuse_connections_under(&nc.mountpoint);
    // All at once: the kernel kills every process of the cgroup (and those forking in it).
    if !procs.is_empty() {
        std::fs::write(cgroup.join("cgroup.kill"), "1").with_context(|| format!("cgroup.kill of {}", cgroup.display()))?;
    }
    // A daemon that has not joined its cgroup yet (it does so first thing at start).
    if let Some(pid) = daemon.filter(|p| !procs.contains(p)) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    // The mount dies with its server: requests in flight fail, nothing is flushed. A process
    // blocked in such a request dies only once the connection is gone.
    abort_fuse_connections(&fuse);
    let t0 = Instant::now();
    loop {
        let left: Vec<i32> = ssi_netsap::bindguard::cgroup_procs(&cgroup).into_iter().chain(daemon.filter(|p| is_running(*p))).collect();
        if left.is_empty() {
            break;
        }
        if t0.elapsed() > DEATH {
            bail!("node {id}: {} process(es) outlived the crash: {left:?}", left.len());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut unmounted = 0;
    for m in mounts_under(&nc.mountpoint) {
        nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH)?;
        unmounted += 1;
    }
    let outside = daemon.is_some_and(|p| !procs.contains(&p));
    Ok(CrashReport { killed: procs.len() + usize::from(outside), unmounted })
}

/// Cuts the interconnect of the `--netns` cluster in `dir` between the groups `words` name
/// (`1,2 / 3,4,5`, or one group against the rest); `oneway` drops only A → B.
pub fn partition(dir: &Path, words: &[String], oneway: bool) -> Result<ssi_netsap::partition::Cut> {
    let cfg = load(dir)?;
    if !cfg.uses_netns() {
        bail!("ssi partition needs a --netns cluster (its nodes share one bridge); {} has none", dir.display());
    }
    let nodes: Vec<u32> = cfg.nodes.keys().copied().collect();
    let cut = ssi_netsap::partition::Cut::parse(words, &nodes, oneway)?;
    ssi_netsap::partition::apply(&topology(dir, &cfg), &cut)?;
    Ok(cut)
}

/// Takes away the cut of the cluster in `dir`; whether there was one.
pub fn heal(dir: &Path) -> Result<bool> {
    let cfg = load(dir)?;
    Ok(ssi_netsap::partition::heal(&topology(dir, &cfg))?)
}
