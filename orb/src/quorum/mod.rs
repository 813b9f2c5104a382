//! The quorum: numbered views and the voters, as a Raft-replicated state machine.
//!
//! - Every node runs one Raft peer (raft-rs, the Raft of TiKV: a deterministic state
//!   machine with no I/O of its own, so its messages travel as one-way ORB invocations
//!   `Membership.Raft` and are traced like any other, and its clock is the heartbeat's).
//!   Its log is durable (`store`): a crashed node never forgets its vote. The log is
//!   compacted into a snapshot of the state machine every `compact_after` entries, and a
//!   follower that lags past it (a node down through many views) gets the snapshot.
//! - The state machine is the current view and the voters. Only the Raft leader proposes a
//!   view: the members it sees alive (the ORB's failure detector), itself as coordinator,
//!   numbered one above the last committed view. A view is applied only if it is numbered
//!   exactly one above the applied one, so two views with one number and different members
//!   never exist, and no view exists without a majority of the voters.
//! - Roles one node at a time must hold (`roles`) are assigned by the leader with each view
//!   and committed with it.
//! - Quorum: a node has it while it is a member of the applied view and either leads and
//!   heard from a majority of the voters within `fail_timeout`, or follows a leader it
//!   heard within `fail_timeout` whose last ORB heartbeat did not say it lost its majority
//!   (a leader cut off with a follower keeps sending Raft heartbeats until it steps down).
//!   Without it the node is *fenced*: services refuse to grant (binds, file mutations,
//!   placements); `Orb::fenced` is what they ask.

mod roles;
mod store;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message as _;
use protobuf::Message as _;
use raft::prelude::{ConfChange, ConfChangeType, Entry, EntryType, Message as RaftMessage, MessageType, Snapshot};
use raft::{RawNode, SnapshotStatus, StateRole};
use tokio::sync::{mpsc, oneshot};

use crate::orb::{well_known, CallOptions, Liveness, Orb, OrbInner, TOOL_NODE};
use crate::proto::svc::{self, Member, QuorumCommand, QuorumInfo, QuorumState, View};
use crate::proto::ObjRef;

pub use store::StoreError;

/// Why a voter change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VoterError {
    #[error("node {me} is not the quorum's leader (the leader is {leader})")]
    NotLeader { me: u32, leader: u32 },
    #[error("node {0} is not in the cluster configuration")]
    UnknownNode(u32),
    #[error("the last voter cannot be removed")]
    LastVoter,
    #[error("cannot change the voters now: {0}")]
    Refused(String),
    #[error("this node runs no quorum")]
    NoQuorum,
    #[error("the quorum stopped")]
    Stopped,
    #[error("the voter change was not committed in time")]
    Timeout,
}

/// Where a voter change is answered: the quorum after it, or why it was refused.
type VoterReply = oneshot::Sender<Result<QuorumInfo, VoterError>>;

/// What reaches the quorum's task.
pub(crate) enum Input {
    /// Raft messages from a peer, encoded.
    Raft(u32, Vec<Bytes>),
    /// `ssi cluster add-node/remove-node`: answered when committed (or refused).
    ChangeVoter { node: u32, add: bool, done: VoterReply },
    /// Liveness changed: the leader may have a view to propose.
    Nudge,
    /// A peer's ORB heartbeat said whether it is in a majority.
    PeerQuorum(u32, bool),
}

/// The voters a brand-new cluster starts with: `cfg.voters`, or every configured node.
fn initial_voters(inner: &OrbInner) -> Vec<u32> {
    match &inner.cfg.voters {
        Some(v) => v.clone(),
        None => {
            let mut v: Vec<u32> = inner.cfg.peers.keys().copied().filter(|id| *id != TOOL_NODE).collect();
            v.push(inner.cfg.node);
            v.sort_unstable();
            v.dedup();
            v
        }
    }
}

