//! The metadata image: the cluster as of some applied metadata offset. Immutable once built;
//! applying a command produces the next image, published to every reader as an `Arc`.

use std::collections::BTreeMap;
use std::sync::Arc;

use ferrymq_types::{LeaderEpoch, NodeId, PartitionId};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::records::{MetadataRecord, PartitionRecord, PolicyRecord, TopicConfigs};

/// A registered broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerInfo {
    /// The broker's node id.
    pub id: NodeId,
    /// Host clients connect to.
    pub host: String,
    /// Port clients connect to.
    pub port: u16,
    /// Rack, if configured.
    pub rack: Option<String>,
    /// The current process start of this node.
    pub incarnation: Uuid,
    /// Metadata offset of the registration (Kafka's broker epoch).
    pub epoch: i64,
    /// The node's controller listener.
    pub controller_addr: String,
    /// Fenced brokers are left out of client metadata and leadership.
    pub fenced: bool,
}

/// One partition's placement and leadership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionInfo {
    /// Replicas; the first is the preferred leader.
    pub replicas: Vec<NodeId>,
    /// In-sync replicas.
    pub isr: Vec<NodeId>,
    /// Current leader, if any.
    pub leader: Option<NodeId>,
    /// Current leader epoch.
    pub leader_epoch: LeaderEpoch,
    /// Change counter of this partition.
    pub partition_epoch: i32,
}

/// A topic with its partitions and explicit configs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicInfo {
    /// Name.
    pub name: String,
    /// Id.
    pub id: Uuid,
    /// Partitions by index, dense from 0.
    pub partitions: BTreeMap<PartitionId, PartitionInfo>,
    /// Configs set on the topic (defaults are not stored).
    pub configs: TopicConfigs,
}

/// The cluster image.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MetadataImage {
    /// Metadata log index of the last command applied (-1 for none).
    pub applied_offset: i64,
    /// The cluster's id (empty until the first controller leader commits it).
    pub cluster_id: String,
    /// The node currently leading the controller quorum (not replicated state: filled in by
    /// the node publishing the image from its Raft view).
    #[serde(skip)]
    pub controller_id: Option<NodeId>,
    /// Registered brokers, fenced or not.
    pub brokers: BTreeMap<NodeId, BrokerInfo>,
    /// Topics by name.
    pub topics: BTreeMap<String, Arc<TopicInfo>>,
    /// Topic name by id.
    pub topic_names: BTreeMap<Uuid, String>,
    /// Replication policies by name.
    pub policies: BTreeMap<String, PolicyRecord>,
}

/// A record that cannot be applied to the image: the command is refused as a whole.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The record names a topic id the image does not have.
    #[error("record for unknown topic id {0}")]
    UnknownTopic(Uuid),
    /// A topic record reuses a name or id.
    #[error("topic {name} ({id}) already exists")]
    DuplicateTopic { name: String, id: Uuid },
    /// A fence change for a broker that is not registered.
    #[error("unknown broker {0}")]
    UnknownBroker(NodeId),
    /// A second, different cluster id.
    #[error("cluster id is {current}, refusing {proposed}")]
    ClusterIdChange { current: String, proposed: String },
    /// A partition change older than the partition's state.
    #[error("stale change of {partition}: (leader epoch, partition epoch) {proposed:?} older than {current:?}")]
    StalePartition {
        partition: String,
        current: (i32, i32),
        proposed: (i32, i32),
    },
    /// A policy removal for a policy that does not exist.
    #[error("unknown policy {0}")]
    UnknownPolicy(String),
}

impl MetadataImage {
    /// An empty image.
    pub fn new(cluster_id: impl Into<String>) -> MetadataImage {
        MetadataImage {
            applied_offset: -1,
            cluster_id: cluster_id.into(),
            ..Default::default()
        }
    }

    /// Applies the records of one committed command at metadata `offset`, all or nothing.
    pub fn apply_command(
        &mut self,
        offset: i64,
        records: &[MetadataRecord],
    ) -> Result<(), ApplyError> {
        assert!(
            offset > self.applied_offset,
            "metadata offsets must grow: applied={} next={offset}",
            self.applied_offset
        );
        let mut next = self.clone();
        for r in records {
            next.apply(offset, r)?;
        }
        next.applied_offset = offset;
        *self = next;
        Ok(())
    }

    /// Marks `offset` applied without a change (Raft blank and membership entries).
    pub fn advance_to(&mut self, offset: i64) {
        assert!(offset >= self.applied_offset, "metadata offsets must grow");
        self.applied_offset = offset;
    }

