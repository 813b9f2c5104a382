//! The `ssi` tool as a cluster tool on the ORB (node 0): authenticated with the cluster key,
//! able to invoke any node's objects, never a member. Needs read access to the key file, so
//! it is for the cluster's owner (root in a real deployment); ordinary users go through
//! their local daemon's control socket instead.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use ssi_orb::{Liveness, Orb, OrbConfig, TOOL_NODE};

use crate::config::Config;

pub async fn connect(cfg: &Config) -> anyhow::Result<Orb> {
    let key = crate::daemon::read_key(&cfg.key_file)?;
    let mut oc = OrbConfig::new(&cfg.cluster, TOOL_NODE, std::process::id() as u64, key);
    oc.peers = cfg.nodes.iter().map(|(i, n)| (*i, n.addr.to_string())).collect();
    oc.heartbeat = cfg.heartbeat;
    oc.fail_timeout = cfg.fail_timeout;
    let orb = Orb::start(oc).await.map_err(|e| anyhow!(e))?;
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
