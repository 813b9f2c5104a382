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
    // Ready when a view is known (nodes send theirs in heartbeats) and every member of it is
    // linked: nodes out of the view (crashed, cut off) are not waited for, and no one node
    // must be up.
    loop {
        let v = orb.view();
        let linked = v.members.iter().all(|m| orb.liveness(m.node) == Liveness::Up);
        if v.number > 0 && linked && (v.members.len() == cfg.nodes.len() || t0.elapsed() > cfg.fail_timeout) {
            return Ok(orb);
        }
        if t0.elapsed() > Duration::from_secs(10) {
            bail!(
                "could not reach the members of the cluster's view (view {}: {:?})",
                v.number,
                v.members.iter().map(|m| m.node).collect::<Vec<_>>()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs the future `f` makes on a runtime of its own, on a thread that first joins the
/// network namespace of a live node (see `local::answering_node`) when the cluster has them (`ssi up
/// --netns`): the host cannot reach their interconnect, a node's namespace can. Sockets
/// take the namespace of the thread that makes them, so everything `f` connects to
/// (`connect`, the ORB's links) is made there. Elsewhere it simply runs `f`.
/// `f`'s error type is the caller's, so long as this crate's errors convert into it.
pub fn on_cluster_network<T: Send, E: From<Error> + Send, Fut: std::future::Future<Output = Result<T, E>>>(
    cfg: &Config,
    f: impl FnOnce() -> Fut + Send,
) -> Result<T, E> {
    // A live node's namespace, one in a majority if any (node 1 may be down or cut off).
    let via = crate::local::answering_node(cfg).and_then(|id| cfg.nodes.get(&id)).or_else(|| cfg.nodes.values().next());
    let netns = via.and_then(|n| n.netns.clone());
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
