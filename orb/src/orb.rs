//! The ORB of one node: invocation, export, reference counting.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use prost::Message;
use tokio::sync::{oneshot, watch, Notify};

use crate::auth::ClusterKey;
use crate::dispatch::Dispatcher;
use crate::error::{Exception, OrbError};
use crate::link::Link;
use crate::object::{CallCtx, HandleInner, Incoming, ObjHandle, Outgoing, RefKey, Refs, Servant};
use crate::probes::{self, Counters};
use crate::proto::svc::{self, View};
use crate::proto::{Creds, Header, Kind, ObjProto, ObjRef};
use crate::transport::StartError;
use crate::wire::WireMsg;

/// Object ids of the well-known objects every node serves.
pub mod well_known {
    pub const NAMES: u64 = 1;
    pub const REFCOUNTS: u64 = 2;
    pub const MEMBERSHIP: u64 = 3;
    /// Ids below this are reserved for well-known objects.
    pub const FIRST_DYNAMIC: u64 = 16;
}

/// Node ids run 1..=511 (a gpid, node × 4194304 + pid, must fit a pid_t); 0 is a
/// cluster tool: authenticated, may invoke, never a member.
pub const MAX_NODE: u32 = 511;
pub const TOOL_NODE: u32 = 0;

#[derive(Clone, Debug)]
pub struct OrbConfig {
    pub cluster: String,
    pub node: u32,
    pub incarnation: u64,
    pub key: ClusterKey,
    /// Where to accept links; `None` for a cluster tool.
    pub listen: Option<SocketAddr>,
    /// Every other configured node: id → address.
    pub peers: BTreeMap<u32, String>,
    pub heartbeat: Duration,
    pub fail_timeout: Duration,
    /// Invocations served at once; more wait in the priority queue.
    pub max_concurrent: usize,
    /// Queued invocations beyond which new ones are refused with `Overloaded`.
    pub max_queued: usize,
    /// Where the quorum's Raft log lives (`None`: in memory, for tests of one process).
    pub state_dir: Option<std::path::PathBuf>,
    /// The voters a new cluster starts with; `None`: every configured node.
    pub voters: Option<Vec<u32>>,
    /// Whether a node without quorum refuses to grant (false only to show, in the history
    /// checker's negative control, what fencing prevents).
    pub fencing: bool,
    /// Applied log entries after which the quorum's log is compacted into a snapshot.
    pub compact_after: u64,
}

impl OrbConfig {
    pub fn new(cluster: &str, node: u32, incarnation: u64, key: ClusterKey) -> Self {
        OrbConfig {
            cluster: cluster.to_string(),
            node,
            incarnation,
            key,
            listen: None,
            peers: BTreeMap::new(),
            heartbeat: Duration::from_millis(200),
            fail_timeout: Duration::from_millis(1000),
            max_concurrent: 256,
            max_queued: 65536,
            state_dir: None,
            voters: None,
            fencing: true,
            compact_after: 1000,
        }
    }
}

/// Per-invocation options.
#[derive(Clone, Debug)]
pub struct CallOptions {
    pub deadline: Duration,
    /// Higher is served first when the serving node is busy.
    pub priority: u32,
    pub creds: Option<Creds>,
    /// The call waits for an event by design (a long poll): its time is not a cost of the
    /// request-response, so the tracer's request-response stages leave it out (its messages
    /// are counted like any other).
    pub waits: bool,
}

impl Default for CallOptions {
    fn default() -> Self {
        CallOptions { deadline: Duration::from_secs(30), priority: 0, creds: None, waits: false }
    }
}

impl CallOptions {
    pub fn deadline(mut self, d: Duration) -> Self {
        self.deadline = d;
        self
    }
    pub fn priority(mut self, p: u32) -> Self {
        self.priority = p;
        self
    }
    pub fn creds(mut self, c: Creds) -> Self {
        self.creds = Some(c);
        self
    }
    /// See `waits`.
    pub fn waiting(mut self) -> Self {
        self.waits = true;
        self
    }
}

pub(crate) struct Export {
    pub servant: Arc<dyn Servant>,
    /// Live handles on this node (0 or 1: handles are shared per node).
    pub local: u32,
    /// Registrations held by other nodes.
    pub remote: HashMap<u32, u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    Unknown,
    Up,
    Down,
}