pub(crate) fn spawn(orb: &Orb, rx: mpsc::UnboundedReceiver<Input>) -> Result<(), StoreError> {
    let inner = &orb.0;
    let voters = initial_voters(inner);
    let (log, storage) = store::DurableLog::open(inner.cfg.state_dir.as_deref(), &voters)?;
    // A log that starts from a snapshot: its state first, then Raft delivers what follows.
    let start = log.snapshot();
    let voters: Vec<u32> = if start.is_empty() {
        voters
    } else {
        install_state(inner, &start);
        voters_of(&start)
    };
    let tick = (inner.cfg.heartbeat / 2).max(Duration::from_millis(10));
    let election = ((inner.cfg.fail_timeout.as_millis() / tick.as_millis()) as usize).max(4);
    // Failover: a follower whose failure detector declares the leader down (after
    // `fail_timeout` of silence) makes the lowest live voter campaign at once, again every
    // three ticks until a leader is known. Raft's own randomized timers (1.5–2
    // fail_timeouts) are the fallback. Raft's leader lease (`election_tick`: a follower that
    // heard its leader this recently ignores candidates) ends before the detector fires, so
    // the candidate does not find the others still in their lease.
    let rc = raft::Config {
        id: inner.cfg.node as u64,
        election_tick: (election * 4 / 5).clamp(3, election - 1),
        heartbeat_tick: 2,
        min_election_tick: election * 3 / 2,
        max_election_tick: election * 2 + 1,
        check_quorum: true,
        pre_vote: true,
        ..Default::default()
    };
    let logger = slog::Logger::root(slog::Discard, slog::o!());
    let raw = RawNode::new(&rc, storage, &logger)?;
    let mut q = Quorum {
        orb: Arc::downgrade(inner),
        me: inner.cfg.node,
        raw,
        log,
        voters: voters.into_iter().collect(),
        heard: BTreeMap::new(),
        peer_quorum: BTreeMap::new(),
        fail_timeout: inner.cfg.fail_timeout,
        proposed: None,
        campaigned_at: None,
        retry: tick * 3,
        waiting: Vec::new(),
        election: tick * election as u32,
    };
    let mut stop = inner.shutdown.subscribe();
    tokio::spawn(async move {
        let mut rx = rx;
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => q.on_tick(),
                input = rx.recv() => match input {
                    Some(i) => q.on_input(i),
                    None => return,
                },
                _ = stop.changed() => return,
            }
            if let Err(e) = q.handle_ready() {
                // Without a durable log this node must not vote or acknowledge: it stays
                // fenced until restarted.
                tracing::error!("quorum stopped: {e}");
                q.publish_stopped(&e.to_string());
                return;
            }
        }
    });
    Ok(())
}

struct Quorum {
    orb: Weak<OrbInner>,
    me: u32,
    raw: RawNode<store::LogStorage>,
    log: store::DurableLog,
    voters: BTreeSet<u32>,
    /// When a Raft message last came from each peer.
    heard: BTreeMap<u32, Instant>,
    /// What each peer's last ORB heartbeat said of its quorum.
    peer_quorum: BTreeMap<u32, bool>,
    fail_timeout: Duration,
    /// The view this leader proposed and when: not proposed again while in flight.
    proposed: Option<(u64, Instant)>,
    campaigned_at: Option<Instant>,
    /// How soon a campaign that found no leader is tried again.
    retry: Duration,
    waiting: Vec<(u32, bool, VoterReply)>,
    election: Duration,
}

impl Quorum {
    fn on_tick(&mut self) {
        self.raw.tick();
        let Some(inner) = self.orb.upgrade() else { return };
        self.maybe_campaign(&inner);
        self.maybe_propose_view(&inner);
        self.publish(&inner);
    }

    fn on_input(&mut self, input: Input) {
        let Some(inner) = self.orb.upgrade() else { return };
        match input {
            Input::Raft(from, msgs) => {
                self.heard.insert(from, Instant::now());
                for b in msgs {
                    match RaftMessage::parse_from_bytes(&b) {
                        // A message claiming another sender than its link is dropped.
                        Ok(m) if m.from == from as u64 && m.to == self.me as u64 => {
                            if let Err(e) = self.raw.step(m) {
                                tracing::debug!(peer = from, "raft step: {e}");
                            }
                        }
                        Ok(m) => tracing::warn!(peer = from, "raft message from {} to {} refused", m.from, m.to),
                        Err(e) => tracing::warn!(peer = from, "malformed raft message: {e}"),
                    }
                }
            }
            Input::ChangeVoter { node, add, done } => self.change_voter(&inner, node, add, done),
            Input::Nudge => self.maybe_propose_view(&inner),
            Input::PeerQuorum(peer, q) => {
                self.peer_quorum.insert(peer, q);
            }
        }
        self.publish(&inner);
    }

