//! The metadata image: the cluster as of some applied metadata offset. Immutable once built;
//! applying a record produces the next image, published to every reader as an `Arc`.

use std::collections::BTreeMap;
use std::sync::Arc;

use ferrymq_types::{LeaderEpoch, NodeId, PartitionId, ProducerId};
use uuid::Uuid;

use crate::records::{MetadataRecord, PartitionRecord, TopicConfigs};

/// A broker as clients see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerInfo {
    /// The broker's node id.
    pub id: NodeId,
    /// Host clients connect to.
    pub host: String,
    /// Port clients connect to.
    pub port: u16,
    /// Rack, if configured.
    pub rack: Option<String>,
}

/// One partition's placement and leadership.
#[derive(Debug, Clone, PartialEq, Eq)]
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
#[derive(Debug, Clone, PartialEq, Eq)]
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
#[derive(Debug, Clone, Default)]
pub struct MetadataImage {
    /// Offset of the last record applied (-1 for none).
    pub applied_offset: i64,
    /// The cluster's id.
    pub cluster_id: String,
    /// The node answering as controller.
    pub controller_id: Option<NodeId>,
    /// Live brokers visible to clients.
    pub brokers: BTreeMap<NodeId, BrokerInfo>,
    /// Topics by name.
    pub topics: BTreeMap<String, Arc<TopicInfo>>,
    /// Topic name by id.
    pub topic_names: BTreeMap<Uuid, String>,
    /// The first producer id not yet granted to a broker: every id below it may be in use.
    pub next_producer_id: ProducerId,
}

/// A record that cannot be applied to the image: a bug or a corrupt metadata log.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The record names a topic id the image does not have.
    #[error("record for unknown topic id {0}")]
    UnknownTopic(Uuid),
    /// A topic record reuses a name or id.
    #[error("topic {name} ({id}) already exists")]
    DuplicateTopic { name: String, id: Uuid },
    /// A producer-id grant that does not move past the ids already granted.
    #[error("producer ids granted up to {granted}, record says {next}")]
    ProducerIdsBackwards {
        granted: ProducerId,
        next: ProducerId,
    },
}

impl MetadataImage {
    /// An empty image for a cluster.
    pub fn new(cluster_id: impl Into<String>) -> MetadataImage {
        MetadataImage {
            applied_offset: -1,
            cluster_id: cluster_id.into(),
            ..Default::default()
        }
    }

    /// Applies one committed record at `offset`.
    pub fn apply(&mut self, offset: i64, record: &MetadataRecord) -> Result<(), ApplyError> {
        assert!(
            offset > self.applied_offset,
            "metadata offsets must grow: applied={} next={offset}",
            self.applied_offset
        );
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
            MetadataRecord::ProducerIds(p) => {
                if p.next_producer_id <= self.next_producer_id {
                    return Err(ApplyError::ProducerIdsBackwards {
                        granted: self.next_producer_id,
                        next: p.next_producer_id,
                    });
                }
                self.next_producer_id = p.next_producer_id;
            }
        }
        self.applied_offset = offset;
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

    #[test]
    fn applies_topic_partition_config_and_removal() {
        let id = Uuid::from_u128(7);
        let mut img = MetadataImage::new("c");
        img.apply(
            0,
            &MetadataRecord::Topic(TopicRecord {
                version: 1,
                name: "t".into(),
                id,
            }),
        )
        .unwrap();
        img.apply(
            1,
            &MetadataRecord::Partition(PartitionRecord {
                version: 1,
                topic_id: id,
                partition: PartitionId(0),
                replicas: vec![NodeId(1)],
                isr: vec![NodeId(1)],
                leader: Some(NodeId(1)),
                leader_epoch: LeaderEpoch(0),
                partition_epoch: 0,
            }),
        )
        .unwrap();
        img.apply(
            2,
            &MetadataRecord::TopicConfig(TopicConfigRecord {
                version: 1,
                topic_id: id,
                key: "retention.ms".into(),
                value: Some("1000".into()),
            }),
        )
        .unwrap();
        let t = img.topic("t").unwrap();
        assert_eq!(t.partitions.len(), 1);
        assert_eq!(t.configs["retention.ms"], "1000");
        img.apply(
            3,
            &MetadataRecord::RemoveTopic(RemoveTopicRecord { version: 1, id }),
        )
        .unwrap();
        assert!(img.topic("t").is_none());
        assert_eq!(img.applied_offset, 3);
    }

    #[test]
    fn producer_id_grants_only_move_forward() {
        let grant = |next| {
            MetadataRecord::ProducerIds(ProducerIdsRecord {
                version: 1,
                node_id: NodeId(1),
                next_producer_id: ProducerId(next),
            })
        };
        let mut img = MetadataImage::new("c");
        assert_eq!(img.next_producer_id, ProducerId(0));
        img.apply(0, &grant(1000)).unwrap();
        img.apply(1, &grant(2000)).unwrap();
        assert_eq!(img.next_producer_id, ProducerId(2000));
        assert!(img.apply(2, &grant(2000)).is_err());
        assert!(img.apply(3, &grant(5)).is_err());
        assert_eq!(img.next_producer_id, ProducerId(2000));
    }

    #[test]
    fn a_duplicate_topic_is_refused() {
        let mut img = MetadataImage::new("c");
        let rec = MetadataRecord::Topic(TopicRecord {
            version: 1,
            name: "t".into(),
            id: Uuid::from_u128(1),
        });
        img.apply(0, &rec).unwrap();
        assert!(img.apply(1, &rec).is_err());
    }
}
