//! What one throughput run measured, and the two rates derived from it. MB means 10^6 bytes
//! throughout the tool; memory is in MiB.

use std::fmt;
use std::time::Duration;

/// Messages and payload bytes moved in a measured interval.
#[derive(Clone, Copy, Debug)]
pub struct Throughput {
    /// Messages delivered (producer), received (consumer), or the equivalent for the sink.
    pub messages: u64,
    /// Payload bytes moved, excluding protocol and record overhead.
    pub payload_bytes: u64,
    /// Wall time from the first send (or assignment) to the last delivery (or receipt).
    pub elapsed: Duration,
}

impl Throughput {
    /// Messages per second.
    pub fn messages_per_s(&self) -> f64 {
        self.messages as f64 / self.elapsed_s()
    }

    /// Payload megabytes (10^6 bytes) per second.
    pub fn mb_per_s(&self) -> f64 {
        self.payload_bytes as f64 / 1e6 / self.elapsed_s()
    }

    fn elapsed_s(&self) -> f64 {
        // A zero interval only happens when nothing moved; avoid a division by zero.
        self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl fmt::Display for Throughput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} messages, {} bytes in {:.3} s: {:.0} msgs/s, {:.1} MB/s",
            self.messages,
            self.payload_bytes,
            self.elapsed.as_secs_f64(),
            self.messages_per_s(),
            self.mb_per_s()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_use_decimal_megabytes() {
        let t = Throughput {
            messages: 1000,
            payload_bytes: 2_000_000,
            elapsed: Duration::from_millis(500),
        };
        assert_eq!(t.messages_per_s(), 2000.0);
        assert_eq!(t.mb_per_s(), 4.0);
    }
}
