//! Settings of the broker core, named after Kafka's broker settings (units last).

use std::path::PathBuf;

use ferrymq_cluster::TopicDefaults;
use ferrymq_types::NodeId;

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
        }
    }
}
