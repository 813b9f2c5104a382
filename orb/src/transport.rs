//! The transport: one bidirectional gRPC stream (`ssi.orb.Transport/Open`) per node pair.
//!
//! The node with the lower id dials; the other accepts. Either way, once the handshake
//! (see `auth`) has proved both sides know the cluster key, the stream is a symmetric link:
//! invocations and replies flow both ways, multiplexed by request id. Nothing a peer sends
//! before the handshake completes is acted upon.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use tokio_stream::StreamExt;
use tonic::transport::{Endpoint, Server};
use tonic::{Request, Response, Status, Streaming};

use crate::auth::{self, Transcript};
use crate::link::{Link, OutStream};
use crate::orb::{Liveness, Orb, OrbInner, TOOL_NODE};
use crate::probes::{self, Counters};
use crate::proto::{Handshake, Header, Kind};
use crate::wire::{parse_batch, Frames, InMsg, WireMsg, MAX_BATCH_DECODE};

#[allow(clippy::all)]
pub(crate) mod grpc {
    include!(concat!(env!("OUT_DIR"), "/ssi.orb.Transport.rs"));
}
pub use grpc::transport_client::TransportClient;
use grpc::transport_server::{Transport, TransportServer};

pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
const STREAM_WINDOW: u32 = 256 << 10;
const CONN_WINDOW: u32 = 4 << 20;

/// Received messages, one at a time during the handshake, batch-wise after it.
pub(crate) struct Inbound {
    pub stream: Streaming<Frames>,
    pub buffered: VecDeque<InMsg>,
}

impl Inbound {
    pub fn new(stream: Streaming<Frames>) -> Self {
        Inbound { stream, buffered: VecDeque::new() }
    }
    /// The next message, or why there is none.
    pub async fn next_msg(&mut self) -> Result<InMsg, LinkError> {
        loop {
            if let Some(m) = self.buffered.pop_front() {
                return Ok(m);
            }
            match self.stream.message().await {
                Ok(Some(Frames::In(b))) => {
                    for r in parse_batch(b) {
                        self.buffered.push_back(r?);
                    }
                }
                Ok(Some(Frames::Out(_))) => return Err(LinkError::OutgoingBatch),
                Ok(None) => return Err(LinkError::Closed),
                Err(s) => return Err(LinkError::Transport(s.message().to_string())),
            }
        }
    }
}

fn control(kind: Kind, src: u32, dst: u32, payload: Bytes, message: &str) -> WireMsg {
    WireMsg {
        header: Header { kind: kind as i32, src_node: src, dst_node: dst, message: message.to_string(), ..Default::default() },
        payload,
        proto: Bytes::new(),
    }
}

fn error_frame(src: u32, dst: u32, message: &str) -> WireMsg {
    control(Kind::Error, src, dst, Bytes::new(), message)
}

fn handshake_of(m: &InMsg, want: Kind) -> Result<Handshake, LinkError> {
    if m.header.kind == Kind::Error as i32 {
        return Err(LinkError::PeerRefused(m.header.message.clone()));
    }
    if m.header.kind != want as i32 {
        return Err(LinkError::OutOfTurn { want, got: m.header.kind });
    }
    Handshake::decode(m.payload.clone()).map_err(|source| LinkError::Undecodable { want, source })
}

struct TransportService {
    orb: std::sync::Weak<OrbInner>,
}

#[tonic::async_trait]
impl Transport for TransportService {
    type OpenStream = std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<Frames, Status>> + Send + 'static>>;

    async fn open(&self, request: Request<Streaming<Frames>>) -> Result<Response<Self::OpenStream>, Status> {
        let inner = self.orb.upgrade().ok_or_else(|| Status::unavailable("node shutting down"))?;
        let serial = inner.next_link_serial();
        let link = Link::new(inner.cfg.node, u32::MAX, serial, inner.counters.clone());
        let inbound = Inbound::new(request.into_inner());
        let l2 = link.clone();
        tokio::spawn(async move { accept(inner, l2, inbound).await });
        let out = OutStream(link).map(Ok);
        Ok(Response::new(Box::pin(out)))
    }
}