pub(crate) struct PeerState {
    pub addr: String,
    pub link: Option<Arc<Link>>,
    pub incarnation: u64,
    pub liveness: Liveness,
    /// When the link was lost (liveness turns Down after `fail_timeout` without one).
    pub lost_at: Option<Instant>,
    /// Highest request id received from this incarnation (at-most-once across reconnects).
    pub last_seen_request: u64,
    pub dialing: bool,
    /// The last dial made the moment a link dropped: at most one per heartbeat period, so a
    /// link that keeps dropping as soon as it is up is redialed at the tick's pace.
    pub redialed_at: Option<Instant>,
    pub ready: Arc<Notify>,
}

pub struct OrbInner {
    pub(crate) cfg: OrbConfig,
    pub(crate) started: Instant,
    pub(crate) local_addr: Mutex<Option<SocketAddr>>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) next_request: AtomicU64,
    next_object: AtomicU64,
    next_link: AtomicU64,
    pub(crate) exports: Mutex<HashMap<u64, Export>>,
    pub(crate) proxies: Mutex<HashMap<RefKey, Weak<HandleInner>>>,
    names: Mutex<BTreeMap<String, ObjHandle>>,
    pub(crate) peers: Mutex<BTreeMap<u32, PeerState>>,
    /// Links from cluster tools (node 0), which are not peers.
    pub(crate) tool_links: Mutex<Vec<Arc<Link>>>,
    pub(crate) dispatcher: Dispatcher,
    pub(crate) view_tx: watch::Sender<View>,
    pub(crate) views_seen: Mutex<Vec<View>>,
    pub(crate) quorum_tx: tokio::sync::mpsc::UnboundedSender<crate::quorum::Input>,
    pub(crate) quorum_info: watch::Sender<svc::QuorumInfo>,
    /// Roles this node's services declared: name → candidates, preferred first.
    pub(crate) roles_declared: Mutex<BTreeMap<String, Vec<u32>>>,
    release_queue: Mutex<HashMap<u32, HashMap<u64, u32>>>,
    release_notify: Notify,
    unreferenced_log: Mutex<Vec<u64>>,
    pub(crate) shutdown: watch::Sender<bool>,
}

/// A node's ORB. Cheap to clone.
#[derive(Clone)]
pub struct Orb(pub(crate) Arc<OrbInner>);

impl Orb {
    pub(crate) fn from_inner(i: Arc<OrbInner>) -> Orb {
        Orb(i)
    }

    /// Starts the ORB: accepts links (if `listen` is set), dials peers, runs membership.
    /// Must run inside a tokio runtime.
    pub async fn start(cfg: OrbConfig) -> Result<Orb, StartError> {
        if cfg.node > MAX_NODE {
            return Err(StartError::NodeId(cfg.node));
        }
        let mut peers = BTreeMap::new();
        for (id, addr) in &cfg.peers {
            if *id == cfg.node || *id == TOOL_NODE {
                continue;
            }
            peers.insert(
                *id,
                PeerState {
                    addr: addr.clone(),
                    link: None,
                    incarnation: 0,
                    liveness: Liveness::Unknown,
                    lost_at: None,
                    last_seen_request: 0,
                    dialing: false,
                    redialed_at: None,
                    ready: Arc::new(Notify::new()),
                },
            );
        }
        let first_view = View {
            number: 0,
            members: vec![svc::Member { node: cfg.node, incarnation: cfg.incarnation }],
            coordinator: cfg.node,
            roles: vec![],
        };
        let (view_tx, _) = watch::channel(first_view);
        let (shutdown, _) = watch::channel(false);
        let (quorum_tx, quorum_rx) = tokio::sync::mpsc::unbounded_channel();
        let (quorum_info, _) = watch::channel(svc::QuorumInfo { fencing: cfg.fencing, ..Default::default() });
        let inner = Arc::new(OrbInner {
            dispatcher: Dispatcher::new(cfg.max_concurrent, cfg.max_queued),
            cfg,
            started: Instant::now(),
            local_addr: Mutex::new(None),
            counters: Arc::new(Counters::default()),
            next_request: AtomicU64::new(1),
            next_object: AtomicU64::new(well_known::FIRST_DYNAMIC),
            next_link: AtomicU64::new(1),
            exports: Mutex::new(HashMap::new()),
            proxies: Mutex::new(HashMap::new()),
            names: Mutex::new(BTreeMap::new()),
            peers: Mutex::new(peers),
            tool_links: Mutex::new(Vec::new()),
            view_tx,
            views_seen: Mutex::new(Vec::new()),
            quorum_tx,
            quorum_info,
            roles_declared: Mutex::new(BTreeMap::new()),
            release_queue: Mutex::new(HashMap::new()),
            release_notify: Notify::new(),
            unreferenced_log: Mutex::new(Vec::new()),
            shutdown,
        });
        let orb = Orb(inner);
        crate::wellknown::install(&orb);
        if let Some(addr) = orb.0.cfg.listen {
            let bound = crate::transport::serve(&orb, addr).await?;
            *orb.0.local_addr.lock() = Some(bound);
        }
        if orb.0.cfg.node != TOOL_NODE {
            crate::quorum::spawn(&orb, quorum_rx)?;
        }
        crate::membership::spawn(&orb);
        orb.spawn_sweeper();
        orb.spawn_releaser();
        Ok(orb)
    }

