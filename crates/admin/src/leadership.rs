//! Leadership actions of the admin API, on the controller: preferred leader election (the same
//! operation as Kafka's ElectLeaders), reporting per partition what happened.

use std::sync::Arc;

use ferrymq_cluster::{Controller, ControllerError, MetadataImage, PartitionInfo};
use ferrymq_types::PartitionId;

use crate::features::{BoxFuture, LeadershipActions};
use crate::views::{ElectionRequest, ElectionResult};

/// `LeadershipActions` through this node's controller (forwarded to the active one).
#[derive(Debug)]
pub struct ControllerLeadership(pub Arc<Controller>);

fn partition(image: &MetadataImage, topic: &str, p: i32) -> Option<PartitionInfo> {
    image.topic(topic)?.partitions.get(&PartitionId(p)).cloned()
}

/// The partitions a request names, every partition when it names none.
fn wanted(image: &MetadataImage, request: &ElectionRequest) -> Vec<(String, i32)> {
    let all_of = |t: &str| -> Vec<(String, i32)> {
        image
            .topic(t)
            .map(|info| {
                info.partitions
                    .keys()
                    .map(|p| (t.to_string(), p.0))
                    .collect()
            })
            .unwrap_or_else(|| vec![(t.to_string(), -1)])
    };
    match &request.topics {
        None => image.topics.keys().flat_map(|t| all_of(t)).collect(),
        Some(topics) => topics
            .iter()
            .flat_map(|t| match &t.partitions {
                Some(ps) => ps.iter().map(|p| (t.topic.clone(), *p)).collect(),
                None => all_of(&t.topic),
            })
            .collect(),
    }
}

impl LeadershipActions for ControllerLeadership {
    fn elect_preferred(
        &self,
        request: ElectionRequest,
    ) -> BoxFuture<'_, Result<Vec<ElectionResult>, String>> {
        Box::pin(async move {
            let before = self.0.image();
            let wanted = wanted(&before, &request);
            let known: Vec<(String, PartitionId)> = wanted
                .iter()
                .filter(|(t, p)| partition(&before, t, *p).is_some())
                .map(|(t, p)| (t.clone(), PartitionId(*p)))
                .collect();
            if !known.is_empty() {
                match self.0.elect_preferred(Some(known)).await {
                    Ok(()) | Err(ControllerError::ElectionNotNeeded(_)) => {}
                    Err(e) => return Err(e.to_string()),
                }
            }
            let after = self.0.image();
            Ok(wanted
                .into_iter()
                .map(|(topic, p)| {
                    let (outcome, leader) =
                        match (partition(&before, &topic, p), partition(&after, &topic, p)) {
                            (Some(was), Some(now)) => {
                                let preferred = now.replicas.first().copied();
                                let outcome = if was.leader == preferred {
                                    "already_preferred"
                                } else if now.leader == preferred {
                                    "elected"
                                } else {
                                    "preferred_not_available"
                                };
                                (outcome, now.leader.map(|l| l.0))
                            }
                            _ => ("unknown_partition", None),
                        };
                    ElectionResult {
                        topic,
                        partition: p,
                        leader,
                        outcome: outcome.to_string(),
                    }
                })
                .collect())
        })
    }
}
