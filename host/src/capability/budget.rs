//! A per-second budget of calls and bytes, for what a guest may do often
//! but not without end: write log lines (the excess is dropped), rewrite its
//! state store (the excess waits).

use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(1);

pub struct Budget {
    calls_per_second: u32,
    bytes_per_second: usize,
    started: Instant,
    calls: u32,
    bytes: usize,
    refused_calls: u64,
    refused_bytes: u64,
}

/// What a window refused, reported when the next one begins.
pub struct Refused {
    pub calls: u64,
    pub bytes: u64,
}

impl Budget {
    pub fn new(calls_per_second: u32, bytes_per_second: usize) -> Budget {
        Budget {
            calls_per_second,
            bytes_per_second,
            started: Instant::now(),
            calls: 0,
            bytes: 0,
            refused_calls: 0,
            refused_bytes: 0,
        }
    }

    /// Whether one more call of `len` bytes fits this second, and what the
    /// last window refused if this call begins a new one.
    pub fn admit(&mut self, len: usize) -> (bool, Option<Refused>) {
        let now = Instant::now();
        let mut report = None;
        if now.duration_since(self.started) >= WINDOW {
            if self.refused_calls > 0 {
                report = Some(Refused {
                    calls: self.refused_calls,
                    bytes: self.refused_bytes,
                });
            }
            *self = Budget::new(self.calls_per_second, self.bytes_per_second);
        }
        if self.calls >= self.calls_per_second || self.bytes + len > self.bytes_per_second {
            self.refused_calls += 1;
            self.refused_bytes += len as u64;
            return (false, report);
        }
        self.calls += 1;
        self.bytes += len;
        (true, report)
    }

    /// Takes one call of `len` bytes from the budget, waiting for the next
    /// second while this one has no room: backpressure on the guest, whose
    /// call time keeps running meanwhile. A call larger than a whole second's
    /// bytes counts as one second's worth, so that it waits once, not for
    /// ever.
    pub fn wait_for(&mut self, len: usize) {
        let len = len.min(self.bytes_per_second);
        while !self.admit(len).0 {
            std::thread::sleep(WINDOW.saturating_sub(self.started.elapsed()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_admits_its_calls_and_bytes_and_no_more() {
        let mut budget = Budget::new(10, 1000);
        let admitted = (0..15).filter(|_| budget.admit(1).0).count();
        assert_eq!(admitted, 10);
        let mut budget = Budget::new(10, 1000);
        assert!(budget.admit(1000).0);
        assert!(!budget.admit(1).0);
    }

    #[test]
    fn a_call_larger_than_a_second_waits_once() {
        let mut budget = Budget::new(10, 1000);
        budget.wait_for(5000);
        assert_eq!((budget.calls, budget.bytes), (1, 1000));
    }
}
