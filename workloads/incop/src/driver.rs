//! `ssi workload in`: the IN coprocessor (ssi-incop) on a running local cluster. The
//! driver places the roles on the nodes, starts them, has the switch offer the calls,
//! injects the faults (a node killed with SIGKILL, a QE added, an overload window) at the
//! given call counts, and reports what the switch saw. `ssi bench in` uses the same
//! session for its sweep.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::proto::{IncopStub, IssueReq, LookupReq, Member, NodeStatus, Overload, Params, Report, Role, RunReq, StartReq};
use crate::switch::NUMBER_BASE;
use crate::IncopError;
use serde_json::json;
use ssi_orb::Orb;

use crate::error::{Context, Error, Result};
use ssi_node::config::Config;
use ssi_node::{bail, failed};

/// The paper's figure: 20,000 calls/s, all within 100 ms, with 12 nodes (2 EAs + 10 QEs).
pub const PAPER_RATE: f64 = 20_000.0;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fault {
    KillQe(u64),
    KillEa(u64),
    AddQe(u64),
}

/// `qe@500000`, `ea@500000` (for --kill) or `qe@500000` (for --add).
pub fn parse_fault(s: &str, add: bool) -> Result<Fault, IncopError> {
    let usage = IncopError::Usage;
    let (role, at) = s.split_once('@').ok_or_else(|| usage(format!("{s:?}: expected ROLE@CALLS, e.g. qe@500000")))?;
    let at: u64 = at.replace('_', "").parse().map_err(|_| usage(format!("{s:?}: {at:?} is not a call count")))?;
    match (role, add) {
        ("qe", false) => Ok(Fault::KillQe(at)),
        ("ea", false) => Ok(Fault::KillEa(at)),
        ("qe", true) => Ok(Fault::AddQe(at)),
        (r, true) => Err(usage(format!("{s:?}: only a QE can be added, not {r:?}"))),
        (r, false) => Err(usage(format!("{s:?}: the role to kill is qe or ea, not {r:?}"))),
    }
}

/// `RATE@FROM..TO` (seconds from the start of the run).
pub fn parse_overload(s: &str) -> Result<Overload, IncopError> {
    let bad = || IncopError::Usage(format!("{s:?}: expected RATE@FROM..TO, e.g. 40000@10..15 (calls/s from second 10 to 15)"));
    let (rate, span) = s.split_once('@').ok_or_else(bad)?;
    let (from, to) = span.split_once("..").ok_or_else(bad)?;
    let o =
        Overload { rate: rate.parse().map_err(|_| bad())?, from_s: from.parse().map_err(|_| bad())?, to_s: to.parse().map_err(|_| bad())? };
    if !(o.rate > 0.0 && o.from_s >= 0.0 && o.to_s > o.from_s) {
        return Err(bad());
    }
    Ok(o)
}

/// Where the roles run. Member ids: 1 the switch, 2 the UI, 3.. the EAs, 10.. the QEs.
#[derive(Clone, Debug)]
pub struct Placement {
    pub members: Vec<Member>,
    /// The QE added during the run, if any.
    pub added: Option<Member>,
    /// The node killed during the run, if any, and the member that is the target.
    pub victim: Option<Member>,
}

fn member(id: u32, node: u32, role: Role) -> Member {
    Member { id, node, role: role as i32, ready: true }
}

