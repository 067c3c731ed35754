//! Metadata records: the only way cluster metadata changes. The controller appends them to the
//! metadata log; every broker applies committed records in order to its image.
//!
//! Records are serialised as JSON objects tagged with their type and a format version, so that
//! a newer binary reads an older log: a new field gets `#[serde(default)]`, a changed meaning
//! gets a new version number handled in `image.rs`.

use std::collections::BTreeMap;

use ferrymq_types::{LeaderEpoch, NodeId, PartitionId, ProducerId};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Current version written for every record.
pub const RECORD_VERSION: u16 = 1;

/// One committed change to the cluster image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MetadataRecord {
    /// A topic came into being.
    Topic(TopicRecord),
    /// A partition was created or its assignment, leadership or ISR changed.
    Partition(PartitionRecord),
    /// A topic and all its partitions were removed.
    RemoveTopic(RemoveTopicRecord),
    /// A topic config was set or removed.
    TopicConfig(TopicConfigRecord),
    /// The cluster's id, committed once by the first controller leader.
    ClusterId(ClusterIdRecord),
    /// A broker (re)registered: a new incarnation of a node.
    RegisterBroker(RegisterBrokerRecord),
    /// A broker was fenced (missed its session) or unfenced (heartbeating and caught up).
    BrokerFence(BrokerFenceRecord),
    /// A replication policy was created or replaced.
    Policy(PolicyRecord),
    /// A replication policy was removed.
    RemovePolicy(RemovePolicyRecord),
    /// A block of producer ids was granted to a broker.
    ProducerIds(ProducerIdsRecord),
}

/// A block of producer ids was granted to `node_id`: ids from the previous
/// `next_producer_id` up to (not including) this one are that broker's to hand out, and no id
/// below `next_producer_id` is ever granted again (Kafka's `ProducerIdsRecord`, KIP-730). Once
/// this record is committed, a restart of any node never reuses an id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerIdsRecord {
    /// Format version of this record.
    pub version: u16,
    /// The broker the block was granted to.
    pub node_id: NodeId,
    /// The first id not yet granted to anyone.
    pub next_producer_id: ProducerId,
}

/// The cluster's id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterIdRecord {
    /// Format version of this record.
    pub version: u16,
    /// The id: fixed for the life of the cluster.
    pub id: String,
}

/// A broker's registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterBrokerRecord {
    /// Format version of this record.
    pub version: u16,
    /// The node id.
    pub id: NodeId,
    /// Random id of this process start: tells a restart from a duplicate node id.
    pub incarnation: Uuid,
    /// Host clients connect to.
    pub host: String,
    /// Port clients connect to.
    pub port: u16,
    /// Rack, if configured.
    pub rack: Option<String>,
    /// The node's controller-listener address (Raft and controller RPCs).
    pub controller_addr: String,
}

/// A broker's fencing state changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerFenceRecord {
    /// Format version of this record.
    pub version: u16,
    /// The node id.
    pub id: NodeId,
    /// The incarnation the change applies to (a stale one is ignored).
    pub incarnation: Uuid,
    /// Fenced (true) or serving (false).
    pub fenced: bool,
}

/// How many replicas a policy asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyReplicas {
    /// One replica on every broker registered when the topic is created (RabbitMQ's `all`).
    All,
    /// Exactly this many.
    Count(u16),
}

/// A replication policy: RabbitMQ's mirrored-queue policy on the Kafka model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRecord {
    /// Format version of this record.
    pub version: u16,
    /// Unique name.
    pub name: String,
    /// Topic-name glob (`*` matches any run of characters).
    pub pattern: String,
    /// Replication factor for matching topics created without one.
    pub replicas: PolicyReplicas,
    /// `min.insync.replicas` set on matching topics, if any.
    pub min_insync_replicas: Option<i32>,
    /// Order of evaluation: policies are tried by ascending priority, then name.
    #[serde(default)]
    pub priority: i32,
}

/// A replication policy was removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemovePolicyRecord {
    /// Format version of this record.
    pub version: u16,
    /// The policy's name.
    pub name: String,
}

/// One Raft log entry's worth of records, applied all or nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataCommand {
    /// The records, in order.
    pub records: Vec<MetadataRecord>,
}

/// A topic came into being.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRecord {
    /// Format version of this record.
    pub version: u16,
    /// The topic's name.
    pub name: String,
    /// Its id (Kafka's topic id, KIP-516).
    pub id: Uuid,
}

/// The full state of one partition after a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionRecord {
    /// Format version of this record.
    pub version: u16,
    /// The topic's id.
    pub topic_id: Uuid,
    /// The partition's index.
    pub partition: PartitionId,
    /// Brokers holding a replica; the first is the preferred leader.
    pub replicas: Vec<NodeId>,
    /// In-sync replicas (a subset of `replicas`).
    pub isr: Vec<NodeId>,
    /// The current leader, if any.
    pub leader: Option<NodeId>,
    /// Bumped at every leadership change.
    pub leader_epoch: LeaderEpoch,
    /// Bumped at every change of this partition (assignment, ISR, leader).
    pub partition_epoch: i32,
}

/// A topic was removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoveTopicRecord {
    /// Format version of this record.
    pub version: u16,
    /// The removed topic's id.
    pub id: Uuid,
}

/// A topic config key was set (`value: Some`) or reset to its default (`None`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicConfigRecord {
    /// Format version of this record.
    pub version: u16,
    /// The topic's id.
    pub topic_id: Uuid,
    /// Kafka's config name, e.g. `retention.ms`.
    pub key: String,
    /// The new value, or `None` to fall back to the broker default.
    pub value: Option<String>,
}

/// Topic configs explicitly set on a topic, by name.
pub type TopicConfigs = BTreeMap<String, String>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_through_json_and_old_fields_default() {
        let r = MetadataRecord::Topic(TopicRecord {
            version: RECORD_VERSION,
            name: "t".into(),
            id: Uuid::nil(),
        });
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains("\"type\":\"topic\""), "{json}");
        assert_eq!(serde_json::from_str::<MetadataRecord>(&json).unwrap(), r);
        let r = MetadataRecord::ProducerIds(ProducerIdsRecord {
            version: RECORD_VERSION,
            node_id: NodeId(3),
            next_producer_id: ProducerId(2000),
        });
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(
            json,
            r#"{"type":"producer_ids","version":1,"node_id":3,"next_producer_id":2000}"#
        );
        assert_eq!(serde_json::from_str::<MetadataRecord>(&json).unwrap(), r);
    }
}