    fn apply(&mut self, offset: i64, record: &MetadataRecord) -> Result<(), ApplyError> {
        match record {
            MetadataRecord::Topic(t) => {
                if self.topics.contains_key(&t.name) || self.topic_names.contains_key(&t.id) {
                    return Err(ApplyError::DuplicateTopic {
                        name: t.name.clone(),
                        id: t.id,
                    });
                }
                self.topic_names.insert(t.id, t.name.clone());
                self.topics.insert(
                    t.name.clone(),
                    Arc::new(TopicInfo {
                        name: t.name.clone(),
                        id: t.id,
                        partitions: BTreeMap::new(),
                        configs: TopicConfigs::new(),
                    }),
                );
            }
            MetadataRecord::Partition(p) => {
                let topic = self.topic_mut(p.topic_id)?;
                // The controller plans on an up-to-date image, so this cannot happen; if a
                // command still carries a stale partition state, it is refused on every node
                // rather than crashing them all while replaying the log.
                if let Some(old) = topic.partitions.get(&p.partition) {
                    if p.leader_epoch < old.leader_epoch || p.partition_epoch < old.partition_epoch
                    {
                        return Err(ApplyError::StalePartition {
                            partition: format!("{}-{}", topic.name, p.partition),
                            current: (old.leader_epoch.0, old.partition_epoch),
                            proposed: (p.leader_epoch.0, p.partition_epoch),
                        });
                    }
                }
                topic.partitions.insert(p.partition, partition_info(p));
            }
            MetadataRecord::RemoveTopic(r) => {
                let name = self
                    .topic_names
                    .remove(&r.id)
                    .ok_or(ApplyError::UnknownTopic(r.id))?;
                self.topics.remove(&name);
            }
            MetadataRecord::TopicConfig(c) => {
                let topic = self.topic_mut(c.topic_id)?;
                match &c.value {
                    Some(v) => topic.configs.insert(c.key.clone(), v.clone()),
                    None => topic.configs.remove(&c.key),
                };
            }
            MetadataRecord::ClusterId(c) => {
                if !self.cluster_id.is_empty() && self.cluster_id != c.id {
                    return Err(ApplyError::ClusterIdChange {
                        current: self.cluster_id.clone(),
                        proposed: c.id.clone(),
                    });
                }
                self.cluster_id = c.id.clone();
            }
            MetadataRecord::RegisterBroker(b) => {
                self.brokers.insert(
                    b.id,
                    BrokerInfo {
                        id: b.id,
                        host: b.host.clone(),
                        port: b.port,
                        rack: b.rack.clone(),
                        incarnation: b.incarnation,
                        epoch: offset,
                        controller_addr: b.controller_addr.clone(),
                        // A new incarnation serves once it has caught up with metadata.
                        fenced: true,
                    },
                );
            }
            MetadataRecord::BrokerFence(f) => {
                let b = self
                    .brokers
                    .get_mut(&f.id)
                    .ok_or(ApplyError::UnknownBroker(f.id))?;
                if b.incarnation == f.incarnation {
                    b.fenced = f.fenced;
                }
            }
            MetadataRecord::Policy(p) => {
                self.policies.insert(p.name.clone(), p.clone());
            }
            MetadataRecord::RemovePolicy(r) => {
                self.policies
                    .remove(&r.name)
                    .ok_or_else(|| ApplyError::UnknownPolicy(r.name.clone()))?;
            }
        }
        Ok(())
    }

    fn topic_mut(&mut self, id: Uuid) -> Result<&mut TopicInfo, ApplyError> {
        let name = self
            .topic_names
            .get(&id)
            .ok_or(ApplyError::UnknownTopic(id))?;
        let topic = self
            .topics
            .get_mut(name)
            .expect("topic_names and topics agree");
        Ok(Arc::make_mut(topic))
    }

    /// A topic by name.
    pub fn topic(&self, name: &str) -> Option<&Arc<TopicInfo>> {
        self.topics.get(name)
    }

    /// A topic by id.
    pub fn topic_by_id(&self, id: &Uuid) -> Option<&Arc<TopicInfo>> {
        self.topic_names.get(id).and_then(|n| self.topics.get(n))
    }

    /// Brokers that serve clients: registered and not fenced.
    pub fn live_brokers(&self) -> impl Iterator<Item = &BrokerInfo> {
        self.brokers.values().filter(|b| !b.fenced)
    }

    /// True if `id` is registered and not fenced.
    pub fn is_live(&self, id: NodeId) -> bool {
        self.brokers.get(&id).is_some_and(|b| !b.fenced)
    }
}