/// Acceptor side of the handshake, then the reader.
async fn accept(inner: Arc<OrbInner>, link: Arc<Link>, mut inbound: Inbound) {
    let me = inner.cfg.node;
    let res = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        let hello = handshake_of(&inbound.next_msg().await?, Kind::Hello)?;
        if hello.cluster != inner.cfg.cluster {
            return Err(LinkError::WrongCluster { theirs: hello.cluster, ours: inner.cfg.cluster.clone() });
        }
        if hello.node != TOOL_NODE && !inner.peers.lock().contains_key(&hello.node) {
            return Err(LinkError::NotConfigured(hello.node));
        }
        let nonce_a = auth::nonce();
        let t = Transcript {
            cluster: &inner.cfg.cluster,
            nonce_dial: &hello.nonce,
            nonce_accept: &nonce_a,
            dial_node: hello.node,
            accept_node: me,
            dial_inc: hello.incarnation,
            accept_inc: inner.cfg.incarnation,
        };
        let ch = Handshake {
            cluster: inner.cfg.cluster.clone(),
            node: me,
            incarnation: inner.cfg.incarnation,
            nonce: nonce_a.clone().into(),
            mac: inner.cfg.key.accept_mac(&t).into(),
        };
        link.enqueue(control(Kind::Challenge, me, hello.node, Bytes::from(ch.encode_to_vec()), ""));
        let proof = handshake_of(&inbound.next_msg().await?, Kind::Proof)?;
        if !inner.cfg.key.verify_dial(&t, &proof.mac) {
            return Err(LinkError::BadProof);
        }
        Ok((hello.node, hello.incarnation))
    })
    .await
    .unwrap_or(Err(LinkError::HandshakeTimeout));
    match res {
        Ok((peer, inc)) => {
            link.set_peer(peer, inc);
            inner.install_link(link, inbound);
        }
        Err(why) => {
            Counters::add(&inner.counters.auth_failures, 1);
            tracing::warn!("refused a link: {why}");
            link.enqueue(error_frame(me, 0, &why.to_string()));
            link.finish();
        }
    }
}

/// Binds `addr` and serves links on it. Returns the bound address.
pub(crate) async fn serve(orb: &Orb, addr: SocketAddr) -> Result<SocketAddr, StartError> {
    let listen = |source| StartError::Listen { addr, source };
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(listen)?;
    let bound = listener.local_addr().map_err(listen)?;
    // Server::tcp_nodelay applies only to listeners tonic binds itself: set it here, or
    // Nagle and delayed ACKs add 40 ms to replies.
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let svc = TransportServer::new(TransportService { orb: Arc::downgrade(&orb.0) })
        .max_decoding_message_size(MAX_BATCH_DECODE)
        .max_encoding_message_size(MAX_BATCH_DECODE);
    let mut stop = orb.0.shutdown.subscribe();
    let server = Server::builder()
        .tcp_nodelay(true)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONN_WINDOW)
        .max_frame_size(65536)
        .add_service(svc)
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = stop.changed().await;
        });
    tokio::spawn(async move {
        if let Err(e) = server.await {
            tracing::error!("ORB transport server stopped: {e}");
        }
    });
    Ok(bound)
}

/// Why a link could not be set up, or why it ended.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// Nothing listens there: the node's process is gone.
    #[error("connection refused by {0}")]
    Refused(String),
    #[error("bad address {addr}: {why}")]
    BadAddress { addr: String, why: String },
    #[error("cannot connect to {addr}: {why}")]
    Connect { addr: String, why: String },
    #[error("handshake timed out")]
    HandshakeTimeout,
    /// The acceptor's gRPC layer refused the stream (its status message).
    #[error("link refused: {0}")]
    Rejected(String),
    /// The peer answered the handshake with an ERROR frame (its message).
    #[error("peer refused: {0}")]
    PeerRefused(String),
    #[error("expected {want:?} during the handshake, got kind {got}")]
    OutOfTurn { want: Kind, got: i32 },
    #[error("undecodable {want:?}: {source}")]
    Undecodable { want: Kind, source: prost::DecodeError },
    #[error("{addr} is node {got}, not node {want}")]
    WrongNode { addr: String, got: u32, want: u32 },
    #[error("{0} failed authentication (wrong cluster key or cluster name)")]
    Unverified(String),
    #[error("peer belongs to cluster {theirs:?}, not {ours:?}")]
    WrongCluster { theirs: String, ours: String },
    #[error("node {0} is not in this cluster's configuration")]
    NotConfigured(u32),
    #[error("authentication failed: wrong cluster key")]
    BadProof,
    #[error("malformed frame: {0}")]
    Malformed(#[from] crate::wire::WireError),
    #[error("decoder produced an outgoing batch")]
    OutgoingBatch,
    #[error("peer closed the stream")]
    Closed,
    /// The gRPC stream failed (its status message).
    #[error("transport error: {0}")]
    Transport(String),
    #[error("nothing received in time")]
    Timeout,
}

/// Why an ORB could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("node id {0} out of range 0..={max}", max = crate::orb::MAX_NODE)]
    NodeId(u32),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Quorum(#[from] crate::quorum::StoreError),
}

