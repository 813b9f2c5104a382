//! The nemesis: one fault at a time on a `--netns` cluster, the kinds in turn (a cut between
//! a majority and a minority, one node alone, a one-way cut, a crash) and everything else
//! about them — which nodes, which way, how long — drawn from the run's seed.

use std::path::PathBuf;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use ssi_node::local::{self, UpOptions};

use crate::record::FaultKind;
use crate::Result;

pub struct Nemesis {
    dir: PathBuf,
    nodes: Vec<u32>,
    rng: StdRng,
    turn: usize,
}

impl Nemesis {
    pub fn new(dir: PathBuf, nodes: Vec<u32>, seed: u64) -> Nemesis {
        Nemesis { dir, nodes, rng: StdRng::seed_from_u64(seed), turn: 0 }
    }

    /// The next fault, not yet applied.
    pub fn next_fault(&mut self) -> FaultKind {
        let mut shuffled = self.nodes.clone();
        shuffled.shuffle(&mut self.rng);
        let minority = (self.nodes.len() - 1) / 2;
        let split = |k: usize| {
            let (mut a, mut b) = (shuffled[..k].to_vec(), shuffled[k..].to_vec());
            a.sort();
            b.sort();
            (a, b)
        };
        self.turn += 1;
        match self.turn % 4 {
            1 => {
                let (a, b) = split(minority.max(1));
                FaultKind::Partition { a, b, oneway: false }
            }
            2 => {
                let (a, b) = split(1);
                FaultKind::Partition { a, b, oneway: false }
            }
            3 => {
                let (a, b) = split(self.rng.random_range(1..=minority.max(1)));
                // Either way round: the minority's words lost, or the majority's.
                if self.rng.random_bool(0.5) {
                    FaultKind::Partition { a, b, oneway: true }
                } else {
                    FaultKind::Partition { a: b, b: a, oneway: true }
                }
            }
            _ => FaultKind::Crash { node: shuffled[0] },
        }
    }

    /// A hold in `[min, max)` seconds.
    pub fn hold(&mut self, min: f64, max: f64) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.rng.random_range(min..max))
    }

    pub fn apply(&self, f: &FaultKind) -> Result<()> {
        match f {
            FaultKind::Partition { a, b, oneway } => {
                let words = [list(a), "/".to_string(), list(b)];
                ssi_node::faults::partition(&self.dir, &words, *oneway)?;
            }
            FaultKind::Crash { node } => {
                ssi_node::faults::crash(&self.dir, *node)?;
            }
        }
        Ok(())
    }

    /// Takes the fault away: the cut healed, the crashed node started again.
    pub fn undo(&self, f: &FaultKind) -> Result<()> {
        match f {
            FaultKind::Partition { .. } => {
                ssi_node::faults::heal(&self.dir)?;
            }
            FaultKind::Crash { .. } => {
                local::up(&UpOptions::new(self.dir.clone(), self.nodes.len() as u32))?;
            }
        }
        Ok(())
    }
}

fn list(nodes: &[u32]) -> String {
    nodes.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}
