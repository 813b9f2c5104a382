//! The SAP server: the cluster-wide port namespace (protocol, port) → listeners, sharded
//! over the configured nodes by port, each shard on two nodes (the paper's §4.1
//! found one SAP server a hot spot).
//!
//! Shard `port mod N` (N configured nodes, in id order) has node `i` as primary and node
//! `i+1` as backup. A bind goes to the primary (or, while it is down, to the backup); that
//! copy first has the other take it — which checks it against its own copy too — then
//! applies it; a copy grants alone only once the other's node is out of the view. Both
//! copies hold every binding, so either alone answers right and the death of one node loses
//! none. Requests for one shard are serialized at the node serving
//! it, so two nodes binding the same port at once never both succeed. Listeners on a node
//! that leaves the view are released once they cannot be alive ([`departed_lease`]).
//!
//! Those who follow the whole table (the gateway's dispatcher, each node's bind guard) hold a
//! long poll (`Watch`) on every node's copy through [`SapClient::follow`]: a change reaches
//! them at once, and an unchanged table costs one call per node every [`WATCH_WAIT`], not a
//! read of every copy by every follower every fraction of a second.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use ssi_orb::proto::Empty;
use ssi_orb::{CallCtx, CallOptions, Exception, Liveness, Orb, OrbError};
use tokio::sync::Mutex;

use crate::proto::{
    export_sap, BindReply, BindReq, Binding, Entries, Entry, Listener, LookupReq, ReleaseReq, Sap, SapStub, Snapshot, WatchReq,
};

pub const SAP_NAME: &str = "sap";
pub const TCP: u32 = 6;
pub const UDP: u32 = 17;

/// The key of (protocol, port) in the BPF programs' maps (dispatcher, bind guard).
pub fn port_key(proto: u32, port: u32) -> u32 {
    proto << 16 | port
}

/// How long a `Watch` waits for a change before it answers with the same table.
pub const WATCH_WAIT: Duration = Duration::from_secs(10);
/// How long a follower waits before asking a node again that did not answer.
const WATCH_RETRY: Duration = Duration::from_millis(500);

/// How long the exclusive listeners of a node that left the view are kept. A node cut off
/// from the majority kills the processes holding its granted ports once it has been cut off
/// for `fail_timeout` (`interpose::Supervisor`, failfast); the majority's view without it
/// comes about as late as the node learns it is cut off, so four `fail_timeout`s leave
/// about two of margin.
pub fn departed_lease(orb: &Orb) -> Duration {
    orb.fail_timeout() * 4
}

/// Which nodes hold a port's shard: (primary, backup).
pub fn shard_nodes(nodes: &[u32], port: u32) -> (u32, u32) {
    let i = port as usize % nodes.len();
    (nodes[i], nodes[(i + 1) % nodes.len()])
}

/// The quorum role of the copy that serves a port's shard (see [`SapClient`]).
pub fn shard_role(nodes: &[u32], port: u32) -> String {
    format!("sap/{}", port as usize % nodes.len())
}

#[derive(Clone)]
pub struct SapServer(Arc<Inner>);

struct Inner {
    orb: Orb,
    /// The configured nodes, in id order: the shard map.
    nodes: Vec<u32>,
    table: Mutex<BTreeMap<(u32, u32), Entry>>,
    /// The copy's version: moved (under the table's lock) by every change of it.
    version: watch::Sender<u64>,
    /// The last view this copy has caught up with (departures applied, resynchronized on
    /// joining): a bind waits for the view it sees, so a copy just back from a cut does not
    /// answer from its stale table.
    caught_up: watch::Sender<u64>,
}

fn opts() -> CallOptions {
    CallOptions::default().deadline(Duration::from_secs(2))
}

fn same(a: &Listener, b: &Listener) -> bool {
    a.node == b.node && a.pid == b.pid
}

/// Node `node`'s SAP server.
async fn stub(orb: &Orb, node: u32) -> Result<SapStub, OrbError> {
    Ok(SapStub::new(orb.resolve(node, SAP_NAME).await?)?.with_options(opts()))
}