    pub fn node(&self) -> u32 {
        self.0.cfg.node
    }
    pub fn incarnation(&self) -> u64 {
        self.0.cfg.incarnation
    }
    pub fn cluster(&self) -> &str {
        &self.0.cfg.cluster
    }
    pub fn local_addr(&self) -> Option<SocketAddr> {
        *self.0.local_addr.lock()
    }
    pub fn uptime(&self) -> Duration {
        self.0.started.elapsed()
    }
    pub fn counters(&self) -> svc::Counters {
        self.0.counters.snapshot(self.0.exports.lock().len() as u64)
    }
    /// Per-peer message and byte counts, with the CLOCK_MONOTONIC time they were read at.
    pub fn peer_counters(&self) -> (u64, Vec<(u32, probes::PeerCount)>) {
        self.0.counters.peer_snapshot()
    }
    /// The current membership view.
    pub fn view(&self) -> View {
        self.0.view_tx.borrow().clone()
    }
    /// The quorum as this node sees it: in a majority or not, the leader, the voters.
    pub fn quorum(&self) -> svc::QuorumInfo {
        self.0.quorum_info.borrow().clone()
    }
    /// Every change of `quorum()`.
    pub fn subscribe_quorum(&self) -> watch::Receiver<svc::QuorumInfo> {
        self.0.quorum_info.subscribe()
    }
    /// Whether this node must refuse to grant (binds, file mutations, placements): it is
    /// not in a majority and fencing is on. `Some` carries the one-line reason.
    pub fn fenced(&self) -> Option<String> {
        let q = self.0.quorum_info.borrow();
        (self.0.cfg.fencing && !q.quorum && self.0.cfg.node != TOOL_NODE)
            .then(|| format!("node {} has no quorum (it is cut off from a majority of the voters)", self.0.cfg.node))
    }
    /// Whether this node is cut off: fenced, and either its failure detector hears fewer
    /// than a majority of the voters or the installed view leaves this incarnation out. A
    /// follower that only lost its leader (a majority still in hearing) is fenced but not cut
    /// off: the majority will not move on without it.
    pub fn cut_off(&self) -> bool {
        if self.fenced().is_none() {
            return false;
        }
        let voters = self.quorum().voters;
        let heard = voters.iter().filter(|v| self.liveness(**v) == Liveness::Up).count();
        heard * 2 <= voters.len() || !self.view().has(self.node(), self.incarnation())
    }
    /// How long a silent peer stays Up (the failure detector's bound).
    pub fn fail_timeout(&self) -> Duration {
        self.0.cfg.fail_timeout
    }
    /// Adds or removes a voter of the quorum; this node must be the quorum's leader.
    /// Returns once the change is committed.
    pub async fn change_voter(&self, node: u32, add: bool) -> Result<svc::QuorumInfo, crate::VoterError> {
        use crate::VoterError;
        let (done, rx) = tokio::sync::oneshot::channel();
        self.0.quorum_tx.send(crate::quorum::Input::ChangeVoter { node, add, done }).map_err(|_| VoterError::NoQuorum)?;
        match tokio::time::timeout(self.0.cfg.fail_timeout * 5, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(VoterError::Stopped),
            Err(_) => Err(VoterError::Timeout),
        }
    }
    /// Declares a role one node at a time must hold, with its candidates in order of
    /// preference; the quorum assigns it with the next view (every node must declare the
    /// same). See [`Orb::role`].
    pub fn declare_role(&self, name: &str, candidates: Vec<u32>) {
        self.0.roles_declared.lock().insert(name.to_string(), candidates);
        let _ = self.0.quorum_tx.send(crate::quorum::Input::Nudge);
    }
    /// Who holds `name` in the installed view, and since which view (its epoch).
    pub fn role(&self, name: &str) -> Option<(u32, u64)> {
        self.0.view_tx.borrow().roles.iter().find(|r| r.name == name).map(|r| (r.node, r.epoch))
    }
    /// Every new view, as it is installed.
    pub fn subscribe_views(&self) -> watch::Receiver<View> {
        self.0.view_tx.subscribe()
    }
    /// Runs `f` for every node that leaves the view from now on, in order; the returned
    /// future runs until the ORB shuts down (spawn it).
    pub fn departures<F, Fut>(&self, f: F) -> impl std::future::Future<Output = ()> + Send + 'static
    where
        F: Fn(u32) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let mut views = self.subscribe_views();
        async move {
            let mut members: Vec<u32> = views.borrow().members.iter().map(|m| m.node).collect();
            while views.changed().await.is_ok() {
                let now: Vec<u32> = views.borrow().members.iter().map(|m| m.node).collect();
                for gone in members.iter().filter(|n| !now.contains(n)) {
                    f(*gone).await;
                }
                members = now;
            }
        }
    }
    /// Runs `f` for every peer this node's failure detector declares down (or finds
    /// restarted as a new incarnation) from now on, quorum or not: for local decisions
    /// such as hanging up a dead launcher's processes. Grants that others may contest
    /// follow views instead (`departures`). The future runs until shutdown (spawn it).
    pub fn losses<F, Fut>(&self, f: F) -> impl std::future::Future<Output = ()> + Send + 'static
    where
        F: Fn(u32) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let weak = Arc::downgrade(&self.0);
        let period = self.0.cfg.heartbeat / 2;
        async move {
            let mut up: BTreeMap<u32, u64> = BTreeMap::new();
            loop {
                tokio::time::sleep(period).await;
                let Some(inner) = weak.upgrade() else { return };
                if *inner.shutdown.borrow() {
                    return;
                }
                let now: BTreeMap<u32, u64> =
                    inner.peers.lock().iter().filter(|(_, p)| p.liveness == Liveness::Up).map(|(id, p)| (*id, p.incarnation)).collect();
                drop(inner);
                for (id, inc) in &up {
                    if now.get(id) != Some(inc) {
                        f(*id).await;
                    }
                }
                up = now;
            }
        }
    }
    /// Views installed so far, oldest first.
    pub fn views_seen(&self) -> Vec<View> {
        self.0.views_seen.lock().clone()
    }
    /// Objects of this node delivered `unreferenced()`, oldest first (last 4096).
    pub fn unreferenced_log(&self) -> Vec<u64> {
        self.0.unreferenced_log.lock().clone()
    }
    /// The incarnation of `node` this ORB last linked with (0: never), this node's own for itself.
    pub fn peer_incarnation(&self, node: u32) -> u64 {
        if node == self.node() {
            return self.incarnation();
        }
        self.0.peers.lock().get(&node).map(|p| p.incarnation).unwrap_or(0)
    }
    pub fn liveness(&self, node: u32) -> Liveness {
        if node == self.node() {
            return Liveness::Up;
        }
        self.0.peers.lock().get(&node).map(|p| p.liveness).unwrap_or(Liveness::Unknown)
    }
    pub fn is_exported(&self, object: u64) -> bool {
        self.0.exports.lock().contains_key(&object)
    }

    /// Stops serving: every link closes, outstanding calls fail.
    pub fn shutdown(&self) {
        let _ = self.0.shutdown.send(true);
        let links: Vec<Arc<Link>> = {
            let peers = self.0.peers.lock();
            peers.values().filter_map(|p| p.link.clone()).collect()
        };
        for l in links {
            l.close("ORB shut down");
        }
        for l in self.0.tool_links.lock().drain(..) {
            l.close("ORB shut down");
        }
    }

    /// Exports a servant; the returned handle is the first (local) reference to it.
    pub fn export(&self, servant: Arc<dyn Servant>) -> ObjHandle {
        let id = self.0.next_object.fetch_add(1, Relaxed);
        self.export_at(id, servant, true)
    }

    pub(crate) fn export_at(&self, id: u64, servant: Arc<dyn Servant>, counted: bool) -> ObjHandle {
        let objref = ObjRef { node: self.node(), object: id, incarnation: self.incarnation(), interface: servant.interface() };
        self.0.exports.lock().insert(id, Export { servant, local: counted as u32, remote: HashMap::new() });
        let h = ObjHandle(Arc::new(HandleInner { orb: Arc::downgrade(&self.0), objref, counted }));
        if counted {
            self.0.proxies.lock().insert(h.key(), Arc::downgrade(&h.0));
        }
        h
    }

    /// Makes a local object findable by name from every node; the name keeps it alive.
    pub fn register_name(&self, name: &str, h: &ObjHandle) {
        self.0.names.lock().insert(name.to_string(), h.clone());
    }
    pub(crate) fn lookup_name(&self, name: &str) -> Option<ObjHandle> {
        self.0.names.lock().get(name).cloned()
    }
    pub(crate) fn names(&self) -> Vec<String> {
        self.0.names.lock().keys().cloned().collect()
    }

    /// An uncounted handle on a well-known object of `node` (any incarnation).
    pub fn well_known(&self, node: u32, object: u64, interface: u32) -> ObjHandle {
        ObjHandle(Arc::new(HandleInner {
            orb: Arc::downgrade(&self.0),
            objref: ObjRef { node, object, incarnation: 0, interface },
            counted: false,
        }))
    }

    /// Finds the object registered as `name` on `node`.
    pub async fn resolve(&self, node: u32, name: &str) -> Result<ObjHandle, OrbError> {
        let names = svc::NamesStub::new(self.well_known(node, well_known::NAMES, svc::NAMES_INTERFACE))?;
        let rep = names.resolve(svc::ResolveRequest { name: name.to_string() }).await?;
        let r = rep.obj.ok_or_else(|| OrbError::Decode("Resolve reply without a reference".into()))?;
        rep.refs.adopt(&r).ok_or_else(|| OrbError::Exception(Exception::object_not_exist(r.object)))
    }

    fn header(&self, target: &ObjRef, kind: Kind, iface: u32, method: u32, opts: &CallOptions) -> Header {
        Header {
            kind: kind as i32,
            request_id: 0,
            src_node: self.node(),
            dst_node: target.node,
            object: target.object,
            incarnation: target.incarnation,
            interface: iface,
            method,
            priority: opts.priority,
            deadline_us: opts.deadline.as_micros() as u64,
            creds: opts.creds.clone(),
            code: 0,
            message: String::new(),
        }
    }

    /// Two-way invocation: returns the reply or the exception, `NodeDown` when the serving
    /// node fails, `DeadlineExceeded` when no answer came in time.
    pub async fn invoke(
        &self,
        target: &ObjHandle,
        iface: u32,
        method: u32,
        out: Outgoing,
        opts: &CallOptions,
    ) -> Result<Incoming, OrbError> {
        let r = target.objref();
        if r.node == self.node() {
            return self.invoke_local(r, iface, method, out, opts).await;
        }
        let t_start = probes::stamp();
        let (link, msg) = self.prepare_remote(r, Kind::Request, iface, method, out, opts).await?;
        let (tx, rx) = oneshot::channel();
        let deadline = Instant::now() + opts.deadline;
        let id = link.enqueue_request(msg, &self.0.next_request, Some((tx, deadline)))?;
        let t_prepared = probes::stamp();
        let res = match rx.await {
            Ok(Ok((m, refs))) => {
                Counters::add(&self.0.counters.replies_received, 1);
                Ok(Incoming { header: m.header, payload: m.payload, refs })
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(OrbError::node_down(r.node, "link dropped the call")),
        };
        let ok = matches!(&res, Ok(i) if i.header.kind == Kind::Reply as i32);
        if !opts.waits {
            probes::rr_client(&probes::record::RrClient { req_id: id, src: self.node(), dst: r.node, method, ok, t_start, t_prepared });
        }
        res
    }

    /// One-way invocation: returns once the message is queued on the link.
    pub async fn invoke_oneway(
        &self,
        target: &ObjHandle,
        iface: u32,
        method: u32,
        out: Outgoing,
        opts: &CallOptions,
    ) -> Result<(), OrbError> {
        let r = target.objref();
        if r.node == self.node() {
            return self.invoke_local(r, iface, method, out, opts).await.map(|_| ());
        }
        let (link, msg) = self.prepare_remote(r, Kind::Oneway, iface, method, out, opts).await?;
        link.enqueue_request(msg, &self.0.next_request, None)?;
        Counters::add(&self.0.counters.oneway_sent, 1);
        Ok(())
    }

    /// What two-way and one-way calls to another node share: the link (waiting for it when
    /// needed), the references registered for the destination, room in the queue, the message.
    async fn prepare_remote(
        &self,
        r: &ObjRef,
        kind: Kind,
        iface: u32,
        method: u32,
        out: Outgoing,
        opts: &CallOptions,
    ) -> Result<(Arc<Link>, WireMsg), OrbError> {
        let link = self.0.link_for(r.node, opts.deadline).await?;
        // A reference to an earlier incarnation of the node names an object that died with it.
        // The receiver would refuse it too, but a one-way call gets no answer: say so here.
        let now = link.peer_incarnation.load(Relaxed);
        if r.incarnation != 0 && r.incarnation != now {
            return Err(OrbError::Exception(Exception::new(
                crate::error::code::STALE_REFERENCE,
                format!("reference to incarnation {:x} of node {}, now {now:x}", r.incarnation, r.node),
            )));
        }
        let proto = self.marshal_refs(&out.refs, r.node).await?;
        link.wait_space().await?;
        Ok((link, WireMsg { header: self.header(r, kind, iface, method, opts), payload: out.payload, proto }))
    }

    /// Invocation of an object of this node: the same skeleton and marshalling, no network.
    async fn invoke_local(&self, r: &ObjRef, iface: u32, method: u32, out: Outgoing, opts: &CallOptions) -> Result<Incoming, OrbError> {
        let servant = self.0.find_servant(r, iface).map_err(OrbError::Exception)?;
        let ctx = CallCtx {
            orb: self.clone(),
            src: self.node(),
            request_id: 0,
            priority: opts.priority,
            deadline: Instant::now() + opts.deadline,
            creds: opts.creds.clone(),
            refs: self.0.local_refs(&out.refs),
        };
        let mut header = self.header(r, Kind::Reply, iface, method, opts);
        match servant.dispatch(ctx, method, out.payload).await {
            Ok(rep) => {
                let refs = self.0.local_refs(&rep.refs);
                Ok(Incoming { header, payload: rep.payload, refs })
            }
            Err(e) => {
                header.kind = Kind::Exception as i32;
                header.code = e.code;
                header.message = e.message;
                Ok(Incoming { header, payload: Bytes::new(), refs: Refs::default() })
            }
        }
    }

    /// Registers the references a message passes to `dest` so they stay counted in transit,
    /// and encodes them as the message's object-protocol buffer.
    /// Boxed with a declared `Send`: marshalling a reference may itself invoke the owner
    /// (AddRef), so the future type is recursive and cannot be inferred.
    pub(crate) fn marshal_refs<'a>(&'a self, refs: &'a [ObjRef], dest: u32) -> BoxFuture<'a, Result<Bytes, OrbError>> {
        Box::pin(async move {
            if refs.is_empty() {
                return Ok(Bytes::new());
            }
            let mut third: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
            for r in refs {
                if r.node == dest {
                    continue; // the owner itself: it counts the reference when it unmarshals it
                } else if r.node == self.node() {
                    let mut ex = self.0.exports.lock();
                    match ex.get_mut(&r.object).filter(|_| r.incarnation == self.incarnation()) {
                        Some(e) => *e.remote.entry(dest).or_insert(0) += 1,
                        None => return Err(OrbError::Exception(Exception::object_not_exist(r.object))),
                    }
                } else {
                    third.entry(r.node).or_default().push(r.object);
                }
            }
            for (owner, objects) in third {
                let rc = svc::RefCountsStub::new(self.well_known(owner, well_known::REFCOUNTS, svc::REF_COUNTS_INTERFACE))?;
                rc.add_ref(svc::AddRefRequest { holder: dest, objects }).await?;
            }
            Ok(Bytes::from(ObjProto { refs: refs.to_vec() }.encode_to_vec()))
        })
    }
}

