//! From a trace directory to the study's measurements: every record read once, messages
//! tallied per node pair, sizes, rates and buffer chains, and request-response stages joined
//! across the nodes by (caller, request id).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use crate::error::TraceError;
use hdrhistogram::Histogram;
use serde::Serialize;
use ssi_orb::probes::record::MsgDesc;

use crate::format::{self, Event, Meta};

/// Bytes of framing per message on the ORB stream (three u32 lengths).
pub const PREFIX: u64 = 12;

#[derive(Serialize, Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct Tally {
    pub messages: u64,
    pub bytes: u64,
}

impl Tally {
    fn add(&mut self, bytes: u64) {
        self.messages += 1;
        self.bytes += bytes;
    }
}

/// The stages of a request-response, Fig. 5.1's order.
pub const STAGES: [&str; 10] = [
    "ORB prepare request",
    "queue → transport (send)",
    "transport → peer transport",
    "ORB unpack + dispatch",
    "dispatch queue",
    "invocation",
    "ORB prepare reply",
    "reply queue → transport",
    "reply transport → transport",
    "ORB process reply",
];

#[derive(Serialize, Clone, Default, Debug)]
pub struct StageStat {
    pub name: &'static str,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p99_us: f64,
}

#[derive(Serialize, Default, Debug)]
pub struct Analysis {
    #[serde(skip)]
    pub meta: Meta,
    pub seconds: f64,
    pub records: u64,
    /// Messages by (src, dst) as their senders' records describe them, inside the window.
    pub sent: BTreeMap<String, Tally>,
    /// As their receivers' records describe them.
    pub received: BTreeMap<String, Tally>,
    /// Sent messages whose records fall outside the window (before the first counter
    /// reading or after the last).
    pub outside_window: Tally,
    /// Message size (bytes) → count, per sending node.
    pub sizes: BTreeMap<u32, BTreeMap<u32, u64>>,
    /// Messages sent per second of the window, per node.
    pub rates: BTreeMap<u32, Vec<u64>>,
    /// Messages with 1, 2, 3 buffers.
    pub nbufs: [u64; 3],
    /// Bytes in buffer 1 (ORB header), 2 (payload), 3 (object protocol).
    pub position_bytes: [u64; 3],
    /// Buffer size → count, per position (present buffers only).
    pub position_sizes: [BTreeMap<u32, u64>; 3],
    /// Messages by wire kind (index = kind).
    pub kinds: [u64; 9],
    pub batches_out: u64,
    /// Request-responses with every stage time, and those missing some (at the window's
    /// edges, or local invocations).
    pub rr_complete: u64,
    pub rr_incomplete: u64,
    pub stages: Vec<StageStat>,
    pub rr_total: StageStat,
    /// The first complete request-responses, whole (for the Perfetto export).
    #[serde(skip)]
    pub timelines: Vec<Timeline>,
}

/// One request-response: its 11 stage boundaries (STAGES lie between them), CLOCK_MONOTONIC.
#[derive(Clone, Debug)]
pub struct Timeline {
    pub caller: u32,
    pub server: u32,
    pub req_id: u64,
    pub method: u32,
    pub t: [u64; 11],
}

pub fn pair(src: u32, dst: u32) -> String {
    format!("{}:{}", node_name(src), node_name(dst))
}

/// A node id as the reports print it: 0 is a cluster tool's link (`ssi` commands talking to
/// the ORB), u32::MAX a link whose peer had not said who it is yet (the handshake).
pub fn node_name(n: u32) -> String {
    match n {
        0 => "tool".into(),
        u32::MAX => "?".into(),
        n => n.to_string(),
    }
}

pub fn msg_size(d: &MsgDesc) -> u64 {
    PREFIX + d.len.iter().map(|&l| l as u64).sum::<u64>()
}

/// Times of one request-response, filled from the records of both nodes.
#[derive(Default, Clone, Copy)]
struct Rr {
    req_sent: u64,
    req_recv: u64,
    rep_sent: u64,
    rep_recv: u64,
    server: Option<(u64, u64, u64, u64)>, // dispatch, start, end, reply prepared
}

