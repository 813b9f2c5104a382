//! What a local cluster's gateway says about its packet dispatcher (its daemon's log): which
//! mechanism it started, and what it steers now.

use crate::error::{Error, Result};
use crate::{bail, failed};
use std::path::Path;
use std::time::{Duration, Instant};

/// The first gateway's log.
fn log(cluster: &Path) -> Result<String> {
    let cfg = crate::local::load(cluster)?;
    let g = cfg
        .gateways
        .first()
        .and_then(|g| cfg.nodes.get(g))
        .ok_or_else(|| failed!("the cluster in {} has no gateway", cluster.display()))?;
    Ok(std::fs::read_to_string(g.dir.join("log")).unwrap_or_default())
}

/// The mechanism the gateway's dispatcher runs ("ebpf", "nft", "proxy"; "none" if it has none).
pub fn mechanism(cluster: &Path) -> String {
    let log = log(cluster).unwrap_or_default();
    log.lines()
        .filter_map(|l| l.split("dispatcher: ").nth(1))
        .filter_map(|r| r.split(" on ").next())
        .next_back()
        .unwrap_or("none")
        .to_string()
}

/// Waits (up to 10 s) until the dispatcher's latest table has every one of `steers`, as its
/// log line writes them (`tcp/80 rr [10.99.0.1 10.99.0.3]`).
pub fn wait_steering(cluster: &Path, steers: &[&str]) -> Result<()> {
    let t0 = Instant::now();
    loop {
        let log = log(cluster)?;
        let last = log.lines().rfind(|l| l.contains("dispatcher steers")).unwrap_or("").to_string();
        if steers.iter().all(|s| last.contains(s)) {
            return Ok(());
        }
        if t0.elapsed() > Duration::from_secs(10) {
            bail!("the gateway's dispatcher does not steer {steers:?} after 10 s (its last table: {last})");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
