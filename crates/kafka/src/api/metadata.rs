//! Metadata (3): brokers, controller and, per topic, each partition's leader, replicas and
//! ISR. An unknown topic is created here when the client allows it and
//! `auto.create.topics.enable` is on, as Kafka does.

use std::sync::Arc;

use ferrymq_broker::group::OFFSETS_TOPIC;
use ferrymq_cluster::{ControllerError, CreateTopic, MetadataImage, TopicInfo};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, RequestHeader};
use kafka_protocol::ResponseError;

use super::{str_bytes, topic_name};
use crate::context::ServerContext;
use crate::errors;

/// Answers a Metadata request.
pub async fn handle(
    ctx: &Arc<ServerContext>,
    header: &RequestHeader,
    req: MetadataRequest,
) -> MetadataResponse {
    let version = header.request_api_version;
    // v0 has no auto-create flag: it always means "create".
    let allow_auto_create =
        (version < 4 || req.allow_auto_topic_creation) && ctx.config.auto_create_topics;
    let mut image = ctx.broker.metadata();
    // Leaders named as none (LEADER_NOT_AVAILABLE), so clients ask again soon instead of
    // coming back to them: this broker itself when it is cut off from the controller and its
    // followers (it has been fenced), and leaders whose process looks gone from here (their
    // connection broke or was refused; `gone_leaders.rs`) until the controller moves their
    // partitions.
    let me = ctx.broker.config().node_id;
    let gone = ctx.broker.gone_leaders(&image);
    let cut_off = ctx.broker.is_cut_off();
    let listed_me = lists_itself(&image, me, cut_off, &gone);
    let mut unusable = gone;
    if cut_off {
        unusable.push(me);
    }
    let mut topics = Vec::new();
    match &req.topics {
        // `None` (and an empty list before v1) means every topic.
        None => topics.extend(
            image
                .topics
                .values()
                .map(|t| topic_entry(t, &image, &unusable)),
        ),
        Some(list) if list.is_empty() && version == 0 => topics.extend(
            image
                .topics
                .values()
                .map(|t| topic_entry(t, &image, &unusable)),
        ),
        Some(list) => {
            for wanted in list {
                let by_name = wanted.name.as_ref().map(|n| n.0.to_string());
                let found = match &by_name {
                    Some(name) => image.topic(name).cloned(),
                    None => image.topic_by_id(&wanted.topic_id).cloned(),
                };
                if let Some(t) = found {
                    topics.push(topic_entry(&t, &image, &unusable));
                    continue;
                }
                let Some(name) = by_name else {
                    topics.push(error_topic(
                        None,
                        wanted.topic_id,
                        ResponseError::UnknownTopicId,
                    ));
                    continue;
                };
                if !allow_auto_create {
                    topics.push(error_topic(
                        Some(&name),
                        wanted.topic_id,
                        ResponseError::UnknownTopicOrPartition,
                    ));
                    continue;
                }
                if name == OFFSETS_TOPIC {
                    // The internal topic is created with its own settings (compacted), never
                    // as an ordinary auto-created topic.
                    let e = match ctx.broker.groups().ensure_offsets_topic().await {
                        Ok(()) => ResponseError::LeaderNotAvailable,
                        Err(e) => errors::group(&e),
                    };
                    topics.push(error_topic(Some(&name), wanted.topic_id, e));
                    continue;
                }
                match auto_create(ctx, &name).await {
                    Ok(()) => {
                        image = ctx.broker.metadata();
                        match image.topic(&name) {
                            Some(t) => topics.push(topic_entry(t, &image, &unusable)),
                            None => topics.push(error_topic(
                                Some(&name),
                                wanted.topic_id,
                                ResponseError::LeaderNotAvailable,
                            )),
                        }
                    }
                    Err(e) => topics.push(error_topic(
                        Some(&name),
                        wanted.topic_id,
                        errors::controller(&e),
                    )),
                }
            }
        }
    }
    // Live brokers, and this one unless it is cut off (below). Fenced brokers are left out as
    // KRaft does. Listing them longer was measured with the chaos harness: it spares librdkafka
    // a race (dropping a broker in the same answer that moves its partitions parks them until
    // the next one-second topic scan), but librdkafka then keeps that broker's reconnect
    // backoff, which grows while the broker is down, and a killed broker that restarted and
    // led again within ten seconds was reached seconds late.
    let brokers: Vec<MetadataResponseBroker> = image
        .brokers
        .values()
        .filter(|b| if b.id == me { listed_me } else { !b.fenced })
        .map(|b| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(b.id.0))
                .with_host(str_bytes(b.host.clone()))
                .with_port(b.port as i32)
                .with_rack(b.rack.clone().map(str_bytes))
        })
        .collect();
    let mut resp = MetadataResponse::default()
        .with_cluster_id(Some(str_bytes(image.cluster_id.clone())))
        // As KRaft brokers do: clients send admin requests to "the controller", and every
        // broker forwards them to the active one, so this (live) broker is named, or, when it
        // leaves itself out, the first broker it lists.
        .with_controller_id(if listed_me {
            BrokerId(me.0)
        } else {
            brokers.first().map_or(BrokerId(-1), |b| b.node_id)
        })
        .with_brokers(brokers)
        .with_topics(topics);
    // No authorizer: every operation is allowed. Answer the bitsets when asked (v8+), since
    // clients decode the "not requested" value as an invalid operation.
    if version >= 8 && req.include_topic_authorized_operations {
        for t in &mut resp.topics {
            t.topic_authorized_operations = TOPIC_OPERATIONS;
        }
    }
    if (8..=10).contains(&version) && req.include_cluster_authorized_operations {
        resp.cluster_authorized_operations = CLUSTER_OPERATIONS;
    }
    resp
}

