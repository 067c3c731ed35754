//! The JSON documents of the admin API (`docs/admin-api.md` shows each). They derive both
//! `Serialize` and `Deserialize`, so the `ferrymq` CLI reads exactly what the server writes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The body of every error answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Machine-readable kind: `not_found`, `bad_request`, `unauthorized`, `forbidden`,
    /// `conflict`, `not_implemented`, `unavailable`, `controller_unavailable`.
    pub error: String,
    /// What happened, for people.
    pub message: String,
}

/// `/health/live` and `/health/ready`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Health {
    /// `live`, `ready` or `not_ready`.
    pub status: String,
    /// Why the node is not ready, if it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// This node.
    pub node_id: i32,
    /// Metadata offset applied by this node.
    pub metadata_offset: i64,
}

/// `/v1/cluster`: the cluster at a glance, as this node's metadata image shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterView {
    /// The cluster id.
    pub cluster_id: String,
    /// The node answering.
    pub node_id: i32,
    /// The active controller, if known.
    pub controller_id: Option<i32>,
    /// True if the answering node is the active controller.
    pub this_node_is_controller: bool,
    /// Metadata offset applied by the answering node.
    pub metadata_offset: i64,
    /// Registered brokers.
    pub brokers: usize,
    /// Brokers fenced (not serving).
    pub fenced_brokers: Vec<i32>,
    /// Topics.
    pub topics: usize,
    /// Partitions over all topics.
    pub partitions: usize,
    /// Partitions without a live leader.
    pub offline_partitions: usize,
    /// Partitions whose ISR is smaller than their replica set.
    pub under_replicated_partitions: usize,
    /// Replication policies.
    pub policies: usize,
}

/// One entry of `/v1/brokers`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BrokerView {
    /// Node id.
    pub id: i32,
    /// Host clients connect to.
    pub host: String,
    /// Port clients connect to.
    pub port: u16,
    /// Rack, if configured.
    pub rack: Option<String>,
    /// `fenced` (not serving: missed heartbeats, or not caught up yet) or `live`.
    pub state: String,
    /// Metadata offset of its registration (Kafka's broker epoch).
    pub epoch: i64,
    /// Its controller-listener address.
    pub controller_addr: String,
    /// True for the active controller.
    pub is_controller: bool,
}

/// One entry of `/v1/topics`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TopicSummary {
    /// Name.
    pub name: String,
    /// Topic id.
    pub id: String,
    /// Partition count.
    pub partitions: usize,
    /// Replicas of its first partition.
    pub replication_factor: usize,
    /// Partitions without a live leader.
    pub offline_partitions: usize,
    /// Partitions with ISR smaller than replicas.
    pub under_replicated_partitions: usize,
}

/// `/v1/topics/{name}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TopicView {
    /// Name.
    pub name: String,
    /// Topic id.
    pub id: String,
    /// Configs set on the topic (defaults are not listed).
    pub configs: BTreeMap<String, String>,
    /// Partitions in index order.
    pub partitions: Vec<PartitionView>,
}

/// A partition of `/v1/topics/{name}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartitionView {
    /// Index.
    pub partition: i32,
    /// Live leader, if any.
    pub leader: Option<i32>,
    /// Leader epoch.
    pub leader_epoch: i32,
    /// Replicas, preferred leader first.
    pub replicas: Vec<i32>,
    /// In-sync replicas.
    pub isr: Vec<i32>,
    /// Replicas on fenced or unknown brokers.
    pub offline_replicas: Vec<i32>,
    /// The answering node's replica, if it hosts one.
    pub local: Option<LocalReplicaView>,
}

/// The answering node's replica of a partition: offsets are authoritative on the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LocalReplicaView {
    /// `leader`, `follower` or `offline`.
    pub role: String,
    /// High watermark.
    pub high_watermark: i64,
    /// Log start offset.
    pub log_start_offset: i64,
    /// Log end offset.
    pub log_end_offset: i64,
    /// Bytes on disk.
    pub log_size_bytes: u64,
    /// Segments.
    pub segments: usize,
}

/// A replication policy in `/v1/policies` (also the body of `POST /v1/policies`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PolicyView {
    /// Unique name.
    pub name: String,
    /// Topic-name glob (`*` matches any run of characters).
    pub pattern: String,
    /// `"all"` (every broker at creation time) or a count.
    pub replicas: ReplicasView,
    /// `min.insync.replicas` set on matching topics.
    #[serde(default)]
    pub min_insync_replicas: Option<i32>,
    /// Evaluation order: lower first, then by name.
    #[serde(default)]
    pub priority: i32,
}

/// `"all"` or a replica count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ReplicasView {
    /// A count.
    Count(u16),
    /// The word `all`.
    Word(AllWord),
}

/// The literal `"all"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AllWord {
    /// Every broker.
    All,
}

/// One entry of `/v1/groups`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupSummary {
    /// Group id.
    pub group_id: String,
    /// `Empty`, `PreparingRebalance`, `CompletingRebalance`, `Stable` or `Dead`.
    pub state: String,
    /// Protocol type, `consumer` for consumer groups.
    pub protocol_type: String,
    /// Members.
    pub members: usize,
}

/// `/v1/groups/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupView {
    /// Group id.
    pub group_id: String,
    /// State, as in `GroupSummary`.
    pub state: String,
    /// Assignment protocol chosen (e.g. `range`).
    pub protocol: String,
    /// Members.
    pub members: Vec<MemberView>,
    /// Committed offsets with lag.
    pub offsets: Vec<GroupOffsetView>,
    /// Sum of the known lags.
    pub total_lag: i64,
}

/// A member of a group.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberView {
    /// Member id.
    pub member_id: String,
    /// Client id.
    pub client_id: String,
    /// Client host.
    pub client_host: String,
}

/// A committed offset and its lag.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupOffsetView {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Committed offset.
    pub committed_offset: i64,
    /// High watermark, if known to the answering node.
    pub high_watermark: Option<i64>,
    /// `high_watermark - committed_offset`, if known.
    pub lag: Option<i64>,
}

/// Body of `POST /v1/leadership/preferred-election`: all partitions when `topics` is absent.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ElectionRequest {
    /// Topics (and optionally partitions) to elect for.
    #[serde(default)]
    pub topics: Option<Vec<ElectionTopic>>,
}

/// One topic of an election request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ElectionTopic {
    /// Topic name.
    pub topic: String,
    /// Partitions; all when absent.
    #[serde(default)]
    pub partitions: Option<Vec<i32>>,
}

/// Outcome of an election for one partition.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ElectionResult {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Leader afterwards.
    pub leader: Option<i32>,
    /// `elected`, `already_preferred` or an error text.
    pub outcome: String,
}
