//! Membership: which nodes are up, as numbered views.
//!
//! - The node set is configured. The lower id of a pair dials the higher; a dial refused
//!   means nothing listens at the peer's address: its process is gone. When a link drops,
//!   the dialing side dials again at once (not at the next tick), so a dead process is out
//!   of the view within a round trip.
//! - Every link carries a heartbeat (a one-way `Membership.Heartbeat`) each `heartbeat`
//!   interval; any traffic counts as a sign of life. A link silent for `fail_timeout` is
//!   closed, and its reader stops at once (a peer behind a cut network or hung keeps its TCP
//!   connection up for minutes). A peer without a link for `fail_timeout` (or whose dial is
//!   refused) is down: its
//!   outstanding calls have failed already (the link closed), and the references it held
//!   are released.
//! - A link silent for `fail_timeout` is itself the failure's detection: its peer is down
//!   at once (no further grace), so a cut-off or frozen node is detected in `fail_timeout`
//!   plus at most one heartbeat tick.
//! - Views are the quorum's (`quorum`): the Raft leader proposes them from what this
//!   failure detector says; here liveness changes only nudge it. Tools, which run no Raft,
//!   install any higher-numbered view a node's heartbeat carries (views are committed, so a
//!   number names one view everywhere).
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::OrbError;
use crate::link::Link;
use crate::orb::{well_known, CallOptions, Liveness, Orb, OrbInner, TOOL_NODE};
use crate::proto::svc::{self, View};
use crate::transport::LinkError;

pub(crate) fn spawn(orb: &Orb) {
    let weak = Arc::downgrade(&orb.0);
    let mut stop = orb.0.shutdown.subscribe();
    let period = orb.0.cfg.heartbeat;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            let Some(inner) = weak.upgrade() else { return };
            inner.membership_tick();
        }
    });
}

impl View {
    /// Whether node `node` is a member, as any incarnation.
    pub fn has_node(&self, node: u32) -> bool {
        self.members.iter().any(|m| m.node == node)
    }
    /// Whether incarnation `incarnation` of node `node` is a member.
    pub fn has(&self, node: u32, incarnation: u64) -> bool {
        self.members.iter().any(|m| m.node == node && m.incarnation == incarnation)
    }
}

impl OrbInner {
    fn membership_tick(self: &Arc<Self>) {
        let now = Instant::now();
        let fail = self.cfg.fail_timeout;
        let mut to_dial = Vec::new();
        let mut died = Vec::new();
        let mut silent = Vec::new();
        {
            let mut peers = self.peers.lock();
            for (&id, ps) in peers.iter_mut() {
                if let Some(l) = &ps.link {
                    // Nodes do not heartbeat tools: a tool relies on the stream's end instead.
                    if self.cfg.node != TOOL_NODE && l.silence() > fail {
                        silent.push(l.clone());
                    }
                }
                if ps.link.is_none() {
                    if ps.liveness == Liveness::Up && ps.lost_at.is_some_and(|t| now - t >= fail) {
                        ps.liveness = Liveness::Down;
                        died.push(id);
                    }
                    if self.cfg.node < id && !ps.dialing {
                        ps.dialing = true;
                        to_dial.push(id);
                    }
                }
            }
        }
        for l in silent {
            let why = format!("nothing heard for {} ms", l.silence().as_millis());
            l.close(&why);
            let peer = l.peer();
            let is_current = {
                let mut peers = self.peers.lock();
                match peers.get_mut(&peer) {
                    Some(ps) if ps.liveness == Liveness::Up && ps.link.as_ref().is_none_or(|c| Arc::ptr_eq(c, &l)) => {
                        ps.liveness = Liveness::Down;
                        true
                    }
                    _ => false,
                }
            };
            if is_current {
                died.push(peer);
            }
        }
        for id in died {
            self.node_died(id, "silent, or no link, for the failure timeout");
        }
        for id in to_dial {
            self.spawn_dial(id);
        }
        self.send_heartbeats();
    }

    /// Dials `id` in the background (the caller has set `dialing`). A refused dial means
    /// nothing listens at the peer's address: a peer that was up is down at once.
    fn spawn_dial(self: &Arc<Self>, id: u32) {
        let inner = self.clone();
        tokio::spawn(async move {
            let res = inner.dial(id).await;
            let mut died = false;
            {
                let mut peers = inner.peers.lock();
                if let Some(ps) = peers.get_mut(&id) {
                    ps.dialing = false;
                    if let Err(LinkError::Refused(_)) = &res {
                        if ps.liveness == Liveness::Up && ps.link.is_none() {
                            ps.liveness = Liveness::Down;
                            died = true;
                        } else if ps.liveness == Liveness::Unknown && inner.started.elapsed() > inner.cfg.fail_timeout * 5 {
                            ps.liveness = Liveness::Down;
                        }
                    }
                }
            }
            if died {
                inner.node_died(id, "its address refuses connections");
            }
            if let Err(e) = res {
                tracing::debug!(peer = id, "dial failed: {e}");
            }
        });
    }

