//! Shedding by age, beside the paper's watermarks on counts: once batches from a sender
//! have kept arriving after more than a quarter of the deadline queued on their way here
//! (behind others in the sender, the network or this node) for a while — a backlog, not a
//! hiccup of a few milliseconds — every such batch is dropped whole (at the EAs; the QEs
//! keep to the paper's watermark) — its calls would be answered too late to count,
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
    /// Per sender: the least (arrival − sent) seen — the clock offset plus the fastest
    /// path — and since when its batches have been arriving late, if they are.
    senders: HashMap<u32, (i64, Option<u64>)>,
}

/// How long batches must keep arriving late before they are shed: a stall of a few
/// milliseconds (a scheduling hiccup, a peer's death) delivers a burst of late batches that
/// can still make their deadline; only a standing queue is worth shedding.
pub const GRACE_US: u64 = 20_000;

impl AgeGate {
    /// Whether a batch sent at `sent_us` (the sender's clock) by `from` is taken.
    pub fn fresh(&mut self, from: u32, sent_us: u64, now_us: u64, limit_us: u64) -> bool {
        if sent_us == 0 {
            return true; // not stamped
        }
        let d = now_us as i64 - sent_us as i64;
        let (base, late_since) = self.senders.entry(from).or_insert((d, None));
        if d < *base {
            *base = d;
        }
        if ((d - *base) as u64) <= limit_us {
            *late_since = None;
            return true;
        }
        let since = *late_since.get_or_insert(now_us);
        now_us - since <= GRACE_US
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
        // 40 ms queued: taken during the grace (a hiccup), shed once it stands.
        assert!(g.fresh(7, 3_000, 3_000 + off + 40_000, 25_000));
        assert!(g.fresh(7, 10_000, 10_000 + off + 40_000, 25_000));
        assert!(!g.fresh(7, 30_000, 30_000 + off + 40_000, 25_000), "late for 27 ms");
        assert!(g.fresh(7, 31_000, 31_000 + off + 100, 25_000), "fresh again");
        assert!(g.fresh(7, 32_000, 32_000 + off + 40_000, 25_000), "a new grace");
        assert!(g.fresh(9, 3_000, 3_000 + 90_000, 25_000), "another sender has its own baseline");
        assert!(g.fresh(7, 0, 0, 0), "unstamped batches pass");
    }
}
