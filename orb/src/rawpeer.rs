//! A peer that speaks the wire protocol by hand: for tests of what a daemon does with
//! malformed frames, wrong keys, and messages sent out of turn. Not used by the ORB itself.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::auth::ClusterKey;
use crate::link::Link;
use crate::orb::well_known;
use crate::probes::Counters;
use crate::proto::{Header, Kind};
use crate::transport::{dial_link, Inbound, LinkError};
use crate::wire::{Frames, InMsg, WireMsg};

pub struct RawPeer {
    link: Arc<Link>,
    raw: mpsc::Sender<Frames>,
    inbound: Inbound,
}

impl RawPeer {
    /// Dials `addr` as cluster tool (node 0) and completes the handshake with `key`.
    pub async fn connect(addr: &str, cluster: &str, key: &ClusterKey) -> Result<RawPeer, LinkError> {
        Self::connect_with(addr, cluster, key, true).await
    }

    /// Like `connect`, but goes on even when the daemon's CHALLENGE does not verify (as an
    /// impostor would), sending a PROOF made with `key`.
    pub async fn connect_unverified(addr: &str, cluster: &str, key: &ClusterKey) -> Result<RawPeer, LinkError> {
        Self::connect_with(addr, cluster, key, false).await
    }

    async fn connect_with(addr: &str, cluster: &str, key: &ClusterKey, verify: bool) -> Result<RawPeer, LinkError> {
        let link = Link::new(0, 0, 0, Arc::new(Counters::default()));
        let (tx, rx) = mpsc::channel(16);
        let (inbound, node, inc) = dial_link(cluster, key, 0, 1, None, addr, &link, Some(rx), verify).await?;
        link.set_peer(node, inc);
        Ok(RawPeer { link, raw: tx, inbound })
    }

    /// Sends bytes as one batch, exactly as given.
    pub async fn send_raw(&self, bytes: Bytes) -> Result<(), LinkError> {
        self.raw.send(Frames::In(bytes)).await.map_err(|_| LinkError::Closed)
    }

    /// Sends a well-formed message (request ids are the caller's business).
    pub fn send(&self, m: WireMsg) -> bool {
        self.link.enqueue(m)
    }

    /// The next message from the daemon, `Err` when the stream ended or nothing came in time.
    /// The daemon's heartbeats to tools (a one-way to its membership object, every
    /// heartbeat interval) are skipped: they may come between any request and its answer.
    pub async fn recv(&mut self, within: Duration) -> Result<InMsg, LinkError> {
        let until = tokio::time::Instant::now() + within;
        loop {
            let m = tokio::time::timeout_at(until, self.inbound.next_msg()).await.map_err(|_| LinkError::Timeout)??;
            let heartbeat = m.header.kind == Kind::Oneway as i32 && m.header.object == well_known::MEMBERSHIP;
            if !heartbeat {
                return Ok(m);
            }
        }
    }
}

/// A request as a hand-written peer sends it: `kind` REQUEST or ONEWAY to `object` on
/// `node`, with a 1 s deadline.
pub fn request(kind: Kind, id: u64, node: u32, object: u64, method: u32, payload: Bytes) -> WireMsg {
    WireMsg {
        header: Header { kind: kind as i32, request_id: id, dst_node: node, object, method, deadline_us: 1_000_000, ..Default::default() },
        payload,
        proto: Bytes::new(),
    }
}
