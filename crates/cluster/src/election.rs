//! Leader election rules, as pure functions over the image: what the controller commits when a
//! broker is fenced or comes back.
//!
//! - A fenced broker leaves the ISR of every partition, unless it is the last member (the ISR
//!   never becomes empty: its last member is the only safe leader, `DESIGN.md` §1 rule 5).
//! - A partition it led gets a new leader from the remaining ISR, in replica order, among live
//!   brokers; with none, it has no leader (offline) unless the topic allows unclean election,
//!   which takes any live replica. Every leadership change bumps the leader epoch.
//! - An unfenced broker leads again the offline partitions whose ISR it is in.

use ferrymq_types::{LeaderEpoch, NodeId, PartitionId};

use crate::image::{MetadataImage, PartitionInfo, TopicInfo};
use crate::records::{MetadataRecord, PartitionRecord, RECORD_VERSION};
use crate::topic_config::{TopicDefaults, TopicSettings};

fn record(topic: &TopicInfo, pid: PartitionId, p: &PartitionInfo) -> MetadataRecord {
    MetadataRecord::Partition(PartitionRecord {
        version: RECORD_VERSION,
        topic_id: topic.id,
        partition: pid,
        replicas: p.replicas.clone(),
        isr: p.isr.clone(),
        leader: p.leader,
        leader_epoch: p.leader_epoch,
        partition_epoch: p.partition_epoch,
    })
}

/// The first live ISR member in replica order, other than `excluded`.
fn pick(
    p: &PartitionInfo,
    image: &MetadataImage,
    excluded: Option<NodeId>,
    unclean: bool,
) -> Option<NodeId> {
    let live = |r: &NodeId| Some(*r) != excluded && image.is_live(*r);
    p.replicas
        .iter()
        .find(|r| p.isr.contains(r) && live(r))
        .or_else(|| {
            if unclean {
                p.replicas.iter().find(|r| live(r))
            } else {
                None
            }
        })
        .copied()
}

/// Records moving every partition away from `fenced`.
pub fn on_fenced(
    image: &MetadataImage,
    fenced: NodeId,
    defaults: &TopicDefaults,
) -> Vec<MetadataRecord> {
    let mut out = Vec::new();
    for topic in image.topics.values() {
        let unclean = TopicSettings::resolve(&topic.configs, defaults).unclean_leader_election;
        for (pid, p) in &topic.partitions {
            if p.leader != Some(fenced) && !p.isr.contains(&fenced) {
                continue;
            }
            let mut next = p.clone();
            if next.isr.len() > 1 {
                next.isr.retain(|r| *r != fenced);
            }
            if p.leader == Some(fenced) {
                next.leader = pick(&next, image, Some(fenced), unclean);
                if unclean && next.leader.is_some_and(|l| !next.isr.contains(&l)) {
                    // An unclean leader's log is the truth from now on.
                    next.isr = vec![next.leader.expect("checked")];
                }
                next.leader_epoch = LeaderEpoch(p.leader_epoch.0 + 1);
            }
            if next != *p {
                next.partition_epoch += 1;
                out.push(record(topic, *pid, &next));
            }
        }
    }
    out
}

/// Records moving leadership back to each partition's preferred (first) replica where it is
/// live, in the ISR and not leading; limited to `only` partitions when given.
pub fn preferred(
    image: &MetadataImage,
    only: Option<&[(uuid::Uuid, PartitionId)]>,
) -> Vec<MetadataRecord> {
    let mut out = Vec::new();
    for topic in image.topics.values() {
        for (pid, p) in &topic.partitions {
            if only.is_some_and(|o| !o.contains(&(topic.id, *pid))) {
                continue;
            }
            let Some(&first) = p.replicas.first() else {
                continue;
            };
            if p.leader == Some(first) || !p.isr.contains(&first) || !image.is_live(first) {
                continue;
            }
            let mut next = p.clone();
            next.leader = Some(first);
            next.leader_epoch = LeaderEpoch(p.leader_epoch.0 + 1);
            next.partition_epoch += 1;
            out.push(record(topic, *pid, &next));
        }
    }
    out
}

/// Why an ISR change from a leader was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IsrRefusal {
    /// The partition or topic is gone.
    UnknownPartition,
    /// The sender is not the current leader, or its epoch is stale.
    FencedLeaderEpoch,
    /// The change was based on an older partition state.
    InvalidUpdateVersion,
    /// The proposed ISR is not a subset of the replicas or leaves out the leader.
    InvalidIsr,
    /// Once fenced brokers are left out, the proposal is the current ISR.
    NoChange,
}

