//! The controller: the one place metadata changes are decided. It validates a request against
//! the current image, turns it into records, commits them to the metadata log, applies them and
//! publishes the new image to every subscriber (the broker's partition manager, the front end).
//!
//! This is the single-node controller: its log is a local fsynced file. The clustered
//! controller keeps the same operations and commits through the Raft quorum instead.

use std::path::Path;
use std::sync::{Arc, Mutex};

use ferrymq_types::{LeaderEpoch, NodeId, PartitionId, ProducerId};
use tokio::sync::watch;
use uuid::Uuid;

use crate::error::{ControllerError, Result};
use crate::image::{BrokerInfo, MetadataImage, TopicInfo};
use crate::metadata_log::MetadataLog;
use crate::records::*;
use crate::{placement, topic_config, topic_name};

/// Largest partition count of one topic: bounds the records one request can create.
pub const PARTITIONS_PER_TOPIC_MAX: i32 = 10_000;

/// Producer ids granted to a broker at a time: one metadata commit serves this many
/// InitProducerId requests (Kafka's `ProducerIdsBlock.PRODUCER_ID_BLOCK_SIZE`).
pub const PRODUCER_ID_BLOCK_SIZE: i64 = 1000;

/// A range of producer ids granted to one broker, to hand out in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerIdBlock {
    /// The first id of the block.
    pub first: ProducerId,
    /// How many ids it holds.
    pub size: i64,
}

impl ProducerIdBlock {
    /// The first id after the block.
    pub fn end(&self) -> ProducerId {
        ProducerId(self.first.0 + self.size)
    }
}

/// What the controller needs to know about this node and its defaults.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// This node.
    pub node_id: NodeId,
    /// The address clients are told to connect to.
    pub advertised_host: String,
    /// The port clients are told to connect to.
    pub advertised_port: u16,
    /// `broker.rack`.
    pub rack: Option<String>,
    /// `num.partitions`: partitions of a topic created without a count.
    pub default_num_partitions: i32,
    /// `default.replication.factor`.
    pub default_replication_factor: i16,
}

/// A request to create one topic.
#[derive(Debug, Clone, Default)]
pub struct CreateTopic {
    /// Name.
    pub name: String,
    /// Partition count; `None` takes `num.partitions`.
    pub num_partitions: Option<i32>,
    /// Replication factor; `None` takes the default.
    pub replication_factor: Option<i16>,
    /// Manual replica assignment per partition, instead of count and factor.
    pub assignments: Option<Vec<Vec<NodeId>>>,
    /// Topic configs to set.
    pub configs: Vec<(String, String)>,
}

/// The topic as created.
#[derive(Debug, Clone)]
pub struct TopicCreated {
    /// Its id.
    pub id: Uuid,
    /// Partition count.
    pub num_partitions: i32,
    /// Replication factor.
    pub replication_factor: i16,
}

/// One change in an incremental config alteration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigOp {
    /// Set `key` to `value`.
    Set(String, String),
    /// Reset `key` to its default.
    Delete(String),
}

struct State {
    log: MetadataLog,
    image: MetadataImage,
    /// Varies placement between topics.
    topics_created: usize,
}

/// The controller of a single-node cluster.
pub struct Controller {
    config: ControllerConfig,
    state: Mutex<State>,
    publish: watch::Sender<Arc<MetadataImage>>,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("node_id", &self.config.node_id)
            .finish()
    }
}

impl Controller {
    /// Opens the metadata log in `metadata_dir`, replays it into an image and starts publishing.
    pub fn open(
        metadata_dir: &Path,
        cluster_id: String,
        config: ControllerConfig,
    ) -> Result<Controller> {
        let (log, records) = MetadataLog::open(metadata_dir)?;
        let mut image = MetadataImage::new(cluster_id);
        for (offset, record) in &records {
            image.apply(*offset, record).map_err(|e| {
                ControllerError::Storage(format!("replaying metadata offset {offset}: {e}"))
            })?;
        }
        image.controller_id = Some(config.node_id);
        image.brokers.insert(
            config.node_id,
            BrokerInfo {
                id: config.node_id,
                host: config.advertised_host.clone(),
                port: config.advertised_port,
                rack: config.rack.clone(),
            },
        );
        tracing::info!(
            records = records.len(),
            topics = image.topics.len(),
            "metadata loaded"
        );
        let topics_created = image.topics.len();
        let (publish, _) = watch::channel(Arc::new(image.clone()));
        Ok(Controller {
            config,
            state: Mutex::new(State {
                log,
                image,
                topics_created,
            }),
            publish,
        })
    }

