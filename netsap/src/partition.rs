//! Cutting the interconnect of a `--netns` cluster, as a failed switch would: `ssi partition
//! A / B` drops every frame between the two groups on the bridge (nftables' bridge family,
//! in the bridge's own namespace: ARP included, so neither side can even resolve the other),
//! `--oneway` only those from A to B; `ssi heal` removes the cut. There is no netem or tc
//! `gact` on the kernels this runs on; the bridge's forward hook is enough for a clean cut.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::topology::Topology;

/// The nftables table the cut lives in, in the bridge's namespace.
const TABLE: &str = "ssi_partition";

/// Two groups of nodes and which way traffic between them is dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cut {
    pub a: Vec<u32>,
    pub b: Vec<u32>,
    /// Only frames from `a` to `b` are dropped.
    pub oneway: bool,
}

/// Why a cut could not be made or undone.
#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    #[error("a partition takes two groups of nodes: 1,2 / 3,4,5 (or one node: 3)")]
    Syntax,
    #[error("{0:?} is not a node id")]
    NotANode(String),
    #[error("node {0} is on both sides")]
    BothSides(u32),
    #[error("node {0} is not a node of this cluster")]
    Unknown(u32),
    #[error("a side of the partition is empty")]
    Empty,
    #[error("partitions need a --netns cluster (nodes on one bridge)")]
    NoBridge,
    #[error("nft (apt: nftables): {0}")]
    Nft(String),
}

impl Cut {
    /// Parses `1,2 / 3,4,5` (the words of the command line, joined), or a single group `3`:
    /// that group against every other node of `nodes`.
    pub fn parse(words: &[String], nodes: &[u32], oneway: bool) -> Result<Cut, PartitionError> {
        let text = words.join(" ");
        let group = |s: &str| -> Result<Vec<u32>, PartitionError> {
            let mut g = Vec::new();
            for w in s.split([',', ' ']).filter(|w| !w.is_empty()) {
                let n: u32 = w.parse().map_err(|_| PartitionError::NotANode(w.to_string()))?;
                if !nodes.contains(&n) {
                    return Err(PartitionError::Unknown(n));
                }
                if !g.contains(&n) {
                    g.push(n);
                }
            }
            Ok(g)
        };
        let (a, b) = match text.split('/').collect::<Vec<_>>().as_slice() {
            [a] => {
                let a = group(a)?;
                let b = nodes.iter().copied().filter(|n| !a.contains(n)).collect();
                (a, b)
            }
            [a, b] => (group(a)?, group(b)?),
            _ => return Err(PartitionError::Syntax),
        };
        if let Some(n) = a.iter().find(|n| b.contains(n)) {
            return Err(PartitionError::BothSides(*n));
        }
        if a.is_empty() || b.is_empty() {
            return Err(PartitionError::Empty);
        }
        Ok(Cut { a, b, oneway })
    }

    /// The ruleset (replacing any earlier cut: a new partition is a new state of the switch).
    pub fn ruleset(&self) -> String {
        let ports = |g: &[u32]| g.iter().map(|n| format!("\"n{n}\"")).collect::<Vec<_>>().join(", ");
        let (a, b) = (ports(&self.a), ports(&self.b));
        let mut rules = format!("    iifname {{ {a} }} oifname {{ {b} }} drop\n");
        if !self.oneway {
            rules += &format!("    iifname {{ {b} }} oifname {{ {a} }} drop\n");
        }
        format!(
            "table bridge {TABLE}\ndelete table bridge {TABLE}\ntable bridge {TABLE} {{\n  chain forward {{\n    type filter hook forward priority 0; policy accept;\n{rules}  }}\n}}\n"
        )
    }
}

/// Makes `cut` the state of the cluster's interconnect.
pub fn apply(topo: &Topology, cut: &Cut) -> Result<(), PartitionError> {
    nft(topo, &cut.ruleset())
}

/// Removes any cut; whether there was one.
pub fn heal(topo: &Topology) -> Result<bool, PartitionError> {
    let had = nft(topo, &format!("list table bridge {TABLE}\n")).is_ok();
    nft(topo, &format!("table bridge {TABLE}\ndelete table bridge {TABLE}\n"))?;
    Ok(had)
}

fn nft(topo: &Topology, text: &str) -> Result<(), PartitionError> {
    let lan = topo.lan_ns();
    if !crate::topology::list().contains(&lan) {
        return Err(PartitionError::NoBridge);
    }
    let mut child = Command::new("ip")
        .args(["netns", "exec", &lan, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| PartitionError::Nft(e.to_string()))?;
    child.stdin.take().expect("piped").write_all(text.as_bytes()).map_err(|e| PartitionError::Nft(e.to_string()))?;
    let out = child.wait_with_output().map_err(|e| PartitionError::Nft(e.to_string()))?;
    if !out.status.success() {
        return Err(PartitionError::Nft(String::from_utf8_lossy(&out.stderr).lines().next().unwrap_or("failed").to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn groups_parse_or_say_why() {
        let nodes = [1, 2, 3, 4, 5];
        assert_eq!(Cut::parse(&words("1,2 / 3,4,5"), &nodes, false).unwrap(), Cut { a: vec![1, 2], b: vec![3, 4, 5], oneway: false });
        assert_eq!(Cut::parse(&words("1,2/3"), &nodes, true).unwrap(), Cut { a: vec![1, 2], b: vec![3], oneway: true });
        assert_eq!(Cut::parse(&words("3"), &nodes, false).unwrap(), Cut { a: vec![3], b: vec![1, 2, 4, 5], oneway: false });
        assert!(matches!(Cut::parse(&words("1,2 / 2,3"), &nodes, false), Err(PartitionError::BothSides(2))));
        assert!(matches!(Cut::parse(&words("1 / 9"), &nodes, false), Err(PartitionError::Unknown(9))));
        assert!(matches!(Cut::parse(&words("1 / x"), &nodes, false), Err(PartitionError::NotANode(_))));
        assert!(matches!(Cut::parse(&words("1 / 2 / 3"), &nodes, false), Err(PartitionError::Syntax)));
        assert!(matches!(Cut::parse(&words("1,2,3,4,5"), &nodes, false), Err(PartitionError::Empty)));
    }

    #[test]
    fn the_ruleset_drops_both_ways_or_one() {
        let both = Cut { a: vec![1, 2], b: vec![3], oneway: false }.ruleset();
        assert!(both.contains("iifname { \"n1\", \"n2\" } oifname { \"n3\" } drop"), "{both}");
        assert!(both.contains("iifname { \"n3\" } oifname { \"n1\", \"n2\" } drop"), "{both}");
        let one = Cut { a: vec![1, 2], b: vec![3], oneway: true }.ruleset();
        assert!(!one.contains("iifname { \"n3\" }"), "{one}");
        assert!(one.starts_with("table bridge ssi_partition\ndelete table bridge ssi_partition\n"), "replaces an earlier cut");
    }
}
