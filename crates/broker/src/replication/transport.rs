//! What a follower fetcher needs from the network, in plain Rust types. The Kafka front end
//! implements it with Fetch requests carrying the replica id and broker epoch; tests can drive
//! the fetcher without sockets.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use ferrymq_types::{LeaderEpoch, NodeId, Offset, TopicPartition};
use uuid::Uuid;

/// Where a leader broker listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The broker.
    pub node: NodeId,
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
}

impl Endpoint {
    /// Where broker `node`, registered as `b`, listens.
    pub fn of(node: NodeId, b: &ferrymq_cluster::BrokerInfo) -> Endpoint {
        Endpoint {
            node,
            host: b.host.clone(),
            port: b.port,
        }
    }
}

/// One partition of a replica fetch.
#[derive(Debug, Clone)]
pub struct ReplicaFetchPartition {
    /// The partition.
    pub tp: TopicPartition,
    /// Its topic id.
    pub topic_id: Uuid,
    /// The follower's log end offset: what it asks for next, and its acknowledgement.
    pub fetch_offset: Offset,
    /// The epoch of the follower's last batch, for divergence detection.
    pub last_fetched_epoch: Option<LeaderEpoch>,
    /// The leader epoch the follower follows.
    pub current_leader_epoch: LeaderEpoch,
    /// The follower's log start offset.
    pub log_start_offset: Offset,
    /// Most bytes wanted for this partition.
    pub partition_max_bytes: usize,
}

/// A replica fetch to one leader.
#[derive(Debug, Clone)]
pub struct ReplicaFetchRequest {
    /// The fetching replica.
    pub replica: NodeId,
    /// Its broker epoch (registration offset).
    pub broker_epoch: i64,
    /// Long-poll wait.
    pub max_wait_ms: u64,
    /// Response size limit.
    pub max_bytes: usize,
    /// The partitions.
    pub partitions: Vec<ReplicaFetchPartition>,
}

/// Why a partition of a replica fetch failed, as the leader said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaFetchError {
    /// The node is not the leader (any more).
    NotLeader,
    /// The follower's leader epoch is older than the leader's.
    FencedLeaderEpoch,
    /// The follower's leader epoch is newer than the leader's (its metadata is behind).
    UnknownLeaderEpoch,
    /// The fetch offset is outside the leader's log.
    OffsetOutOfRange,
    /// The leader does not know the partition.
    UnknownTopicOrPartition,
    /// Anything else (storage error, unknown code).
    Other(i16),
}

/// The leader's answer for one partition.
#[derive(Debug, Clone)]
pub struct ReplicaFetchResult {
    /// The partition.
    pub tp: TopicPartition,
    /// Set on failure.
    pub error: Option<ReplicaFetchError>,
    /// The leader's high watermark.
    pub high_watermark: Offset,
    /// The leader's log start offset.
    pub log_start_offset: Offset,
    /// Set when the follower's log diverges: truncate to the end of this epoch first.
    pub diverging: Option<(LeaderEpoch, Offset)>,
    /// Batches from the fetch offset (possibly ending in a partial batch).
    pub records: Bytes,
}

/// Why a replica fetch got no answer from the leader.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// Connecting was refused: no process listens at the leader's address.
    #[error("refused: {0}")]
    Refused(String),
    /// An open connection was closed or reset from the leader's side.
    #[error("connection broke: {0}")]
    Broken(String),
    /// Anything else: a timeout, an unreachable host, a malformed or refused answer. Says
    /// nothing about whether the leader's process is alive.
    #[error("{0}")]
    Failed(String),
}

/// A boxed future, so transports can be used behind `dyn`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Sends replica fetches to leaders.
pub trait ReplicaTransport: Send + Sync + std::fmt::Debug {
    /// Sends `req` to the leader at `to`; `Err` on connection or protocol failure.
    fn fetch<'a>(
        &'a self,
        to: &'a Endpoint,
        req: ReplicaFetchRequest,
    ) -> BoxFuture<'a, Result<Vec<ReplicaFetchResult>, TransportError>>;

    /// True if the open connection to `to` has been closed or reset from the other side, as
    /// far as can be seen without reading from it (a fetch in flight may not have noticed
    /// yet). False when unknown or not connected.
    fn closed_by_peer(&self, _to: &Endpoint) -> bool {
        false
    }
}
