//! Where `ssi rexec --any` and `ssi sh` run a command: a policy over the nodes' loads.
//!
//! Loads are sampled (`ProcMgr.Load`) at most every `LOAD_TTL` by the launching daemon; to
//! them it adds the processes it placed itself and that still run, so a burst of launches
//! (a `make -j`) spreads before the next sample shows it — and on a local cluster, where all
//! nodes share one machine and report one load, the placements alone decide.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use crate::proto::NodeLoad;

/// A node the policy may choose, with what is known of its load.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub node: u32,
    pub load: NodeLoad,
    /// Processes this launcher placed there that still run.
    pub placed: u32,
}

pub trait Placement: Send + Sync {
    fn name(&self) -> &'static str;
    /// The node to run on, from `candidates` (non-empty, ordered by node id).
    fn pick(&self, candidates: &[Candidate]) -> u32;
}

/// Each node in turn.
#[derive(Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl Placement for RoundRobin {
    fn name(&self) -> &'static str {
        "round-robin"
    }
    fn pick(&self, c: &[Candidate]) -> u32 {
        c[self.next.fetch_add(1, Relaxed) % c.len()].node
    }
}

/// The node with the least work per CPU: its run queue (or 1-minute load average, if
/// higher) plus what this launcher placed there, over its CPUs. Ties go to the node with
/// fewer placements, then in turn (so equal nodes share the work evenly).
#[derive(Default)]
pub struct LeastLoaded {
    turn: AtomicUsize,
}

impl LeastLoaded {
    fn score(c: &Candidate) -> f64 {
        let busy = (c.load.running as f64).max(c.load.loadavg1);
        (busy + c.placed as f64) / c.load.cpus.max(1) as f64
    }
}

impl Placement for LeastLoaded {
    fn name(&self) -> &'static str {
        "least-loaded"
    }
    fn pick(&self, c: &[Candidate]) -> u32 {
        let best = c.iter().min_by(|a, b| Self::score(a).total_cmp(&Self::score(b)).then(a.placed.cmp(&b.placed))).expect("candidates");
        let tied: Vec<u32> = c.iter().filter(|x| Self::score(x) == Self::score(best) && x.placed == best.placed).map(|x| x.node).collect();
        tied[self.turn.fetch_add(1, Relaxed) % tied.len()]
    }
}

/// A policy by its name in the config or on the command line.
pub fn by_name(name: &str) -> Option<Box<dyn Placement>> {
    match name {
        "round-robin" | "rr" => Some(Box::new(RoundRobin::default())),
        "least-loaded" => Some(Box::new(LeastLoaded::default())),
        _ => None,
    }
}

/// This machine's load now.
pub fn this_node_load(node: u32) -> NodeLoad {
    let loadavg1 =
        std::fs::read_to_string("/proc/loadavg").ok().and_then(|s| s.split_whitespace().next().and_then(|x| x.parse().ok())).unwrap_or(0.0);
    let running = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("procs_running")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0);
    let cpus = std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1);
    NodeLoad { node, loadavg1, running, cpus, spawned: 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(node: u32, running: u32, placed: u32) -> Candidate {
        Candidate { node, load: NodeLoad { node, loadavg1: 0.0, running, cpus: 2, spawned: 0 }, placed }
    }

    #[test]
    fn least_loaded_spreads_a_burst_over_equal_nodes() {
        let p = LeastLoaded::default();
        let mut c = vec![cand(1, 1, 0), cand(2, 1, 0), cand(3, 1, 0), cand(4, 1, 0)];
        let mut picks = Vec::new();
        for _ in 0..8 {
            let n = p.pick(&c);
            picks.push(n);
            c.iter_mut().find(|x| x.node == n).unwrap().placed += 1;
        }
        picks.sort();
        assert_eq!(picks, vec![1, 1, 2, 2, 3, 3, 4, 4]);
        // A busy node is avoided.
        let c = vec![cand(1, 8, 0), cand(2, 0, 1)];
        assert_eq!(p.pick(&c), 2);
    }

    #[test]
    fn round_robin_cycles() {
        let p = RoundRobin::default();
        let c = vec![cand(1, 0, 0), cand(3, 0, 0)];
        assert_eq!((p.pick(&c), p.pick(&c), p.pick(&c)), (1, 3, 1));
        assert!(by_name("rr").is_some() && by_name("least-loaded").is_some() && by_name("x").is_none());
    }
}