fn partition_info(p: &PartitionRecord) -> PartitionInfo {
    PartitionInfo {
        replicas: p.replicas.clone(),
        isr: p.isr.clone(),
        leader: p.leader,
        leader_epoch: p.leader_epoch,
        partition_epoch: p.partition_epoch,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::*;

    fn topic(id: Uuid) -> MetadataRecord {
        MetadataRecord::Topic(TopicRecord {
            version: 1,
            name: "t".into(),
            id,
        })
    }

    #[test]
    fn applies_topic_partition_config_and_removal() {
        let id = Uuid::from_u128(7);
        let mut img = MetadataImage::new("c");
        let partition = MetadataRecord::Partition(PartitionRecord {
            version: 1,
            topic_id: id,
            partition: PartitionId(0),
            replicas: vec![NodeId(1)],
            isr: vec![NodeId(1)],
            leader: Some(NodeId(1)),
            leader_epoch: LeaderEpoch(0),
            partition_epoch: 0,
        });
        let config = MetadataRecord::TopicConfig(TopicConfigRecord {
            version: 1,
            topic_id: id,
            key: "retention.ms".into(),
            value: Some("1000".into()),
        });
        img.apply_command(0, &[topic(id), partition, config])
            .unwrap();
        let t = img.topic("t").unwrap();
        assert_eq!(t.partitions.len(), 1);
        assert_eq!(t.configs["retention.ms"], "1000");
        img.apply_command(
            3,
            &[MetadataRecord::RemoveTopic(RemoveTopicRecord {
                version: 1,
                id,
            })],
        )
        .unwrap();
        assert!(img.topic("t").is_none());
        assert_eq!(img.applied_offset, 3);
    }

    #[test]
    fn a_refused_command_changes_nothing() {
        let mut img = MetadataImage::new("c");
        img.apply_command(0, &[topic(Uuid::from_u128(1))]).unwrap();
        let dup = [topic(Uuid::from_u128(2)), topic(Uuid::from_u128(1))];
        assert!(img.apply_command(1, &dup).is_err());
        assert_eq!(img.topics.len(), 1);
        assert_eq!(img.applied_offset, 0, "a refused command is not applied");
    }

    #[test]
    fn brokers_register_fenced_and_unfence_only_their_incarnation() {
        let mut img = MetadataImage::new("c");
        let inc = Uuid::from_u128(5);
        let reg = MetadataRecord::RegisterBroker(RegisterBrokerRecord {
            version: 1,
            id: NodeId(2),
            incarnation: inc,
            host: "h".into(),
            port: 1,
            rack: None,
            controller_addr: "c".into(),
        });
        img.apply_command(0, &[reg]).unwrap();
        assert!(!img.is_live(NodeId(2)), "registered brokers start fenced");
        let stale = MetadataRecord::BrokerFence(BrokerFenceRecord {
            version: 1,
            id: NodeId(2),
            incarnation: Uuid::nil(),
            fenced: false,
        });
        img.apply_command(1, &[stale]).unwrap();
        assert!(
            !img.is_live(NodeId(2)),
            "a stale incarnation changes nothing"
        );
        let unfence = MetadataRecord::BrokerFence(BrokerFenceRecord {
            version: 1,
            id: NodeId(2),
            incarnation: inc,
            fenced: false,
        });
        img.apply_command(2, &[unfence]).unwrap();
        assert!(img.is_live(NodeId(2)));
        assert_eq!(img.brokers[&NodeId(2)].epoch, 0);
    }

    #[test]
    fn the_cluster_id_never_changes() {
        let mut img = MetadataImage::new("");
        let set = |id: &str| {
            MetadataRecord::ClusterId(ClusterIdRecord {
                version: 1,
                id: id.into(),
            })
        };
        img.apply_command(0, &[set("a")]).unwrap();
        img.apply_command(1, &[set("a")]).unwrap();
        assert!(img.apply_command(2, &[set("b")]).is_err());
        assert_eq!(img.cluster_id, "a");
    }

    #[test]
    fn images_round_trip_through_json_for_snapshots() {
        let mut img = MetadataImage::new("c");
        img.apply_command(0, &[topic(Uuid::from_u128(1))]).unwrap();
        let json = serde_json::to_vec(&img).unwrap();
        let back: MetadataImage = serde_json::from_slice(&json).unwrap();
        assert_eq!(back.topics, img.topics);
        assert_eq!(back.applied_offset, 0);
    }
}
