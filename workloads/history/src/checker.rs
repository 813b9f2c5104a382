//! The proofs over a [`History`]. Each check says what it found wrong, one line per
//! anomaly; an empty list is the claim that the run kept every promise below.
//!
//! - **ports**: a bind acknowledged at `t1` holds its port until its release's `t1`, or
//!   until the driver saw its process dead; two such holds of one port never overlap.
//! - **appends**: every acknowledged (fsync'd) number is in its file exactly once; nothing
//!   is there that was never asked for.
//! - **creates and removes**: an acknowledged create that was never removed is there; an
//!   acknowledged remove is not undone.
//! - **renames**: a pair file exists under exactly one of its two names, the one its last
//!   acknowledged rename gave it when nothing was tried after.
//! - **views**: no two nodes logged one view number with different members.
//! - **quorum**: no mutation was acknowledged by a node cut off from the majority: an
//!   operation asked [`FENCE_BOUND`] or more after a cut began and answered before it ended
//!   is not acknowledged when its volume's owner (for binds: the agent's node) was in the
//!   minority.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::record::{FaultKind, History, Op, Record};

/// How long a node cut off from the majority may go on granting before it knows (the
/// quorum issue's bound: 2 s).
pub const FENCE_BOUND: u64 = 2_000_000_000;

#[derive(Clone, Debug, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Anomaly {
    /// ports, appends, creates, renames, views, quorum.
    pub check: &'static str,
    pub detail: String,
}

/// What was checked, and what was wrong.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Verdict {
    /// Operations asked and acknowledged, by kind.
    pub asked: BTreeMap<&'static str, u64>,
    pub acked: BTreeMap<&'static str, u64>,
    /// Distinct view numbers the nodes logged.
    pub views: usize,
    pub anomalies: Vec<Anomaly>,
}

fn kind(op: &Op) -> &'static str {
    match op {
        Op::Start => "start",
        Op::Bind { .. } => "bind",
        Op::Release { .. } => "release",
        Op::Append { .. } => "append",
        Op::Create { .. } => "create",
        Op::Rename { .. } => "rename",
        Op::Remove { .. } => "remove",
    }
}

fn secs(t: u64, base: u64) -> f64 {
    t.saturating_sub(base) as f64 / 1e9
}

/// Runs every check.
pub fn check(h: &History) -> Verdict {
    let mut v = Verdict::default();
    for r in &h.records {
        *v.asked.entry(kind(&r.op)).or_default() += 1;
        if r.ok {
            *v.acked.entry(kind(&r.op)).or_default() += 1;
        }
    }
    v.views = h.views.iter().map(|s| s.number).collect::<BTreeSet<_>>().len();
    let base = h.records.iter().map(|r| r.t0).chain(h.faults.iter().map(|f| f.t0)).min().unwrap_or(0);
    let mut a = vec![];
    ports(h, base, &mut a);
    files(h, &mut a);
    views(h, &mut a);
    quorum(h, base, &mut a);
    a.sort();
    v.anomalies = a;
    v
}

fn ports(h: &History, base: u64, out: &mut Vec<Anomaly>) {
    // Per port: (start, end, pid, node).
    let mut holds: BTreeMap<u16, Vec<(u64, u64, u32, u32)>> = BTreeMap::new();
    let mut by_pid: BTreeMap<u32, Vec<&Record>> = BTreeMap::new();
    for r in &h.records {
        by_pid.entry(r.pid).or_default().push(r);
    }
    for recs in by_pid.values() {
        for (i, r) in recs.iter().enumerate() {
            let Op::Bind { port } = r.op else { continue };
            if !r.ok {
                continue;
            }
            let released = recs[i + 1..].iter().find(|x| matches!(x.op, Op::Release { port: p } if p == port)).map(|x| x.t1);
            let end = released.or_else(|| h.deaths.get(&r.pid).copied()).unwrap_or(h.end);
            holds.entry(port).or_default().push((r.t1, end, r.pid, r.node));
        }
    }
    for (port, mut hs) in holds {
        hs.sort();
        for (i, a) in hs.iter().enumerate() {
            for b in hs[i + 1..].iter().take_while(|b| b.0 < a.1) {
                if b.2 != a.2 {
                    out.push(Anomaly {
                        check: "ports",
                        detail: format!(
                            "port {port} held by pid {} on node {} ({:.3}–{:.3} s) and pid {} on node {} ({:.3}–{:.3} s) at once",
                            a.2,
                            a.3,
                            secs(a.0, base),
                            secs(a.1, base),
                            b.2,
                            b.3,
                            secs(b.0, base),
                            secs(b.1, base)
                        ),
                    });
                }
            }
        }
    }
}

