//! `ssi cluster add-node / remove-node`: changes the quorum's voters at runtime. The tool
//! (ORB node 0) finds the Raft leader from any live node and asks it; the change is
//! answered once committed. Only configured nodes can be voters.

use std::time::{Duration, Instant};

use ssi_orb::proto::svc::{MembershipStub, QuorumInfo, VoterChange, MEMBERSHIP_INTERFACE};
use ssi_orb::{well_known, CallOptions, Liveness, Orb};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::{bail, failed};

/// Makes configured node `node` a voter (`add`) or no longer one; the voters after.
pub fn change(cfg: &Config, node: u32, add: bool) -> Result<QuorumInfo> {
    if !cfg.nodes.contains_key(&node) {
        bail!("node {node} is not a node of this cluster");
    }
    crate::tool::on_cluster_network(cfg, || async {
        let orb = crate::tool::connect(cfg).await?;
        let t0 = Instant::now();
        let mut last = String::from("no node answered");
        // A leader election may be under way: ask again until one answers for the quorum.
        while t0.elapsed() < Duration::from_secs(10) {
            match leader(&orb, cfg).await {
                Some(l) => match membership(&orb, l).change_voter(VoterChange { node, add }).await {
                    Ok(q) => return Ok(q.into_inner()),
                    Err(e) => last = format!("node {l}: {e}"),
                },
                None => last = "no node knows a leader (is a majority of the voters up?)".into(),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(failed!("voters unchanged: {last}"))
    })
}

fn membership(orb: &Orb, node: u32) -> MembershipStub {
    MembershipStub::new(orb.well_known(node, well_known::MEMBERSHIP, MEMBERSHIP_INTERFACE))
        .expect("well-known interface")
        .with_options(CallOptions::default().deadline(Duration::from_secs(8)))
}

/// The leader as the first live node that has a quorum sees it.
async fn leader(orb: &Orb, cfg: &Config) -> Option<u32> {
    for id in cfg.nodes.keys().filter(|id| orb.liveness(**id) == Liveness::Up) {
        let stub = membership(orb, *id).with_options(CallOptions::default().deadline(Duration::from_millis(500)));
        if let Ok(info) = stub.info(ssi_orb::proto::Empty {}).await {
            if let Some(q) = info.into_inner().quorum.filter(|q| q.quorum && q.leader != 0) {
                return Some(q.leader);
            }
        }
    }
    None
}
