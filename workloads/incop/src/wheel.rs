//! The cyclic set of queues (the paper's Fig. 3, after Varghese & Lauck's timing wheels):
//! one timer for all requests instead of one per request. A request goes into the current
//! queue; every sweep the queue after the current one is taken out and becomes the new
//! current one, so a request comes out between `(slots-1)` and `slots` sweeps after it went
//! in — with `slots = half deadline / sweep + 1`, roughly half the deadline.

pub struct Wheel {
    slots: Vec<Vec<u64>>,
    current: usize,
}

impl Wheel {
    /// A wheel whose requests come out after about `after_ms`, swept every `sweep_ms`.
    pub fn new(after_ms: u32, sweep_ms: u32) -> Wheel {
        let n = (after_ms / sweep_ms.max(1)) as usize + 1;
        Wheel { slots: vec![Vec::new(); n.max(2)], current: 0 }
    }

    pub fn slots(&self) -> usize {
        self.slots.len()
    }

    pub fn insert(&mut self, seq: u64) {
        self.slots[self.current].push(seq);
    }

    /// One sweep: the requests of the queue after the current one (which becomes current).
    pub fn sweep(&mut self) -> Vec<u64> {
        self.current = (self.current + 1) % self.slots.len();
        std::mem::take(&mut self.slots[self.current])
    }

    pub fn len(&self) -> usize {
        self.slots.iter().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_parameters_give_four_queues_and_a_request_out_after_four_sweeps() {
        let mut w = Wheel::new(50, 15);
        assert_eq!(w.slots(), 4);
        w.insert(7);
        for _ in 0..3 {
            assert!(w.sweep().is_empty());
            w.insert(99); // later requests go into later queues
        }
        assert_eq!(w.sweep(), vec![7]);
        assert_eq!(w.len(), 3);
    }

    #[test]
    fn every_request_comes_out_exactly_once() {
        let mut w = Wheel::new(50, 15);
        let mut out = Vec::new();
        for s in 0..100u64 {
            w.insert(s);
            if s % 7 == 0 {
                out.extend(w.sweep());
            }
        }
        for _ in 0..w.slots() {
            out.extend(w.sweep());
        }
        out.sort();
        assert_eq!(out, (0..100).collect::<Vec<_>>());
        assert!(w.is_empty());
    }
}
