//! The vocabulary of the group state machine: the events it takes (joins, syncs, leaves), the
//! decisions it returns (`Action`), and the records it persists (`GroupSnapshot`,
//! `CommittedOffset`). Plain data; the rules are in `state`.

use bytes::Bytes;
use ferrymq_types::{LeaderEpoch, Offset};

use super::error::GroupError;
use super::Generation;

/// Identifies a request waiting for its answer (a join or a sync), assigned by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReplyId(pub u64);

/// The phase of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// No members; offsets may remain.
    Empty,
    /// Waiting for every member to (re)join.
    PreparingRebalance,
    /// Joined; waiting for the leader's assignment.
    CompletingRebalance,
    /// Members have their assignments and heartbeat.
    Stable,
    /// Removed; requests get COORDINATOR_NOT_AVAILABLE until the entry is gone.
    Dead,
}

impl Phase {
    /// Kafka's name of the phase (DescribeGroups, ListGroups).
    pub fn name(self) -> &'static str {
        match self {
            Phase::Empty => "Empty",
            Phase::PreparingRebalance => "PreparingRebalance",
            Phase::CompletingRebalance => "CompletingRebalance",
            Phase::Stable => "Stable",
            Phase::Dead => "Dead",
        }
    }
}

/// One protocol a member supports (an assignor name and its subscription metadata).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protocol {
    /// Assignor name (`range`, `roundrobin`, `cooperative-sticky`...).
    pub name: String,
    /// Opaque subscription metadata for that assignor.
    pub metadata: Bytes,
}

/// Limits from the broker's settings that a join is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupLimits {
    /// `group.min.session.timeout.ms`.
    pub session_timeout_min_ms: i32,
    /// `group.max.session.timeout.ms`.
    pub session_timeout_max_ms: i32,
    /// `group.initial.rebalance.delay.ms`: how long the first rebalance of an empty group
    /// waits for more members, so a group starting together rebalances once.
    pub initial_rebalance_delay_ms: i32,
}

/// A JoinGroup as the state machine sees it.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    /// Empty for a member joining for the first time.
    pub member_id: String,
    /// `group.instance.id` of a static member.
    pub instance_id: Option<String>,
    /// The client's id, for DescribeGroups.
    pub client_id: String,
    /// The client's address, for DescribeGroups.
    pub client_host: String,
    /// Member expires without heartbeats for this long.
    pub session_timeout_ms: i32,
    /// Longest the member may take to rejoin during a rebalance.
    pub rebalance_timeout_ms: i32,
    /// `consumer` for consumers.
    pub protocol_type: String,
    /// Supported protocols in preference order.
    pub protocols: Vec<Protocol>,
    /// JoinGroup v4+: a new member first gets MEMBER_ID_REQUIRED with its id (KIP-394).
    pub require_known_member_id: bool,
}

/// A member as listed to the leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedMember {
    /// Member id.
    pub member_id: String,
    /// Static instance id.
    pub instance_id: Option<String>,
    /// Its metadata for the selected protocol.
    pub metadata: Bytes,
}

/// The answer to a join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinOutcome {
    /// The new generation.
    pub generation: Generation,
    /// The group's protocol type.
    pub protocol_type: Option<String>,
    /// The selected protocol.
    pub protocol_name: Option<String>,
    /// The leader's member id.
    pub leader: String,
    /// The joining member's id.
    pub member_id: String,
    /// Every member with its metadata, for the leader; empty for followers.
    pub members: Vec<JoinedMember>,
}

/// The answer to a sync: the member's assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncOutcome {
    /// The group's protocol type.
    pub protocol_type: Option<String>,
    /// The selected protocol.
    pub protocol_name: Option<String>,
    /// Opaque assignment bytes.
    pub assignment: Bytes,
}

/// A SyncGroup as the state machine sees it.
#[derive(Debug, Clone)]
pub struct SyncRequest {
    /// Member id.
    pub member_id: String,
    /// Static instance id.
    pub instance_id: Option<String>,
    /// Generation the member believes current.
    pub generation: Generation,
    /// v5+: must match the group's.
    pub protocol_type: Option<String>,
    /// v5+: must match the group's.
    pub protocol_name: Option<String>,
    /// The leader's assignments, by member id (empty from followers).
    pub assignments: Vec<(String, Bytes)>,
}

/// A member leaving (LeaveGroup v3+ batches them; static members leave by instance id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeavingMember {
    /// Member id (may be empty when an instance id is given).
    pub member_id: String,
    /// Static instance id.
    pub instance_id: Option<String>,
}

/// What the caller must do after an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Answer a waiting JoinGroup.
    Join {
        reply: ReplyId,
        result: Result<JoinOutcome, GroupError>,
    },
    /// Answer a waiting SyncGroup.
    Sync {
        reply: ReplyId,
        result: Result<SyncOutcome, GroupError>,
    },
    /// Persist the group's metadata (`snapshot()`), before sending the answers that follow.
    StoreGroup,
}

/// An offset committed for one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    /// The next offset to consume.
    pub offset: Offset,
    /// Leader epoch of the last consumed record, if the client sent one.
    pub leader_epoch: Option<LeaderEpoch>,
    /// Client metadata string.
    pub metadata: String,
    /// When it was committed (retention counts from here).
    pub commit_timestamp_ms: i64,
}

/// A member as persisted in the group's metadata record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberSnapshot {
    /// Member id.
    pub member_id: String,
    /// Static instance id.
    pub instance_id: Option<String>,
    /// Client id.
    pub client_id: String,
    /// Client address.
    pub client_host: String,
    /// Rebalance timeout.
    pub rebalance_timeout_ms: i32,
    /// Session timeout.
    pub session_timeout_ms: i32,
    /// Metadata for the selected protocol.
    pub subscription: Bytes,
    /// Current assignment.
    pub assignment: Bytes,
}

/// The group's metadata as persisted (Kafka's GroupMetadataValue).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSnapshot {
    /// Protocol type, empty for a group that never had members.
    pub protocol_type: String,
    /// Generation.
    pub generation: Generation,
    /// Selected protocol.
    pub protocol: Option<String>,
    /// Leader member id.
    pub leader: Option<String>,
    /// When the group entered its phase.
    pub state_timestamp_ms: i64,
    /// Members with their assignments.
    pub members: Vec<MemberSnapshot>,
}

/// The members description of DescribeGroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    /// Member id.
    pub member_id: String,
    /// Static instance id.
    pub instance_id: Option<String>,
    /// Client id.
    pub client_id: String,
    /// Client address.
    pub client_host: String,
    /// Metadata for the selected protocol.
    pub metadata: Bytes,
    /// Current assignment.
    pub assignment: Bytes,
}