/// Validates an ISR change proposed by a partition leader (AlterPartition semantics) and
/// returns the record committing it. Fenced brokers are dropped from the proposal: only live
/// replicas may join the ISR.
pub fn alter_isr(
    image: &MetadataImage,
    topic_id: uuid::Uuid,
    partition: PartitionId,
    leader: NodeId,
    leader_epoch: LeaderEpoch,
    partition_epoch: i32,
    proposed: &[NodeId],
) -> Result<MetadataRecord, IsrRefusal> {
    let topic = image
        .topic_by_id(&topic_id)
        .ok_or(IsrRefusal::UnknownPartition)?;
    let p = topic
        .partitions
        .get(&partition)
        .ok_or(IsrRefusal::UnknownPartition)?;
    if p.leader != Some(leader) || p.leader_epoch != leader_epoch {
        return Err(IsrRefusal::FencedLeaderEpoch);
    }
    if p.partition_epoch != partition_epoch {
        return Err(IsrRefusal::InvalidUpdateVersion);
    }
    if !proposed.contains(&leader) || proposed.iter().any(|r| !p.replicas.contains(r)) {
        return Err(IsrRefusal::InvalidIsr);
    }
    let mut next = p.clone();
    next.isr = p
        .replicas
        .iter()
        .filter(|r| proposed.contains(r))
        .filter(|r| **r == leader || p.isr.contains(r) || image.is_live(**r))
        .copied()
        .collect();
    if next.isr == p.isr {
        // Only fenced brokers were proposed to join: nothing to commit.
        return Err(IsrRefusal::NoChange);
    }
    next.partition_epoch += 1;
    Ok(record(topic, partition, &next))
}

