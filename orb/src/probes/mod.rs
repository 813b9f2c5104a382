//! USDT probe points (provider `ssi`) for the communication study, the in-process recorder
//! behind them, and the ORB's own counters.
//!
//! The Solaris MC study's tracer cost 7 µs an event and distorted what it timed. Here a probe
//! is a `.note.stapsdt` NOP (< 1 ns) until a tracer attaches; attached, each hit costs a
//! uprobe (≈ 0.6 µs). At a million messages a second a probe per message would cost as much
//! as the message, so the probes are amortized: **one probe per transport write or read**,
//! carrying a descriptor of every message in it (request id, kind, buffer lengths), and one
//! probe per completed two-way invocation on each side, carrying the times of its stages
//! (taken with CLOCK_MONOTONIC only while a recorder listens). Every message is still counted.
//!
//! | probe | fires | arg0 | other arguments |
//! |---|---|---|---|
//! | `batch_out` | one transport write (a batch of messages) | record | src, dst, messages in this record, bytes (first record of a batch; 0 after) |
//! | `batch_in` | one transport read, before its messages are handled | record | src, dst, bytes |
//! | `rr_client` | a two-way invocation returns to its caller | record | req_id, src, dst, ok |
//! | `rr_server` | a two-way invocation's reply is queued | record | req_id, src, dst, ok |
//!
//! `record` points at a trace record (`record.rs`, `docs/trace-format.md`): the batch
//! records list every message's descriptor (≤ 677 per record; a larger batch fires the probe
//! once per part), the request-response records hold the stage times of the study's Fig. 5.1:
//! caller start → request queued (ORB prepare) → handed to the transport (`batch_out`) →
//! received by the transport (`batch_in`) → dispatched → invocation start → end → reply
//! queued (`rr_server`) → reply handed to the transport → received → completed (`rr_client`).
//! List them with `bpftrace -l 'usdt:/path/to/ssi:ssi:*'`.
//!
//! Probes are lazy (`probe_lazy!`): their record is built only while a tracer has the probe's
//! semaphore set, or the in-process recorder (`inproc`) is on. Each probe lives in one
//! never-inlined function, so it has exactly one site in the binary.

pub mod inproc;
pub mod record;

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use parking_lot::Mutex;

use bytes::Bytes;

use crate::wire::{nbufs, WireMsg};
use record::{Builder, MsgDesc, RrClient, RrServer};

thread_local! {
    static REC: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(record::MAX_RECORD));
}

/// Set while a recorder took the last request-response record: stage times are taken only
/// then. (The probe crate's semaphore is private to each probe site; its `probe_lazy!` tells
/// whether the site is enabled, and this remembers it for the stages before the next hit.)
static STAGES_WANTED: AtomicBool = AtomicBool::new(false);

/// CLOCK_MONOTONIC in nanoseconds (what `bpf_ktime_get_ns` reads), or 0 when nobody records.
#[inline]
pub fn stamp() -> u64 {
    if STAGES_WANTED.load(Relaxed) || inproc::active() {
        now_ns()
    } else {
        0
    }
}

pub fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Fires probe `$name` with a record built by `$build` (a `FnOnce(&mut Builder)`), and hands
/// the same record to the in-process recorder when it is on. Yields whether anyone took it.
macro_rules! fire {
    ($name:ident, $build:expr $(, $arg:expr)*) => {{
        REC.with(|cell| {
            let mut v = cell.borrow_mut();
            let mut built = false;
            #[allow(unused_mut)]
            let mut build = $build;
            let probe_on = probe::probe_lazy!(ssi, $name, {
                build(&mut Builder(&mut v));
                built = true;
                Builder(&mut v).finish().as_ptr() as usize
            } $(, $arg)*);
            let inproc_on = inproc::active();
            if inproc_on {
                if !built {
                    build(&mut Builder(&mut v));
                    Builder(&mut v).finish();
                }
                inproc::write(&v);
            }
            probe_on || inproc_on
        })
    }};
}

fn desc_out(m: &WireMsg) -> MsgDesc {
    let c = m.chain();
    MsgDesc { req_id: m.header.request_id, len: c.map(|l| l as u32), kind: m.header.kind as u8, nbufs: nbufs(&c) as u8 }
}

/// A batch handed to the transport (one write); `bytes` is its encoded size.
pub(crate) fn batch_out(node: u32, src: u32, dst: u32, ts: u64, msgs: &[WireMsg], bytes: usize) {
    let mut descs = Vec::new();
    for (part, chunk) in msgs.chunks(record::MAX_DESCS).enumerate() {
        if !fire_batch_out(&mut descs, chunk, (node, src, dst), ts, msgs.len(), part * record::MAX_DESCS, bytes) {
            return;
        }
    }
}

