//! Shedding by age, beside the paper's watermarks on counts: a batch that spent longer than
//! a quarter of the deadline queued on its way here (behind others in the sender, the
//! network or this node) is dropped whole — its calls would be answered too late to count,
//! and answering them would make the calls behind them late too. Under overload this keeps
//! the queues short, so some calls still make it and the system is back the moment the
//! overload ends.
//!
//! The delay is measured against the least delay seen from the same sender, so the two
//! nodes' clocks need not agree.

use std::collections::HashMap;

/// This node's CLOCK_MONOTONIC, µs.
pub fn mono_us() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}

#[derive(Default)]
pub struct AgeGate {
    /// Least (arrival − sent) per sender: the clock offset plus the fastest path.
    base: HashMap<u32, i64>,
}

impl AgeGate {
    /// Whether a batch sent at `sent_us` (the sender's clock) by `from` is still fresh.
    pub fn fresh(&mut self, from: u32, sent_us: u64, now_us: u64, limit_us: u64) -> bool {
        if sent_us == 0 {
            return true; // not stamped
        }
        let d = now_us as i64 - sent_us as i64;
        let b = self.base.entry(from).or_insert(d);
        if d < *b {
            *b = d;
        }
        (d - *b) as u64 <= limit_us
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queued_time_is_measured_against_the_fastest_batch_whatever_the_clocks() {
        let mut g = AgeGate::default();
        let off = 5_000_000u64; // the receiver's clock is 5 s ahead
        assert!(g.fresh(7, 1_000, 1_000 + off + 80, 25_000));
        assert!(g.fresh(7, 2_000, 2_000 + off + 20_000, 25_000));
        assert!(!g.fresh(7, 3_000, 3_000 + off + 40_000, 25_000), "40 ms queued");
        assert!(g.fresh(9, 3_000, 3_000 + 90_000, 25_000), "another sender has its own baseline");
        assert!(g.fresh(7, 0, 0, 0), "unstamped batches pass");
    }
}
