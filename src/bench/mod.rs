//! Side-by-side benchmarks (`ssi bench ...`). Each prints the baseline it measured in the same
//! run and the ratio to it.
//!
//! `ssi bench orb` runs every case between the same two daemon processes of a 2-node local
//! cluster, each pinned to its own CPU: the baselines (raw TCP ping-pong, plain tonic unary)
//! are served by node 2 and driven by node 1 exactly like the ORB cases.

pub mod cases;
pub mod fs;
pub mod orb;
pub mod server;

/// The median of `v` (0 for none): this machine is shared and noisy, so figures are medians
/// of rounds.
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    if s.is_empty() {
        0.0
    } else if s.len() % 2 == 1 {
        s[s.len() / 2]
    } else {
        (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0
    }
}
