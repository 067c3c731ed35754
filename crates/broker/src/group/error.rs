//! Errors of the group coordinator. Each is an answer a Kafka coordinator gives; the Kafka
//! front end maps them to error codes in `crates/kafka/src/errors.rs`.

/// Why a group operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    /// An empty group id where the API needs one.
    #[error("invalid group id")]
    InvalidGroupId,
    /// This node does not coordinate the group (it does not lead the group's partition).
    #[error("not the coordinator of this group")]
    NotCoordinator,
    /// The coordinator cannot serve the group now (its partition has no leader, the offsets
    /// topic is being created, or the group is being removed).
    #[error("coordinator not available")]
    CoordinatorNotAvailable,
    /// The group's partition of `__consumer_offsets` is still being replayed.
    #[error("coordinator is loading the group")]
    CoordinatorLoadInProgress,
    /// The member id is not (or no longer) in the group.
    #[error("unknown member id {member_id:?}")]
    UnknownMemberId { member_id: String },
    /// The request's generation is not the group's.
    #[error("illegal generation {request} (group is at {current})")]
    IllegalGeneration { request: i32, current: i32 },
    /// The group is rebalancing: rejoin.
    #[error("rebalance in progress")]
    RebalanceInProgress,
    /// Another member now holds this static instance id.
    #[error("static member {instance_id:?} was fenced by a newer instance")]
    FencedInstanceId { instance_id: String },
    /// Protocol type or protocols do not match the group's.
    #[error("inconsistent group protocol")]
    InconsistentGroupProtocol,
    /// Session timeout outside `group.min/max.session.timeout.ms`.
    #[error("session timeout {timeout_ms} ms outside [{min_ms}, {max_ms}]")]
    InvalidSessionTimeout {
        timeout_ms: i32,
        min_ms: i32,
        max_ms: i32,
    },
    /// A first JoinGroup (v4+) gets its member id this way and must join again with it.
    #[error("member id required: rejoin as {member_id:?}")]
    MemberIdRequired { member_id: String },
    /// The group does not exist (DeleteGroups, OffsetDelete).
    #[error("group not found")]
    GroupIdNotFound,
    /// DeleteGroups on a group that still has members.
    #[error("group is not empty")]
    NonEmptyGroup,
    /// Offset commit metadata larger than `offset.metadata.max.bytes`.
    #[error("offset metadata of {bytes} bytes exceeds {max}")]
    OffsetMetadataTooLarge { bytes: usize, max: usize },
    /// A commit for a topic or partition that does not exist.
    #[error("unknown topic or partition")]
    UnknownTopicOrPartition,
    /// OffsetDelete of a topic the group's members still consume.
    #[error("the group is subscribed to the topic")]
    GroupSubscribedToTopic,
    /// Writing to `__consumer_offsets` failed.
    #[error("storage error: {0}")]
    Storage(String),
}