fn files(h: &History, out: &mut Vec<Anomaly>) {
    let exists = |vol: &str, f: &str| h.files.names.get(vol).is_some_and(|n| n.iter().any(|x| x == f));
    let mut appends: BTreeMap<(String, String), (BTreeSet<u64>, BTreeSet<u64>)> = BTreeMap::new();
    let mut made: BTreeMap<(String, String), (bool, Option<bool>)> = BTreeMap::new();
    // Rename pairs: (vol, stem) → the pair's operations in order: (ok, the name it leaves).
    let mut pairs: BTreeMap<(String, String), Vec<(bool, String)>> = BTreeMap::new();
    let stem = |f: &str| f.strip_suffix("-a").or_else(|| f.strip_suffix("-b")).unwrap_or(f).to_string();
    for r in &h.records {
        match &r.op {
            Op::Append { vol, file, seq } => {
                let e = appends.entry((vol.clone(), file.clone())).or_default();
                e.0.insert(*seq);
                if r.ok {
                    e.1.insert(*seq);
                }
            }
            Op::Create { vol, file } if file.starts_with("r-") => {
                pairs.entry((vol.clone(), stem(file))).or_default().push((r.ok, file.clone()));
            }
            Op::Rename { vol, to, .. } => pairs.entry((vol.clone(), stem(to))).or_default().push((r.ok, to.clone())),
            Op::Create { vol, file } => {
                made.insert((vol.clone(), file.clone()), (r.ok, None));
            }
            Op::Remove { vol, file } => {
                if let Some(m) = made.get_mut(&(vol.clone(), file.clone())) {
                    m.1 = Some(r.ok);
                }
            }
            _ => {}
        }
    }
    for ((vol, file), (asked, acked)) in &appends {
        let text = h.files.appended.get(vol).and_then(|m| m.get(file)).map(String::as_str).unwrap_or("");
        let mut seen: BTreeMap<u64, usize> = BTreeMap::new();
        for line in text.lines() {
            match line.parse::<u64>() {
                Ok(n) => *seen.entry(n).or_default() += 1,
                Err(_) => out.push(Anomaly { check: "appends", detail: format!("{vol}/{file}: a line that no agent wrote: {line:?}") }),
            }
        }
        for n in acked.iter().filter(|n| !seen.contains_key(n)) {
            out.push(Anomaly { check: "appends", detail: format!("{vol}/{file}: fsync'd number {n} lost") });
        }
        for (n, c) in seen.iter().filter(|(_, c)| **c > 1) {
            out.push(Anomaly { check: "appends", detail: format!("{vol}/{file}: number {n} there {c} times") });
        }
        for n in seen.keys().filter(|n| !asked.contains(n)) {
            out.push(Anomaly { check: "appends", detail: format!("{vol}/{file}: number {n} there but never written") });
        }
    }
    for ((vol, file), (created, removed)) in &made {
        let there = exists(vol, file);
        match (created, removed) {
            (true, None) if !there => {
                out.push(Anomaly { check: "creates", detail: format!("{vol}/{file}: created (acknowledged), never removed, gone") })
            }
            (_, Some(true)) if there => {
                out.push(Anomaly { check: "creates", detail: format!("{vol}/{file}: removed (acknowledged), there again") })
            }
            _ => {}
        }
    }
    for ((vol, stem), ops) in &pairs {
        let (a, b) = (format!("{stem}-a"), format!("{stem}-b"));
        let (ea, eb) = (exists(vol, &a), exists(vol, &b));
        if ea && eb {
            out.push(Anomaly { check: "renames", detail: format!("{vol}/{stem}: under both names") });
            continue;
        }
        let created = ops.first().is_some_and(|o| o.0);
        let Some((last_ok, name)) = ops.last() else { continue };
        if created && !ea && !eb {
            out.push(Anomaly { check: "renames", detail: format!("{vol}/{stem}: created (acknowledged), under neither name") });
        } else if *last_ok && !exists(vol, name) {
            out.push(Anomaly {
                check: "renames",
                detail: format!("{vol}/{stem}: the last acknowledged rename made {name}, which is not there"),
            });
        }
    }
}

