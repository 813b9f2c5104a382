//! What a run writes down. Times are CLOCK_MONOTONIC nanoseconds: the nodes of a local
//! cluster share the host's clock, so the agents' records, the nemesis' faults and the
//! deaths the driver sees are on one time line.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Now, on the run's clock.
pub fn now() -> u64 {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec we own; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// One operation of an agent: asked at `t0`, answered at `t1`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Record {
    pub node: u32,
    pub pid: u32,
    pub t0: u64,
    pub t1: u64,
    #[serde(flatten)]
    pub op: Op,
    /// Acknowledged: the call returned success.
    #[serde(default)]
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub err: Option<String>,
    /// The line an agent writes before it asks (`t1` is 0): were it to die before the
    /// answer, the operation is known to have been asked, outcome unknown.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub invoke: bool,
}

/// One record per operation: each answered invocation as answered, and those never
/// answered (their agent died first) as asked and not acknowledged.
pub fn completed(lines: Vec<Record>) -> Vec<Record> {
    let answered: std::collections::BTreeSet<(u32, u64)> = lines.iter().filter(|r| !r.invoke).map(|r| (r.pid, r.t0)).collect();
    let mut out: Vec<Record> = lines
        .into_iter()
        .filter(|r| !r.invoke || !answered.contains(&(r.pid, r.t0)))
        .map(|mut r| {
            if r.invoke {
                r.invoke = false;
                r.ok = false;
                r.t1 = u64::MAX;
                r.err = Some("no answer: the agent died".into());
            }
            r
        })
        .collect();
    out.sort_by_key(|r| (r.t0, r.pid));
    out
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// The agent started (its pid is the record's).
    Start,
    /// `bind()` of a TCP port (and `listen()`), through the SAP.
    Bind { port: u16 },
    /// The socket is about to be closed: the hold ends no later than `t0`.
    Release { port: u16 },
    /// A line `seq` appended to `file` and fsync'd.
    Append { vol: String, file: String, seq: u64 },
    /// `file` created with O_EXCL.
    Create { vol: String, file: String },
    /// `from` renamed to `to` (one directory).
    Rename { vol: String, from: String, to: String },
    /// `file` unlinked.
    Remove { vol: String, file: String },
}

impl Op {
    /// The volume a file operation changes.
    pub fn volume(&self) -> Option<&str> {
        match self {
            Op::Append { vol, .. } | Op::Create { vol, .. } | Op::Rename { vol, .. } | Op::Remove { vol, .. } => Some(vol),
            _ => None,
        }
    }
}

/// A fault the nemesis made, from `t0` (applied) to `t1` (taken away).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Fault {
    pub kind: FaultKind,
    pub t0: u64,
    pub t1: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultKind {
    /// The interconnect cut between `a` and `b` (both ways, or only from `a` to `b`).
    Partition { a: Vec<u32>, b: Vec<u32>, oneway: bool },
    /// Node `node`'s power cut; it came back (new incarnation) at the fault's `t1`.
    Crash { node: u32 },
}

impl FaultKind {
    /// The nodes cut off from a majority of `all` by this fault.
    pub fn minority(&self, all: usize) -> Vec<u32> {
        match self {
            FaultKind::Partition { a, b, .. } => {
                if a.len() * 2 <= all {
                    a.clone()
                } else if b.len() * 2 <= all {
                    b.clone()
                } else {
                    vec![]
                }
            }
            FaultKind::Crash { node } => vec![*node],
        }
    }
}

/// A view a node logged.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ViewSeen {
    pub node: u32,
    pub number: u64,
    pub members: Vec<u32>,
}

/// How the files look at the end, read through one node's mount after every fault is over.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct FinalFiles {
    /// Per volume: the names in its history directory.
    pub names: BTreeMap<String, Vec<String>>,
    /// Per volume: the contents of each appended file.
    pub appended: BTreeMap<String, BTreeMap<String, String>>,
}

/// Everything a run recorded.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct History {
    pub nodes: u32,
    /// Volume name (as agents name it) → the node whose disk holds it.
    pub owners: BTreeMap<String, u32>,
    pub records: Vec<Record>,
    pub faults: Vec<Fault>,
    /// Agent pid → when the driver saw it exit (an upper bound on its death).
    pub deaths: BTreeMap<u32, u64>,
    pub views: Vec<ViewSeen>,
    pub files: FinalFiles,
    /// When the run ended (agents stopped).
    pub end: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invocation_never_answered_stays_as_asked_and_unacknowledged() {
        let r = |t0, t1, invoke, ok| Record { node: 1, pid: 7, t0, t1, op: Op::Bind { port: 1 }, ok, err: None, invoke };
        let got = completed(vec![r(5, 0, true, false), r(5, 6, false, true), r(9, 0, true, false)]);
        assert_eq!(got.len(), 2);
        assert!(got[0].ok && got[0].t1 == 6);
        assert!(!got[1].ok && !got[1].invoke && got[1].t1 == u64::MAX && got[1].err.is_some());
    }
}