    /// Start-up and failover speed only, never safety: with no leader known, or the leader
    /// declared down by the failure detector, the lowest live voter that reaches a majority
    /// asks for votes at once (pre-vote: it disrupts nothing if the others still hear a
    /// leader) instead of waiting out a randomized election timeout.
    fn maybe_campaign(&mut self, inner: &Arc<OrbInner>) {
        if self.raw.raft.state == StateRole::Leader || !self.voters.contains(&self.me) {
            return;
        }
        let orb = inner.orb();
        let leader = self.raw.raft.leader_id as u32;
        let leaderless = leader == 0 || (leader != self.me && orb.liveness(leader) == Liveness::Down);
        if !leaderless || self.campaigned_at.is_some_and(|t| t.elapsed() < self.retry) {
            return;
        }
        let up: Vec<u32> = self.voters.iter().copied().filter(|v| *v == self.me || orb.liveness(*v) == Liveness::Up).collect();
        if up.first() != Some(&self.me) || up.len() * 2 <= self.voters.len() {
            return;
        }
        self.campaigned_at = Some(Instant::now());
        let _ = self.raw.campaign();
    }

    /// The leader proposes a view when the live members or the coordinator differ from the
    /// applied view.
    fn maybe_propose_view(&mut self, inner: &Arc<OrbInner>) {
        if self.raw.raft.state != StateRole::Leader || !self.has_quorum() {
            return;
        }
        // A new leader proposes nothing until an entry of its own term is committed: only
        // then does it know the applied view is the last one.
        let term = self.raw.raft.term;
        let committed_term = self.raw.raft.raft_log.term(self.raw.raft.raft_log.committed).unwrap_or(0);
        if committed_term != term {
            return;
        }
        let current = inner.view_tx.borrow().clone();
        let live = live_members(inner);
        let cur: BTreeSet<(u32, u64)> = current.members.iter().map(|m| (m.node, m.incarnation)).collect();
        let number = current.number + 1;
        let nodes: BTreeSet<u32> = live.iter().map(|(n, _)| *n).collect();
        let declared = inner.roles_declared.lock().clone();
        let roles = roles::assign(&current.roles, &nodes, &declared, number);
        if cur == live && current.coordinator == self.me && current.number > 0 && roles == current.roles {
            return;
        }
        if self.proposed.is_some_and(|(n, t)| n == number && t.elapsed() < self.election) {
            return;
        }
        let v = View {
            number,
            members: live.into_iter().map(|(node, incarnation)| Member { node, incarnation }).collect(),
            coordinator: self.me,
            roles,
        };
        let cmd = QuorumCommand { view: Some(v) };
        if self.raw.propose(vec![], cmd.encode_to_vec()).is_ok() {
            self.proposed = Some((number, Instant::now()));
        }
    }

    fn change_voter(&mut self, inner: &Arc<OrbInner>, node: u32, add: bool, done: VoterReply) {
        if self.raw.raft.state != StateRole::Leader {
            let _ = done.send(Err(VoterError::NotLeader { me: self.me, leader: self.raw.raft.leader_id as u32 }));
            return;
        }
        if node == TOOL_NODE || (node != self.me && !inner.cfg.peers.contains_key(&node)) {
            let _ = done.send(Err(VoterError::UnknownNode(node)));
            return;
        }
        if add == self.voters.contains(&node) {
            let _ = done.send(Ok(self.info()));
            return;
        }
        if !add && self.voters.len() == 1 {
            let _ = done.send(Err(VoterError::LastVoter));
            return;
        }
        let mut cc = ConfChange { node_id: node as u64, ..Default::default() };
        cc.set_change_type(if add { ConfChangeType::AddNode } else { ConfChangeType::RemoveNode });
        match self.raw.propose_conf_change(vec![], cc) {
            Ok(()) => self.waiting.push((node, add, done)),
            Err(e) => {
                let _ = done.send(Err(VoterError::Refused(e.to_string())));
            }
        }
    }

    fn has_quorum(&self) -> bool {
        let fresh = |id: &u32| *id == self.me || self.heard.get(id).is_some_and(|t| t.elapsed() < self.fail_timeout);
        match self.raw.raft.state {
            StateRole::Leader => {
                // Voter changes are one at a time (no joint configurations): a plain majority.
                let heard = self.voters.iter().filter(|v| fresh(v)).count();
                heard * 2 > self.voters.len()
            }
            // A follower is in a majority while its leader is, as far as it knows: it hears
            // the leader, and the leader's last heartbeat did not say it lost its majority.
            _ => {
                let leader = self.raw.raft.leader_id as u32;
                leader != 0 && fresh(&leader) && self.peer_quorum.get(&leader) != Some(&false)
            }
        }
    }

