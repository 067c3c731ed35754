//! Settings of the broker core, named after Kafka's broker settings (units last).

use std::path::PathBuf;

use ferrymq_cluster::TopicDefaults;
use ferrymq_types::NodeId;

use crate::group::GroupConfig;

/// The broker core's settings; `crates/server` fills them from defaults, file, env and flags.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// `node.id`.
    pub node_id: NodeId,
    /// Where partition logs and checkpoints live.
    pub data_dir: PathBuf,
    /// Topic config defaults (`log.retention.ms` → `retention.ms`, ...).
    pub topic_defaults: TopicDefaults,
    /// `log.flush.interval.messages`: fsync a partition once this many messages are unflushed
    /// (1 makes acks=1 wait for the fsync too).
    pub flush_interval_messages: u64,
    /// `log.flush.interval.ms`: fsync every partition with unflushed data this often.
    pub flush_interval_ms: u64,
    /// `log.retention.check.interval.ms`.
    pub retention_check_interval_ms: u64,
    /// `replica.high.watermark.checkpoint.interval.ms`: how often offsets checkpoints are written.
    pub checkpoint_interval_ms: u64,
    /// `log.writer.queue.max`: appends waiting for the writer thread before producers wait.
    pub writer_queue_max: usize,
    /// `replica.lag.time.max.ms`: a follower not caught up for this long leaves the ISR.
    pub replica_lag_time_max_ms: u64,
    /// `replica.fetch.*` settings of the follower fetchers.
    pub fetcher: crate::replication::fetcher::FetcherConfig,
    /// The group coordinator's settings (`offsets.*`, `group.*`).
    pub groups: GroupConfig,
    /// Log compaction (`log.cleaner.*`).
    pub cleaner: CleanerConfig,
}

/// Settings of the log cleaner, as Kafka's `log.cleaner.*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CleanerConfig {
    /// `log.cleaner.enable`.
    pub enable: bool,
    /// `log.cleaner.backoff.ms`: pause between passes over the partitions.
    pub backoff_ms: u64,
    /// `log.cleaner.io.max.bytes.per.second`: read plus write rate of the cleaner (0: no limit).
    pub io_max_bytes_per_second: u64,
    /// `log.cleaner.dedupe.buffer.size`: key-map memory of one pass.
    pub dedupe_buffer_bytes: usize,
}

impl Default for CleanerConfig {
    fn default() -> Self {
        CleanerConfig {
            enable: true,
            backoff_ms: 15_000,
            io_max_bytes_per_second: 50 << 20,
            dedupe_buffer_bytes: 128 << 20,
        }
    }
}

impl BrokerConfig {
    /// Defaults for a node with its data in `data_dir` (used by tests).
    pub fn with_data_dir(data_dir: impl Into<PathBuf>) -> BrokerConfig {
        BrokerConfig {
            node_id: NodeId(1),
            data_dir: data_dir.into(),
            topic_defaults: TopicDefaults::default(),
            flush_interval_messages: u64::MAX,
            flush_interval_ms: 1000,
            retention_check_interval_ms: 300_000,
            checkpoint_interval_ms: 5000,
            writer_queue_max: 4096,
            replica_lag_time_max_ms: 10_000,
            fetcher: crate::replication::fetcher::FetcherConfig {
                wait_max_ms: 500,
                partition_max_bytes: 1 << 20,
                response_max_bytes: 10 << 20,
                backoff_ms: 100,
            },
            groups: GroupConfig::default(),
            cleaner: CleanerConfig::default(),
        }
    }
}
