//! One handler module per Kafka API family. Each takes the decoded request and returns the
//! response for the negotiated version; errors become per-partition or per-topic codes.

pub mod api_versions;
pub mod configs;
pub mod delete_records;
pub mod describe_cluster;
pub mod elect_leaders;
pub mod fetch;
pub mod find_coordinator;
pub mod groups;
pub mod init_producer_id;
pub mod list_offsets;
pub mod metadata;
pub mod offset_for_leader_epoch;
pub mod offsets;
pub mod produce;
pub mod replica_fetch;
pub mod topics;

use ferrymq_cluster::{BrokerInfo, MetadataImage, PartitionInfo};
use ferrymq_types::{LeaderEpoch, NodeId, TopicPartition};
use kafka_protocol::messages::TopicName;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

/// A wire topic name from a string.
pub fn topic_name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// A wire string from a string.
pub fn str_bytes(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// The topic-partition a request names.
pub fn tp(topic: &TopicName, partition: i32) -> TopicPartition {
    TopicPartition::new(topic.0.as_str(), partition)
}

/// A request's leader epoch, `None` for "not given" (-1).
pub fn epoch(e: i32) -> Option<LeaderEpoch> {
    (e >= 0).then_some(LeaderEpoch(e))
}

/// KIP-951: a partition answered with `error_code` carries a current-leader hint in Produce
/// and Fetch answers only for NOT_LEADER_OR_FOLLOWER and FENCED_LEADER_EPOCH.
pub fn leader_moved(error_code: i16) -> bool {
    error_code == ResponseError::NotLeaderOrFollower.code()
        || error_code == ResponseError::FencedLeaderEpoch.code()
}

/// KIP-951: the broker to name as a moved partition's current leader: a live leader, and never
/// this broker (`me`): it has just said it does not lead, and a cut-off broker's image still
/// names itself, so the hint would send the client straight back (seen in the chaos harness:
/// "updated with leader 2" from node 2 itself). Without a hint the client asks Metadata
/// elsewhere.
pub fn leader_hint<'a>(
    image: &'a MetadataImage,
    info: &PartitionInfo,
    me: NodeId,
) -> Option<&'a BrokerInfo> {
    info.leader
        .and_then(|l| image.brokers.get(&l))
        .filter(|b| !b.fenced && b.id != me)
}