impl SapServer {
    /// The table changed (called with its lock held, so a version always names one state).
    fn changed(&self) {
        self.0.version.send_modify(|v| *v += 1);
    }

    /// The entry that refuses `b` in this copy, if any.
    fn refusal(table: &BTreeMap<(u32, u32), Entry>, b: &Binding) -> Option<Entry> {
        let who = b.who.unwrap_or_default();
        match table.get(&(b.proto, b.port)) {
            Some(e) if !e.listeners.iter().any(|l| same(l, &who)) && (e.service.is_empty() || e.service != b.service) => Some(e.clone()),
            _ => None,
        }
    }

    /// Applies a bind to this node's copy: Ok, or the entry that refuses it.
    fn apply_bind(table: &mut BTreeMap<(u32, u32), Entry>, b: &Binding) -> Result<(), Entry> {
        let who = b.who.unwrap_or_default();
        let key = (b.proto, b.port);
        match table.get_mut(&key) {
            None => {
                table.insert(
                    key,
                    Entry { proto: b.proto, port: b.port, service: b.service.clone(), policy: b.policy.clone(), listeners: vec![who] },
                );
                Ok(())
            }
            Some(e) if e.listeners.iter().any(|l| same(l, &who)) => Ok(()), // the same process again
            Some(e) if !e.service.is_empty() && e.service == b.service => {
                e.listeners.push(who);
                Ok(())
            }
            Some(e) => Err(e.clone()),
        }
    }

    fn apply_release(table: &mut BTreeMap<(u32, u32), Entry>, r: &ReleaseReq) {
        let who = r.who.unwrap_or_default();
        let key = (r.proto, r.port);
        if let Some(e) = table.get_mut(&key) {
            e.listeners.retain(|l| !same(l, &who));
            if e.listeners.is_empty() {
                table.remove(&key);
            }
        }
    }

    /// Takes away node `node`'s listeners that `drop` picks.
    async fn drop_listeners(&self, node: u32, drop: impl Fn(&Entry, &Listener) -> bool) {
        let mut t = self.0.table.lock().await;
        for e in t.values_mut() {
            let keep: Vec<Listener> = e.listeners.iter().filter(|l| l.node != node || !drop(e, l)).copied().collect();
            e.listeners = keep;
        }
        t.retain(|_, e| !e.listeners.is_empty());
        self.changed();
    }