/// Switch and UI on the first node, EA1 and EA2 on the next two, the QEs round-robin over
/// the rest; with fewer nodes the roles fold onto the ones there are. An added QE goes to a
/// node without roles if there is one, else to the QE node with the fewest QEs.
pub fn place(nodes: &[u32], qes: u32, faults: &[Fault]) -> Result<Placement, IncopError> {
    let adds = faults.iter().any(|f| matches!(f, Fault::AddQe(_)));
    let kill = faults.iter().copied().find(|f| matches!(f, Fault::KillQe(_) | Fault::KillEa(_)));
    if nodes.len() < 2 {
        return Err(IncopError::Usage("the IN coprocessor needs at least 2 nodes (switch and UI; EAs; QEs)".into()));
    }
    if qes < 2 {
        return Err(IncopError::Usage("--qes must be at least 2 (every entry on more than one QE)".into()));
    }
    let n = nodes.len();
    let mut m = vec![member(1, nodes[0], Role::Switch), member(2, nodes[0], Role::Ui)];
    m.push(member(3, nodes[1], Role::Ea));
    m.push(member(4, if n >= 3 { nodes[2] } else { nodes[1] }, Role::Ea));
    let qe_nodes: Vec<u32> = if n > 3 { nodes[3..].to_vec() } else { nodes[1..].to_vec() };
    // Leave a node free for an added QE when there is room.
    let spare = adds && qe_nodes.len() > qes as usize;
    let usable = if spare { &qe_nodes[..qe_nodes.len() - 1] } else { &qe_nodes[..] };
    for i in 0..qes {
        m.push(member(10 + i, usable[i as usize % usable.len()], Role::Qe));
    }
    let count = |node: u32, m: &[Member]| m.iter().filter(|x| x.node == node).count();
    let added = adds.then(|| {
        let node = nodes
            .iter()
            .copied()
            .find(|nd| count(*nd, &m) == 0)
            .unwrap_or_else(|| *usable.iter().min_by_key(|nd| count(**nd, &m)).expect("at least one QE node"));
        Member { ready: false, ..member(10 + qes, node, Role::Qe) }
    });
    let victim = match kill {
        Some(Fault::KillQe(_)) => m.iter().rev().find(|x| x.role == Role::Qe as i32).cloned(),
        Some(Fault::KillEa(_)) => m.iter().rev().find(|x| x.role == Role::Ea as i32).cloned(),
        _ => None,
    };
    if let Some(v) = &victim {
        let others: Vec<&Member> = m.iter().filter(|x| x.node == v.node && x.role != v.role).collect();
        if !others.is_empty() {
            return Err(IncopError::Usage(format!(
                "killing node {} would take more than its {}: it also runs {} role(s); use more nodes",
                v.node,
                if v.role == Role::Qe as i32 { "QE" } else { "EA" },
                others.len()
            )));
        }
        let same = m.iter().filter(|x| x.node == v.node).count();
        let of_role = m.iter().filter(|x| x.role == v.role).count();
        if same >= of_role {
            return Err(IncopError::Usage(format!(
                "killing node {} would take every {}; use more nodes",
                v.node,
                if v.role == Role::Qe as i32 { "QE" } else { "EA" }
            )));
        }
    }
    Ok(Placement { members: m, added, victim })
}

/// A connection to every node's `Incop` object.
pub struct Session {
    pub orb: Orb,
    pub cfg: Config,
    stubs: BTreeMap<u32, IncopStub>,
}

impl Session {
    pub async fn open(cfg: &Config) -> Result<Session> {
        let orb = ssi_node::tool::connect(cfg).await?;
        let mut stubs = BTreeMap::new();
        for id in cfg.nodes.keys() {
            let s =
                crate::stub(&orb, *id, Duration::from_secs(10)).await.map_err(|e| failed!("node {id} serves no IN coprocessor: {e}"))?;
            stubs.insert(*id, s);
        }
        Ok(Session { orb, cfg: cfg.clone(), stubs })
    }

    pub fn stub(&self, node: u32) -> Result<&IncopStub> {
        self.stubs.get(&node).ok_or_else(|| failed!("no node {node}"))
    }

    /// Stops whatever roles the nodes in `nodes` run.
    pub async fn stop(&self, nodes: &[u32]) {
        for n in nodes {
            if let Ok(s) = self.stub(*n) {
                let _ = s.stop(ssi_orb::proto::Empty {}).await;
            }
        }
    }

    pub async fn start(&self, p: &Placement, params: &Params) -> Result<()> {
        let nodes: Vec<u32> = self.stubs.keys().copied().collect();
        self.stop(&nodes).await;
        // QEs first: the EAs must find them ready when the first calls come.
        let mut order = p.members.clone();
        order.sort_by_key(|m| (m.role != Role::Qe as i32, m.id));
        for m in &order {
            let req = StartReq { me: Some(*m), roster: p.members.clone(), params: Some(*params), joining: false };
            self.stub(m.node)?.start(req).await.map_err(|e| failed!("starting member {} on node {}: {e}", m.id, m.node))?;
        }
        Ok(())
    }

    pub async fn status(&self, node: u32) -> Result<NodeStatus> {
        Ok(self.stub(node)?.status(ssi_orb::proto::Empty {}).await?.into_inner())
    }
}

pub struct InOptions {
    pub dir: PathBuf,
    pub qes: u32,
    pub rate: f64,
    pub calls: u64,
    pub params: Params,
    pub faults: Vec<Fault>,
    pub overloads: Vec<Overload>,
    pub interval_calls: u64,
    pub svg: Option<PathBuf>,
    pub json: bool,
}

