//! Turning admin requests into metadata records: validation against the current image (names,
//! configs, counts, placement over live brokers, replication policies) and nothing else. Pure
//! functions; the controller commits what they return.

use ferrymq_types::{LeaderEpoch, NodeId, PartitionId, ProducerId};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{ConfigOp, CreateTopic, TopicCreated};
use crate::error::{ControllerError, Result};
use crate::image::MetadataImage;
use crate::placement::{self, Candidate};
use crate::records::*;
use crate::{topic_config, topic_name};

/// Producer ids granted to a broker at a time: one metadata commit serves this many
/// InitProducerId requests (Kafka's `ProducerIdsBlock.PRODUCER_ID_BLOCK_SIZE`).
pub const PRODUCER_ID_BLOCK_SIZE: i64 = 1000;

/// A range of producer ids granted to one broker, to hand out in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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

/// The next block of producer ids for `node_id`: it starts where the image says no id was
/// granted yet, and its record moves that mark past it. Planned on the active controller's
/// up-to-date image, so two grants never overlap.
pub fn allocate_producer_ids(
    image: &MetadataImage,
    node_id: NodeId,
) -> Result<(Vec<MetadataRecord>, ProducerIdBlock)> {
    let first = image.next_producer_id;
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
}

/// Largest partition count of one topic: bounds the records one request can create.
pub const PARTITIONS_PER_TOPIC_MAX: i32 = 10_000;

/// Defaults a topic creation falls back to.
#[derive(Debug, Clone, Copy)]
pub struct CreationDefaults {
    /// `num.partitions`.
    pub num_partitions: i32,
    /// `default.replication.factor`.
    pub replication_factor: i16,
}

fn candidates(image: &MetadataImage) -> Vec<Candidate> {
    image
        .live_brokers()
        .map(|b| Candidate {
            id: b.id,
            rack: b.rack.clone(),
        })
        .collect()
}

/// True if `name` matches the glob `pattern` (`*` matches any run of characters).
pub fn glob_matches(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first)
        || !name[first.len()..].ends_with(last)
        || name.len() < first.len() + last.len()
    {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

/// The first policy (by priority, then name) whose pattern matches `topic`.
pub fn matching_policy<'a>(image: &'a MetadataImage, topic: &str) -> Option<&'a PolicyRecord> {
    let mut policies: Vec<&PolicyRecord> = image.policies.values().collect();
    policies.sort_by(|a, b| (a.priority, &a.name).cmp(&(b.priority, &b.name)));
    policies
        .into_iter()
        .find(|p| glob_matches(&p.pattern, topic))
}

/// Records creating a topic, and what was created.
pub fn create_topic(
    image: &MetadataImage,
    req: &CreateTopic,
    defaults: CreationDefaults,
    seed: usize,
) -> Result<(Vec<MetadataRecord>, TopicCreated)> {
    topic_name::validate(&req.name)?;
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
    let mut configs = req.configs.clone();
    for (k, v) in &configs {
        topic_config::validate(k, v).map_err(|e| ControllerError::InvalidConfig(e.to_string()))?;
    }
    let policy = matching_policy(image, &req.name);
    let live = candidates(image);
    let assignments = match &req.assignments {
        Some(a) => {
            let ids: Vec<NodeId> = image.brokers.keys().copied().collect();
            validate_assignments(a, &ids)?;
            a.clone()
        }
        None => {
            let count = req.num_partitions.unwrap_or(defaults.num_partitions);
            validate_partition_count(count)?;
            let rf = match (req.replication_factor, policy.map(|p| p.replicas)) {
                (Some(rf), _) => rf,
                (None, Some(PolicyReplicas::All)) => live.len().max(1) as i16,
                (None, Some(PolicyReplicas::Count(n))) => n as i16,
                (None, None) => defaults.replication_factor,
            };
            placement::assign(&live, count, 0, rf, seed)?
        }
    };
    if let Some(min) = policy.and_then(|p| p.min_insync_replicas) {
        if !configs.iter().any(|(k, _)| k == "min.insync.replicas") {
            configs.push(("min.insync.replicas".into(), min.to_string()));
        }
    }
    let id = Uuid::new_v4();
    let mut records = vec![MetadataRecord::Topic(TopicRecord {
        version: RECORD_VERSION,
        name: req.name.clone(),
        id,
    })];
    for (k, v) in &configs {
        records.push(MetadataRecord::TopicConfig(TopicConfigRecord {
            version: RECORD_VERSION,
            topic_id: id,
            key: k.clone(),
            value: Some(v.trim().to_string()),
        }));
    }
    for (i, replicas) in assignments.iter().enumerate() {
        records.push(new_partition(image, id, i as i32, replicas.clone()));
    }
    let created = TopicCreated {
        id,
        num_partitions: assignments.len() as i32,
        replication_factor: assignments.first().map_or(0, |r| r.len() as i16),
    };
    Ok((records, created))
}