pub fn analyze(dir: &Path, keep_timelines: usize, mut progress: impl FnMut(u64, u64)) -> Result<Analysis, TraceError> {
    let meta = Meta::read(dir)?;
    let files = format::event_files(dir)?;
    if files.is_empty() {
        return Err(TraceError::NoEvents(dir.to_path_buf()));
    }
    let total: u64 = files.iter().filter_map(|f| f.metadata().ok()).map(|m| m.len()).sum();
    let windows: HashMap<u32, (u64, u64)> = meta.nodes.iter().map(|n| (n.node, (n.window_start_ns, n.window_end_ns))).collect();
    let in_window = |node: u32, ts: u64| windows.get(&node).is_none_or(|&(a, b)| ts > a && ts <= b);
    let start = meta.start_ns;
    let mut a = Analysis { seconds: meta.end_ns.saturating_sub(meta.start_ns) as f64 / 1e9, ..Default::default() };
    let mut rrs: HashMap<(u32, u64), Rr> = HashMap::new();
    let mut clients = Vec::new();
    let mut done = 0u64;
    for f in &files {
        let base = done;
        let n = format::read_events(
            f,
            |ev| match ev {
                Event::Batch(b) => {
                    let ok = in_window(b.node, b.ts);
                    if b.out {
                        if b.first == 0 {
                            a.batches_out += ok as u64;
                        }
                        for d in &b.descs {
                            let size = msg_size(d);
                            if !ok {
                                a.outside_window.add(size);
                            } else {
                                a.sent.entry(pair(b.src, b.dst)).or_default().add(size);
                                *a.sizes.entry(b.src).or_default().entry(size as u32).or_default() += 1;
                                let sec = (b.ts.saturating_sub(start) / 1_000_000_000) as usize;
                                let r = a.rates.entry(b.src).or_default();
                                if r.len() <= sec {
                                    r.resize(sec + 1, 0);
                                }
                                r[sec] += 1;
                                a.nbufs[(d.nbufs.clamp(1, 3) - 1) as usize] += 1;
                                for (i, &l) in d.len.iter().enumerate() {
                                    a.position_bytes[i] += l as u64;
                                    if l > 0 || i == 0 {
                                        *a.position_sizes[i].entry(l).or_default() += 1;
                                    }
                                }
                                a.kinds[(d.kind as usize).min(8)] += 1;
                            }
                            match d.kind {
                                1 => rrs.entry((b.src, d.req_id)).or_default().req_sent = b.ts,
                                3 | 4 => rrs.entry((b.dst, d.req_id)).or_default().rep_sent = b.ts,
                                _ => {}
                            }
                        }
                    } else {
                        for d in &b.descs {
                            if in_window(b.node, b.ts) {
                                a.received.entry(pair(b.src, b.dst)).or_default().add(msg_size(d));
                            }
                            match d.kind {
                                1 => rrs.entry((b.src, d.req_id)).or_default().req_recv = b.ts,
                                3 | 4 => rrs.entry((b.dst, d.req_id)).or_default().rep_recv = b.ts,
                                _ => {}
                            }
                        }
                    }
                }
                Event::RrServer(ts, s) => {
                    rrs.entry((s.src, s.req_id)).or_default().server = Some((s.t_dispatch, s.t_start, s.t_end, ts));
                }
                Event::RrClient(ts, c) => clients.push((ts, c)),
            },
            |at| progress(base + at, total),
        )?;
        a.records += n;
        done += f.metadata().map(|m| m.len()).unwrap_or(0);
    }
    let mut hists: Vec<Histogram<u64>> = (0..=STAGES.len()).map(|_| Histogram::new(3).expect("histogram")).collect();
    let mut sums = vec![0f64; STAGES.len() + 1];
    for (done_ts, c) in &clients {
        let Some(r) = rrs.get(&(c.src, c.req_id)) else {
            a.rr_incomplete += 1;
            continue;
        };
        let Some((disp, st, en, rep)) = r.server else {
            a.rr_incomplete += 1;
            continue;
        };
        let t = [c.t_start, c.t_prepared, r.req_sent, r.req_recv, disp, st, en, rep, r.rep_sent, r.rep_recv, *done_ts];
        if t.contains(&0) || t.windows(2).any(|w| w[1] < w[0]) {
            a.rr_incomplete += 1;
            continue;
        }
        a.rr_complete += 1;
        if a.timelines.len() < keep_timelines {
            a.timelines.push(Timeline { caller: c.src, server: c.dst, req_id: c.req_id, method: c.method, t });
        }
        for i in 0..STAGES.len() {
            let d = t[i + 1] - t[i];
            let _ = hists[i].record(d);
            sums[i] += d as f64;
        }
        let tot = t[10] - t[0];
        let _ = hists[STAGES.len()].record(tot);
        sums[STAGES.len()] += tot as f64;
    }
    let n = a.rr_complete.max(1) as f64;
    let stat = |i: usize, name: &'static str| StageStat {
        name,
        mean_us: sums[i] / n / 1000.0,
        p50_us: hists[i].value_at_quantile(0.5) as f64 / 1000.0,
        p99_us: hists[i].value_at_quantile(0.99) as f64 / 1000.0,
    };
    a.stages = STAGES.iter().enumerate().map(|(i, s)| stat(i, s)).collect();
    a.rr_total = stat(STAGES.len(), "total");
    a.meta = meta;
    Ok(a)
}