fn views(h: &History, out: &mut Vec<Anomaly>) {
    let mut by_number: BTreeMap<u64, BTreeMap<Vec<u32>, Vec<u32>>> = BTreeMap::new();
    for s in &h.views {
        let mut m = s.members.clone();
        m.sort();
        by_number.entry(s.number).or_default().entry(m).or_default().push(s.node);
    }
    for (n, sets) in by_number.into_iter().filter(|(_, s)| s.len() > 1) {
        let which: Vec<String> = sets.iter().map(|(m, nodes)| format!("{m:?} (logged by {nodes:?})")).collect();
        out.push(Anomaly { check: "views", detail: format!("view {n} with different members: {}", which.join(", ")) });
    }
}

fn quorum(h: &History, base: u64, out: &mut Vec<Anomaly>) {
    let cuts: Vec<(u64, u64, Vec<u32>)> = h
        .faults
        .iter()
        .filter(|f| matches!(f.kind, FaultKind::Partition { .. }))
        .map(|f| (f.t0, f.t1, f.kind.minority(h.nodes as usize)))
        .collect();
    for r in h.records.iter().filter(|r| r.ok) {
        let granter = match &r.op {
            Op::Bind { .. } => r.node,
            op => match op.volume().and_then(|v| h.owners.get(v)) {
                Some(o) => *o,
                None => continue,
            },
        };
        for (t0, t1, minority) in &cuts {
            if minority.contains(&granter) && r.t0 >= t0 + FENCE_BOUND && r.t1 <= *t1 {
                out.push(Anomaly {
                    check: "quorum",
                    detail: format!(
                        "{} by pid {} on node {} acknowledged at {:.3} s by node {granter}, cut off from the majority since {:.3} s",
                        kind(&r.op),
                        r.pid,
                        r.node,
                        secs(r.t1, base),
                        secs(*t0, base)
                    ),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Fault, FinalFiles, ViewSeen};

    const S: u64 = 1_000_000_000;

    fn rec(pid: u32, node: u32, t0: u64, t1: u64, op: Op, ok: bool) -> Record {
        Record { node, pid, t0, t1, op, ok, err: None, invoke: false }
    }

    fn history(records: Vec<Record>) -> History {
        let mut owners = BTreeMap::new();
        owners.insert("www".to_string(), 2);
        History { nodes: 5, owners, records, end: 100 * S, ..Default::default() }
    }

    fn checks(h: &History) -> Vec<&'static str> {
        check(h).anomalies.into_iter().map(|a| a.check).collect()
    }

    #[test]
    fn a_port_held_twice_at_once_is_found_and_one_after_the_other_is_not() {
        let bind = |pid, t0, t1, ok| rec(pid, pid, t0, t1, Op::Bind { port: 47000 }, ok);
        let fine = history(vec![bind(1, 0, S, true), release(1, 2 * S), bind(2, 2 * S, 3 * S, true), bind(3, S, 4 * S, false)]);
        assert!(checks(&fine).is_empty(), "{:?}", check(&fine).anomalies);
        let twice = history(vec![bind(1, 0, S, true), release(1, 3 * S), bind(2, S, 2 * S, true)]);
        assert_eq!(checks(&twice), vec!["ports"]);
        // A holder that died: its hold ends when the driver saw it dead, not at the end.
        let mut died = history(vec![bind(1, 0, S, true), bind(2, 5 * S, 6 * S, true)]);
        died.deaths.insert(1, 4 * S);
        assert!(checks(&died).is_empty());
        died.deaths.insert(1, 7 * S);
        assert_eq!(checks(&died), vec!["ports"]);
    }

    fn release(pid: u32, t: u64) -> Record {
        rec(pid, pid, t, t + 1, Op::Release { port: 47000 }, true)
    }

    #[test]
    fn appends_lost_doubled_or_invented_are_found() {
        let ap = |seq, ok| rec(7, 3, seq * S, seq * S + 1, Op::Append { vol: "www".into(), file: "a-3-7".into(), seq }, ok);
        let with = |text: &str| {
            let mut h = history(vec![ap(0, true), ap(1, false), ap(2, true)]);
            h.files.appended.entry("www".into()).or_default().insert("a-3-7".into(), text.into());
            h
        };
        assert!(checks(&with("0\n2\n")).is_empty());
        assert!(checks(&with("0\n1\n2\n")).is_empty(), "an unacknowledged write may land");
        assert_eq!(checks(&with("0\n2\n3\n")), vec!["appends"], "never asked for");
        assert_eq!(checks(&with("0\n")), vec!["appends"]);
        assert_eq!(checks(&with("0\n2\n2\n")), vec!["appends"]);
        assert_eq!(checks(&with("0\nx\n2\n")), vec!["appends"]);
    }

    #[test]
    fn creates_renames_and_removes_are_checked_against_the_files() {
        let op = |t: u64, op, ok| rec(9, 1, t * S, t * S + 1, op, ok);
        let h = |names: &[&str]| {
            let mut h = history(vec![
                op(1, Op::Create { vol: "www".into(), file: "c-1-9-0".into() }, true),
                op(2, Op::Create { vol: "www".into(), file: "c-1-9-1".into() }, true),
                op(3, Op::Remove { vol: "www".into(), file: "c-1-9-1".into() }, true),
                op(4, Op::Create { vol: "www".into(), file: "r-1-9-2-a".into() }, true),
                op(5, Op::Rename { vol: "www".into(), from: "r-1-9-2-a".into(), to: "r-1-9-2-b".into() }, true),
            ]);
            h.files = FinalFiles { names: [("www".into(), names.iter().map(|s| s.to_string()).collect())].into(), ..Default::default() };
            h
        };
        assert!(checks(&h(&["c-1-9-0", "r-1-9-2-b"])).is_empty());
        assert_eq!(checks(&h(&["r-1-9-2-b"])), vec!["creates"]);
        assert_eq!(checks(&h(&["c-1-9-0", "c-1-9-1", "r-1-9-2-b"])), vec!["creates"]);
        assert_eq!(checks(&h(&["c-1-9-0", "r-1-9-2-a"])), vec!["renames"]);
        assert_eq!(checks(&h(&["c-1-9-0", "r-1-9-2-a", "r-1-9-2-b"])), vec!["renames"]);
        assert_eq!(checks(&h(&["c-1-9-0"])), vec!["renames"]);
    }

    #[test]
    fn one_view_number_with_two_member_lists_is_found() {
        let seen = |node, number, members: &[u32]| ViewSeen { node, number, members: members.to_vec() };
        let mut h = history(vec![]);
        h.views = vec![seen(1, 4, &[1, 2, 3]), seen(2, 4, &[3, 2, 1]), seen(4, 5, &[3, 4, 5])];
        assert!(checks(&h).is_empty());
        h.views.push(seen(5, 5, &[1, 2]));
        assert_eq!(checks(&h), vec!["views"]);
    }

    #[test]
    fn a_mutation_acknowledged_in_the_minority_after_the_bound_is_found() {
        let cut = Fault { kind: FaultKind::Partition { a: vec![1, 2], b: vec![3, 4, 5], oneway: false }, t0: 10 * S, t1: 20 * S };
        let write = |t0: u64, ok| rec(5, 2, t0, t0 + S / 10, Op::Create { vol: "www".into(), file: format!("c-2-5-{t0}") }, ok);
        let mut h = history(vec![write(11 * S, true), write(13 * S, false)]);
        h.files.names.insert("www".into(), vec![format!("c-2-5-{}", 11 * S)]);
        h.faults = vec![cut.clone()];
        assert!(checks(&h).is_empty(), "within the bound, or refused: {:?}", check(&h).anomalies);
        h.records.push(write(13 * S, true));
        h.files.names.get_mut("www").unwrap().push(format!("c-2-5-{}", 13 * S));
        assert_eq!(checks(&h), vec!["quorum"]);
        // A bind granted to an agent of the minority.
        let mut h = history(vec![rec(6, 1, 15 * S, 15 * S + 1, Op::Bind { port: 47001 }, true), release(6, 16 * S)]);
        h.faults = vec![cut];
        assert_eq!(checks(&h), vec!["quorum"]);
    }
}