    fn info(&self) -> QuorumInfo {
        QuorumInfo {
            quorum: self.has_quorum(),
            leader: self.raw.raft.leader_id as u32,
            voters: self.voters.iter().copied().collect(),
            term: self.raw.raft.term,
            fencing: true,
            log_snapshot: self.log.span().snapshot,
            log_last: self.log.span().last,
        }
    }

    fn publish(&self, inner: &Arc<OrbInner>) {
        let mut info = self.info();
        info.fencing = inner.cfg.fencing;
        // A node the majority's view leaves out is fenced too, though it may still hear the
        // leader (a one-way cut: its own words are lost), as is a restarted node until a
        // view has its new incarnation.
        let member = inner.view_tx.borrow().has(self.me, inner.cfg.incarnation);
        info.quorum &= member;
        // A follower whose link to its leader is gone hears it no more from this moment: it
        // need not wait out the lease (the leader closed a link silent for `fail_timeout`).
        let leader = self.raw.raft.leader_id as u32;
        if self.raw.raft.state != StateRole::Leader && leader != 0 {
            let linked = inner.peers.lock().get(&leader).is_some_and(|p| p.link.as_ref().is_some_and(|l| !l.is_closed()));
            info.quorum &= linked;
        }
        inner.quorum_info.send_if_modified(|old| {
            let changed = *old != info;
            if changed && old.quorum != info.quorum {
                if info.quorum {
                    tracing::info!(leader = info.leader, "quorum regained");
                } else {
                    tracing::warn!("no quorum: this node is fenced");
                }
            }
            *old = info;
            changed
        });
    }

    fn publish_stopped(&self, why: &str) {
        let Some(inner) = self.orb.upgrade() else { return };
        tracing::error!("fenced for good: {why}");
        inner.quorum_info.send_modify(|q| {
            q.quorum = false;
            q.leader = 0;
        });
    }

    fn handle_ready(&mut self) -> Result<(), StoreError> {
        if !self.raw.has_ready() {
            return Ok(());
        }
        let Some(inner) = self.orb.upgrade() else { return Ok(()) };
        let mut rd = self.raw.ready();
        let mut snapshots = send(&inner, rd.take_messages());
        if !rd.snapshot().is_empty() {
            // This node lagged past the leader's compaction: the log restarts from the
            // leader's snapshot, and the state machine with it.
            let snap = rd.snapshot().clone();
            self.log.install(&snap)?;
            self.voters = voters_of(&snap);
            install_state(&inner, &snap);
            tracing::info!(index = snap.get_metadata().index, "quorum state taken from the leader's snapshot");
        }
        let committed = rd.take_committed_entries();
        self.apply(&inner, committed);
        self.log.persist(rd.hs(), rd.entries())?;
        snapshots.extend(send(&inner, rd.take_persisted_messages()));
        let mut light = self.raw.advance(rd);
        if let Some(c) = light.commit_index() {
            self.log.set_commit(c);
        }
        snapshots.extend(send(&inner, light.take_messages()));
        let committed = light.take_committed_entries();
        self.apply(&inner, committed);
        self.raw.advance_apply();
        // Raft waits for word of every snapshot it sends before it sends that peer anything
        // else. Queued on a link counts as sent: if it is lost, the peer's next answer shows
        // it lacks the entries and the leader sends a snapshot again. Not queued (no link,
        // the peer is down): failed, so the peer is probed again instead of waited for.
        for (peer, queued) in snapshots {
            self.raw.report_snapshot(peer as u64, if queued { SnapshotStatus::Finish } else { SnapshotStatus::Failure });
        }
        let state = QuorumState { view: Some(inner.view_tx.borrow().clone()) };
        let applied = self.raw.raft.raft_log.applied;
        if self.log.applied(applied, state.encode_to_vec(), inner.cfg.compact_after)? {
            tracing::debug!(applied, "quorum log compacted");
        }
        Ok(())
    }

