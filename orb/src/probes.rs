//! USDT probe points (provider `ssi`) at every stage of a request-response that the Solaris MC
//! study timed (its Fig. 5.1), and the ORB's own counters.
//!
//! The probes are `.note.stapsdt` entries emitted by the `probe` crate: a NOP when nothing is
//! attached (< 1 ns), ≈ 0.6 µs per hit with a BPF program on it. List them with
//! `bpftrace -l 'usdt:/path/to/ssi:ssi:*'`. Arguments (all integers):
//!
//! | probe | where | arguments |
//! |---|---|---|
//! | `req_prepare` | caller: request built (ORB prepare) | req_id, src, dst, kind, nbufs, len0, len1, len2 |
//! | `msg_send` | any message handed to the transport (encoded into a batch) | req_id, src, dst, kind, total_len |
//! | `req_recv` | server: request received by the transport | req_id, src, dst, kind, nbufs, len0, len1, len2 |
//! | `req_dispatch` | server: request queued for its servant | req_id, src, dst, method, priority |
//! | `invoke_start` / `invoke_end` | server: servant method runs | req_id, src, dst, method / req_id, src, dst, ok |
//! | `reply_prepare` | server: reply built | req_id, src, dst, kind, nbufs, len0, len1, len2 |
//! | `reply_recv` | caller: reply received by the transport | req_id, src, dst, kind, nbufs, len0, len1, len2 |
//! | `req_complete` | caller: invocation returns | req_id, src, dst, ok |
//! | `batch_send` / `batch_recv` | one transport write / read | src, dst, messages, bytes |
//!
//! `kind` is the wire `Kind` (1 request, 2 one-way, 3 reply, 4 exception). `len0..2` are the
//! buffer lengths of the chain (header, payload, object protocol; 0 when absent).
//! Every `req_prepare` hit has a matching `requests_sent` count in `Counters`.
//!
//! Probes are lazy (`probe_lazy!`): their arguments — buffer-chain lengths need the header's
//! encoded size — are computed only while a tracer has the probe's semaphore set.
//! Each probe lives in one never-inlined function, so it has exactly one site in the binary
//! (an inlined copy in code the linker drops would leave a note with no address).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::wire::{nbufs, WireMsg};

#[inline(never)]
pub(crate) fn req_prepare(m: &WireMsg) {
    let h = &m.header;
    let c = m.chain();
    let _ = probe::probe_lazy!(ssi, req_prepare, h.request_id, h.src_node, h.dst_node, h.kind, nbufs(&c), c[0], c[1], c[2]);
}

#[inline(never)]
pub(crate) fn reply_prepare(m: &WireMsg) {
    let h = &m.header;
    let c = m.chain();
    let _ = probe::probe_lazy!(ssi, reply_prepare, h.request_id, h.src_node, h.dst_node, h.kind, nbufs(&c), c[0], c[1], c[2]);
}

#[inline(never)]
pub(crate) fn handed_to_transport(m: &WireMsg) {
    let h = &m.header;
    let _ = probe::probe_lazy!(ssi, msg_send, h.request_id, h.src_node, h.dst_node, h.kind, m.encoded_len());
}

#[inline(never)]
pub(crate) fn req_recv(m: &crate::wire::InMsg) {
    let h = &m.header;
    let c = m.chain;
    let _ = probe::probe_lazy!(ssi, req_recv, h.request_id, h.src_node, h.dst_node, h.kind, nbufs(&c), c[0], c[1], c[2]);
}

#[inline(never)]
pub(crate) fn reply_recv(m: &crate::wire::InMsg) {
    let h = &m.header;
    let c = m.chain;
    let _ = probe::probe_lazy!(ssi, reply_recv, h.request_id, h.src_node, h.dst_node, h.kind, nbufs(&c), c[0], c[1], c[2]);
}

#[inline(never)]
pub(crate) fn req_dispatch(id: u64, src: u32, dst: u32, method: u32, priority: u32) {
    let _ = probe::probe_lazy!(ssi, req_dispatch, id, src, dst, method, priority);
}

#[inline(never)]
pub(crate) fn invoke_start(id: u64, src: u32, dst: u32, method: u32) {
    let _ = probe::probe_lazy!(ssi, invoke_start, id, src, dst, method);
}

#[inline(never)]
pub(crate) fn invoke_end(id: u64, src: u32, dst: u32, ok: bool) {
    let _ = probe::probe_lazy!(ssi, invoke_end, id, src, dst, ok as u32);
}

#[inline(never)]
pub(crate) fn req_complete(id: u64, src: u32, dst: u32, ok: bool) {
    let _ = probe::probe_lazy!(ssi, req_complete, id, src, dst, ok as u32);
}

#[inline(never)]
pub(crate) fn batch_send(src: u32, dst: u32, msgs: usize, bytes: usize) {
    let _ = probe::probe_lazy!(ssi, batch_send, src, dst, msgs, bytes);
}

#[inline(never)]
pub(crate) fn batch_recv(src: u32, dst: u32, msgs: usize, bytes: usize) {
    let _ = probe::probe_lazy!(ssi, batch_recv, src, dst, msgs, bytes);
}

/// The ORB's own counters (relaxed atomics; read as a snapshot).
#[derive(Default)]
pub struct Counters {
    pub requests_sent: AtomicU64,
    pub oneway_sent: AtomicU64,
    pub replies_received: AtomicU64,
    pub requests_received: AtomicU64,
    pub replies_sent: AtomicU64,
    pub batches_sent: AtomicU64,
    pub messages_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub batches_received: AtomicU64,
    pub messages_received: AtomicU64,
    pub malformed: AtomicU64,
    pub auth_failures: AtomicU64,
    pub unreferenced: AtomicU64,
    pub node_down_failures: AtomicU64,
    pub overloaded: AtomicU64,
}

impl Counters {
    pub(crate) fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Relaxed);
    }
    pub fn snapshot(&self, exported: u64) -> crate::proto::svc::Counters {
        crate::proto::svc::Counters {
            requests_sent: self.requests_sent.load(Relaxed),
            oneway_sent: self.oneway_sent.load(Relaxed),
            replies_received: self.replies_received.load(Relaxed),
            requests_received: self.requests_received.load(Relaxed),
            replies_sent: self.replies_sent.load(Relaxed),
            batches_sent: self.batches_sent.load(Relaxed),
            messages_sent: self.messages_sent.load(Relaxed),
            bytes_sent: self.bytes_sent.load(Relaxed),
            batches_received: self.batches_received.load(Relaxed),
            messages_received: self.messages_received.load(Relaxed),
            malformed: self.malformed.load(Relaxed),
            auth_failures: self.auth_failures.load(Relaxed),
            exported_objects: exported,
            unreferenced: self.unreferenced.load(Relaxed),
            node_down_failures: self.node_down_failures.load(Relaxed),
            overloaded: self.overloaded.load(Relaxed),
        }
    }
}