impl OrbInner {
    /// A one-way invocation queued on a given link (for peers that are not addressable by
    /// node id: cluster tools). Carries no references.
    pub(crate) fn oneway_on_link(self: &Arc<Self>, link: &Link, target: &ObjRef, method: u32, out: Outgoing, opts: &CallOptions) {
        let header = self.orb().header(target, Kind::Oneway, target.interface, method, opts);
        let _ = link.enqueue_request(WireMsg { header, payload: out.payload, proto: Bytes::new() }, &self.next_request, None);
    }

    pub(crate) fn orb(self: &Arc<Self>) -> Orb {
        Orb(self.clone())
    }

    pub(crate) fn next_link_serial(&self) -> u64 {
        self.next_link.fetch_add(1, Relaxed)
    }

    pub(crate) fn find_servant(&self, r: &ObjRef, iface: u32) -> Result<Arc<dyn Servant>, Exception> {
        if r.incarnation != 0 && r.incarnation != self.cfg.incarnation {
            return Err(Exception::new(
                crate::error::code::STALE_REFERENCE,
                format!("reference to incarnation {:x} of node {}, now {:x}", r.incarnation, self.cfg.node, self.cfg.incarnation),
            ));
        }
        let ex = self.exports.lock();
        let e = ex.get(&r.object).ok_or_else(|| Exception::object_not_exist(r.object))?;
        if iface != 0 && e.servant.interface() != iface {
            return Err(Exception::bad_interface(e.servant.interface(), iface));
        }
        Ok(e.servant.clone())
    }

