//! High/low watermarks (the paper's §3.4): above `high` pending requests new ones are shed
//! until the number falls below `low` — better to drop a few calls than to answer all of
//! them too late, and the way back to normal once an overload ends.

pub struct Watermark {
    high: usize,
    low: usize,
    shedding: bool,
}

impl Watermark {
    pub fn new(high: u32, low: u32) -> Watermark {
        let high = high.max(1) as usize;
        Watermark { high, low: (low as usize).min(high), shedding: false }
    }

    /// Whether a new request is taken, given how many are pending now.
    pub fn admit(&mut self, pending: usize) -> bool {
        if self.shedding && pending < self.low {
            self.shedding = false;
        } else if !self.shedding && pending >= self.high {
            self.shedding = true;
        }
        !self.shedding
    }

    pub fn shedding(&self) -> bool {
        self.shedding
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sheds_from_high_until_below_low() {
        let mut w = Watermark::new(10, 4);
        assert!(w.admit(9));
        assert!(!w.admit(10));
        assert!(!w.admit(6)); // between the marks: still shedding
        assert!(!w.admit(4));
        assert!(w.admit(3));
        assert!(w.admit(9)); // between the marks: taking again
        assert!(!w.shedding());
    }
}