    /// The link to `id` has just closed: the side that dials dials again at once instead of
    /// at the next heartbeat tick, so a peer whose process died (its port refuses) is down
    /// within a round trip rather than a heartbeat period later — the window in which callers
    /// (and the IN coprocessor's EAs) still count on it.
    pub(crate) fn redial_now(self: &Arc<Self>, id: u32) {
        if self.cfg.node == TOOL_NODE || self.cfg.node >= id || *self.shutdown.borrow() {
            return;
        }
        {
            let mut peers = self.peers.lock();
            let Some(ps) = peers.get_mut(&id) else { return };
            let recent = ps.redialed_at.is_some_and(|t| t.elapsed() < self.cfg.heartbeat);
            if ps.dialing || ps.link.is_some() || recent {
                return;
            }
            ps.dialing = true;
            ps.redialed_at = Some(Instant::now());
        }
        self.spawn_dial(id);
    }

    /// A peer is declared down: wake callers waiting for its link, drop its references.
    fn node_died(self: &Arc<Self>, id: u32, why: &str) {
        tracing::warn!(peer = id, "node down: {why}");
        if let Some(ps) = self.peers.lock().get(&id) {
            ps.ready.notify_waiters();
        }
        self.release_node(id);
        self.membership_changed();
    }

    fn send_heartbeats(self: &Arc<Self>) {
        let view = self.view_tx.borrow().clone();
        let quorum = self.quorum_info.borrow().quorum;
        let targets: Vec<u32> = {
            let peers = self.peers.lock();
            peers.iter().filter(|(_, p)| p.link.is_some()).map(|(id, _)| *id).collect()
        };
        let orb = self.orb();
        let opts = CallOptions::default().priority(255).deadline(self.cfg.fail_timeout);
        // Tools are not peers (no invocation can name node 0), so their heartbeat is queued
        // on the link directly: it tells them the view and that this node is alive.
        let tools: Vec<Arc<Link>> = self.tool_links.lock().clone();
        for l in tools {
            let out = crate::object::Outgoing::from_message(&svc::HeartbeatMsg { view: Some(view.clone()), quorum });
            let target = crate::proto::ObjRef {
                node: TOOL_NODE,
                object: well_known::MEMBERSHIP,
                incarnation: 0,
                interface: svc::MEMBERSHIP_INTERFACE,
            };
            self.oneway_on_link(&l, &target, svc::membership_methods::HEARTBEAT, out, &opts);
        }
        for id in targets {
            let stub = svc::MembershipStub::new(orb.well_known(id, well_known::MEMBERSHIP, svc::MEMBERSHIP_INTERFACE))
                .expect("well-known interface")
                .with_options(opts.clone());
            let msg = svc::HeartbeatMsg { view: Some(view.clone()), quorum };
            tokio::spawn(async move {
                let _ = stub.heartbeat(msg).await;
            });
        }
    }

    /// Liveness changed: the quorum's leader may have a new view to propose.
    pub(crate) fn membership_changed(self: &Arc<Self>) {
        if self.cfg.node != TOOL_NODE {
            let _ = self.quorum_tx.send(crate::quorum::Input::Nudge);
        }
    }

    pub(crate) fn install_view(&self, v: View) {
        tracing::info!(view = v.number, members = ?v.members.iter().map(|m| m.node).collect::<Vec<_>>(), "new view");
        self.views_seen.lock().push(v.clone());
        self.view_tx.send_replace(v);
    }

    /// A heartbeat from `src` carrying its view.
    pub(crate) fn on_heartbeat(self: &Arc<Self>, src: u32, v: Option<View>, quorum: bool) {
        if src != TOOL_NODE && self.cfg.node != TOOL_NODE {
            let _ = self.quorum_tx.send(crate::quorum::Input::PeerQuorum(src, quorum));
        }
        let Some(v) = v else { return };
        if src == TOOL_NODE || v.number == 0 {
            return;
        }
        // Nodes take views from the quorum only; a tool from any node's heartbeat.
        if self.cfg.node != TOOL_NODE {
            return;
        }
        let cur = self.view_tx.borrow().number;
        if v.number > cur {
            self.install_view(v);
        }
    }

    /// The link to `node`, waiting for it to come up when the node is not known to be down.
    pub(crate) async fn link_for(self: &Arc<Self>, node: u32, budget: Duration) -> Result<Arc<Link>, OrbError> {
        let give_up = Instant::now() + budget.min(self.cfg.fail_timeout * 3);
        loop {
            let ready = {
                let peers = self.peers.lock();
                let ps = peers.get(&node).ok_or(OrbError::UnknownNode(node))?;
                if let Some(l) = &ps.link {
                    if !l.is_closed() {
                        return Ok(l.clone());
                    }
                }
                if ps.liveness == Liveness::Down {
                    return Err(OrbError::node_down(node, "declared down by membership"));
                }
                ps.ready.clone()
            };
            let notified = ready.notified();
            let now = Instant::now();
            if now >= give_up {
                return Err(OrbError::node_down(node, "no link to it"));
            }
            let wait = (give_up - now).min(Duration::from_millis(50));
            let _ = tokio::time::timeout(wait, notified).await;
        }
    }
}