/// Records deleting a topic, and its id.
pub fn delete_topic(image: &MetadataImage, name: &str) -> Result<(Vec<MetadataRecord>, Uuid)> {
    let topic = image
        .topic(name)
        .ok_or_else(|| ControllerError::UnknownTopic(name.to_string()))?;
    Ok((
        vec![MetadataRecord::RemoveTopic(RemoveTopicRecord {
            version: RECORD_VERSION,
            id: topic.id,
        })],
        topic.id,
    ))
}

/// Records growing a topic to `total` partitions.
pub fn create_partitions(
    image: &MetadataImage,
    name: &str,
    total: i32,
    assignments: Option<Vec<Vec<NodeId>>>,
    seed: usize,
) -> Result<Vec<MetadataRecord>> {
    let topic = image
        .topic(name)
        .ok_or_else(|| ControllerError::UnknownTopic(name.to_string()))?;
    let current = topic.partitions.len() as i32;
    if total <= current {
        return Err(ControllerError::InvalidPartitions(format!(
            "topic {name} has {current} partitions; the new count must be larger, got {total}"
        )));
    }
    validate_partition_count(total)?;
    let rf = topic
        .partitions
        .values()
        .next()
        .map_or(1, |p| p.replicas.len() as i16);
    let added = match assignments {
        Some(a) => {
            if a.len() as i32 != total - current {
                return Err(ControllerError::InvalidReplicaAssignment(format!(
                    "{} assignments for {} new partitions",
                    a.len(),
                    total - current
                )));
            }
            let ids: Vec<NodeId> = image.brokers.keys().copied().collect();
            validate_assignments(&a, &ids)?;
            a
        }
        None => placement::assign(&candidates(image), total - current, current, rf, seed)?,
    };
    Ok(added
        .into_iter()
        .enumerate()
        .map(|(i, replicas)| new_partition(image, topic.id, current + i as i32, replicas))
        .collect())
}

