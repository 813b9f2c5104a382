//! The switch simulator: offers calls with unique sequence numbers at a set rate on both
//! channels (to each EA), removes duplicate replies, and counts a call as dropped when no
//! reply came within the deadline. Calls leave every `tick` as one batch per channel.
//!
//! Sequence numbers are dense, so the calls in flight are a queue indexed by
//! `seq - base`: a reply finds its call in O(1), and the front leaves once its deadline
//! has passed, answered or not — which is when its outcome is counted.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use parking_lot::Mutex;

use crate::group::Group;
use crate::outbox::{Out, Outbox};
use crate::proto::{Answers, Call, Calls, Interval, Member, Progress, Report, RunReq};

/// Numbers in the database are `NUMBER_BASE + i`; the switch asks for these.
pub const NUMBER_BASE: u64 = 18_000_000_000;

struct Slot {
    issued_ns: u64,
    answered: bool,
}

struct Run {
    req: RunReq,
    deadline_ns: u64,
    start: Instant,
    issued: u64,
    base: u64,
    inflight: VecDeque<Slot>,
    ok: u64,
    missed: u64,
    late: u64,
    duplicates: u64,
    last_issue_ns: u64,
    hist: Histogram<u64>,
    intervals: Vec<Interval>,
    per_100ms: Vec<Interval>,
    last_missed_seq: u64,
    last_missed_ns: u64,
    rng: u64,
    entries: u64,
}

impl Run {
    fn elapsed_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// Calls that should have been offered by `t` seconds: the integral of the rate, which
    /// the overload windows raise.
    fn due(&self, t: f64) -> u64 {
        let mut n = self.req.rate * t;
        for o in &self.req.overloads {
            let a = o.from_s.min(t);
            let b = o.to_s.min(t);
            if b > a {
                n += (o.rate - self.req.rate) * (b - a);
            }
        }
        (n.max(0.0) as u64).min(self.req.calls)
    }

    fn next_number(&mut self) -> u64 {
        // xorshift64*: cheap, reproducible from the seed.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        NUMBER_BASE + self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) % self.entries.max(1)
    }

    /// Counts the outcome of every call whose deadline has passed.
    fn expire(&mut self, now_ns: u64) {
        while let Some(front) = self.inflight.front() {
            if now_ns.saturating_sub(front.issued_ns) <= self.deadline_ns {
                break;
            }
            let slot = self.inflight.pop_front().expect("front exists");
            let seq = self.base;
            self.base += 1;
            if !slot.answered {
                self.missed += 1;
                self.last_missed_seq = seq;
                self.last_missed_ns = slot.issued_ns;
            }
            let ok = slot.answered as u64;
            let iv = ((seq - 1) / self.req.interval_calls.max(1)) as usize;
            account(&mut self.intervals, iv, seq, slot.issued_ns, ok);
            let b = (slot.issued_ns / 100_000_000) as usize;
            account(&mut self.per_100ms, b, seq, slot.issued_ns, ok);
        }
    }

    fn done(&self) -> bool {
        self.issued >= self.req.calls && self.inflight.is_empty()
    }
}

fn account(v: &mut Vec<Interval>, i: usize, seq: u64, issued_ns: u64, ok: u64) {
    while v.len() <= i {
        v.push(Interval::default());
    }
    let iv = &mut v[i];
    if iv.calls == 0 {
        iv.first_seq = seq;
        iv.issued_s = issued_ns as f64 / 1e9;
    }
    iv.calls += 1;
    iv.ok += ok;
}

pub struct Switch {
    me: Member,
    group: Arc<Mutex<Group>>,
    out: Outbox,
    run: Mutex<Option<Run>>,
    deadline: Duration,
    entries: u64,
}

impl Switch {
    pub fn new(me: Member, group: Arc<Mutex<Group>>, out: Outbox, deadline: Duration, entries: u64) -> Arc<Switch> {
        Arc::new(Switch { me, group, out, run: Mutex::new(None), deadline, entries })
    }

