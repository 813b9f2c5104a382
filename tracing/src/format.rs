//! The trace directory (documented for users in `docs/trace-format.md`).
//!
//! ```text
//! DIR/trace.json      what was recorded: mode, nodes, clocks, the ORB's counters before and
//!                     after, wire-level totals (BPF mode), recorder statistics
//! DIR/events*.bin     records: "SSITRC1\n", then (u32 length, record bytes) repeated
//!                     (BPF mode: events.bin, one ring for every daemon; in-process mode:
//!                     events-N.bin, one per node)
//! ```
//! Record bytes are those the ORB's probe points build (`ssi_orb::probes::record`).

use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use crate::error::TraceError;
use serde::{Deserialize, Serialize};
use ssi_orb::probes::inproc::MAGIC;
use ssi_orb::probes::record;

pub const META: &str = "trace.json";
pub const FORMAT_VERSION: u32 = 1;

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct Meta {
    pub format: u32,
    /// `bpf` or `in-process`.
    pub mode: String,
    /// Why the BPF recorder was not used (in-process mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_reason: Option<String>,
    pub cluster: String,
    /// The command traced, if any.
    #[serde(default)]
    pub command: Vec<String>,
    /// CLOCK_MONOTONIC at the start and end of the recording window (ns).
    pub start_ns: u64,
    pub end_ns: u64,
    pub started_unix_ms: u64,
    pub nodes: Vec<NodeMeta>,
    /// Wire level (BPF mode): bytes and socket calls on the ORB's connections per node pair.
    #[serde(default)]
    pub wire: Vec<WireCount>,
    /// The daemons' TCP traffic that is not an ORB connection between traced nodes.
    #[serde(default)]
    pub wire_other: WireTotals,
    /// Whether the syscall tracepoints were attached (`--syscalls`: iovec counts).
    #[serde(default)]
    pub syscalls: bool,
    #[serde(default)]
    pub recorder: RecorderStats,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct NodeMeta {
    pub node: u32,
    pub pid: u32,
    /// CLOCK_REALTIME − CLOCK_MONOTONIC on that node (ns): record times + this = Unix time.
    pub mono_to_unix_ns: i64,
    /// When this node's counters were read at the start and at the end (CLOCK_MONOTONIC):
    /// a batch sent by this node belongs to the window when its record's time is inside.
    pub window_start_ns: u64,
    pub window_end_ns: u64,
    pub counters_before: Vec<PeerCount>,
    pub counters_after: Vec<PeerCount>,
}

/// The ORB's own per-peer counters of one node.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerCount {
    pub peer: u32,
    pub messages_sent: u64,
    pub bytes_sent: u64,
    pub messages_received: u64,
    pub bytes_received: u64,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default)]
pub struct WireCount {
    pub src: u32,
    pub dst: u32,
    #[serde(flatten)]
    pub t: WireTotals,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default)]
pub struct WireTotals {
    /// Bytes `src` sent on its connections to `dst`, and in how many socket calls
    /// (write/writev/sendto/sendmsg: one per syscall).
    pub bytes_out: u64,
    pub calls_out: u64,
    /// Bytes `src` received from `dst`, in how many socket calls (read/readv/recvfrom/recvmsg).
    pub bytes_in: u64,
    pub calls_in: u64,
    /// The iovecs those syscalls passed (recorded with `--syscalls`, else 0).
    #[serde(default)]
    pub iovecs_out: u64,
    #[serde(default)]
    pub iovecs_in: u64,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default)]
pub struct RecorderStats {
    pub records: u64,
    /// Records the ring buffer had no room for (BPF mode); a report says so when not 0.
    pub lost: u64,
    pub refused: u64,
    pub bytes: u64,
    /// Probe sites attached (BPF mode).
    pub probes_attached: u32,
}

impl Meta {
    pub fn read(dir: &Path) -> Result<Meta, TraceError> {
        let p = dir.join(META);
        let text = std::fs::read_to_string(&p).map_err(TraceError::io("not a trace directory:", dir))?;
        let m: Meta = serde_json::from_str(&text).map_err(|source| TraceError::Json { path: p.clone(), source })?;
        if m.format != FORMAT_VERSION {
            return Err(TraceError::Version { path: p, found: m.format, reads: FORMAT_VERSION });
        }
        Ok(m)
    }
    pub fn write(&self, dir: &Path) -> Result<(), TraceError> {
        let p = dir.join(META);
        let text = serde_json::to_string_pretty(self).map_err(|source| TraceError::Json { path: p.clone(), source })?;
        std::fs::write(&p, text + "\n").map_err(TraceError::io("writing", &p))
    }
    /// The ORB's counter deltas over the window, per (node, peer).
    pub fn counter_deltas(&self) -> Vec<(u32, PeerCount)> {
        let mut out = Vec::new();
        for n in &self.nodes {
            for a in &n.counters_after {
                let b = n.counters_before.iter().find(|b| b.peer == a.peer).copied().unwrap_or_default();
                out.push((
                    n.node,
                    PeerCount {
                        peer: a.peer,
                        messages_sent: a.messages_sent - b.messages_sent.min(a.messages_sent),
                        bytes_sent: a.bytes_sent - b.bytes_sent.min(a.bytes_sent),
                        messages_received: a.messages_received - b.messages_received.min(a.messages_received),
                        bytes_received: a.bytes_received - b.bytes_received.min(a.bytes_received),
                    },
                ));
            }
        }
        out
    }
}

pub use ssi_orb::probes::record::{decode, Batch, Event};

/// The event files of a trace directory.
pub fn event_files(dir: &Path) -> Result<Vec<PathBuf>, TraceError> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(TraceError::io("reading", dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("events") && n.ends_with(".bin")))
        .collect();
    v.sort();
    Ok(v)
}

/// Reads every record of `file`, calling `f` on each; `progress` gets bytes read so far.
pub fn read_events(file: &Path, mut f: impl FnMut(Event), mut progress: impl FnMut(u64)) -> Result<u64, TraceError> {
    let fh = std::fs::File::open(file).map_err(TraceError::io("opening", file))?;
    let mut r = BufReader::with_capacity(1 << 20, fh);
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic).map_err(|_| TraceError::Malformed { path: file.to_path_buf(), why: "empty".into() })?;
    if &magic != MAGIC {
        return Err(TraceError::Malformed { path: file.to_path_buf(), why: "not an ssi trace file".into() });
    }
    let (mut n, mut at) = (0u64, 8u64);
    let mut buf = Vec::new();
    loop {
        let mut l = [0u8; 4];
        match r.read_exact(&mut l) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(TraceError::io("reading", file)(e)),
        }
        let len = u32::from_le_bytes(l) as usize;
        if len > record::MAX_RECORD {
            return Err(TraceError::Malformed { path: file.to_path_buf(), why: format!("record at byte {at} claims {len} bytes") });
        }
        buf.resize(len, 0);
        r.read_exact(&mut buf)
            .map_err(|_| TraceError::Malformed { path: file.to_path_buf(), why: format!("truncated record at byte {at}") })?;
        let ev = decode(&buf).map_err(|source| TraceError::Record { path: file.to_path_buf(), at, source })?;
        f(ev);
        n += 1;
        at += 4 + len as u64;
        if n % 4096 == 0 {
            progress(at);
        }
    }
    progress(at);
    Ok(n)
}