    /// The latest image.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.publish.borrow().clone()
    }

    /// A receiver that sees every new image.
    pub fn subscribe(&self) -> watch::Receiver<Arc<MetadataImage>> {
        self.publish.subscribe()
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.config.node_id
    }

    /// Validates, commits and applies `records` built by `build` from the current image, in one
    /// critical section so that concurrent requests see each other's changes.
    fn commit<T>(
        &self,
        build: impl FnOnce(&mut State) -> Result<(Vec<MetadataRecord>, T)>,
    ) -> Result<T> {
        let mut state = self.state.lock().expect("controller lock poisoned");
        let (records, out) = build(&mut state)?;
        if records.is_empty() {
            return Ok(out);
        }
        // Apply to a copy first: a record the image refuses must never reach the log.
        let mut next = state.image.clone();
        let first = state.image.applied_offset + 1;
        for (i, r) in records.iter().enumerate() {
            next.apply(first + i as i64, r)
                .map_err(|e| ControllerError::InvalidRequest(e.to_string()))?;
        }
        let offsets = state.log.append(&records)?;
        assert_eq!(
            offsets.first().copied(),
            Some(first),
            "metadata log and image offsets agree"
        );
        state.image = next;
        self.publish.send_replace(Arc::new(state.image.clone()));
        Ok(out)
    }

    /// CreateTopics for one topic; with `validate_only` nothing is committed.
    pub async fn create_topic(
        &self,
        req: CreateTopic,
        validate_only: bool,
    ) -> Result<TopicCreated> {
        self.commit(|state| {
            let (records, created) = self.plan_topic(state, &req)?;
            if validate_only {
                return Ok((Vec::new(), created));
            }
            state.topics_created += 1;
            Ok((records, created))
        })
    }

    fn plan_topic(
        &self,
        state: &State,
        req: &CreateTopic,
    ) -> Result<(Vec<MetadataRecord>, TopicCreated)> {
        topic_name::validate(&req.name)?;
        let image = &state.image;
        if image.topics.contains_key(&req.name) {
            return Err(ControllerError::TopicAlreadyExists(req.name.clone()));
        }
        let folded = topic_name::folded(&req.name);
        if let Some(other) = image
            .topics
            .keys()
            .find(|t| topic_name::folded(t) == folded)
        {
            return Err(ControllerError::InvalidTopic(format!(
                "{:?} collides with existing topic {other:?} ('.' and '_' are equivalent)",
                req.name
            )));
        }
        for (k, v) in &req.configs {
            topic_config::validate(k, v)
                .map_err(|e| ControllerError::InvalidConfig(e.to_string()))?;
        }
        let brokers: Vec<NodeId> = image.brokers.keys().copied().collect();
        let assignments = match &req.assignments {
            Some(a) => {
                validate_assignments(a, &brokers)?;
                a.clone()
            }
            None => {
                let count = req
                    .num_partitions
                    .unwrap_or(self.config.default_num_partitions);
                validate_partition_count(count)?;
                let rf = req
                    .replication_factor
                    .unwrap_or(self.config.default_replication_factor);
                placement::assign(&brokers, count, 0, rf, state.topics_created)?
            }
        };
        let id = Uuid::new_v4();
        let mut records = vec![MetadataRecord::Topic(TopicRecord {
            version: RECORD_VERSION,
            name: req.name.clone(),
            id,
        })];
        for (k, v) in &req.configs {
            records.push(MetadataRecord::TopicConfig(TopicConfigRecord {
                version: RECORD_VERSION,
                topic_id: id,
                key: k.clone(),
                value: Some(v.trim().to_string()),
            }));
        }
        for (i, replicas) in assignments.iter().enumerate() {
            records.push(new_partition(id, i as i32, replicas.clone()));
        }
        let created = TopicCreated {
            id,
            num_partitions: assignments.len() as i32,
            replication_factor: assignments.first().map_or(0, |r| r.len() as i16),
        };
        Ok((records, created))
    }

    /// DeleteTopics for one topic.
    pub async fn delete_topic(&self, name: &str) -> Result<Uuid> {
        self.commit(|state| {
            let topic = state
                .image
                .topic(name)
                .ok_or_else(|| ControllerError::UnknownTopic(name.to_string()))?;
            let id = topic.id;
            Ok((
                vec![MetadataRecord::RemoveTopic(RemoveTopicRecord {
                    version: RECORD_VERSION,
                    id,
                })],
                id,
            ))
        })
    }

    /// CreatePartitions: grows `name` to `total` partitions.
    pub async fn create_partitions(
        &self,
        name: &str,
        total: i32,
        assignments: Option<Vec<Vec<NodeId>>>,
        validate_only: bool,
    ) -> Result<()> {
        self.commit(|state| {
            let topic: Arc<TopicInfo> = state
                .image
                .topic(name)
                .cloned()
                .ok_or_else(|| ControllerError::UnknownTopic(name.to_string()))?;
            let current = topic.partitions.len() as i32;
            if total <= current {
                return Err(ControllerError::InvalidPartitions(format!(
                    "topic {name} has {current} partitions; the new count must be larger, got {total}"
                )));
            }
            validate_partition_count(total)?;
            let brokers: Vec<NodeId> = state.image.brokers.keys().copied().collect();
            let rf = topic.partitions.values().next().map_or(1, |p| p.replicas.len() as i16);
            let added = match assignments {
                Some(a) => {
                    if a.len() as i32 != total - current {
                        return Err(ControllerError::InvalidReplicaAssignment(format!(
                            "{} assignments for {} new partitions",
                            a.len(),
                            total - current
                        )));
                    }
                    validate_assignments(&a, &brokers)?;
                    a
                }
                None => placement::assign(&brokers, total - current, current, rf, state.topics_created)?,
            };
            if validate_only {
                return Ok((Vec::new(), ()));
            }
            let records = added
                .into_iter()
                .enumerate()
                .map(|(i, replicas)| new_partition(topic.id, current + i as i32, replicas))
                .collect();
            Ok((records, ()))
        })
    }

    /// Grants `node_id` the next block of producer ids. The grant is committed to the metadata
    /// log before this returns, so the ids are never granted again, whatever restarts.
    pub async fn allocate_producer_ids(&self, node_id: NodeId) -> Result<ProducerIdBlock> {
        self.commit(|state| {
            let first = state.image.next_producer_id;
            let Some(end) = first.0.checked_add(PRODUCER_ID_BLOCK_SIZE) else {
                return Err(ControllerError::InvalidRequest(format!(
                    "producer ids exhausted at {first}"
                )));
            };
            let record = MetadataRecord::ProducerIds(ProducerIdsRecord {
                version: RECORD_VERSION,
                node_id,
                next_producer_id: ProducerId(end),
            });
            let block = ProducerIdBlock {
                first,
                size: PRODUCER_ID_BLOCK_SIZE,
            };
            Ok((vec![record], block))
        })
    }

    /// Incremental config alteration of a topic (AlterConfigs is expressed as one).
    pub async fn alter_topic_configs(
        &self,
        name: &str,
        ops: Vec<ConfigOp>,
        validate_only: bool,
    ) -> Result<()> {
        self.commit(|state| {
            let topic = state
                .image
                .topic(name)
                .ok_or_else(|| ControllerError::UnknownTopic(name.to_string()))?;
            let mut records = Vec::new();
            for op in ops {
                let (key, value) = match op {
                    ConfigOp::Set(k, v) => {
                        topic_config::validate(&k, &v)
                            .map_err(|e| ControllerError::InvalidConfig(e.to_string()))?;
                        (k, Some(v.trim().to_string()))
                    }
                    ConfigOp::Delete(k) => {
                        if topic_config::definition(&k).is_none() {
                            return Err(ControllerError::InvalidConfig(format!(
                                "unknown topic config {k:?}"
                            )));
                        }
                        (k, None)
                    }
                };
                if topic.configs.get(&key) == value.as_ref() {
                    continue;
                }
                records.push(MetadataRecord::TopicConfig(TopicConfigRecord {
                    version: RECORD_VERSION,
                    topic_id: topic.id,
                    key,
                    value,
                }));
            }
            if validate_only {
                records.clear();
            }
            Ok((records, ()))
        })
    }
}

