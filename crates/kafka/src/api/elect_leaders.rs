//! ElectLeaders (43): preferred leader election on demand — leadership of the named partitions
//! (all when null) moves back to their first replica where it is live and in sync.

use std::sync::Arc;

use ferrymq_cluster::ControllerError;
use ferrymq_types::PartitionId;
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse, RequestHeader};
use kafka_protocol::ResponseError;

use super::{str_bytes, topic_name};
use crate::context::ServerContext;
use crate::errors;

const PREFERRED: i8 = 0;

/// Answers an ElectLeaders request.
pub async fn handle(
    ctx: &Arc<ServerContext>,
    header: &RequestHeader,
    req: ElectLeadersRequest,
) -> ElectLeadersResponse {
    let image = ctx.broker.metadata();
    let wanted: Vec<(String, i32)> = match &req.topic_partitions {
        Some(tps) => tps
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(move |p| (t.topic.0.to_string(), *p))
            })
            .collect(),
        None => image
            .topics
            .values()
            .flat_map(|t| t.partitions.keys().map(move |p| (t.name.clone(), p.0)))
            .collect(),
    };
    if header.request_api_version >= 1 && req.election_type != PREFERRED {
        return results(&wanted, |_, _| {
            (
                ResponseError::InvalidRequest.code(),
                Some(
                    "only preferred elections are served; unclean election is a topic config"
                        .into(),
                ),
            )
        });
    }
    let before = image;
    let asked: Vec<(String, PartitionId)> = wanted
        .iter()
        .map(|(t, p)| (t.clone(), PartitionId(*p)))
        .collect();
    let outcome = ctx.broker.controller().elect_preferred(Some(asked)).await;
    if let Err(e) = &outcome {
        if !matches!(e, ControllerError::ElectionNotNeeded(_)) {
            let code = errors::controller(e).code();
            return results(&wanted, |_, _| (code, Some(e.to_string())));
        }
    }
    ctx.broker.sync_metadata();
    let after = ctx.broker.metadata();
    results(&wanted, |t, p| {
        let info = |img: &ferrymq_cluster::MetadataImage| {
            img.topic(t)
                .and_then(|t| t.partitions.get(&PartitionId(p)).cloned())
        };
        let (Some(was), Some(now)) = (info(&before), info(&after)) else {
            return (ResponseError::UnknownTopicOrPartition.code(), None);
        };
        let preferred = now.replicas.first().copied();
        if was.leader == preferred {
            (ResponseError::ElectionNotNeeded.code(), None)
        } else if now.leader == preferred {
            (0, None)
        } else {
            (
                ResponseError::PreferredLeaderNotAvailable.code(),
                Some("the preferred replica is not live and in sync".into()),
            )
        }
    })
}

fn results(
    wanted: &[(String, i32)],
    f: impl Fn(&str, i32) -> (i16, Option<String>),
) -> ElectLeadersResponse {
    let mut topics: Vec<ReplicaElectionResult> = Vec::new();
    for (t, p) in wanted {
        let (code, msg) = f(t, *p);
        let r = PartitionResult::default()
            .with_partition_id(*p)
            .with_error_code(code)
            .with_error_message(msg.map(str_bytes));
        match topics.iter_mut().find(|x| x.topic.0.as_str() == t) {
            Some(x) => x.partition_result.push(r),
            None => topics.push(
                ReplicaElectionResult::default()
                    .with_topic(topic_name(t))
                    .with_partition_result(vec![r]),
            ),
        }
    }
    ElectLeadersResponse::default().with_replica_election_results(topics)
}