    /// Follows the views. This node joining one resynchronizes its copy. A node back as a
    /// new incarnation loses its earlier incarnations' listeners at once (their processes
    /// died with it). A node that leaves the view loses its shared (service) listeners at
    /// once, and its exclusive ones after [`departed_lease`] unless it is back by then as
    /// the same incarnation: it may only be cut off, its processes alive, and a port is
    /// never granted while its holder may live.
    async fn follow_views(self) {
        let orb = self.0.orb.clone();
        let members = |v: &ssi_orb::View| v.members.iter().map(|m| (m.node, m.incarnation)).collect::<BTreeMap<u32, u64>>();
        let mut views = orb.subscribe_views();
        let mut was = members(&views.borrow());
        let mut was_number = views.borrow().number;
        let me = (orb.node(), orb.incarnation());
        while views.changed().await.is_ok() {
            let (now, number) = {
                let v = views.borrow_and_update();
                (members(&v), v.number)
            };
            // Views come in bursts (a node back from a cut applies those it missed at once)
            // and a watch keeps only the last: the ones in between say whether this node was
            // out of the view meanwhile.
            let out_between = orb
                .views_seen()
                .iter()
                .filter(|v| v.number > was_number && v.number < number)
                .any(|v| members(v).get(&me.0) != Some(&me.1));
            if now.get(&me.0) == Some(&me.1) && (was.get(&me.0) != Some(&me.1) || out_between) {
                self.clone().resync().await;
            }
            was_number = number;
            for (&node, &inc) in &now {
                if was.get(&node).is_some_and(|old| *old != inc) || !was.contains_key(&node) {
                    self.drop_listeners(node, |_, l| l.incarnation < inc).await;
                }
            }
            for (&node, &inc) in was.iter().filter(|(n, _)| !now.contains_key(n)) {
                self.drop_listeners(node, |e, _| !e.service.is_empty()).await;
                let s = self.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(departed_lease(&s.0.orb)).await;
                    if !s.0.orb.view().has(node, inc) {
                        s.drop_listeners(node, |_, l| l.incarnation <= inc).await;
                        tracing::info!(node, "the listeners of a node gone for the lease released");
                    }
                });
            }
            was = now;
            self.0.caught_up.send_replace(number);
        }
    }

    /// This node (incarnation) back in the view: its copy of each shard it shares may be
    /// stale — the other copy granted and released alone while this node was out of the
    /// view, and only then — so it takes the other copy's entries for those shards. Its
    /// table stays locked meanwhile: a bind the other copy makes now waits to be applied
    /// to the fresh copy, not to the stale one the list replaces. (Were both copies out of
    /// the view, nobody changed either.)
    async fn resync(self) {
        let me = self.0.orb.node();
        let nodes = &self.0.nodes;
        let partners: std::collections::BTreeSet<u32> = (0..nodes.len() as u32)
            .map(|port| shard_nodes(nodes, port))
            .filter_map(|(p, b)| {
                if p == me {
                    Some(b)
                } else if b == me {
                    Some(p)
                } else {
                    None
                }
            })
            .filter(|n| *n != me)
            .collect();
        for partner in partners {
            let shared = |port: u32| {
                let (p, b) = shard_nodes(nodes, port);
                (p == me && b == partner) || (b == me && p == partner)
            };
            if !self.in_view(partner) {
                continue;
            }
            let Ok(s) = stub(&self.0.orb, partner).await else { continue };
            let mut t = self.0.table.lock().await;
            let Ok(theirs) = s.list(Empty {}).await else { continue };
            t.retain(|(_, port), _| !shared(*port));
            for e in theirs.into_inner().entries.into_iter().filter(|e| shared(e.port)) {
                t.insert((e.proto, e.port), e);
            }
            self.changed();
            tracing::info!(partner, "SAP copy resynchronized on joining the view");
        }
    }

    /// The node with the other copy of `port`'s shard, if it is not this one.
    fn other_copy(&self, port: u32) -> Option<u32> {
        let (primary, backup) = shard_nodes(&self.0.nodes, port);
        let me = self.0.orb.node();
        let other = if me == primary { backup } else { primary };
        (other != me).then_some(other)
    }

    /// Whether `node` is a member of the installed view.
    fn in_view(&self, node: u32) -> bool {
        self.0.orb.view().has_node(node)
    }
}
#[ssi_orb::async_trait]
impl Sap for SapServer {
    async fn bind(&self, _ctx: &CallCtx, req: BindReq) -> Result<BindReply, Exception> {
        let b = req.b.ok_or_else(|| Exception::errno(libc::EINVAL, "bind without a binding"))?;
        if b.port == 0 || b.port > 65535 || (b.proto != TCP && b.proto != UDP) {
            return Err(Exception::errno(libc::EINVAL, format!("no such port: proto {} port {}", b.proto, b.port)));
        }
        // Cut off from a majority, this copy may be the stale half of a shard whose other
        // copy grants in the majority: it grants nothing until the quorum is back.
        if !req.replica {
            if let Some(why) = self.0.orb.fenced() {
                return Err(Exception::errno(libc::EAGAIN, format!("bind of port {}/{} refused: {why}", b.port, proto_name(b.proto))));
            }
            let view = self.0.orb.view().number;
            let mut caught_up = self.0.caught_up.subscribe();
            if tokio::time::timeout(Duration::from_secs(2), caught_up.wait_for(|n| *n >= view)).await.is_err() {
                return Err(Exception::errno(
                    libc::EAGAIN,
                    format!("bind of port {}/{} refused: this SAP copy is catching up with view {view}", b.port, proto_name(b.proto)),
                ));
            }
        }
        let mut t = self.0.table.lock().await;
        if let Some(holder) = Self::refusal(&t, &b) {
            return Ok(BindReply { ok: false, holder: Some(holder) });
        }
        if !req.replica {
            // The other copy first: it may know a binding this one missed (a restart). A
            // copy grants alone only when the other is out of the installed view: one that
            // is merely silent may be granting on the far side of a cut.
            if let Some(other) = self.other_copy(b.port) {
                let r = match (self.0.orb.liveness(other), stub(&self.0.orb, other).await) {
                    (Liveness::Down, _) | (_, Err(_)) => None,
                    (_, Ok(s)) => s.bind(BindReq { b: Some(b.clone()), replica: true }).await.ok().map(|r| r.into_inner()),
                };
                match r {
                    Some(BindReply { ok: false, holder: Some(h) }) => {
                        t.insert((h.proto, h.port), h.clone());
                        self.changed();
                        return Ok(BindReply { ok: false, holder: Some(h) });
                    }
                    Some(_) => {}
                    None if self.in_view(other) => {
                        return Err(Exception::errno(
                            libc::EAGAIN,
                            format!("bind of port {}/{} refused: node {other}, with the shard's other copy, does not answer and is still in the view", b.port, proto_name(b.proto)),
                        ));
                    }
                    None => {}
                }
            }
        }
        let _ = Self::apply_bind(&mut t, &b);
        self.changed();
        Ok(BindReply { ok: true, holder: None })
    }

