//! The probe point for the communication study (USDT, provider `ssi`), the in-process
//! recorder behind it, and the ORB's own counters.
//!
//! The Solaris MC study's tracer cost 7 µs an event and distorted what it timed. Here a probe
//! is a `.note.stapsdt` NOP (< 1 ns) until a tracer attaches; attached, each hit traps into
//! the kernel (≈ 1–2 µs here with the recorder's BPF program). At a million messages a
//! second a hit per message would cost more than the message, so the ORB fires **one probe,
//! `ssi:records(bundle, len)`, carrying a bundle of trace records** (`record.rs`,
//! `docs/trace-format.md`): transport writes (`BATCH_OUT`, a descriptor of every message
//! in it), transport reads (`BATCH_IN`, the same) and completed request-responses on either
//! side (`RR_CLIENT`, `RR_SERVER`, with the stage times of the study's Fig. 5.1). The probe
//! fires at a write once the bundle's oldest record is 5 ms old, or when it reaches 12 KiB: a
//! closed loop of two-way invocations costs one hit per few dozen invocations. Every
//! message is counted.
//!
//! | record | built at | describes |
//! |---|---|---|
//! | `BATCH_OUT` | a batch handed to the transport (one write) | each message: request id, kind, buffer lengths |
//! | `BATCH_IN` | a batch received, before its messages are handled | the same |
//! | `RR_CLIENT` | a two-way invocation returns to its caller | start, request queued (ORB prepare), completion |
//! | `RR_SERVER` | a two-way invocation's reply is queued | dispatched, invocation start and end, reply queued |
//!
//! Records are built only while someone records: a BPF recorder (learned when the probe's
//! semaphore is seen set at a write; until then nothing but the lazy check runs) or the
//! in-process recorder (`inproc`), which takes the same records into a file. A bundle waits
//! at most until a write after it is 5 ms old (heartbeats write every 200 ms), 12 KiB of
//! records, or `flush()` (the recorder asks through the daemon when it closes its window).
//! List the probe with `bpftrace -l 'usdt:/path/to/ssi:ssi:*'`.

pub mod inproc;
pub mod record;

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use bytes::Bytes;
use parking_lot::Mutex;

use crate::wire::{nbufs, WireMsg};
use record::{Builder, MsgDesc, RrClient, RrServer};

thread_local! {
    static REC: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(record::MAX_RECORD));
}

/// Set while a BPF recorder takes the `records` probe (learned at each write: the probe
/// crate's semaphore is private to the probe site, `probe_lazy!` says whether it is set).
static WANTED: AtomicBool = AtomicBool::new(false);
/// Records built since the last probe hit, waiting for the next one (only while `WANTED`),
/// and when the oldest of them was built.
static PENDING: Mutex<(Vec<u8>, u64)> = Mutex::new((Vec::new(), 0));
/// A bundle is fired before it grows past this (the BPF side copies up to `MAX_RECORD`) ...
const FLUSH_AT: usize = 12 << 10;
/// ... or, at a write, once its oldest record is this old (ns). A closed loop of two-way
/// invocations then costs one probe hit per few dozen invocations instead of one per write:
/// a hit (a trap into the kernel) and the work it does on the other side were what the
/// recorder's overhead came from.
const FLUSH_AGE_NS: u64 = 5_000_000;

/// Whether anyone records (one or two relaxed loads on the hot paths).
#[inline]
pub fn recording() -> bool {
    WANTED.load(Relaxed) || inproc::active()
}