    /// References passed from `src` in a received message become counted handles here. Runs
    /// in the link reader, in arrival order, so a release that follows a message on the same
    /// link is always counted after the references that message passed.
    pub(crate) fn unmarshal_refs(self: &Arc<Self>, src: u32, proto: &Bytes) -> Refs {
        if proto.is_empty() {
            return Refs::default();
        }
        let Ok(p) = ObjProto::decode(proto.clone()) else {
            tracing::warn!(src, "undecodable object-protocol buffer ignored");
            return Refs::default();
        };
        let mut handles = Vec::with_capacity(p.refs.len());
        for r in p.refs {
            let key = RefKey::from(&r);
            let existing = self.proxies.lock().get(&key).and_then(|w| w.upgrade());
            if let Some(h) = existing {
                if r.node != self.cfg.node {
                    // The sender (owner or third node) registered us with the owner; we hold
                    // a registration already, so give the extra one back.
                    self.queue_release(r.node, r.object, 1);
                }
                handles.push(ObjHandle(h));
                continue;
            }
            if r.node == self.cfg.node {
                if r.incarnation != self.cfg.incarnation {
                    continue;
                }
                let mut ex = self.exports.lock();
                let Some(e) = ex.get_mut(&r.object) else { continue };
                e.local += 1;
            }
            // Otherwise the sender registered us with the owner before sending: this handle
            // now stands for that registration.
            let h = ObjHandle(Arc::new(HandleInner { orb: Arc::downgrade(self), objref: r, counted: true }));
            self.proxies.lock().insert(key, Arc::downgrade(&h.0));
            handles.push(h);
        }
        Refs { handles }
    }