pub fn default_params() -> Params {
    Params {
        deadline_ms: 100,
        sweep_ms: 15,
        ea_high: 50_000,
        ea_low: 25_000,
        qe_high: 40_000,
        qe_low: 20_000,
        db_entries: 100_000,
        qe_service_us: 0,
    }
}

/// What happened to a fault.
#[derive(Default, Debug, serde::Serialize)]
pub struct FaultLog {
    pub killed: Option<(u32, u32, u64, f64)>, // member, node, at call, at s
    pub added: Option<AddLog>,
}

#[derive(Default, Debug, serde::Serialize)]
pub struct AddLog {
    pub member: u32,
    pub node: u32,
    pub at_call: u64,
    pub at_s: f64,
    pub ready_after_ms: Option<f64>,
    pub update_seq: u64,
    pub update_applied: bool,
    pub buffered_updates: u64,
    pub log_applied: u64,
    pub answered: u64,
    /// The same number removed after the run: unplugged once this many QEs had applied it.
    pub removal_unplugged_after: Option<u32>,
    pub removal_applied_on_it: bool,
}

/// Everything one run yields.
pub struct Outcome {
    pub report: Report,
    pub faults: FaultLog,
    pub members: Vec<crate::proto::MemberStatus>,
}

/// One run on a started placement: offers the calls, injects the faults, waits until every
/// call is settled.
pub async fn run(s: &Session, p: &Placement, params: &Params, req: RunReq, faults: &[Fault], progress: bool) -> Result<Outcome> {
    let sw = s.stub(p.members[0].node)?;
    sw.run(req.clone()).await.map_err(|e| failed!("starting the switch: {e}"))?;
    let t0 = Instant::now();
    let mut log = FaultLog::default();
    let mut pending: Vec<Fault> = faults.to_vec();
    let mut watch_join: Option<(Instant, Member)> = None;
    let mut last_print = Instant::now();
    let limit = Duration::from_secs_f64(req.calls as f64 / req.rate * 3.0 + 60.0);
    let report = loop {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let pr = sw.poll(ssi_orb::proto::Empty {}).await.map_err(|e| failed!("the switch: {e}"))?.into_inner();
        let mut i = 0;
        while i < pending.len() {
            let at = match pending[i] {
                Fault::KillQe(a) | Fault::KillEa(a) | Fault::AddQe(a) => a,
            };
            if pr.issued < at {
                i += 1;
                continue;
            }
            match pending.remove(i) {
                Fault::KillQe(_) | Fault::KillEa(_) => {
                    let v = p.victim.expect("placed with a victim");
                    let nc = s.cfg.node(v.node)?;
                    let pid = ssi_node::pidfile::node_pid(nc).ok_or_else(|| failed!("node {} is not running", v.node))?;
                    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL)?;
                    log.killed = Some((v.id, v.node, pr.issued, t0.elapsed().as_secs_f64()));
                }
                Fault::AddQe(_) => {
                    let a = p.added.expect("placed with an added QE");
                    let mut roster = p.members.clone();
                    if let Some(v) = &p.victim {
                        roster.retain(|m| m.node != v.node || log.killed.is_none());
                    }
                    let req = StartReq { me: Some(a), roster, params: Some(*params), joining: true };
                    s.stub(a.node)?.start(req).await.map_err(|e| failed!("adding QE {} on node {}: {e}", a.id, a.node))?;
                    // An update while it joins: it must reach the new QE too.
                    let number = NUMBER_BASE + params.db_entries + 4242;
                    let ui = s.stub(p.members[1].node)?;
                    let seq = ui.issue(IssueReq { number, route: 5_550_100, remove: false }).await?.into_inner().seq;
                    log.added = Some(AddLog {
                        member: a.id,
                        node: a.node,
                        at_call: pr.issued,
                        at_s: t0.elapsed().as_secs_f64(),
                        update_seq: seq,
                        ..Default::default()
                    });
                    watch_join = Some((Instant::now(), a));
                }
            }
        }
        if let Some((since, a)) = watch_join {
            let st = s.status(a.node).await?;
            if let Some(m) = st.members.iter().find(|m| m.member.as_ref().is_some_and(|x| x.id == a.id && x.ready)) {
                let l = log.added.as_mut().expect("set with watch_join");
                l.ready_after_ms = Some(since.elapsed().as_secs_f64() * 1e3);
                l.buffered_updates = m.buffered_updates;
                l.log_applied = m.log_applied;
                watch_join = None;
            } else if since.elapsed() > Duration::from_secs(30) {
                bail!("QE {} on node {} did not become ready within 30 s", a.id, a.node);
            }
        }
        if progress && last_print.elapsed() > Duration::from_millis(500) {
            last_print = Instant::now();
            eprint!("\r  {:>9} calls offered, {:>9} in deadline, {:>6} missed   ", pr.issued, pr.ok, pr.missed);
        }
        if pr.done && pending.is_empty() && watch_join.is_none() {
            break sw.finish(ssi_orb::proto::Empty {}).await?.into_inner();
        }
        if t0.elapsed() > limit {
            bail!("the run did not finish within {} s", limit.as_secs());
        }
    };
    if progress {
        eprint!("\r{:70}\r", "");
    }
    if let Some(l) = log.added.as_mut() {
        let number = NUMBER_BASE + params.db_entries + 4242;
        let r = s.stub(l.node)?.lookup(LookupReq { qe: l.member, number }).await?.into_inner();
        l.update_applied = r.found && r.route == 5_550_100 && r.applied_seq >= l.update_seq;
        // Announce before unplug: the UI answers a removal once every QE has applied it.
        let ui = s.stub(p.members[1].node)?;
        let rm = ui.issue(IssueReq { number, route: 0, remove: true }).await?.into_inner();
        l.removal_unplugged_after = rm.unplugged.then_some(rm.qes_applied);
        let r = s.stub(l.node)?.lookup(LookupReq { qe: l.member, number }).await?.into_inner();
        l.removal_applied_on_it = !r.found && r.applied_seq >= rm.seq;
    }
    let mut members = Vec::new();
    let dead = log.killed.map(|k| k.1);
    for n in p.members.iter().chain(p.added.iter()).map(|m| m.node).collect::<std::collections::BTreeSet<_>>() {
        if Some(n) != dead {
            members.extend(s.status(n).await?.members);
        }
    }
    if let Some(l) = log.added.as_mut() {
        l.answered = members.iter().filter(|m| m.member.as_ref().is_some_and(|x| x.id == l.member)).map(|m| m.answered).sum();
    }
    Ok(Outcome { report, faults: log, members })
}

