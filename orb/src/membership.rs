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
//! - Views: the lowest-numbered live node is the coordinator. When its set of live
//!   (node, incarnation) pairs changes it installs a view numbered one above any it has
//!   seen and sends it in heartbeats; other nodes install any view with a higher number.
//!   A node that restarts has a new incarnation, so its return is a new view.
//!   (No quorum: a partitioned cluster can number two different views alike.)

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::OrbError;
use crate::link::Link;
use crate::orb::{well_known, CallOptions, Liveness, Orb, OrbInner, TOOL_NODE};
use crate::proto::svc::{self, Member, View};
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
        }
        for id in died {
            self.node_died(id, "no link for the failure timeout");
        }
        for id in to_dial {
            self.spawn_dial(id);
        }
        self.membership_changed();
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
            let out = crate::object::Outgoing::from_message(&svc::HeartbeatMsg { view: Some(view.clone()) });
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
            let msg = svc::HeartbeatMsg { view: Some(view.clone()) };
            tokio::spawn(async move {
                let _ = stub.heartbeat(msg).await;
            });
        }
    }

    /// Recomputes the view if this node coordinates.
    pub(crate) fn membership_changed(self: &Arc<Self>) {
        if self.cfg.node == TOOL_NODE {
            return;
        }
        let live: BTreeSet<(u32, u64)> = {
            let peers = self.peers.lock();
            let mut s: BTreeSet<(u32, u64)> =
                peers.iter().filter(|(_, p)| p.liveness == Liveness::Up).map(|(id, p)| (*id, p.incarnation)).collect();
            s.insert((self.cfg.node, self.cfg.incarnation));
            s
        };
        let coordinator = live.iter().next().map(|(n, _)| *n).unwrap_or(self.cfg.node);
        if coordinator != self.cfg.node {
            return;
        }
        let current = self.view_tx.borrow().clone();
        let cur: BTreeSet<(u32, u64)> = current.members.iter().map(|m| (m.node, m.incarnation)).collect();
        if cur == live && current.number > 0 {
            return;
        }
        let highest = self.views_seen.lock().iter().map(|v| v.number).max().unwrap_or(0).max(current.number);
        let v = View {
            number: highest + 1,
            members: live.into_iter().map(|(node, incarnation)| Member { node, incarnation }).collect(),
            coordinator,
        };
        self.install_view(v);
        self.send_heartbeats();
    }

    fn install_view(&self, v: View) {
        tracing::info!(view = v.number, members = ?v.members.iter().map(|m| m.node).collect::<Vec<_>>(), "new view");
        self.views_seen.lock().push(v.clone());
        self.view_tx.send_replace(v);
    }

    /// A heartbeat from `src` carrying its view.
    pub(crate) fn on_heartbeat(self: &Arc<Self>, src: u32, v: Option<View>) {
        let Some(v) = v else { return };
        if src == TOOL_NODE || v.number == 0 {
            return;
        }
        let cur = self.view_tx.borrow().number;
        if v.number > cur && v.coordinator == src {
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