    async fn release(&self, _ctx: &CallCtx, req: ReleaseReq) -> Result<Empty, Exception> {
        let mut t = self.0.table.lock().await;
        Self::apply_release(&mut t, &req);
        self.changed();
        if !req.replica {
            if let Some(other) = self.other_copy(req.port).filter(|o| self.0.orb.liveness(*o) != Liveness::Down) {
                if let Ok(s) = stub(&self.0.orb, other).await {
                    let _ = s.release(ReleaseReq { replica: true, ..req }).await;
                }
            }
        }
        Ok(Empty {})
    }

    async fn lookup(&self, _ctx: &CallCtx, req: LookupReq) -> Result<Entry, Exception> {
        let t = self.0.table.lock().await;
        t.get(&(req.proto, req.port))
            .cloned()
            .ok_or_else(|| Exception::errno(libc::ENOENT, format!("port {}/{} is free", req.port, proto_name(req.proto))))
    }

    async fn list(&self, _ctx: &CallCtx, _req: Empty) -> Result<Entries, Exception> {
        Ok(Entries { entries: self.0.table.lock().await.values().cloned().collect() })
    }

    async fn watch(&self, _ctx: &CallCtx, req: WatchReq) -> Result<Snapshot, Exception> {
        let mut v = self.0.version.subscribe();
        if *v.borrow_and_update() == req.since {
            let wait = Duration::from_millis(req.wait_ms.min(WATCH_WAIT.as_millis() as u32) as u64);
            let _ = tokio::time::timeout(wait, v.changed()).await;
        }
        let t = self.0.table.lock().await;
        Ok(Snapshot { version: *self.0.version.borrow(), entries: t.values().cloned().collect() })
    }
}

pub fn proto_name(p: u32) -> &'static str {
    match p {
        TCP => "tcp",
        UDP => "udp",
        _ => "?",
    }
}

/// Serves `Sap` on this node; `nodes` are the configured node ids (the shard map).
pub fn serve(orb: &Orb, nodes: Vec<u32>) -> SapServer {
    let mut nodes = nodes;
    nodes.sort();
    // Ahead of any version an earlier run of this server gave out (see `WatchReq`).
    let start = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64);
    let s = SapServer(Arc::new(Inner {
        orb: orb.clone(),
        nodes,
        table: Mutex::new(BTreeMap::new()),
        version: watch::channel(start).0,
        caught_up: watch::channel(orb.view().number).0,
    }));
    // Which copy of each shard serves is a quorum role, shown by `ssi status` (clients do
    // not route by it yet, see `SapClient::copies`). Safety does not rest on it: each copy
    // grants alone only once the other is out of the view.
    for shard in 0..s.0.nodes.len() as u32 {
        let (primary, backup) = shard_nodes(&s.0.nodes, shard);
        orb.declare_role(&shard_role(&s.0.nodes, shard), if primary == backup { vec![primary] } else { vec![primary, backup] });
    }
    let h = export_sap(orb, s.clone());
    orb.register_name(SAP_NAME, &h);
    tokio::spawn(s.clone().follow_views());
    s
}

