//! Errors of the metadata layer; the Kafka front end maps each to the error code Kafka uses.

use serde::{Deserialize, Serialize};

/// Why a metadata change was refused or failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ControllerError {
    /// Illegal topic name (characters, length, collision).
    #[error("invalid topic: {0}")]
    InvalidTopic(String),
    /// A topic of that name exists.
    #[error("topic {0} already exists")]
    TopicAlreadyExists(String),
    /// No topic of that name or id.
    #[error("unknown topic {0}")]
    UnknownTopic(String),
    /// Bad partition count.
    #[error("invalid partitions: {0}")]
    InvalidPartitions(String),
    /// Bad replication factor.
    #[error("invalid replication factor: {0}")]
    InvalidReplicationFactor(String),
    /// Bad manual replica assignment.
    #[error("invalid replica assignment: {0}")]
    InvalidReplicaAssignment(String),
    /// Bad config key or value.
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    /// The request is malformed in a way no specific code covers.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// An ISR change from a leader that is no longer the leader, or in an older epoch.
    #[error("fenced leader epoch: {0}")]
    FencedLeaderEpoch(String),
    /// An ISR change based on an older partition state.
    #[error("invalid update version: {0}")]
    InvalidUpdateVersion(String),
    /// An ISR change that would add only fenced (not live) brokers.
    #[error("ineligible replica: {0}")]
    IneligibleReplica(String),
    /// No replica could be elected (ElectLeaders).
    #[error("election not needed or not possible: {0}")]
    ElectionNotNeeded(String),
    /// This node is not (or no longer) the active controller.
    #[error("not the active controller")]
    NotController,
    /// No majority of controller voters: metadata cannot change now.
    #[error("metadata quorum unavailable: {0}")]
    NoQuorum(String),
    /// The metadata log could not be written or read.
    #[error("metadata storage: {0}")]
    Storage(String),
}

/// Result alias of the metadata layer.
pub type Result<T, E = ControllerError> = std::result::Result<T, E>;
