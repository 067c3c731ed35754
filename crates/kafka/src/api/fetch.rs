//! Fetch (1): read from each partition up to its high watermark, long-polling until
//! `min_bytes` are available or `max_wait_ms` passes. Fetch sessions (KIP-227) are answered
//! sessionless (session id 0), so clients send full requests, which Kafka allows.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ferrymq_broker::{FetchParams, FetchPartition, ReadBound};
use ferrymq_types::Offset;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse, RequestHeader, TopicName};
use kafka_protocol::ResponseError;

use super::{epoch, topic_name, tp};
use crate::context::ServerContext;
use crate::errors;

/// Largest response a fetch may ask for (`fetch.max.bytes`, Kafka's 55 MiB default).
pub const FETCH_RESPONSE_BYTES_MAX: usize = 55 * 1024 * 1024;

/// Answers a Fetch request.
pub async fn handle(
    ctx: &Arc<ServerContext>,
    header: &RequestHeader,
    req: FetchRequest,
) -> FetchResponse {
    let version = header.request_api_version;
    if req.session_id != 0 {
        // We never hand out session ids, so an incremental fetch names a session we lack.
        return FetchResponse::default()
            .with_error_code(ResponseError::FetchSessionIdNotFound.code());
    }
    let replica = if version >= 15 {
        req.replica_state.replica_id.0
    } else {
        req.replica_id.0
    };
    if replica >= 0 {
        return super::replica_fetch::handle(ctx, version, &req, ferrymq_types::NodeId(replica))
            .await;
    }
    let topics = resolve(&ctx.broker.metadata(), version, &req);
    let mut requested = Vec::new();
    let mut partitions = Vec::new();
    for t in topics {
        if let Some(name) = &t.name {
            for p in &t.partitions {
                partitions.push(FetchPartition {
                    tp: tp(&topic_name(name), p.partition),
                    fetch_offset: Offset(p.fetch_offset),
                    partition_max_bytes: p.partition_max_bytes.max(0) as usize,
                    current_leader_epoch: epoch(p.current_leader_epoch),
                });
            }
        }
        requested.push((
            t.wire_name,
            t.id,
            t.name,
            t.partitions.iter().map(|p| p.partition).collect::<Vec<_>>(),
        ));
    }
    let params = FetchParams {
        max_wait: Duration::from_millis(req.max_wait_ms.max(0) as u64),
        min_bytes: req.min_bytes.max(0) as usize,
        max_bytes: (req.max_bytes.max(0) as usize).min(FETCH_RESPONSE_BYTES_MAX),
        bound: ReadBound::HighWatermark,
        partitions,
    };
    let mut results = ctx.broker.fetch(&params).await.into_iter();
    let mut responses = Vec::new();
    for (wire_name, id, name, indexes) in requested {
        let mut parts = BTreeMap::new();
        for index in indexes {
            let data = match &name {
                None => error_partition(index, ResponseError::UnknownTopicId),
                Some(_) => match results.next().expect("one result per resolved partition") {
                    Ok(out) => PartitionData::default()
                        .with_partition_index(index)
                        .with_high_watermark(out.high_watermark.0)
                        .with_last_stable_offset(out.high_watermark.0)
                        .with_log_start_offset(out.log_start_offset.0)
                        .with_aborted_transactions(Some(Vec::new()))
                        // An empty record set, never null: older librdkafka rejects size -1.
                        .with_records(Some(out.records.unwrap_or_default())),
                    Err(e) => error_partition(index, errors::broker(&e)),
                },
            };
            parts.insert(parts.len(), data);
        }
        let name_on_wire = if version >= 13 {
            TopicName::default()
        } else {
            wire_name
        };
        responses.push(
            FetchableTopicResponse::default()
                .with_topic(name_on_wire)
                .with_topic_id(id)
                .with_partitions(parts.into_values().collect()),
        );
    }
    with_leader_hints(
        ctx,
        FetchResponse::default()
            .with_session_id(0)
            .with_responses(responses),
    )
}

/// KIP-951: partitions answered NOT_LEADER_OR_FOLLOWER or FENCED_LEADER_EPOCH carry the current
/// leader (v12+) and its endpoint (v16+), so consumers move to it without a metadata refresh.
fn with_leader_hints(ctx: &Arc<ServerContext>, mut resp: FetchResponse) -> FetchResponse {
    use kafka_protocol::messages::fetch_response::{LeaderIdAndEpoch, NodeEndpoint};
    let image = ctx.broker.metadata();
    let me = ctx.broker.config().node_id;
    let mut endpoints: Vec<NodeEndpoint> = Vec::new();
    for t in &mut resp.responses {
        // Every fetch answer passes here: nothing is looked up unless a partition moved.
        if !t
            .partitions
            .iter()
            .any(|p| super::leader_moved(p.error_code))
        {
            continue;
        }
        let topic = image
            .topic_by_id(&t.topic_id)
            .or_else(|| image.topic(t.topic.0.as_str()));
        let Some(topic) = topic else { continue };
        for p in &mut t.partitions {
            if !super::leader_moved(p.error_code) {
                continue;
            }
            let Some(info) = topic
                .partitions
                .get(&ferrymq_types::PartitionId(p.partition_index))
            else {
                continue;
            };
            let Some(leader) = super::leader_hint(&image, info, me) else {
                continue;
            };
            p.current_leader = LeaderIdAndEpoch::default()
                .with_leader_id(kafka_protocol::messages::BrokerId(leader.id.0))
                .with_leader_epoch(info.leader_epoch.0);
            if !endpoints.iter().any(|e| e.node_id.0 == leader.id.0) {
                endpoints.push(
                    NodeEndpoint::default()
                        .with_node_id(kafka_protocol::messages::BrokerId(leader.id.0))
                        .with_host(super::str_bytes(leader.host.clone()))
                        .with_port(leader.port as i32)
                        .with_rack(leader.rack.clone().map(super::str_bytes)),
                );
            }
        }
    }
    resp.node_endpoints = endpoints;
    resp
}

/// A requested topic with its name resolved (topic ids from v13 on).
pub(super) struct ResolvedTopic {
    /// The name as it appeared on the wire (empty from v13).
    pub wire_name: TopicName,
    /// The id as it appeared on the wire (nil before v13).
    pub id: uuid::Uuid,
    /// The topic's name, `None` for an unknown id.
    pub name: Option<String>,
    /// The requested partitions.
    pub partitions: Vec<kafka_protocol::messages::fetch_request::FetchPartition>,
}

/// Resolves the topics of a fetch.
pub(super) fn resolve(
    image: &ferrymq_cluster::MetadataImage,
    version: i16,
    req: &FetchRequest,
) -> Vec<ResolvedTopic> {
    req.topics
        .iter()
        .map(|t| ResolvedTopic {
            wire_name: t.topic.clone(),
            id: t.topic_id,
            name: if version >= 13 {
                image.topic_names.get(&t.topic_id).cloned()
            } else {
                Some(t.topic.0.to_string())
            },
            partitions: t.partitions.clone(),
        })
        .collect()
}

pub(super) fn error_partition(index: i32, e: ResponseError) -> PartitionData {
    PartitionData::default()
        .with_partition_index(index)
        .with_error_code(e.code())
        .with_high_watermark(-1)
        .with_last_stable_offset(-1)
        .with_log_start_offset(-1)
        .with_records(Some(bytes::Bytes::new()))
}