/// Dials `addr`, runs the dialer side of the handshake. The link is not installed.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn dial_link(
    cluster: &str,
    key: &auth::ClusterKey,
    me: u32,
    my_inc: u64,
    peer: Option<u32>,
    addr: &str,
    link: &Arc<Link>,
    extra: Option<tokio::sync::mpsc::Receiver<Frames>>,
    verify_acceptor: bool,
) -> Result<(Inbound, u32, u64), LinkError> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| LinkError::BadAddress { addr: addr.to_string(), why: e.to_string() })?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(1))
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONN_WINDOW);
    let channel = endpoint.connect().await.map_err(|e| {
        let text = format!("{e:?}");
        if text.contains("ConnectionRefused") || text.contains("Connection refused") {
            LinkError::Refused(addr.to_string())
        } else {
            LinkError::Connect { addr: addr.to_string(), why: e.to_string() }
        }
    })?;
    let nonce_d = auth::nonce();
    let hello = Handshake { cluster: cluster.to_string(), node: me, incarnation: my_inc, nonce: nonce_d.clone().into(), mac: Bytes::new() };
    link.enqueue(control(Kind::Hello, me, peer.unwrap_or(0), Bytes::from(hello.encode_to_vec()), ""));
    let mut client = TransportClient::new(channel).max_decoding_message_size(MAX_BATCH_DECODE).max_encoding_message_size(MAX_BATCH_DECODE);
    let out = OutStream(link.clone());
    let call = async {
        match extra {
            None => client.open(Request::new(out)).await,
            Some(rx) => client.open(Request::new(out.merge(tokio_stream::wrappers::ReceiverStream::new(rx)))).await,
        }
    };
    let resp = tokio::time::timeout(HANDSHAKE_TIMEOUT, call)
        .await
        .map_err(|_| LinkError::HandshakeTimeout)?
        .map_err(|s| LinkError::Rejected(s.message().to_string()))?;
    let mut inbound = Inbound::new(resp.into_inner());
    let ch = tokio::time::timeout(HANDSHAKE_TIMEOUT, inbound.next_msg())
        .await
        .map_err(|_| LinkError::HandshakeTimeout)?
        .and_then(|m| handshake_of(&m, Kind::Challenge))?;
    if let Some(p) = peer {
        if ch.node != p {
            return Err(LinkError::WrongNode { addr: addr.to_string(), got: ch.node, want: p });
        }
    }
    let t = Transcript {
        cluster,
        nonce_dial: &nonce_d,
        nonce_accept: &ch.nonce,
        dial_node: me,
        accept_node: ch.node,
        dial_inc: my_inc,
        accept_inc: ch.incarnation,
    };
    if verify_acceptor && (ch.cluster != cluster || !key.verify_accept(&t, &ch.mac)) {
        return Err(LinkError::Unverified(addr.to_string()));
    }
    let proof = Handshake { mac: key.dial_mac(&t).into(), ..Default::default() };
    link.enqueue(control(Kind::Proof, me, ch.node, Bytes::from(proof.encode_to_vec()), ""));
    Ok((inbound, ch.node, ch.incarnation))
}

impl OrbInner {
    /// Dials a configured peer and installs the link.
    pub(crate) async fn dial(self: &Arc<Self>, peer: u32) -> Result<(), LinkError> {
        let addr = match self.peers.lock().get(&peer) {
            Some(p) => p.addr.clone(),
            None => return Err(LinkError::NotConfigured(peer)),
        };
        let link = Link::new(self.cfg.node, peer, self.next_link_serial(), self.counters.clone());
        let res =
            dial_link(&self.cfg.cluster, &self.cfg.key, self.cfg.node, self.cfg.incarnation, Some(peer), &addr, &link, None, true).await;
        match res {
            Ok((inbound, node, inc)) => {
                link.set_peer(node, inc);
                self.install_link(link, inbound);
                Ok(())
            }
            Err(e) => {
                link.close(&e.to_string());
                Err(e)
            }
        }
    }

    /// An authenticated link becomes the link to its peer; its reader starts.
    pub(crate) fn install_link(self: &Arc<Self>, link: Arc<Link>, inbound: Inbound) {
        let peer = link.peer();
        let inc = link.peer_incarnation.load(std::sync::atomic::Ordering::Relaxed);
        if *self.shutdown.borrow() {
            link.close("ORB shut down");
            return;
        }
        link.touch();
        if peer == TOOL_NODE {
            self.tool_links.lock().retain(|l| !l.is_closed());
            self.tool_links.lock().push(link.clone());
            tokio::spawn(run_reader(self.clone(), link, inbound, 0));
            return;
        }
        let (old, restarted, last_seen) = {
            let mut peers = self.peers.lock();
            let Some(ps) = peers.get_mut(&peer) else { return };
            let restarted = ps.incarnation != 0 && ps.incarnation != inc;
            let last_seen = if restarted { 0 } else { ps.last_seen_request };
            let old = ps.link.replace(link.clone());
            ps.incarnation = inc;
            ps.liveness = Liveness::Up;
            ps.lost_at = None;
            ps.ready.notify_waiters();
            (old, restarted, last_seen)
        };
        if let Some(old) = old {
            old.close("replaced by a new link");
        }
        if restarted {
            tracing::info!(peer, "node restarted with a new incarnation; releasing its old references");
            self.release_node(peer);
        }
        tracing::info!(peer, link = link.serial, incarnation = format!("{inc:x}"), "link up");
        self.membership_changed();
        tokio::spawn(run_reader(self.clone(), link, inbound, last_seen));
    }

