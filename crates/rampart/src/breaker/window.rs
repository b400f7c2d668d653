//! The closed-state sliding windows: a ring of the last N outcomes, or a ring
//! of 1-second buckets. Both keep running totals and subtract what they evict
//! (resilience4j's "partial aggregation"), so reading the totals is O(1) and
//! recording is O(1) amortised: a time window only walks the buckets that the
//! clock skipped, at most `seconds` of them.
//!
//! Not thread-safe on its own: it lives inside the breaker's mutex.

/// Outcome bit: the call failed.
pub(super) const FAILED: u8 = 1;
/// Outcome bit: the call was slow.
pub(super) const SLOW: u8 = 2;

/// Running totals of a window (or of one bucket).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Totals {
    pub(super) calls: u64,
    pub(super) failures: u64,
    pub(super) slow: u64,
}

impl Totals {
    fn add(&mut self, outcome: u8) {
        self.calls += 1;
        self.failures += u64::from(outcome & FAILED != 0);
        self.slow += u64::from(outcome & SLOW != 0);
    }

    fn remove_outcome(&mut self, outcome: u8) {
        self.calls -= 1;
        self.failures -= u64::from(outcome & FAILED != 0);
        self.slow -= u64::from(outcome & SLOW != 0);
    }

    fn remove_totals(&mut self, other: &Totals) {
        self.calls -= other.calls;
        self.failures -= other.failures;
        self.slow -= other.slow;
    }
}

/// A sliding window of outcomes.
#[derive(Debug)]
pub(super) enum Window {
    /// The last `ring.len()` outcomes.
    Count {
        ring: Box<[u8]>,
        /// Where the next outcome goes (and, once full, the oldest one is).
        next: usize,
        /// How many slots hold an outcome.
        len: usize,
        totals: Totals,
    },
    /// Outcomes of the last `buckets.len()` whole seconds.
    Time {
        buckets: Box<[Totals]>,
        /// The second (since the breaker's epoch) of the newest bucket.
        head_sec: u64,
        totals: Totals,
    },
}

impl Window {
    /// A window of the last `calls` outcomes (`calls >= 1`).
    pub(super) fn count(calls: usize) -> Self {
        Window::Count {
            ring: vec![0; calls.max(1)].into_boxed_slice(),
            next: 0,
            len: 0,
            totals: Totals::default(),
        }
    }

    /// A window of the last `seconds` 1-second buckets (`seconds >= 1`).
    pub(super) fn time(seconds: usize) -> Self {
        Window::Time {
            buckets: vec![Totals::default(); seconds.max(1)].into_boxed_slice(),
            head_sec: 0,
            totals: Totals::default(),
        }
    }

    /// Records one outcome (`FAILED | SLOW` bits) at second `now_sec`.
    pub(super) fn record(&mut self, now_sec: u64, outcome: u8) {
        match self {
            Window::Count {
                ring,
                next,
                len,
                totals,
            } => {
                if *len == ring.len() {
                    totals.remove_outcome(ring[*next]);
                } else {
                    *len += 1;
                }
                ring[*next] = outcome;
                *next = (*next + 1) % ring.len();
                totals.add(outcome);
            }
            Window::Time { .. } => {
                self.advance(now_sec);
                if let Window::Time {
                    buckets,
                    head_sec,
                    totals,
                } = self
                {
                    // After `advance`, `head_sec >= now_sec`: an outcome read
                    // from a clock a hair behind another thread's lands in the
                    // newest bucket rather than rewriting history.
                    let n = buckets.len() as u64;
                    buckets[(*head_sec % n) as usize].add(outcome);
                    totals.add(outcome);
                }
            }
        }
    }

    /// Evicts the buckets that fell out of a time window by `now_sec`; a
    /// no-op for a count window.
    pub(super) fn advance(&mut self, now_sec: u64) {
        let Window::Time {
            buckets,
            head_sec,
            totals,
        } = self
        else {
            return;
        };
        if now_sec <= *head_sec {
            return;
        }
        let n = buckets.len() as u64;
        let gap = now_sec - *head_sec;
        if gap >= n {
            buckets.fill(Totals::default());
            *totals = Totals::default();
        } else {
            for sec in *head_sec + 1..=now_sec {
                let bucket = &mut buckets[(sec % n) as usize];
                totals.remove_totals(bucket);
                *bucket = Totals::default();
            }
        }
        *head_sec = now_sec;
    }

    /// The window's running totals (call [`advance`](Self::advance) first
    /// for a time window read without a record).
    pub(super) fn totals(&self) -> Totals {
        match self {
            Window::Count { totals, .. } | Window::Time { totals, .. } => *totals,
        }
    }

    /// Empties the window.
    pub(super) fn clear(&mut self) {
        match self {
            Window::Count {
                ring,
                next,
                len,
                totals,
            } => {
                ring.fill(0);
                *next = 0;
                *len = 0;
                *totals = Totals::default();
            }
            Window::Time {
                buckets, totals, ..
            } => {
                buckets.fill(Totals::default());
                *totals = Totals::default();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_window_evicts_oldest() {
        let mut w = Window::count(3);
        w.record(0, FAILED);
        w.record(0, 0);
        w.record(0, SLOW);
        assert_eq!(
            w.totals(),
            Totals {
                calls: 3,
                failures: 1,
                slow: 1
            }
        );
        w.record(0, 0); // evicts the failure
        assert_eq!(
            w.totals(),
            Totals {
                calls: 3,
                failures: 0,
                slow: 1
            }
        );
        w.record(0, 0);
        w.record(0, 0); // evicts the slow one
        assert_eq!(
            w.totals(),
            Totals {
                calls: 3,
                failures: 0,
                slow: 0
            }
        );
    }

    #[test]
    fn time_window_evicts_by_second() {
        let mut w = Window::time(3);
        w.record(10, FAILED);
        w.record(11, 0);
        w.record(12, SLOW);
        assert_eq!(w.totals().calls, 3);
        w.advance(13); // second 10 falls out
        assert_eq!(
            w.totals(),
            Totals {
                calls: 2,
                failures: 0,
                slow: 1
            }
        );
        w.record(12, FAILED); // late clock read: goes into the newest bucket
        assert_eq!(w.totals().failures, 1);
        w.advance(15); // 11 and 12 fall out; 13 (empty) stays, the late one was in 13
        assert_eq!(w.totals().calls, 1);
        w.advance(100);
        assert_eq!(w.totals(), Totals::default());
    }
}