/// One node pair: what its sender's records describe against what the sender's ORB counted
/// over the window (messages and bytes sent).
#[derive(Serialize, Clone, Copy, Debug)]
pub struct PairCheck {
    pub src: u32,
    pub dst: u32,
    pub trace: Tally,
    pub orb: Tally,
}

impl PairCheck {
    pub fn equal(&self) -> bool {
        self.trace == self.orb
    }
}

impl Analysis {
    /// The recorder against the ORB's own counters, pair by pair.
    pub fn counter_check(&self) -> Vec<PairCheck> {
        self.meta
            .counter_deltas()
            .into_iter()
            .map(|(src, c)| PairCheck {
                src,
                dst: c.peer,
                trace: self.sent_between(src, c.peer),
                orb: Tally { messages: c.messages_sent, bytes: c.bytes_sent },
            })
            .collect()
    }
    /// Whether every pair's recorded messages and bytes equal the ORB's counters.
    pub fn counters_equal(&self) -> bool {
        self.counter_check().iter().all(PairCheck::equal)
    }
    pub fn nodes(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.meta.nodes.iter().map(|n| n.node).collect();
        v.sort();
        v
    }
    pub fn sent_between(&self, src: u32, dst: u32) -> Tally {
        self.sent.get(&pair(src, dst)).copied().unwrap_or_default()
    }
    pub fn total_sent(&self) -> Tally {
        self.sent.values().fold(Tally::default(), |a, t| Tally { messages: a.messages + t.messages, bytes: a.bytes + t.bytes })
    }
    /// Sizes of every node's messages together.
    pub fn all_sizes(&self) -> BTreeMap<u32, u64> {
        let mut m = BTreeMap::new();
        for s in self.sizes.values() {
            for (&k, &v) in s {
                *m.entry(k).or_default() += v;
            }
        }
        m
    }
}

/// Quantile of a size histogram (by count).
pub fn quantile(h: &BTreeMap<u32, u64>, q: f64) -> u32 {
    let total: u64 = h.values().sum();
    if total == 0 {
        return 0;
    }
    let want = (q * total as f64).ceil().max(1.0) as u64;
    let mut acc = 0;
    for (&k, &v) in h {
        acc += v;
        if acc >= want {
            return k;
        }
    }
    *h.keys().last().unwrap()
}

/// Share of messages with size in [lo, hi], and share of bytes in messages of at least `big`.
pub fn shares(h: &BTreeMap<u32, u64>, lo: u32, hi: u32, big: u32) -> (f64, f64) {
    let (mut n, mut inr, mut bytes, mut big_bytes) = (0u64, 0u64, 0u64, 0u64);
    for (&k, &v) in h {
        n += v;
        bytes += k as u64 * v;
        if (lo..=hi).contains(&k) {
            inr += v;
        }
        if k >= big {
            big_bytes += k as u64 * v;
        }
    }
    (inr as f64 / n.max(1) as f64, big_bytes as f64 / bytes.max(1) as f64)
}
