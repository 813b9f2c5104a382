//! A link: the one long-lived bidirectional stream between this node and one peer.
//!
//! Outgoing messages from every task go into the link's queue. The queue *is* the stream
//! tonic polls for the next gRPC message: whatever is queued when the transport asks is taken
//! as one batch and written at once — invocations queued at the same moment are coalesced into
//! one write (the Horus lesson). Request ids are assigned under the queue lock, so on the
//! wire they strictly increase per link, which lets the receiver refuse replays
//! (at-most-once).
//!
//! The reader side must never block (h2 kills the connection with GOAWAY when small DATA
//! frames pile up unread): received messages are handed to the dispatcher, which queues or
//! rejects, never stalls. Senders are held back instead (`wait_space`) when the queue grows.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use parking_lot::Mutex;
use tokio::sync::{oneshot, Notify};

use crate::error::OrbError;
use crate::probes::{self, Counters};
use crate::wire::{Frames, InMsg, WireMsg, BATCH_TARGET};

/// Senders wait while more than this many bytes are queued on a link.
const HIGH_WATER: usize = 4 << 20;

pub(crate) type ReplyTx = oneshot::Sender<Result<(InMsg, crate::object::Refs), OrbError>>;

pub(crate) struct Pending {
    pub tx: ReplyTx,
    pub deadline: Instant,
}

struct OutQueue {
    msgs: Vec<WireMsg>,
    bytes: usize,
    waker: Option<Waker>,
    closed: bool,
}

pub(crate) struct Link {
    pub self_node: u32,
    /// Set once the handshake names the peer (an acceptor learns it from HELLO).
    peer: AtomicU32,
    /// When the reader last received anything, in ms since `epoch`.
    last_heard_ms: AtomicU64,
    epoch: Instant,
    pub peer_incarnation: AtomicU64,
    /// Distinguishes successive links to the same peer.
    pub serial: u64,
    out: Mutex<OutQueue>,
    space: Notify,
    /// Woken when the link closes, for the reader to stop at once.
    closing: Notify,
    pub pending: Mutex<HashMap<u64, Pending>>,
    closed: AtomicBool,
    pub close_reason: Mutex<String>,
    pub counters: Arc<Counters>,
}

impl Link {
    pub fn new(self_node: u32, peer: u32, serial: u64, counters: Arc<Counters>) -> Arc<Link> {
        Arc::new(Link {
            self_node,
            peer: AtomicU32::new(peer),
            last_heard_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            peer_incarnation: AtomicU64::new(0),
            serial,
            out: Mutex::new(OutQueue { msgs: Vec::new(), bytes: 0, waker: None, closed: false }),
            space: Notify::new(),
            closing: Notify::new(),
            pending: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
            close_reason: Mutex::new(String::new()),
            counters,
        })
    }