/// Seconds after the last overload window until the last missed call (≤ 0: none missed after it).
pub fn recovery_s(r: &Report, overloads: &[Overload]) -> Option<f64> {
    let end = overloads.iter().map(|o| o.to_s).fold(f64::NAN, f64::max);
    if end.is_nan() {
        return None;
    }
    Some(if r.missed == 0 { f64::NEG_INFINITY } else { r.last_missed_s - end })
}

pub fn workload(o: &InOptions) -> Result<()> {
    let cfg = ssi_node::local::load(&o.dir)?;
    let members = ssi_node::local::status(&o.dir).context("the cluster must be running (ssi up)")?.view_members;
    let placement = place(&members, o.qes, &o.faults)?;
    // The tool ORB runs inside node 1's network when the cluster has namespaces.
    let outcome = ssi_node::tool::on_cluster_network(&cfg, || async {
        let s = Session::open(&cfg).await?;
        s.start(&placement, &o.params).await?;
        let req = RunReq {
            rate: o.rate,
            calls: o.calls,
            overloads: o.overloads.clone(),
            interval_calls: o.interval_calls,
            seed: 1996,
            tick_us: 1000,
        };
        if !o.json {
            eprintln!(
                "offering {} calls at {}/s to {} EAs and {} QEs on nodes {:?}...",
                o.calls,
                o.rate,
                placement.members.iter().filter(|m| m.role == Role::Ea as i32).count(),
                o.qes,
                members
            );
        }
        let r = run(&s, &placement, &o.params, req, &o.faults, !o.json).await;
        let nodes: Vec<u32> =
            members.iter().copied().filter(|n| r.as_ref().ok().and_then(|x| x.faults.killed).map(|k| k.1) != Some(*n)).collect();
        s.stop(&nodes).await;
        r
    });
    // A node killed for the run comes back: the cluster is left as it was found.
    let killed = outcome.as_ref().ok().and_then(|x| x.faults.killed);
    if killed.is_some() {
        let n = cfg.nodes.len() as u32;
        ssi_node::local::up(&ssi_node::local::UpOptions::new(o.dir.clone(), n)).context("restarting the killed node")?;
    }
    let outcome = outcome?;
    print(o, &placement, &outcome)?;
    let r = &outcome.report;
    if let Some(a) = &outcome.faults.added {
        if !a.update_applied {
            bail!("the update issued while QE {} joined was not applied on it", a.member);
        }
        if a.removal_unplugged_after.is_none() || !a.removal_applied_on_it {
            bail!("the removal after the run was not applied on every QE before the unplug");
        }
    }
    if r.issued != o.calls {
        bail!("the switch offered {} calls of {}", r.issued, o.calls);
    }
    Ok(())
}