/// Records applying config changes to a topic.
pub fn alter_topic_configs(
    image: &MetadataImage,
    name: &str,
    ops: &[ConfigOp],
) -> Result<Vec<MetadataRecord>> {
    let topic = image
        .topic(name)
        .ok_or_else(|| ControllerError::UnknownTopic(name.to_string()))?;
    let mut records = Vec::new();
    for op in ops {
        let (key, value) = match op {
            ConfigOp::Set(k, v) => {
                topic_config::validate(k, v)
                    .map_err(|e| ControllerError::InvalidConfig(e.to_string()))?;
                (k.clone(), Some(v.trim().to_string()))
            }
            ConfigOp::Delete(k) => {
                if topic_config::definition(k).is_none() {
                    return Err(ControllerError::InvalidConfig(format!(
                        "unknown topic config {k:?}"
                    )));
                }
                (k.clone(), None)
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
    Ok(records)
}

/// Records creating or replacing a policy.
pub fn put_policy(policy: &PolicyRecord) -> Result<Vec<MetadataRecord>> {
    if policy.name.is_empty() || policy.pattern.is_empty() {
        return Err(ControllerError::InvalidRequest(
            "a policy needs a name and a pattern".into(),
        ));
    }
    if matches!(policy.replicas, PolicyReplicas::Count(0)) {
        return Err(ControllerError::InvalidReplicationFactor(
            "a policy needs at least one replica".into(),
        ));
    }
    if policy.min_insync_replicas.is_some_and(|m| m < 1) {
        return Err(ControllerError::InvalidConfig(
            "min.insync.replicas must be at least 1".into(),
        ));
    }
    Ok(vec![MetadataRecord::Policy(PolicyRecord {
        version: RECORD_VERSION,
        ..policy.clone()
    })])
}

/// Records removing a policy.
pub fn remove_policy(image: &MetadataImage, name: &str) -> Result<Vec<MetadataRecord>> {
    if !image.policies.contains_key(name) {
        return Err(ControllerError::InvalidRequest(format!(
            "no policy named {name:?}"
        )));
    }
    Ok(vec![MetadataRecord::RemovePolicy(RemovePolicyRecord {
        version: RECORD_VERSION,
        name: name.to_string(),
    })])
}

fn new_partition(
    image: &MetadataImage,
    topic_id: Uuid,
    index: i32,
    replicas: Vec<NodeId>,
) -> MetadataRecord {
    // The first live replica leads; all replicas start in sync (an empty log is caught up).
    let leader = replicas.iter().copied().find(|r| image.is_live(*r));
    MetadataRecord::Partition(PartitionRecord {
        version: RECORD_VERSION,
        topic_id,
        partition: PartitionId(index),
        leader,
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

    fn live_image(n: i32) -> MetadataImage {
        let mut img = MetadataImage::new("c");
        let mut recs = Vec::new();
        for b in 1..=n {
            let inc = Uuid::from_u128(b as u128);
            recs.push(MetadataRecord::RegisterBroker(RegisterBrokerRecord {
                version: 1,
                id: NodeId(b),
                incarnation: inc,
                host: "h".into(),
                port: 1,
                rack: None,
                controller_addr: String::new(),
            }));
            recs.push(MetadataRecord::BrokerFence(BrokerFenceRecord {
                version: 1,
                id: NodeId(b),
                incarnation: inc,
                fenced: false,
            }));
        }
        img.apply_command(0, &recs).unwrap();
        img
    }

    const D: CreationDefaults = CreationDefaults {
        num_partitions: 1,
        replication_factor: 1,
    };

    fn req(name: &str, n: Option<i32>, rf: Option<i16>) -> CreateTopic {
        CreateTopic {
            name: name.into(),
            num_partitions: n,
            replication_factor: rf,
            ..Default::default()
        }
    }

    #[test]
    fn producer_id_blocks_follow_each_other_and_never_overlap() {
        let mut img = live_image(1);
        let (recs, a) = allocate_producer_ids(&img, NodeId(1)).unwrap();
        assert_eq!(a.first, ProducerId(0));
        assert_eq!(a.size, PRODUCER_ID_BLOCK_SIZE);
        img.apply_command(1, &recs).unwrap();
        let (recs, b) = allocate_producer_ids(&img, NodeId(2)).unwrap();
        assert_eq!(b.first, a.end(), "the next grant starts past the last one");
        img.apply_command(2, &recs).unwrap();
        assert_eq!(img.next_producer_id, b.end());
        img.next_producer_id = ProducerId(i64::MAX - 10);
        assert!(
            allocate_producer_ids(&img, NodeId(1)).is_err(),
            "ids exhausted"
        );
    }

    #[test]
    fn refuses_bad_requests() {
        let img = live_image(1);
        assert!(matches!(
            create_topic(&img, &req("a b", None, None), D, 0),
            Err(ControllerError::InvalidTopic(_))
        ));
        assert!(matches!(
            create_topic(&img, &req("a", Some(0), None), D, 0),
            Err(ControllerError::InvalidPartitions(_))
        ));
        assert!(matches!(
            create_topic(&img, &req("a", None, Some(2)), D, 0),
            Err(ControllerError::InvalidReplicationFactor(_))
        ));
        let bad_cfg = CreateTopic {
            name: "c".into(),
            configs: vec![("retention.ms".into(), "x".into())],
            ..Default::default()
        };
        assert!(matches!(
            create_topic(&img, &bad_cfg, D, 0),
            Err(ControllerError::InvalidConfig(_))
        ));
    }

    #[test]
    fn six_partitions_rf3_on_three_brokers_are_even() {
        let img = live_image(3);
        let (recs, created) = create_topic(&img, &req("t", Some(6), Some(3)), D, 0).unwrap();
        assert_eq!((created.num_partitions, created.replication_factor), (6, 3));
        let leaders: Vec<NodeId> = recs
            .iter()
            .filter_map(|r| match r {
                MetadataRecord::Partition(p) => p.leader,
                _ => None,
            })
            .collect();
        for b in 1..=3 {
            assert_eq!(leaders.iter().filter(|l| **l == NodeId(b)).count(), 2);
        }
    }

    #[test]
    fn a_matching_policy_sets_replication_and_min_insync() {
        let mut img = live_image(3);
        let policy = PolicyRecord {
            version: 1,
            name: "mirror-orders".into(),
            pattern: "orders.*".into(),
            replicas: PolicyReplicas::All,
            min_insync_replicas: Some(2),
            priority: 0,
        };
        img.apply_command(1, &put_policy(&policy).unwrap()).unwrap();
        let (recs, created) = create_topic(&img, &req("orders.eu", Some(2), None), D, 0).unwrap();
        assert_eq!(created.replication_factor, 3);
        assert!(recs.iter().any(|r| matches!(r, MetadataRecord::TopicConfig(c) if c.key == "min.insync.replicas" && c.value.as_deref() == Some("2"))));
        let (_, other) = create_topic(&img, &req("audit", Some(1), None), D, 0).unwrap();
        assert_eq!(other.replication_factor, 1, "no policy matches");
        let (_, explicit) = create_topic(&img, &req("orders.us", Some(1), Some(2)), D, 0).unwrap();
        assert_eq!(
            explicit.replication_factor, 2,
            "an explicit factor wins over the policy"
        );
    }

    #[test]
    fn globs_match_like_shell_patterns() {
        assert!(glob_matches("orders.*", "orders.eu"));
        assert!(glob_matches("*", "x"));
        assert!(glob_matches("a*b*c", "axxbyyc"));
        assert!(!glob_matches("a*b*c", "axxbyy"));
        assert!(glob_matches("exact", "exact"));
        assert!(!glob_matches("exact", "exactly"));
        assert!(!glob_matches("ab*ba", "aba"));
    }
}
