//! The `ssi` tool as a cluster tool on the ORB (node 0): authenticated with the cluster key,
//! able to invoke any node's objects, never a member. Needs read access to the key file, so
//! it is for the cluster's owner (root in a real deployment); ordinary users go through
//! their local daemon's control socket instead.

use std::time::{Duration, Instant};

use ssi_orb::{Liveness, Orb, OrbConfig, TOOL_NODE};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::{bail, failed};

pub async fn connect(cfg: &Config) -> Result<Orb> {
    let key = crate::config::read_key(&cfg.key_file)?;
    let mut oc = OrbConfig::new(&cfg.cluster, TOOL_NODE, std::process::id() as u64, key);
    oc.peers = cfg.nodes.iter().map(|(i, n)| (*i, n.addr.to_string())).collect();
    oc.heartbeat = cfg.heartbeat;
    oc.fail_timeout = cfg.fail_timeout;
    let orb = Orb::start(oc).await?;
    let t0 = Instant::now();
    // Ready when every node is linked and the coordinator's view (sent in heartbeats) is known.
    while cfg.nodes.keys().any(|id| orb.liveness(*id) != Liveness::Up) || orb.view().members.len() != cfg.nodes.len() {
        if t0.elapsed() > Duration::from_secs(10) {
            bail!("could not reach every node of the cluster");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(orb)
}

/// Runs the future `f` makes on a runtime of its own, on a thread that first joins the
/// network namespace of the cluster's first node when the cluster has them (`ssi up
/// --netns`): the host cannot reach their interconnect, a node's namespace can. Sockets
/// take the namespace of the thread that makes them, so everything `f` connects to
/// (`connect`, the ORB's links) is made there. Elsewhere it simply runs `f`.
/// `f`'s error type is the caller's, so long as this crate's errors convert into it.
pub fn on_cluster_network<T: Send, E: From<Error> + Send, Fut: std::future::Future<Output = Result<T, E>>>(
    cfg: &Config,
    f: impl FnOnce() -> Fut + Send,
) -> Result<T, E> {
    let netns = cfg.nodes.values().next().and_then(|n| n.netns.clone());
    std::thread::scope(|s| {
        s.spawn(move || {
            if let Some(ns) = &netns {
                ssi_netsap::topology::enter(ns).map_err(|e| E::from(e.into()))?;
            }
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| E::from(e.into()))?;
            rt.block_on(f())
        })
        .join()
        .map_err(|_| E::from(failed!("the cluster-network thread panicked")))?
    })
}