/// CLOCK_MONOTONIC in nanoseconds (what `bpf_ktime_get_ns` reads), or 0 when nobody records.
#[inline]
pub fn stamp() -> u64 {
    if recording() {
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

/// The probe site: the one place `ssi:records` fires. Yields whether a tracer took it.
#[inline(never)]
fn fire(bundle: &[u8]) -> bool {
    probe::probe_lazy!(ssi, records, bundle.as_ptr() as usize, bundle.len())
}

/// Fires `p` in pieces of whole records up to `MAX_RECORD`, then empties it. Returns
/// whether the tracer is still there (if not, the rest is dropped: no one listens).
fn fire_pending(p: &mut Vec<u8>) -> bool {
    let mut at = 0;
    let mut on = true;
    while at < p.len() && on {
        let mut end = at;
        while end < p.len() {
            let len = u32::from_le_bytes(p[end + 4..end + 8].try_into().expect("4 bytes")) as usize;
            if len < record::HEADER_LEN || end + len > p.len() {
                end = p.len(); // cannot happen: records are built here; never loop on one
                break;
            }
            if end + len - at > record::MAX_RECORD && end > at {
                break;
            }
            end += len;
        }
        on = fire(&p[at..end]);
        at = end;
    }
    p.clear();
    on
}

/// Hands a record built by `build` to whoever records: the in-process file, and/or the
/// bundle for the next probe hit.
fn take(build: impl FnOnce(&mut Builder)) {
    REC.with(|cell| {
        let mut v = cell.borrow_mut();
        let mut b = Builder(&mut v);
        build(&mut b);
        let rec = b.finish();
        if inproc::active() {
            inproc::write(rec);
        }
        if WANTED.load(Relaxed) {
            let mut g = PENDING.lock();
            let (p, oldest) = &mut *g;
            if p.is_empty() {
                *oldest = now_ns();
            }
            p.extend_from_slice(rec);
            if p.len() >= FLUSH_AT && !fire_pending(p) {
                WANTED.store(false, Relaxed);
            }
        }
    })
}

/// Fires what is pending now (the recorder closing its window asks for this).
pub fn flush() {
    flush_older_than(0);
}

fn flush_older_than(age_ns: u64) {
    if WANTED.load(Relaxed) {
        let mut g = PENDING.lock();
        let (p, oldest) = &mut *g;
        if !p.is_empty() && (age_ns == 0 || now_ns().saturating_sub(*oldest) >= age_ns) && !fire_pending(p) {
            WANTED.store(false, Relaxed);
        }
    }
}

fn desc_out(m: &WireMsg) -> MsgDesc {
    let c = m.chain();
    MsgDesc { req_id: m.header.request_id, len: c.map(|l| l as u32), kind: m.header.kind as u8, nbufs: nbufs(&c) as u8 }
}

/// A batch handed to the transport (one write; `ts` from when it was counted): its record,
/// with everything pending, goes out in one probe hit.
pub(crate) fn batch_out(node: u32, src: u32, dst: u32, ts: u64, msgs: &[WireMsg], bytes: usize) {
    if !WANTED.load(Relaxed) {
        // Is a tracer there now? An empty hit answers (it costs a trap only when one is).
        if fire(&[]) {
            WANTED.store(true, Relaxed);
        } else if !inproc::active() {
            return;
        }
    }
    let mut descs = Vec::with_capacity(msgs.len().min(record::MAX_DESCS));
    for (part, chunk) in msgs.chunks(record::MAX_DESCS).enumerate() {
        descs.clear();
        descs.extend(chunk.iter().map(desc_out));
        let first = (part * record::MAX_DESCS) as u32;
        let h =
            record::BatchHead { kind: record::kind::BATCH_OUT, node, ts, src, dst, nmsgs: msgs.len() as u32, first, bytes: bytes as u64 };
        take(|b| record::batch(b, &h, &descs));
    }
    flush_older_than(FLUSH_AGE_NS);
}

/// A batch received by the transport, before any of its messages is handled. Its
/// descriptors are read from the raw batch only while someone records.
pub(crate) fn batch_in(node: u32, src: u32, dst: u32, raw: &Bytes) {
    if !recording() {
        return;
    }
    let ts = now_ns();
    let descs: Vec<MsgDesc> = crate::wire::peek_batch(raw).collect();
    let n = descs.len() as u32;
    for (part, chunk) in descs.chunks(record::MAX_DESCS).enumerate() {
        let first = (part * record::MAX_DESCS) as u32;
        let h = record::BatchHead { kind: record::kind::BATCH_IN, node, ts, src, dst, nmsgs: n, first, bytes: raw.len() as u64 };
        take(|b| record::batch(b, &h, chunk));
    }
}

/// A two-way invocation completed at its caller.
pub(crate) fn rr_client(r: &RrClient) {
    if recording() {
        let ts = now_ns();
        take(|b| record::rr_client(b, ts, r));
    }
}

/// A two-way invocation's reply queued at its server.
pub(crate) fn rr_server(r: &RrServer) {
    if recording() {
        let ts = now_ns();
        take(|b| record::rr_server(b, ts, r));
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