fn pct(a: u64, b: u64) -> f64 {
    if b == 0 {
        100.0
    } else {
        a as f64 * 100.0 / b as f64
    }
}

fn print(o: &InOptions, p: &Placement, out: &Outcome) -> Result<()> {
    let r = &out.report;
    let rec = recovery_s(r, &o.overloads);
    if let Some(path) = &o.svg {
        let title = format!(
            "IN coprocessor: {} QEs, {:.0} calls/s — share within {} ms per {} calls",
            o.qes, o.rate, o.params.deadline_ms, o.interval_calls
        );
        let svg = crate::report::intervals_svg(&title, &[("ssi".to_string(), r)])?;
        std::fs::write(path, svg).with_context(|| format!("writing {}", path.display()))?;
    }
    if o.json {
        println!(
            "{}",
            json!({
                "workload": "in", "qes": o.qes, "rate": o.rate, "calls": o.calls, "deadline_ms": o.params.deadline_ms, "sweep_ms": o.params.sweep_ms,
                "issued": r.issued, "ok": r.ok, "missed": r.missed, "late": r.late, "duplicates": r.duplicates, "seconds": r.seconds,
                "offered_per_s": r.issued as f64 / r.seconds.max(1e-9), "answered_per_s": r.ok as f64 / r.seconds.max(1e-9),
                "share_in_deadline": r.ok as f64 / r.issued.max(1) as f64,
                "p50_ms": r.p50_ms, "p90_ms": r.p90_ms, "p99_ms": r.p99_ms, "p999_ms": r.p999_ms, "max_ms": r.max_ms,
                "paper_rate": PAPER_RATE, "ratio_to_paper": o.rate / PAPER_RATE,
                "last_missed_seq": r.last_missed_seq, "last_missed_s": r.last_missed_s,
                "recovered_after_overload_s": rec.map(|x| x.max(0.0)),
                "faults": out.faults,
                "intervals": r.intervals.iter().map(|i| json!({"first_seq": i.first_seq, "calls": i.calls, "ok": i.ok, "issued_s": i.issued_s})).collect::<Vec<_>>(),
                "members": out.members.iter().map(|m| json!({"id": m.member.as_ref().map(|x| x.id), "node": m.member.as_ref().map(|x| x.node),
                    "role": m.member.as_ref().map(|x| Role::try_from(x.role).map(|r| r.as_str_name()).unwrap_or("?")),
                    "received": m.received, "shed": m.shed, "forwarded": m.forwarded, "reissued": m.reissued, "relayed": m.relayed, "answered": m.answered,
                    "applied_seq": m.applied_seq})).collect::<Vec<_>>(),
            })
        );
        return Ok(());
    }
    let eas = p.members.iter().filter(|m| m.role == Role::Ea as i32).count();
    println!(
        "ssi workload in — {} calls offered at {:.0}/s ({:.1} s) to {eas} EAs and {} QEs; deadline {} ms, sweep {} ms",
        r.issued, o.rate, r.seconds, o.qes, o.params.deadline_ms, o.params.sweep_ms
    );
    println!(
        "  within the deadline: {} ({:.4}%); missed {} (of them answered late {}); duplicate replies removed {}",
        r.ok,
        pct(r.ok, r.issued),
        r.missed,
        r.late,
        r.duplicates
    );
    println!(
        "  latency: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        r.p50_ms, r.p90_ms, r.p99_ms, r.p999_ms, r.max_ms
    );
    println!(
        "  the paper (Horus on 12 SP2 nodes): {:.0} calls/s all within 100 ms; this run offered {:.2}× that",
        PAPER_RATE,
        o.rate / PAPER_RATE
    );
    if let Some((id, node, at, t)) = out.faults.killed {
        println!("  killed: member {id} (node {node}) with SIGKILL at call {at} ({t:.2} s)");
    }
    if let Some(a) = &out.faults.added {
        println!(
            "  added: QE {} on node {} at call {} ({:.2} s); state-ready after {} ({} updates from the state log, {} buffered while joining); it answered {} queries",
            a.member,
            a.node,
            a.at_call,
            a.at_s,
            a.ready_after_ms.map(|x| format!("{x:.0} ms")).unwrap_or("—".into()),
            a.log_applied,
            a.buffered_updates,
            a.answered
        );
        println!(
            "  the update issued while it joined (#{}) {} on it",
            a.update_seq,
            if a.update_applied { "is applied" } else { "is NOT applied" }
        );
        match a.removal_unplugged_after {
            Some(n) => println!(
                "  its removal afterwards: announced, applied by all {n} QEs (the new one {}), then unplugged",
                if a.removal_applied_on_it { "too" } else { "NOT" }
            ),
            None => println!("  its removal afterwards was NOT unplugged"),
        }
    }
    if let Some(x) = rec {
        if x == f64::NEG_INFINITY {
            println!("  overload: no call missed its deadline");
        } else if x <= 0.0 {
            println!(
                "  overload: the last missed call was offered {:.2} s before the overload ended; every later call met the deadline",
                -x
            );
        } else {
            println!(
                "  overload: the last missed call was offered {x:.2} s after the overload ended; every call after that met the deadline"
            );
        }
    }
    for m in &out.members {
        let Some(x) = &m.member else { continue };
        match Role::try_from(x.role) {
            Ok(Role::Ea) => println!(
                "  EA {} (node {}): took {}, shed {}, forwarded {}, reissued {}, relayed {}",
                x.id, x.node, m.received, m.shed, m.forwarded, m.reissued, m.relayed
            ),
            Ok(Role::Qe) => println!(
                "  QE {} (node {}): queries {}, shed {}, answered {}, updates applied to #{}",
                x.id, x.node, m.received, m.shed, m.answered, m.applied_seq
            ),
            _ => {}
        }
    }
    println!("  share within the deadline per {} calls (the paper's Fig. 4(b)/(c)):", o.interval_calls);
    print!("{}", crate::report::intervals_text(r));
    if let Some(path) = &o.svg {
        println!("  plot: {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_and_overloads_parse_or_say_why() {
        assert_eq!(parse_fault("qe@500000", false).ok(), Some(Fault::KillQe(500_000)));
        assert_eq!(parse_fault("ea@5", false).ok(), Some(Fault::KillEa(5)));
        assert_eq!(parse_fault("qe@5", true).ok(), Some(Fault::AddQe(5)));
        assert!(parse_fault("ea@5", true).unwrap_err().to_string().contains("only a QE"));
        assert!(parse_fault("qe", false).unwrap_err().to_string().contains("ROLE@CALLS"));
        assert!(parse_fault("ui@1", false).unwrap_err().to_string().contains("qe or ea"));
        let o = parse_overload("40000@10..15").unwrap();
        assert_eq!((o.rate, o.from_s, o.to_s), (40000.0, 10.0, 15.0));
        assert!(parse_overload("40000@15..10").is_err());
        assert!(parse_overload("x@1..2").is_err());
    }

    #[test]
    fn placement_keeps_the_victim_alone_and_a_node_free_for_the_added_qe() {
        let nodes: Vec<u32> = (1..=8).collect();
        let p = place(&nodes, 4, &[Fault::KillQe(1)]).unwrap();
        let v = p.victim.unwrap();
        assert_eq!(v.role, Role::Qe as i32);
        assert_eq!(p.members.iter().filter(|m| m.node == v.node).count(), 1);
        let p = place(&nodes, 4, &[Fault::AddQe(1)]).unwrap();
        let a = p.added.unwrap();
        assert!(!a.ready);
        assert!(p.members.iter().all(|m| m.node != a.node), "{p:?}");
        let p = place(&nodes[..7], 4, &[Fault::KillEa(1)]).unwrap();
        assert_eq!(p.victim.unwrap().id, 4);
        assert!(place(&nodes[..3], 4, &[Fault::KillEa(1)]).is_err());
        assert!(place(&nodes[..1], 4, &[]).is_err());
        let p = place(&nodes[..2], 2, &[]).unwrap();
        assert_eq!(p.members.len(), 6);
    }
}
