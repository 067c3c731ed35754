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
pub mod list_offsets;
pub mod metadata;
pub mod offset_for_leader_epoch;
pub mod offsets;
pub mod produce;
pub mod replica_fetch;
pub mod topics;

use ferrymq_types::{LeaderEpoch, TopicPartition};
use kafka_protocol::messages::TopicName;
use kafka_protocol::protocol::StrBytes;

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