    /// Starts offering calls; the returned task runs until every call is settled.
    pub fn start(self: &Arc<Self>, req: RunReq) -> Result<tokio::task::JoinHandle<()>, crate::IncopError> {
        if req.rate <= 0.0 || req.calls == 0 {
            return Err(crate::IncopError::EmptyRun);
        }
        let tick = Duration::from_micros(if req.tick_us == 0 { 1000 } else { req.tick_us as u64 });
        {
            let mut r = self.run.lock();
            if r.as_ref().is_some_and(|r| !r.done()) {
                return Err(crate::IncopError::RunInProgress);
            }
            *r = Some(Run {
                deadline_ns: self.deadline.as_nanos() as u64,
                start: Instant::now(),
                issued: 0,
                base: 1,
                inflight: VecDeque::with_capacity((req.rate * self.deadline.as_secs_f64() * 2.0) as usize + 16),
                ok: 0,
                missed: 0,
                late: 0,
                duplicates: 0,
                last_issue_ns: 0,
                hist: Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds"),
                intervals: Vec::new(),
                per_100ms: Vec::new(),
                last_missed_seq: 0,
                last_missed_ns: 0,
                rng: req.seed | 1,
                entries: self.entries,
                req,
            });
        }
        let me = self.clone();
        Ok(tokio::spawn(async move {
            let mut iv = tokio::time::interval(tick);
            iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                iv.tick().await;
                if me.tick() {
                    break;
                }
            }
        }))
    }

    /// One tick: offer what is due on both channels, settle what is past its deadline.
    /// Returns whether the run is over.
    fn tick(&self) -> bool {
        let batch = {
            let mut g = self.run.lock();
            let Some(r) = g.as_mut() else { return true };
            let now = r.elapsed_ns();
            r.expire(now);
            let due = r.due(now as f64 / 1e9);
            let mut calls = Vec::with_capacity(due.saturating_sub(r.issued) as usize);
            while r.issued < due {
                r.issued += 1;
                let number = r.next_number();
                calls.push(Call { seq: r.issued, number });
                r.inflight.push_back(Slot { issued_ns: now, answered: false });
            }
            if !calls.is_empty() {
                r.last_issue_ns = now;
            }
            if r.done() {
                return true;
            }
            calls
        };
        if !batch.is_empty() {
            let eas = self.group.lock().eas();
            for ea in eas {
                self.out
                    .send(ea.node, Out::Offer(Calls { to: ea.id, from: self.me.id, calls: batch.clone(), sent_us: crate::age::mono_us() }));
            }
        }
        false
    }

    /// Answers relayed by an EA: the first one for a call counts, later ones are duplicates.
    pub fn relay(&self, a: Answers) {
        let mut g = self.run.lock();
        let Some(r) = g.as_mut() else { return };
        let now = r.elapsed_ns();
        for ans in a.answers {
            let Some(i) = ans.seq.checked_sub(r.base).map(|i| i as usize) else {
                r.late += 1; // its deadline passed and it was counted
                continue;
            };
            let Some(slot) = r.inflight.get_mut(i) else { continue };
            if slot.answered {
                r.duplicates += 1;
                continue;
            }
            let lat = now.saturating_sub(slot.issued_ns);
            if lat <= r.deadline_ns {
                slot.answered = true;
                r.ok += 1;
                let _ = r.hist.record((lat / 1000).max(1));
            } else {
                r.late += 1;
            }
        }
    }

    pub fn progress(&self) -> Progress {
        let g = self.run.lock();
        match g.as_ref() {
            None => Progress { done: true, ..Default::default() },
            Some(r) => {
                Progress { issued: r.issued, ok: r.ok, missed: r.missed, done: r.done(), elapsed_s: r.start.elapsed().as_secs_f64() }
            }
        }
    }

    pub fn report(&self) -> Option<Report> {
        let g = self.run.lock();
        let r = g.as_ref()?;
        let q = |p: f64| r.hist.value_at_quantile(p) as f64 / 1000.0;
        Some(Report {
            issued: r.issued,
            ok: r.ok,
            missed: r.missed,
            late: r.late,
            duplicates: r.duplicates,
            seconds: r.last_issue_ns as f64 / 1e9,
            intervals: r.intervals.clone(),
            per_100ms: r.per_100ms.clone(),
            p50_ms: q(0.5),
            p90_ms: q(0.9),
            p99_ms: q(0.99),
            p999_ms: q(0.999),
            max_ms: r.hist.max() as f64 / 1000.0,
            last_missed_seq: r.last_missed_seq,
            last_missed_s: r.last_missed_ns as f64 / 1e9,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Overload;

    fn run(rate: f64, calls: u64, overloads: Vec<Overload>) -> Run {
        Run {
            req: RunReq { rate, calls, overloads, interval_calls: 10, ..Default::default() },
            deadline_ns: 100_000_000,
            start: Instant::now(),
            issued: 0,
            base: 1,
            inflight: VecDeque::new(),
            ok: 0,
            missed: 0,
            late: 0,
            duplicates: 0,
            last_issue_ns: 0,
            hist: Histogram::new(3).unwrap(),
            intervals: vec![],
            per_100ms: vec![],
            last_missed_seq: 0,
            last_missed_ns: 0,
            rng: 1,
            entries: 1000,
        }
    }

    #[test]
    fn overload_windows_raise_the_rate_and_calls_cap_it() {
        let r = run(1000.0, 1_000_000, vec![Overload { rate: 3000.0, from_s: 1.0, to_s: 2.0 }]);
        assert_eq!(r.due(0.5), 500);
        assert_eq!(r.due(1.5), 1000 + 1500);
        assert_eq!(r.due(3.0), 3000 + 2000);
        let r = run(1000.0, 700, vec![]);
        assert_eq!(r.due(5.0), 700);
    }

    #[test]
    fn outcomes_are_counted_once_the_deadline_passes() {
        let mut r = run(1000.0, 20, vec![]);
        for s in 0..20u64 {
            r.issued += 1;
            r.inflight.push_back(Slot { issued_ns: s * 1_000_000, answered: s % 4 != 0 });
        }
        r.expire(105_000_000); // calls issued at 0..4 ms are past the deadline
        assert_eq!(r.base, 6);
        assert_eq!(r.missed, 2); // seqs 1 and 5
        assert_eq!(r.last_missed_seq, 5);
        r.expire(1_000_000_000);
        assert!(r.done());
        assert_eq!(r.missed, 5);
        assert_eq!(r.intervals.len(), 2);
        assert_eq!(r.intervals[0].calls, 10);
        assert_eq!(r.intervals.iter().map(|i| i.ok).sum::<u64>(), 15);
        assert!(r.next_number() >= NUMBER_BASE);
    }
}