/// Kafka's ACL operations as bits: READ 3, WRITE 4, CREATE 5, DELETE 6, ALTER 7, DESCRIBE 8,
/// CLUSTER_ACTION 9, DESCRIBE_CONFIGS 10, ALTER_CONFIGS 11, IDEMPOTENT_WRITE 12.
const fn bits(ops: &[u32]) -> i32 {
    let mut out = 0i32;
    let mut i = 0;
    while i < ops.len() {
        out |= 1 << ops[i];
        i += 1;
    }
    out
}
/// Operations on a topic.
const TOPIC_OPERATIONS: i32 = bits(&[3, 4, 5, 6, 7, 8, 10, 11]);
/// Operations on the cluster.
const CLUSTER_OPERATIONS: i32 = bits(&[5, 7, 8, 9, 10, 11, 12]);

async fn auto_create(ctx: &Arc<ServerContext>, name: &str) -> Result<(), ControllerError> {
    let req = CreateTopic {
        name: name.to_string(),
        ..Default::default()
    };
    match ctx.broker.controller().create_topic(req, false).await {
        Ok(created) => {
            tracing::info!(
                topic = name,
                partitions = created.num_partitions,
                "auto-created topic"
            );
            ctx.broker.sync_metadata();
            Ok(())
        }
        // Another request created it meanwhile: fine.
        Err(ControllerError::TopicAlreadyExists(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

fn error_topic(name: Option<&str>, id: uuid::Uuid, e: ResponseError) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_error_code(e.code())
        .with_name(name.map(topic_name))
        .with_topic_id(id)
}

/// Whether this broker lists itself in its Metadata answers. A broker cut off from the
/// controller and its followers for a session has been fenced by now, and the rest of the
/// cluster leaves it out; it does too, so that librdkafka, which asks its busiest connection
/// for metadata, drops it and asks a broker that knows the new leaders, instead of asking it
/// again and again until the partition heals (isolate-leader windows of 4.6-5.2 s in the
/// chaos harness). It still lists itself when no other broker in its image looks reachable
/// (every other one fenced, or gone as its fetch connections say: the survivor of a majority
/// loss): a list without it would leave librdkafka no broker that answers, and it waits
/// `metadata.recovery.rebootstrap.trigger.ms` (5 minutes) before it looks again.
fn lists_itself(
    image: &MetadataImage,
    me: ferrymq_types::NodeId,
    cut_off: bool,
    gone: &[ferrymq_types::NodeId],
) -> bool {
    !cut_off
        || !image
            .brokers
            .values()
            .any(|b| b.id != me && !b.fenced && !gone.contains(&b.id))
}

fn topic_entry(
    t: &TopicInfo,
    image: &MetadataImage,
    unusable: &[ferrymq_types::NodeId],
) -> MetadataResponseTopic {
    let partitions = t
        .partitions
        .iter()
        .map(|(pid, p)| {
            let leader = p
                .leader
                .filter(|l| image.is_live(*l) && !unusable.contains(l));
            let offline: Vec<BrokerId> = p
                .replicas
                .iter()
                .filter(|r| !image.is_live(**r))
                .map(|r| BrokerId(r.0))
                .collect();
            let error = if leader.is_none() {
                ResponseError::LeaderNotAvailable.code()
            } else {
                0
            };
            MetadataResponsePartition::default()
                .with_error_code(error)
                .with_partition_index(pid.0)
                .with_leader_id(BrokerId(leader.map_or(-1, |l| l.0)))
                .with_leader_epoch(p.leader_epoch.0)
                .with_replica_nodes(p.replicas.iter().map(|r| BrokerId(r.0)).collect())
                .with_isr_nodes(p.isr.iter().map(|r| BrokerId(r.0)).collect())
                .with_offline_replicas(offline)
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(topic_name(&t.name)))
        .with_topic_id(t.id)
        .with_is_internal(t.name.starts_with("__"))
        .with_partitions(partitions)
}

#[cfg(test)]
mod tests {
    use ferrymq_cluster::image::BrokerInfo;
    use ferrymq_types::NodeId;

    use super::*;

    fn image(brokers: &[(i32, bool)]) -> MetadataImage {
        let mut img = MetadataImage::new("c");
        for &(id, fenced) in brokers {
            img.brokers.insert(
                NodeId(id),
                BrokerInfo {
                    id: NodeId(id),
                    host: "h".into(),
                    port: 9092,
                    rack: None,
                    incarnation: uuid::Uuid::from_u128(id as u128),
                    epoch: 0,
                    controller_addr: String::new(),
                    fenced,
                },
            );
        }
        img
    }

    #[test]
    fn a_cut_off_broker_leaves_itself_out_only_while_another_looks_reachable() {
        let me = NodeId(3);
        let all_live = image(&[(1, false), (2, false), (3, false)]);
        // Not cut off: listed.
        assert!(lists_itself(&all_live, me, false, &[]));
        // Cut off, the others live and not gone (an isolated leader): left out.
        assert!(!lists_itself(&all_live, me, true, &[]));
        // One other gone, one not: still left out.
        assert!(!lists_itself(&all_live, me, true, &[NodeId(1)]));
        // Every other gone (the survivor of a majority loss): listed.
        assert!(lists_itself(&all_live, me, true, &[NodeId(1), NodeId(2)]));
        // Every other fenced: listed.
        let others_fenced = image(&[(1, true), (2, true), (3, false)]);
        assert!(lists_itself(&others_fenced, me, true, &[]));
        // A single node: listed.
        assert!(lists_itself(&image(&[(3, false)]), me, true, &[]));
    }
}