    fn apply(&mut self, inner: &Arc<OrbInner>, entries: Vec<Entry>) {
        for e in entries {
            if e.data.is_empty() {
                continue; // a new leader's empty entry
            }
            match e.get_entry_type() {
                EntryType::EntryConfChange => {
                    let mut cc = ConfChange::default();
                    if cc.merge_from_bytes(&e.data).is_err() {
                        tracing::error!(index = e.index, "undecodable voter change in the log");
                        continue;
                    }
                    match self.raw.apply_conf_change(&cc) {
                        Ok(cs) => {
                            self.voters = cs.voters.iter().map(|v| *v as u32).collect();
                            self.log.set_conf_state(cs);
                            tracing::info!(voters = ?self.voters, "voters changed");
                        }
                        Err(err) => tracing::error!(index = e.index, "voter change refused: {err}"),
                    }
                    let info = self.info();
                    let voters = self.voters.clone();
                    // Answer whoever waited for a change now in force (the rest keep waiting).
                    let mut still = Vec::new();
                    for (node, add, done) in std::mem::take(&mut self.waiting) {
                        if voters.contains(&node) == add {
                            let _ = done.send(Ok(info.clone()));
                        } else {
                            still.push((node, add, done));
                        }
                    }
                    self.waiting = still;
                    if !self.voters.contains(&self.me) {
                        tracing::warn!("this node is no longer a voter");
                    }
                }
                EntryType::EntryNormal => match QuorumCommand::decode(&e.data[..]) {
                    Ok(QuorumCommand { view: Some(v) }) => {
                        let cur = inner.view_tx.borrow().number;
                        if v.number == cur + 1 {
                            inner.install_view(v);
                        }
                    }
                    Ok(_) => {}
                    Err(err) => tracing::error!(index = e.index, "undecodable quorum command: {err}"),
                },
                EntryType::EntryConfChangeV2 => tracing::error!(index = e.index, "joint voter changes are not used"),
            }
        }
    }
}

/// The voters a snapshot of the state machine was taken with.
fn voters_of<T: FromIterator<u32>>(snap: &Snapshot) -> T {
    snap.get_metadata().get_conf_state().voters.iter().map(|v| *v as u32).collect()
}

/// Installs the view of a snapshot of the state machine, if it is newer than this node's.
fn install_state(inner: &OrbInner, snap: &Snapshot) {
    match QuorumState::decode(&snap.data[..]) {
        Ok(QuorumState { view: Some(v) }) => {
            if v.number > inner.view_tx.borrow().number {
                inner.install_view(v);
            }
        }
        Ok(_) => {}
        Err(e) => tracing::error!(index = snap.get_metadata().index, "undecodable quorum snapshot: {e}"),
    }
}

/// The members the failure detector sees alive, this node included.
fn live_members(inner: &OrbInner) -> BTreeSet<(u32, u64)> {
    let peers = inner.peers.lock();
    let mut s: BTreeSet<(u32, u64)> =
        peers.iter().filter(|(_, p)| p.liveness == Liveness::Up).map(|(id, p)| (*id, p.incarnation)).collect();
    s.insert((inner.cfg.node, inner.cfg.incarnation));
    s
}

/// Queues Raft messages on the links to their peers, one batch per peer. A message for a
/// peer without a link is dropped: Raft sends again. Returns, for each snapshot among them,
/// its peer and whether it was queued.
fn send(inner: &Arc<OrbInner>, msgs: Vec<RaftMessage>) -> Vec<(u32, bool)> {
    let mut snapshots = Vec::new();
    if msgs.is_empty() {
        return snapshots;
    }
    let mut by_peer: BTreeMap<u32, Vec<Bytes>> = BTreeMap::new();
    for m in msgs {
        if m.get_msg_type() == MessageType::MsgSnapshot {
            snapshots.push((m.to as u32, false));
        }
        match m.write_to_bytes() {
            Ok(b) => by_peer.entry(m.to as u32).or_default().push(Bytes::from(b)),
            Err(e) => tracing::error!("cannot encode a raft message: {e}"),
        }
    }
    let opts = CallOptions::default().priority(255).deadline(inner.cfg.fail_timeout);
    for (peer, msgs) in by_peer {
        let link = inner.peers.lock().get(&peer).and_then(|p| p.link.clone());
        let Some(link) = link.filter(|l| !l.is_closed()) else { continue };
        for s in snapshots.iter_mut().filter(|(to, _)| *to == peer) {
            s.1 = true;
        }
        let target = ObjRef { node: peer, object: well_known::MEMBERSHIP, incarnation: 0, interface: svc::MEMBERSHIP_INTERFACE };
        let out = crate::object::Outgoing::from_message(&svc::RaftBatch { msgs });
        inner.oneway_on_link(&link, &target, svc::membership_methods::RAFT, out, &opts);
    }
    snapshots
}