fn new_partition(topic_id: Uuid, index: i32, replicas: Vec<NodeId>) -> MetadataRecord {
    MetadataRecord::Partition(PartitionRecord {
        version: RECORD_VERSION,
        topic_id,
        partition: PartitionId(index),
        leader: replicas.first().copied(),
        isr: replicas.clone(),
        replicas,
        leader_epoch: LeaderEpoch(0),
        partition_epoch: 0,
    })
}

fn validate_partition_count(count: i32) -> Result<()> {
    if !(1..=PARTITIONS_PER_TOPIC_MAX).contains(&count) {
        return Err(ControllerError::InvalidPartitions(format!(
            "partition count must be between 1 and {PARTITIONS_PER_TOPIC_MAX}, got {count}"
        )));
    }
    Ok(())
}

fn validate_assignments(assignments: &[Vec<NodeId>], brokers: &[NodeId]) -> Result<()> {
    validate_partition_count(assignments.len() as i32)?;
    let rf = assignments[0].len();
    for (i, r) in assignments.iter().enumerate() {
        let mut d = r.clone();
        d.sort();
        d.dedup();
        if r.is_empty() || d.len() != r.len() || r.len() != rf {
            return Err(ControllerError::InvalidReplicaAssignment(format!(
                "partition {i}: replicas {r:?} must be non-empty, distinct and as many as the others"
            )));
        }
        if let Some(unknown) = r.iter().find(|b| !brokers.contains(b)) {
            return Err(ControllerError::InvalidReplicaAssignment(format!(
                "partition {i}: broker {unknown} is not registered"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn controller(dir: &Path) -> Controller {
        Controller::open(
            dir,
            "cluster-1".into(),
            ControllerConfig {
                node_id: NodeId(1),
                advertised_host: "127.0.0.1".into(),
                advertised_port: 9092,
                rack: None,
                default_num_partitions: 1,
                default_replication_factor: 1,
            },
        )
        .unwrap()
    }

    fn block<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn topics_survive_reopen_with_configs_and_partitions() {
        let dir = tempfile::tempdir().unwrap();
        let c = controller(dir.path());
        let req = CreateTopic {
            name: "t".into(),
            num_partitions: Some(3),
            configs: vec![("retention.ms".into(), "1000".into())],
            ..Default::default()
        };
        block(c.create_topic(req, false)).unwrap();
        block(c.create_partitions("t", 5, None, false)).unwrap();
        drop(c);
        let c = controller(dir.path());
        let img = c.image();
        let t = img.topic("t").unwrap();
        assert_eq!(t.partitions.len(), 5);
        assert_eq!(t.configs["retention.ms"], "1000");
        assert_eq!(t.partitions[&PartitionId(4)].leader, Some(NodeId(1)));
    }

    #[test]
    fn refuses_bad_requests_without_committing() {
        let dir = tempfile::tempdir().unwrap();
        let c = controller(dir.path());
        let mk = |name: &str, n: i32, rf: i16| CreateTopic {
            name: name.into(),
            num_partitions: Some(n),
            replication_factor: Some(rf),
            ..Default::default()
        };
        assert!(matches!(
            block(c.create_topic(mk("a b", 1, 1), false)),
            Err(ControllerError::InvalidTopic(_))
        ));
        assert!(matches!(
            block(c.create_topic(mk("a", 0, 1), false)),
            Err(ControllerError::InvalidPartitions(_))
        ));
        assert!(matches!(
            block(c.create_topic(mk("a", 1, 2), false)),
            Err(ControllerError::InvalidReplicationFactor(_))
        ));
        block(c.create_topic(mk("a.b", 1, 1), true)).unwrap();
        assert!(
            c.image().topic("a.b").is_none(),
            "validate_only commits nothing"
        );
        block(c.create_topic(mk("a.b", 1, 1), false)).unwrap();
        assert!(matches!(
            block(c.create_topic(mk("a.b", 1, 1), false)),
            Err(ControllerError::TopicAlreadyExists(_))
        ));
        assert!(matches!(
            block(c.create_topic(mk("a_b", 1, 1), false)),
            Err(ControllerError::InvalidTopic(_))
        ));
        let bad_cfg = CreateTopic {
            name: "c".into(),
            configs: vec![("retention.ms".into(), "x".into())],
            ..Default::default()
        };
        assert!(matches!(
            block(c.create_topic(bad_cfg, false)),
            Err(ControllerError::InvalidConfig(_))
        ));
        assert_eq!(c.image().topics.len(), 1);
    }

    #[test]
    fn producer_id_blocks_are_disjoint_and_never_granted_again_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let c = controller(dir.path());
        let a = block(c.allocate_producer_ids(NodeId(1))).unwrap();
        let b = block(c.allocate_producer_ids(NodeId(1))).unwrap();
        assert_eq!(a.first, ProducerId(0));
        assert_eq!(a.size, PRODUCER_ID_BLOCK_SIZE);
        assert_eq!(b.first, a.end());
        drop(c);
        let c = controller(dir.path());
        assert_eq!(c.image().next_producer_id, b.end());
        let after = block(c.allocate_producer_ids(NodeId(1))).unwrap();
        assert_eq!(
            after.first,
            b.end(),
            "a reopened controller continues past every grant"
        );
    }

    #[test]
    fn config_changes_and_deletion_are_published() {
        let dir = tempfile::tempdir().unwrap();
        let c = controller(dir.path());
        let mut rx = c.subscribe();
        block(c.create_topic(
            CreateTopic {
                name: "t".into(),
                ..Default::default()
            },
            false,
        ))
        .unwrap();
        assert!(rx.has_changed().unwrap());
        rx.mark_unchanged();
        block(c.alter_topic_configs(
            "t",
            vec![ConfigOp::Set("retention.bytes".into(), "10".into())],
            false,
        ))
        .unwrap();
        assert_eq!(
            rx.borrow_and_update().topic("t").unwrap().configs["retention.bytes"],
            "10"
        );
        block(c.alter_topic_configs("t", vec![ConfigOp::Delete("retention.bytes".into())], false))
            .unwrap();
        assert!(c.image().topic("t").unwrap().configs.is_empty());
        block(c.delete_topic("t")).unwrap();
        assert!(c.image().topic("t").is_none());
        assert!(matches!(
            block(c.delete_topic("t")),
            Err(ControllerError::UnknownTopic(_))
        ));
    }
}