/// A node's way into the SAP: routes each request to its shard's primary (the backup while
/// the primary is down), and to the other copy when that one fails.
#[derive(Clone)]
pub struct SapClient {
    orb: Orb,
    nodes: Vec<u32>,
}

impl SapClient {
    pub fn new(orb: &Orb, nodes: Vec<u32>) -> Self {
        let mut nodes = nodes;
        nodes.sort();
        SapClient { orb: orb.clone(), nodes }
    }

    /// This node's incarnation, which its listeners carry.
    pub fn incarnation(&self) -> u64 {
        self.orb.incarnation()
    }

    /// The ORB it asks through.
    pub fn orb(&self) -> &Orb {
        &self.orb
    }

    /// The copy to ask first for `port` (the primary unless it is down), and the other.
    /// Not the shard's role holder: a holder that stayed on the backup after the primary
    /// rejoined would ask the primary's copy while it is still resynchronizing, and a
    /// replica's answer does not wait for that (its stale refusal would spread).
    fn copies(&self, port: u32) -> (u32, u32) {
        let (primary, backup) = shard_nodes(&self.nodes, port);
        if self.orb.liveness(primary) == Liveness::Down {
            (backup, primary)
        } else {
            (primary, backup)
        }
    }

    async fn serving(&self, port: u32) -> Result<SapStub, OrbError> {
        let (first, other) = self.copies(port);
        match self.stub(first).await {
            Ok(s) => Ok(s),
            Err(_) if first != other => self.stub(other).await,
            Err(e) => Err(e),
        }
    }

    async fn stub(&self, node: u32) -> Result<SapStub, OrbError> {
        stub(&self.orb, node).await
    }

    /// Binds, or says who holds the port. A copy that fails mid-call is retried at the other.
    pub async fn bind(&self, b: Binding) -> Result<BindReply, OrbError> {
        let port = b.port;
        match self.serving(port).await?.bind(BindReq { b: Some(b.clone()), replica: false }).await {
            Ok(r) => Ok(r.into_inner()),
            Err(OrbError::NodeDown { .. }) => {
                let (_, other) = self.copies(port);
                self.stub(other).await?.bind(BindReq { b: Some(b), replica: false }).await.map(|r| r.into_inner())
            }
            Err(e) => Err(e),
        }
    }

    pub async fn release(&self, proto: u32, port: u32, who: Listener) -> Result<(), OrbError> {
        self.serving(port).await?.release(ReleaseReq { proto, port, who: Some(who), replica: false }).await.map(|_| ())
    }

    /// Every binding of the cluster, from every node that is up (each copy once).
    pub async fn list(&self) -> Vec<Entry> {
        let mut copies = Vec::new();
        for &n in &self.nodes {
            if self.orb.liveness(n) == Liveness::Down {
                continue;
            }
            if let Ok(s) = self.stub(n).await {
                if let Ok(es) = s.list(Empty {}).await {
                    copies.push(es.into_inner().entries);
                }
            }
        }
        merge(copies.iter())
    }

    /// The whole table as [`list`](Self::list) gives it, kept current on `rt` by a long poll
    /// on every node's copy: the receiver sees each change as it happens. A node that does not
    /// answer has its copy left out (the other copy of each of its shards is on another node)
    /// until it answers again. The polls end once every receiver is gone.
    pub fn follow(&self, rt: &tokio::runtime::Handle) -> watch::Receiver<Arc<Vec<Entry>>> {
        let (tx, rx) = watch::channel(Arc::new(Vec::new()));
        let tx = Arc::new(tx);
        let copies: Arc<parking_lot::Mutex<BTreeMap<u32, Vec<Entry>>>> = Arc::default();
        for &n in &self.nodes {
            let (orb, tx, copies) = (self.orb.clone(), tx.clone(), copies.clone());
            rt.spawn(async move {
                let mut since = 0;
                while !tx.is_closed() {
                    let got = match orb.liveness(n) {
                        Liveness::Down => None,
                        _ => watch_once(&orb, n, since).await,
                    };
                    let known = match got {
                        Some(s) => {
                            since = s.version;
                            copies.lock().insert(n, s.entries);
                            true
                        }
                        None => {
                            since = 0;
                            copies.lock().remove(&n).is_some()
                        }
                    };
                    if known {
                        publish(&copies, &tx);
                    }
                    if since == 0 {
                        tokio::time::sleep(WATCH_RETRY).await;
                    }
                }
            });
        }
        rx
    }
}

