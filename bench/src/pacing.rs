//! Fixed-rate pacing: message `i` is due at `start + i / rate`. A producer that falls behind
//! sends the overdue messages at once; the latency measurement stamps the due time, not the
//! send time, so falling behind shows up as latency instead of being hidden (no coordinated
//! omission).

use std::time::{Duration, Instant};

/// Sleeps shorter than this are skipped and the message is sent a little early instead: the
/// kernel's timer slack makes shorter sleeps overshoot by more than they wait.
const SLEEP_MIN: Duration = Duration::from_micros(200);

/// Messages per second, never zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate(u32);

impl Rate {
    /// A rate of `per_s` messages per second; `None` for zero.
    pub fn new(per_s: u32) -> Option<Rate> {
        (per_s > 0).then_some(Rate(per_s))
    }

    /// Messages per second.
    pub fn per_s(self) -> u32 {
        self.0
    }
}

/// When each message of a fixed-rate stream is due.
#[derive(Clone, Copy, Debug)]
pub struct Pacer {
    start: Instant,
    rate: Rate,
}

impl Pacer {
    /// A schedule whose message 0 is due at `start`.
    pub fn new(start: Instant, rate: Rate) -> Pacer {
        Pacer { start, rate }
    }

    /// When message `index` is due.
    pub fn due(&self, index: u64) -> Instant {
        let nanos = u128::from(index) * 1_000_000_000 / u128::from(self.rate.per_s());
        let nanos = u64::try_from(nanos).expect("a bounded run's schedule fits 584 years");
        self.start + Duration::from_nanos(nanos)
    }

    /// Blocks the thread until message `index` is due (or nearly: see `SLEEP_MIN`) and returns
    /// its due time.
    pub fn sleep_until_due(&self, index: u64) -> Instant {
        let due = self.due(index);
        let wait = due.saturating_duration_since(Instant::now());
        if wait >= SLEEP_MIN {
            std::thread::sleep(wait);
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_due_evenly_spaced() {
        let start = Instant::now();
        let pacer = Pacer::new(start, Rate::new(20_000).unwrap());
        assert_eq!(pacer.due(0), start);
        assert_eq!(pacer.due(1) - start, Duration::from_micros(50));
        assert_eq!(pacer.due(20_000) - start, Duration::from_secs(1));
    }

    #[test]
    fn zero_rate_is_refused() {
        assert_eq!(Rate::new(0), None);
    }
}