    /// Handles for references passed in a local invocation: the caller holds them already.
    fn local_refs(self: &Arc<Self>, refs: &[ObjRef]) -> Refs {
        let p = self.proxies.lock();
        Refs { handles: refs.iter().filter_map(|r| p.get(&RefKey::from(r)).and_then(|w| w.upgrade())).map(ObjHandle).collect() }
    }

    /// The last clone of a counted handle is gone.
    pub(crate) fn handle_dropped(self: &Arc<Self>, ptr: *const HandleInner, r: &ObjRef) {
        let key = RefKey::from(r);
        {
            let mut p = self.proxies.lock();
            if let Some(w) = p.get(&key) {
                if std::ptr::eq(w.as_ptr(), ptr) {
                    p.remove(&key);
                }
            }
        }
        if r.node == self.cfg.node {
            let unref = {
                let mut ex = self.exports.lock();
                match ex.get_mut(&r.object) {
                    Some(e) => {
                        e.local = e.local.saturating_sub(1);
                        e.local == 0 && e.remote.is_empty()
                    }
                    None => false,
                }
            };
            if unref {
                self.deliver_unreferenced(r.object);
            }
        } else {
            self.queue_release(r.node, r.object, 1);
        }
    }

    pub(crate) fn queue_release(&self, owner: u32, object: u64, count: u32) {
        *self.release_queue.lock().entry(owner).or_default().entry(object).or_insert(0) += count;
        self.release_notify.notify_one();
    }

