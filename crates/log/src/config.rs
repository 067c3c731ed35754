//! Per-log settings: the subset of Kafka's topic configs that the storage engine itself obeys.

/// Settings of one partition log, named after Kafka's topic configs (units last).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// `segment.bytes`: roll the active segment before it would pass this size.
    pub segment_bytes: u32,
    /// `segment.ms`: roll the active segment once its first batch is this old.
    pub segment_ms: i64,
    /// `retention.ms`: delete closed segments whose newest record is older; -1 keeps forever.
    pub retention_ms: i64,
    /// `retention.bytes`: delete the oldest segments while the log is larger; -1 for no limit.
    pub retention_bytes: i64,
    /// `index.interval.bytes`: bytes between two sparse index entries.
    pub index_interval_bytes: u32,
}

/// Smallest `segment.bytes` accepted, as Kafka (14 bytes of header plus one tiny batch); tests
/// use small segments, so this is deliberately low.
pub const SEGMENT_BYTES_MIN: u32 = 14;

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            index_interval_bytes: 4096,
        }
    }
}

const _: () = assert!(4096 <= crate::segment::SEGMENT_BYTES_MAX);
