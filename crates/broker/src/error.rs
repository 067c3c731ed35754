//! Errors of the broker core. The Kafka front end maps each to a Kafka error code in one place.

use ferrymq_log::ProducerError;
use ferrymq_types::{LeaderEpoch, Offset};

/// Why a partition operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerError {
    /// The topic or partition does not exist (here).
    #[error("unknown topic or partition")]
    UnknownTopicOrPartition,
    /// This broker does not lead the partition.
    #[error("not the leader of this partition")]
    NotLeaderOrFollower,
    /// The partition has no leader at the moment.
    #[error("leader not available")]
    LeaderNotAvailable,
    /// The request's leader epoch is older than ours.
    #[error("fenced leader epoch {request} (current {current})")]
    FencedLeaderEpoch {
        request: LeaderEpoch,
        current: LeaderEpoch,
    },
    /// The request's leader epoch is newer than ours.
    #[error("unknown leader epoch {request} (current {current})")]
    UnknownLeaderEpoch {
        request: LeaderEpoch,
        current: LeaderEpoch,
    },
    /// A read or DeleteRecords outside the log.
    #[error("offset {requested} out of range [{log_start}, {log_end}]")]
    OffsetOutOfRange {
        requested: Offset,
        log_start: Offset,
        log_end: Offset,
    },
    /// A batch larger than the topic's `max.message.bytes`.
    #[error("batch of {bytes} bytes exceeds max.message.bytes {max}")]
    MessageTooLarge { bytes: usize, max: i32 },
    /// acks=all while the ISR is smaller than min.insync.replicas.
    #[error("ISR of {isr} below min.insync.replicas {min}")]
    NotEnoughReplicas { isr: usize, min: i32 },
    /// The ISR shrank below min.insync.replicas after the append.
    #[error("ISR shrank below min.insync.replicas after append")]
    NotEnoughReplicasAfterAppend,
    /// acks=all did not complete within the request's timeout.
    #[error("request timed out")]
    RequestTimedOut,
    /// An idempotent producer's batch broke its epoch or sequence rules; nothing was written
    /// and the partition stays online.
    #[error(transparent)]
    Producer(#[from] ProducerError),
    /// No producer id could be handed out: the controller did not grant a new block.
    #[error("no producer id available: {0}")]
    ProducerIdsUnavailable(String),
    /// The partition's storage failed; it is offline until the broker restarts.
    #[error("storage error: {0}")]
    Storage(String),
    /// The broker is shutting down.
    #[error("broker shutting down")]
    ShuttingDown,
}

impl BrokerError {
    /// Wraps a storage-engine error, turning out-of-range reads into their own variant.
    pub fn from_log(e: ferrymq_log::Error) -> BrokerError {
        match e {
            ferrymq_log::Error::OffsetOutOfRange {
                requested,
                log_start,
                log_end,
            } => BrokerError::OffsetOutOfRange {
                requested,
                log_start,
                log_end,
            },
            ferrymq_log::Error::Producer(p) => BrokerError::Producer(p),
            other => BrokerError::Storage(other.to_string()),
        }
    }
}