    /// `count` references held by `holder` are gone.
    pub(crate) fn release_remote(self: &Arc<Self>, holder: u32, object: u64, count: u32) {
        let unref = {
            let mut ex = self.exports.lock();
            match ex.get_mut(&object) {
                Some(e) => {
                    if let Some(c) = e.remote.get_mut(&holder) {
                        *c = c.saturating_sub(count);
                        if *c == 0 {
                            e.remote.remove(&holder);
                        }
                    }
                    e.local == 0 && e.remote.is_empty()
                }
                None => false,
            }
        };
        if unref {
            self.deliver_unreferenced(object);
        }
    }

    /// A node died (or came back as a new incarnation): its references are gone.
    pub(crate) fn release_node(self: &Arc<Self>, node: u32) {
        let gone: Vec<u64> = {
            let mut ex = self.exports.lock();
            let mut gone = Vec::new();
            for (id, e) in ex.iter_mut() {
                if e.remote.remove(&node).is_some() && e.local == 0 && e.remote.is_empty() {
                    gone.push(*id);
                }
            }
            gone
        };
        for id in gone {
            self.deliver_unreferenced(id);
        }
    }

    pub(crate) fn add_remote(&self, holder: u32, object: u64) -> Result<(), Exception> {
        let mut ex = self.exports.lock();
        let e = ex.get_mut(&object).ok_or_else(|| Exception::object_not_exist(object))?;
        *e.remote.entry(holder).or_insert(0) += 1;
        Ok(())
    }

