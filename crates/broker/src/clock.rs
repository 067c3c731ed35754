//! Time as an input: logic asks a `Clock` instead of reading the wall clock deep inside, so
//! tests can drive time and a whole-cluster simulation stays possible (STYLE.md §7).

use std::time::{SystemTime, UNIX_EPOCH};

/// A source of wall-clock milliseconds (record timestamps, retention, segment age).
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The operating system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    }
}