/// Records giving leaderless partitions back to `returned` where it is in the ISR.
pub fn on_unfenced(image: &MetadataImage, returned: NodeId) -> Vec<MetadataRecord> {
    let mut out = Vec::new();
    for topic in image.topics.values() {
        for (pid, p) in &topic.partitions {
            if p.leader.is_none() && p.isr.contains(&returned) {
                let mut next = p.clone();
                next.leader = Some(returned);
                next.leader_epoch = LeaderEpoch(p.leader_epoch.0 + 1);
                next.partition_epoch += 1;
                out.push(record(topic, *pid, &next));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::*;
    use uuid::Uuid;

    fn image(replicas: &[i32], isr: &[i32], leader: Option<i32>, live: &[i32]) -> MetadataImage {
        let mut img = MetadataImage::new("c");
        let id = Uuid::from_u128(1);
        let mut recs = vec![MetadataRecord::Topic(TopicRecord {
            version: 1,
            name: "t".into(),
            id,
        })];
        for &b in replicas {
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
            if live.contains(&b) {
                recs.push(MetadataRecord::BrokerFence(BrokerFenceRecord {
                    version: 1,
                    id: NodeId(b),
                    incarnation: inc,
                    fenced: false,
                }));
            }
        }
        recs.push(MetadataRecord::Partition(PartitionRecord {
            version: 1,
            topic_id: id,
            partition: PartitionId(0),
            replicas: replicas.iter().map(|&r| NodeId(r)).collect(),
            isr: isr.iter().map(|&r| NodeId(r)).collect(),
            leader: leader.map(NodeId),
            leader_epoch: LeaderEpoch(3),
            partition_epoch: 7,
        }));
        img.apply_command(0, &recs).unwrap();
        img
    }

    fn only(recs: Vec<MetadataRecord>) -> PartitionRecord {
        assert_eq!(recs.len(), 1, "{recs:?}");
        match recs.into_iter().next() {
            Some(MetadataRecord::Partition(p)) => p,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn fencing_the_leader_elects_the_next_live_isr_member_and_bumps_the_epoch() {
        let img = image(&[1, 2, 3], &[1, 2, 3], Some(1), &[2, 3]);
        let p = only(on_fenced(&img, NodeId(1), &TopicDefaults::default()));
        assert_eq!(p.leader, Some(NodeId(2)));
        assert_eq!(p.isr, vec![NodeId(2), NodeId(3)]);
        assert_eq!(p.leader_epoch, LeaderEpoch(4));
        assert_eq!(p.partition_epoch, 8);
    }

    #[test]
    fn a_replica_outside_the_isr_is_never_elected_cleanly() {
        let img = image(&[1, 2, 3], &[1, 2], Some(1), &[3]);
        let p = only(on_fenced(&img, NodeId(1), &TopicDefaults::default()));
        assert_eq!(p.leader, None, "2 is fenced too and 3 is not in the ISR");
        let mut defaults = TopicDefaults::default();
        defaults
            .0
            .insert("unclean.leader.election.enable".into(), "true".into());
        let p = only(on_fenced(&img, NodeId(1), &defaults));
        assert_eq!(p.leader, Some(NodeId(3)));
        assert_eq!(p.isr, vec![NodeId(3)]);
    }

    #[test]
    fn the_last_isr_member_stays_and_leads_again_when_it_returns() {
        let img = image(&[1], &[1], Some(1), &[]);
        let p = only(on_fenced(&img, NodeId(1), &TopicDefaults::default()));
        assert_eq!((p.leader, p.isr.clone()), (None, vec![NodeId(1)]));
        let mut img2 = img.clone();
        img2.apply_command(1, &[MetadataRecord::Partition(p)])
            .unwrap();
        let back = only(on_unfenced(&img2, NodeId(1)));
        assert_eq!(back.leader, Some(NodeId(1)));
        assert_eq!(back.leader_epoch, LeaderEpoch(5));
    }

    #[test]
    fn preferred_leader_returns_when_live_and_in_sync() {
        let img = image(&[1, 2, 3], &[1, 2, 3], Some(2), &[1, 2, 3]);
        let p = only(preferred(&img, None));
        assert_eq!(p.leader, Some(NodeId(1)));
        assert_eq!(p.leader_epoch, LeaderEpoch(4));
        let out_of_isr = image(&[1, 2, 3], &[2, 3], Some(2), &[1, 2, 3]);
        assert!(preferred(&out_of_isr, None).is_empty(), "not caught up yet");
    }

    #[test]
    fn isr_changes_are_checked_against_epochs_and_liveness() {
        let img = image(&[1, 2, 3], &[1, 2], Some(1), &[1, 2]);
        let id = Uuid::from_u128(1);
        let ok = alter_isr(
            &img,
            id,
            PartitionId(0),
            NodeId(1),
            LeaderEpoch(3),
            7,
            &[NodeId(1)],
        );
        assert!(
            matches!(ok, Ok(MetadataRecord::Partition(ref p)) if p.isr == vec![NodeId(1)] && p.partition_epoch == 8)
        );
        assert_eq!(
            alter_isr(
                &img,
                id,
                PartitionId(0),
                NodeId(2),
                LeaderEpoch(3),
                7,
                &[NodeId(2)]
            )
            .unwrap_err(),
            IsrRefusal::FencedLeaderEpoch
        );
        assert_eq!(
            alter_isr(
                &img,
                id,
                PartitionId(0),
                NodeId(1),
                LeaderEpoch(2),
                7,
                &[NodeId(1)]
            )
            .unwrap_err(),
            IsrRefusal::FencedLeaderEpoch
        );
        assert_eq!(
            alter_isr(
                &img,
                id,
                PartitionId(0),
                NodeId(1),
                LeaderEpoch(3),
                6,
                &[NodeId(1)]
            )
            .unwrap_err(),
            IsrRefusal::InvalidUpdateVersion
        );
        assert_eq!(
            alter_isr(
                &img,
                id,
                PartitionId(0),
                NodeId(1),
                LeaderEpoch(3),
                7,
                &[NodeId(2)]
            )
            .unwrap_err(),
            IsrRefusal::InvalidIsr
        );
        // Broker 3 is fenced: it cannot join, and a proposal that only adds it changes nothing.
        let only_fenced = alter_isr(
            &img,
            id,
            PartitionId(0),
            NodeId(1),
            LeaderEpoch(3),
            7,
            &[NodeId(1), NodeId(2), NodeId(3)],
        );
        assert_eq!(only_fenced.unwrap_err(), IsrRefusal::NoChange);
        let shrink_and_fenced = alter_isr(
            &img,
            id,
            PartitionId(0),
            NodeId(1),
            LeaderEpoch(3),
            7,
            &[NodeId(1), NodeId(3)],
        );
        let Ok(MetadataRecord::Partition(p)) = shrink_and_fenced else {
            panic!("{shrink_and_fenced:?}")
        };
        assert_eq!(p.isr, vec![NodeId(1)]);
    }

    #[test]
    fn a_follower_fenced_only_leaves_the_isr() {
        let img = image(&[1, 2, 3], &[1, 2, 3], Some(1), &[1, 3]);
        let p = only(on_fenced(&img, NodeId(2), &TopicDefaults::default()));
        assert_eq!(p.leader, Some(NodeId(1)));
        assert_eq!(
            p.leader_epoch,
            LeaderEpoch(3),
            "no leadership change, no epoch bump"
        );
        assert_eq!(p.isr, vec![NodeId(1), NodeId(3)]);
    }
}