    pub fn peer(&self) -> u32 {
        self.peer.load(Ordering::Relaxed)
    }
    pub fn set_peer(&self, peer: u32, incarnation: u64) {
        self.peer.store(peer, Ordering::Relaxed);
        self.peer_incarnation.store(incarnation, Ordering::Relaxed);
    }
    pub fn touch(&self) {
        self.last_heard_ms.store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
    /// Time since anything was received on this link.
    pub fn silence(&self) -> std::time::Duration {
        let now = self.epoch.elapsed().as_millis() as u64;
        std::time::Duration::from_millis(now.saturating_sub(self.last_heard_ms.load(Ordering::Relaxed)))
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Resolves once the link closes (enable it, then check `is_closed`, to miss nothing).
    pub fn closing(&self) -> tokio::sync::futures::Notified<'_> {
        self.closing.notified()
    }

    /// Queues a request; its id comes from `next_id` under the queue lock. A two-way request
    /// registers its reply slot before it can possibly be answered.
    pub fn enqueue_request(&self, mut msg: WireMsg, next_id: &AtomicU64, reply: Option<(ReplyTx, Instant)>) -> Result<u64, OrbError> {
        let mut q = self.out.lock();
        if q.closed {
            return Err(OrbError::node_down(self.peer(), self.close_reason.lock().clone()));
        }
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        msg.header.request_id = id;
        // Sized with its id: the queue's byte count must match what the writer takes off.
        let len = msg.encoded_len();
        if let Some(why) = crate::wire::size_error(len) {
            return Err(OrbError::Exception(crate::Exception::new(crate::error::code::BAD_REQUEST, why)));
        }
        if let Some((tx, deadline)) = reply {
            self.pending.lock().insert(id, Pending { tx, deadline });
        }
        Counters::add(&self.counters.requests_sent, 1);
        Self::push(&mut q, msg, len);
        Ok(id)
    }

    /// Queues a reply, exception, error or handshake message (no id assigned).
    pub fn enqueue(&self, msg: WireMsg) -> bool {
        let len = msg.encoded_len();
        self.enqueue_sized(msg, len)
    }

    /// `enqueue` for a caller that has the message's `encoded_len` already.
    pub(crate) fn enqueue_sized(&self, msg: WireMsg, len: usize) -> bool {
        let mut q = self.out.lock();
        if q.closed {
            return false;
        }
        Self::push(&mut q, msg, len);
        true
    }

    fn push(q: &mut OutQueue, msg: WireMsg, len: usize) {
        q.bytes += len;
        q.msgs.push(msg);
        if let Some(w) = q.waker.take() {
            w.wake();
        }
    }

    /// Waits while the queue is over its high-water mark.
    pub async fn wait_space(&self) -> Result<(), OrbError> {
        loop {
            let notified = self.space.notified();
            {
                let q = self.out.lock();
                if q.closed {
                    return Err(OrbError::node_down(self.peer(), self.close_reason.lock().clone()));
                }
                if q.bytes <= HIGH_WATER {
                    return Ok(());
                }
            }
            notified.await;
        }
    }

    /// Closes the link: the outgoing stream ends, outstanding calls fail with `NodeDown`.
    pub fn close(&self, reason: &str) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        *self.close_reason.lock() = reason.to_string();
        {
            let mut q = self.out.lock();
            q.closed = true;
            if let Some(w) = q.waker.take() {
                w.wake();
            }
        }
        self.space.notify_waiters();
        self.closing.notify_waiters();
        let pending: Vec<Pending> = self.pending.lock().drain().map(|(_, p)| p).collect();
        if !pending.is_empty() {
            Counters::add(&self.counters.node_down_failures, pending.len() as u64);
        }
        for p in pending {
            let _ = p.tx.send(Err(OrbError::node_down(self.peer(), format!("link lost: {reason}"))));
        }
    }

    /// Ends the outgoing stream after what is queued has been sent (used to deliver an ERROR
    /// before hanging up).
    pub fn finish(&self) {
        let mut q = self.out.lock();
        q.closed = true;
        if let Some(w) = q.waker.take() {
            w.wake();
        }
    }

    /// Completes a two-way call with its reply.
    pub fn complete(&self, id: u64, result: Result<(InMsg, crate::object::Refs), OrbError>) -> bool {
        match self.pending.lock().remove(&id) {
            Some(p) => p.tx.send(result).is_ok(),
            None => false,
        }
    }

    /// Takes the senders of every call whose deadline has passed.
    pub fn take_expired(&self, now: Instant) -> Vec<Pending> {
        let mut p = self.pending.lock();
        if p.is_empty() {
            return Vec::new();
        }
        let ids: Vec<u64> = p.iter().filter(|(_, v)| v.deadline <= now).map(|(k, _)| *k).collect();
        ids.into_iter().filter_map(|id| p.remove(&id)).collect()
    }
}

/// The outgoing side of a link as the `Stream` tonic polls.
pub(crate) struct OutStream(pub Arc<Link>);

impl futures_util::Stream for OutStream {
    type Item = Frames;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Frames>> {
        let link = &self.0;
        let mut q = link.out.lock();
        if !q.msgs.is_empty() {
            let (batch, bytes) = if q.bytes <= BATCH_TARGET {
                // Everything queued: its size is known already.
                (std::mem::take(&mut q.msgs), std::mem::replace(&mut q.bytes, 0))
            } else {
                let mut n = 0;
                let mut size = 0;
                for m in &q.msgs {
                    size += m.encoded_len();
                    n += 1;
                    if size >= BATCH_TARGET {
                        break;
                    }
                }
                q.bytes -= size;
                (q.msgs.drain(..n).collect(), size)
            };
            let below = q.bytes <= HIGH_WATER;
            drop(q);
            let peer = link.peer();
            let ts = link.counters.sent(peer, batch.len(), bytes);
            probes::batch_out(link.self_node, link.self_node, peer, ts, &batch, bytes);
            if below {
                link.space.notify_waiters();
            }
            return Poll::Ready(Some(Frames::Out(batch)));
        }
        if q.closed {
            return Poll::Ready(None);
        }
        q.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}