    fn deliver_unreferenced(self: &Arc<Self>, object: u64) {
        let servant = {
            let mut ex = self.exports.lock();
            match ex.get(&object) {
                Some(e) if e.local == 0 && e.remote.is_empty() && object >= well_known::FIRST_DYNAMIC => {
                    ex.remove(&object).map(|e| e.servant)
                }
                _ => None,
            }
        };
        if let Some(s) = servant {
            if object < well_known::FIRST_DYNAMIC {
                return;
            }
            Counters::add(&self.counters.unreferenced, 1);
            {
                let mut log = self.unreferenced_log.lock();
                if log.len() >= 4096 {
                    log.remove(0);
                }
                log.push(object);
            }
            tracing::debug!(object, "unreferenced");
            s.unreferenced();
        }
    }
}

impl Orb {
    /// Expires overdue calls every 5 ms: one sweep instead of one timer per call.
    fn spawn_sweeper(&self) {
        let weak = Arc::downgrade(&self.0);
        let mut stop = self.0.shutdown.subscribe();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(5));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.changed() => return,
                }
                let Some(inner) = weak.upgrade() else { return };
                let now = Instant::now();
                let links: Vec<Arc<Link>> = {
                    let p = inner.peers.lock();
                    p.values().filter_map(|p| p.link.clone()).collect()
                };
                for l in links {
                    for p in l.take_expired(now) {
                        let _ = p.tx.send(Err(OrbError::DeadlineExceeded(Duration::ZERO)));
                    }
                }
            }
        });
    }

    /// Sends queued reference releases, batched per owner, as one-way invocations.
    fn spawn_releaser(&self) {
        let weak = Arc::downgrade(&self.0);
        let mut stop = self.0.shutdown.subscribe();
        tokio::spawn(async move {
            loop {
                let notified = {
                    let Some(inner) = weak.upgrade() else { return };
                    let batch: HashMap<u32, HashMap<u64, u32>> = std::mem::take(&mut *inner.release_queue.lock());
                    let orb = inner.orb();
                    for (owner, objs) in batch {
                        let refs = objs.into_iter().map(|(object, count)| svc::RefCount { object, count }).collect();
                        let stub = match svc::RefCountsStub::new(orb.well_known(owner, well_known::REFCOUNTS, svc::REF_COUNTS_INTERFACE)) {
                            Ok(s) => s.with_options(CallOptions::default().deadline(Duration::from_secs(2)).priority(200)),
                            Err(_) => continue,
                        };
                        // A node that is down has dropped our registrations already.
                        let _ = stub.release(svc::ReleaseRequest { refs }).await;
                    }
                    let inner2 = inner.clone();
                    drop(inner);
                    inner2
                };
                tokio::select! {
                    _ = notified.release_notify.notified() => {}
                    _ = stop.changed() => return,
                }
            }
        });
    }
}