#[inline(never)]
fn fire_batch_out(descs: &mut Vec<MsgDesc>, chunk: &[WireMsg], (node, src, dst): (u32, u32, u32), ts: u64, n: usize, first: usize, bytes: usize) -> bool {
    fire!(
        batch_out,
        |b: &mut Builder| {
            descs.clear();
            descs.extend(chunk.iter().map(desc_out));
            record::batch(b, record::kind::BATCH_OUT, node, ts, src, dst, n as u32, first as u32, bytes as u64, descs)
        },
        src,
        dst,
        chunk.len(),
        if first == 0 { bytes } else { 0 }
    )
}

/// A batch received by the transport, before any of its messages is handled. Its
/// descriptors are read from the raw batch only when a recorder takes them, so the receive
/// path costs nothing extra otherwise.
pub(crate) fn batch_in(node: u32, src: u32, dst: u32, raw: &Bytes) {
    let ts = now_ns();
    let mut descs: Vec<MsgDesc> = Vec::new();
    let mut part = 0;
    loop {
        let on = fire_batch_in(&mut descs, raw, (node, src, dst), ts, part);
        part += 1;
        if !on || part * record::MAX_DESCS >= descs.len() {
            return;
        }
    }
}

#[inline(never)]
fn fire_batch_in(descs: &mut Vec<MsgDesc>, raw: &Bytes, (node, src, dst): (u32, u32, u32), ts: u64, part: usize) -> bool {
    fire!(
        batch_in,
        |b: &mut Builder| {
            if part == 0 {
                descs.extend(crate::wire::peek_batch(raw));
            }
            let first = part * record::MAX_DESCS;
            let chunk = &descs[first.min(descs.len())..(first + record::MAX_DESCS).min(descs.len())];
            record::batch(b, record::kind::BATCH_IN, node, ts, src, dst, descs.len() as u32, first as u32, raw.len() as u64, chunk)
        },
        src,
        dst,
        raw.len()
    )
}

/// A two-way invocation completed at its caller.
#[inline(never)]
pub(crate) fn rr_client(r: &RrClient) {
    let ts = stamp();
    let on = fire!(rr_client, |b: &mut Builder| record::rr_client(b, ts, r), r.req_id, r.src, r.dst, r.ok as u32);
    want_stages(on);
}

/// A two-way invocation's reply queued at its server.
#[inline(never)]
pub(crate) fn rr_server(r: &RrServer) {
    let ts = stamp();
    let on = fire!(rr_server, |b: &mut Builder| record::rr_server(b, ts, r), r.req_id, r.src, r.dst, r.ok as u32);
    want_stages(on);
}

fn want_stages(on: bool) {
    if STAGES_WANTED.load(Relaxed) != on {
        STAGES_WANTED.store(on, Relaxed);
    }
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
    /// Per peer node: what went to it and came from it (one lock per batch, not per message).
    pub peers: Mutex<std::collections::BTreeMap<u32, PeerCount>>,
}

#[derive(Default, Clone, Copy)]
pub struct PeerCount {
    pub batches_sent: u64,
    pub messages_sent: u64,
    pub bytes_sent: u64,
    pub batches_received: u64,
    pub messages_received: u64,
    pub bytes_received: u64,
}

impl Counters {
    pub(crate) fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Relaxed);
    }
    /// One batch sent to `peer`; returns the time it was counted (taken under the same lock
    /// as `peer_snapshot`'s, so a recorder can tell exactly which side of a snapshot the
    /// batch's record falls on).
    pub(crate) fn sent(&self, peer: u32, msgs: usize, bytes: usize) -> u64 {
        Self::add(&self.batches_sent, 1);
        Self::add(&self.messages_sent, msgs as u64);
        Self::add(&self.bytes_sent, bytes as u64);
        let mut p = self.peers.lock();
        let c = p.entry(peer).or_default();
        c.batches_sent += 1;
        c.messages_sent += msgs as u64;
        c.bytes_sent += bytes as u64;
        now_ns()
    }
    /// The per-peer counters and the CLOCK_MONOTONIC time they were read at.
    pub fn peer_snapshot(&self) -> (u64, Vec<(u32, PeerCount)>) {
        let p = self.peers.lock();
        (now_ns(), p.iter().map(|(&k, &v)| (k, v)).collect())
    }
    /// One batch received from `peer`.
    pub(crate) fn received(&self, peer: u32, msgs: usize, bytes: usize) {
        Self::add(&self.batches_received, 1);
        Self::add(&self.messages_received, msgs as u64);
        let mut p = self.peers.lock();
        let c = p.entry(peer).or_default();
        c.batches_received += 1;
        c.messages_received += msgs as u64;
        c.bytes_received += bytes as u64;
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
            peers: self
                .peers
                .lock()
                .iter()
                .map(|(&peer, c)| crate::proto::svc::PeerCounters {
                    peer,
                    batches_sent: c.batches_sent,
                    messages_sent: c.messages_sent,
                    bytes_sent: c.bytes_sent,
                    batches_received: c.batches_received,
                    messages_received: c.messages_received,
                    bytes_received: c.bytes_received,
                })
                .collect(),
        }
    }
}