    /// The reader of `link` has stopped.
    fn link_closed(self: &Arc<Self>, link: &Arc<Link>, reason: &str, last_seen: u64) {
        link.close(reason);
        let peer = link.peer();
        if peer == TOOL_NODE {
            self.tool_links.lock().retain(|l| !Arc::ptr_eq(l, link));
            return;
        }
        let lost = {
            let mut peers = self.peers.lock();
            match peers.get_mut(&peer) {
                Some(ps) if ps.link.as_ref().is_some_and(|l| Arc::ptr_eq(l, link)) => {
                    ps.link = None;
                    ps.lost_at = Some(std::time::Instant::now());
                    ps.last_seen_request = last_seen;
                    tracing::info!(peer, "link down: {reason}");
                    true
                }
                _ => false,
            }
        };
        if lost {
            self.redial_now(peer);
        }
    }

    fn handle_message(self: &Arc<Self>, link: &Arc<Link>, m: InMsg, last_seen: &mut u64) {
        let kind = m.header.kind;
        if kind == Kind::Request as i32 || kind == Kind::Oneway as i32 {
            self.serve_request(link, m, last_seen);
        } else if kind == Kind::Reply as i32 || kind == Kind::Exception as i32 {
            let refs = if kind == Kind::Reply as i32 { self.unmarshal_refs(link.peer(), &m.proto) } else { Default::default() };
            let id = m.header.request_id;
            link.complete(id, Ok((m, refs)));
        } else if kind == Kind::Error as i32 {
            tracing::warn!(peer = link.peer(), "peer reports: {}", m.header.message);
        } else {
            Counters::add(&self.counters.malformed, 1);
            let why = format!("unexpected message kind {kind} after the handshake");
            link.enqueue(error_frame(self.cfg.node, link.peer(), &why));
        }
    }
}

async fn run_reader(inner: Arc<OrbInner>, link: Arc<Link>, mut inbound: Inbound, mut last_seen: u64) {
    for m in std::mem::take(&mut inbound.buffered) {
        inner.handle_message(&link, m, &mut last_seen);
    }
    // A link closed from outside (silent for the failure timeout: its peer is cut off or
    // hung, and TCP can stay up for minutes) ends its reader at once, so the peer is lost
    // now and nothing arriving later on the old connection is handled.
    let closing = link.closing();
    tokio::pin!(closing);
    closing.as_mut().enable();
    // Enabled first, then checked: a close before this line is seen here, any later one by
    // `closing`.
    let closed_already = link.is_closed();
    let reason = loop {
        if closed_already {
            break link.close_reason.lock().clone();
        }
        let next = tokio::select! {
            biased;
            m = inbound.stream.message() => m,
            _ = &mut closing => break link.close_reason.lock().clone(),
        };
        match next {
            Ok(Some(Frames::In(buf))) => {
                link.touch();
                let bytes = buf.len();
                probes::batch_in(inner.cfg.node, link.peer(), inner.cfg.node, &buf);
                let mut n = 0usize;
                let mut bad = None;
                for r in parse_batch(buf) {
                    match r {
                        Ok(m) => {
                            n += 1;
                            inner.handle_message(&link, m, &mut last_seen);
                        }
                        Err(e) => bad = Some(e),
                    }
                }
                inner.counters.received(link.peer(), n, bytes);
                if let Some(e) = bad {
                    // The stream is out of step: say why, then hang up this link only.
                    Counters::add(&inner.counters.malformed, 1);
                    let why = format!("malformed frame: {e}");
                    tracing::warn!(peer = link.peer(), "{why}");
                    link.enqueue(error_frame(inner.cfg.node, link.peer(), &why));
                    link.finish();
                    break why;
                }
            }
            Ok(Some(Frames::Out(_))) => break "decoder produced an outgoing batch".to_string(),
            Ok(None) => break "peer closed the link".to_string(),
            Err(s) => break format!("transport error: {}", s.message()),
        }
    };
    inner.link_closed(&link, &reason, last_seen);
}