async fn watch_once(orb: &Orb, node: u32, since: u64) -> Option<Snapshot> {
    let s = stub(orb, node).await.ok()?.with_options(CallOptions::default().deadline(WATCH_WAIT + Duration::from_secs(5)).waiting());
    s.watch(WatchReq { since, wait_ms: WATCH_WAIT.as_millis() as u32 }).await.ok().map(|r| r.into_inner())
}

/// Nodes' copies of the table as one: each shard's entries once, from the first copy that has
/// them (both copies of a shard agree but for a change on its way).
fn merge<'a>(copies: impl Iterator<Item = &'a Vec<Entry>>) -> Vec<Entry> {
    let mut all: BTreeMap<(u32, u32), &Entry> = BTreeMap::new();
    for e in copies.flatten() {
        all.entry((e.proto, e.port)).or_insert(e);
    }
    all.into_values().cloned().collect()
}

/// The copies merged, sent to the followers if that differs from what they have.
fn publish(copies: &parking_lot::Mutex<BTreeMap<u32, Vec<Entry>>>, tx: &watch::Sender<Arc<Vec<Entry>>>) {
    let merged = merge(copies.lock().values());
    tx.send_if_modified(|cur| {
        if **cur == merged {
            return false;
        }
        *cur = Arc::new(merged);
        true
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(port: u32, node: u32, pid: u32, service: &str) -> Binding {
        Binding {
            proto: TCP,
            port,
            who: Some(Listener { node, pid, weight: 1, incarnation: 1 }),
            service: service.into(),
            policy: "rr".into(),
        }
    }

    #[test]
    fn binds_conflict_unless_the_same_process_or_the_same_service() {
        let mut t = BTreeMap::new();
        assert!(SapServer::apply_bind(&mut t, &b(8080, 3, 100, "")).is_ok());
        assert!(SapServer::apply_bind(&mut t, &b(8080, 3, 100, "")).is_ok(), "the same process again");
        let refused = SapServer::apply_bind(&mut t, &b(8080, 2, 200, "")).unwrap_err();
        assert_eq!(refused.listeners[0].node, 3);
        assert!(SapServer::apply_bind(&mut t, &Binding { proto: UDP, ..b(8080, 2, 200, "") }).is_ok(), "UDP is its own namespace");
        assert!(SapServer::apply_bind(&mut t, &b(80, 1, 1, "web")).is_ok());
        assert!(SapServer::apply_bind(&mut t, &b(80, 2, 2, "web")).is_ok(), "joins the service");
        assert!(SapServer::apply_bind(&mut t, &b(80, 3, 3, "other")).is_err());
        SapServer::apply_release(
            &mut t,
            &ReleaseReq { proto: TCP, port: 80, who: Some(Listener { node: 1, pid: 1, weight: 0, incarnation: 0 }), replica: false },
        );
        assert_eq!(t[&(TCP, 80)].listeners.len(), 1);
        SapServer::apply_release(
            &mut t,
            &ReleaseReq { proto: TCP, port: 80, who: Some(Listener { node: 2, pid: 2, weight: 0, incarnation: 0 }), replica: false },
        );
        assert!(!t.contains_key(&(TCP, 80)));
    }

    #[test]
    fn shards_have_a_primary_and_another_node_as_backup() {
        let nodes = [1, 2, 3];
        assert_eq!(shard_nodes(&nodes, 8080), (1 + (8080 % 3) as u32, [2, 3, 1][8080 % 3]));
        for p in 0..100 {
            let (a, b) = shard_nodes(&nodes, p);
            assert_ne!(a, b);
        }
        assert_eq!(shard_nodes(&[5], 80), (5, 5));
    }
}
