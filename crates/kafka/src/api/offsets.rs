//! OffsetCommit (8), OffsetFetch (9, one group before v8, several from v8) and OffsetDelete
//! (47): committed offsets, kept by the group coordinator in `__consumer_offsets`.

use std::sync::Arc;

use bytes::{Buf, Bytes};
use ferrymq_broker::group::coordinator::{CommitRequest, OffsetToCommit};
use ferrymq_broker::group::{Generation, GroupError};
use ferrymq_types::{Offset, TopicPartition};
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, StrBytes};

use super::{epoch, str_bytes, topic_name, tp};
use crate::context::ServerContext;
use crate::errors;

/// OffsetCommit: one error code per partition.
pub async fn offset_commit(
    ctx: &Arc<ServerContext>,
    _header: &RequestHeader,
    req: OffsetCommitRequest,
) -> OffsetCommitResponse {
    let names: Vec<(TopicName, Vec<i32>)> = req
        .topics
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                t.partitions.iter().map(|p| p.partition_index).collect(),
            )
        })
        .collect();
    let commit = CommitRequest {
        member_id: req.member_id.to_string(),
        instance_id: req.group_instance_id.as_ref().map(|s| s.to_string()),
        generation: Generation(req.generation_id_or_member_epoch),
        offsets: req
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(|p| OffsetToCommit {
                    tp: tp(&t.name, p.partition_index),
                    offset: Offset(p.committed_offset),
                    leader_epoch: epoch(p.committed_leader_epoch),
                    metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                })
            })
            .collect(),
    };
    let outcome = ctx
        .broker
        .groups()
        .commit_offsets(&req.group_id, commit)
        .await;
    let code_of = |tp: &TopicPartition| -> i16 {
        match &outcome {
            Err(e) => errors::group(e).code(),
            Ok(results) => results.iter().find(|(t, _)| t == tp).map_or(0, |(_, r)| {
                errors::code(r.as_ref().err().map(errors::group))
            }),
        }
    };
    let topics = names
        .into_iter()
        .map(|(name, parts)| {
            let partitions = parts
                .into_iter()
                .map(|p| {
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p)
                        .with_error_code(code_of(&tp(&name, p)))
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(name)
                .with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

/// What one group's offset fetch found: committed offsets in request order, or an error.
type Fetched = Result<Vec<(TopicPartition, Option<(i64, i32, String)>)>, GroupError>;

async fn fetch_group(
    ctx: &Arc<ServerContext>,
    group: &str,
    wanted: Option<Vec<TopicPartition>>,
) -> Fetched {
    let found = ctx.broker.groups().fetch_offsets(group, wanted).await?;
    Ok(found
        .into_iter()
        .map(|(tp, c)| {
            let c = c.map(|c| (c.offset.0, c.leader_epoch.map_or(-1, |e| e.0), c.metadata));
            (tp, c)
        })
        .collect())
}

/// Groups `(tp, value)` pairs by topic, keeping the order topics first appear in.
fn by_topic<T>(items: Vec<(TopicPartition, T)>) -> Vec<(String, Vec<(i32, T)>)> {
    let mut out: Vec<(String, Vec<(i32, T)>)> = Vec::new();
    for (tp, v) in items {
        match out.iter_mut().find(|(t, _)| *t == tp.topic) {
            Some((_, parts)) => parts.push((tp.partition.0, v)),
            None => out.push((tp.topic, vec![(tp.partition.0, v)])),
        }
    }
    out
}

/// OffsetFetch.
pub async fn offset_fetch(
    ctx: &Arc<ServerContext>,
    header: &RequestHeader,
    req: OffsetFetchRequest,
) -> OffsetFetchResponse {
    let version = header.request_api_version;
    if version >= 8 {
        let mut groups = Vec::with_capacity(req.groups.len());
        for g in req.groups {
            let wanted = g.topics.as_ref().map(|ts| {
                ts.iter()
                    .flat_map(|t| t.partition_indexes.iter().map(|&p| tp(&t.name, p)))
                    .collect()
            });
            let fetched = fetch_group(ctx, &g.group_id, wanted).await;
            groups.push(group_response_v8(g.group_id, fetched));
        }
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let wanted = req.topics.as_ref().map(|ts| {
        ts.iter()
            .flat_map(|t| t.partition_indexes.iter().map(|&p| tp(&t.name, p)))
            .collect::<Vec<_>>()
    });
    let fetched = fetch_group(ctx, &req.group_id, wanted.clone()).await;
    let (items, group_error) = match fetched {
        Ok(items) => (items, None),
        // Before v2 a group error can only be told per partition.
        Err(e) => (
            wanted
                .unwrap_or_default()
                .into_iter()
                .map(|tp| (tp, None))
                .collect(),
            Some(errors::group(&e)),
        ),
    };
    let partition_code = if version < 2 {
        errors::code(group_error)
    } else {
        0
    };
    let topics = by_topic(items)
        .into_iter()
        .map(|(topic, parts)| {
            let partitions = parts
                .into_iter()
                .map(|(p, c)| {
                    let (offset, leader_epoch, metadata) = c.unwrap_or((-1, -1, String::new()));
                    OffsetFetchResponsePartition::default()
                        .with_partition_index(p)
                        .with_committed_offset(offset)
                        .with_committed_leader_epoch(leader_epoch)
                        .with_metadata(Some(str_bytes(metadata)))
                        .with_error_code(partition_code)
                })
                .collect();
            OffsetFetchResponseTopic::default()
                .with_name(topic_name(&topic))
                .with_partitions(partitions)
        })
        .collect();
    OffsetFetchResponse::default()
        .with_topics(topics)
        .with_error_code(if version >= 2 {
            errors::code(group_error)
        } else {
            0
        })
}

fn group_response_v8(group_id: GroupId, fetched: Fetched) -> OffsetFetchResponseGroup {
    let base = OffsetFetchResponseGroup::default().with_group_id(group_id);
    let items = match fetched {
        Ok(items) => items,
        Err(e) => return base.with_error_code(errors::group(&e).code()),
    };
    let topics = by_topic(items)
        .into_iter()
        .map(|(topic, parts)| {
            let partitions = parts
                .into_iter()
                .map(|(p, c)| {
                    let (offset, leader_epoch, metadata) = c.unwrap_or((-1, -1, String::new()));
                    OffsetFetchResponsePartitions::default()
                        .with_partition_index(p)
                        .with_committed_offset(offset)
                        .with_committed_leader_epoch(leader_epoch)
                        .with_metadata(Some(str_bytes(metadata)))
                })
                .collect();
            OffsetFetchResponseTopics::default()
                .with_name(topic_name(&topic))
                .with_partitions(partitions)
        })
        .collect();
    base.with_topics(topics)
}

/// The topics a member's consumer-protocol subscription names (empty if it is not one).
fn subscribed_topics(metadata: &Bytes) -> Vec<String> {
    let mut buf = metadata.clone();
    if buf.len() < 2 {
        return Vec::new();
    }
    let version = buf.get_i16();
    // Subscriptions of versions newer than the library knows still start with the same fields.
    let version = version.clamp(0, 3);
    ConsumerProtocolSubscription::decode(&mut buf, version)
        .map(|s| s.topics.iter().map(|t: &StrBytes| t.to_string()).collect())
        .unwrap_or_default()
}

/// OffsetDelete: forget a group's offsets of topics it no longer consumes.
pub async fn offset_delete(
    ctx: &Arc<ServerContext>,
    _header: &RequestHeader,
    req: OffsetDeleteRequest,
) -> OffsetDeleteResponse {
    let wanted: Vec<TopicPartition> = req
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| tp(&t.name, p.partition_index)))
        .collect();
    let subscribed = |metadata: &[Bytes], topic: &str| {
        metadata
            .iter()
            .any(|m| subscribed_topics(m).iter().any(|t| t == topic))
    };
    match ctx
        .broker
        .groups()
        .delete_offsets(&req.group_id, wanted, subscribed)
        .await
    {
        Err(e) => OffsetDeleteResponse::default().with_error_code(errors::group(&e).code()),
        Ok(results) => {
            let topics = by_topic(results)
                .into_iter()
                .map(|(topic, parts)| {
                    OffsetDeleteResponseTopic::default()
                        .with_name(topic_name(&topic))
                        .with_partitions(
                            parts
                                .into_iter()
                                .map(|(p, r)| {
                                    OffsetDeleteResponsePartition::default()
                                        .with_partition_index(p)
                                        .with_error_code(errors::code(
                                            r.err().map(|e| errors::group(&e)),
                                        ))
                                })
                                .collect(),
                        )
                })
                .collect();
            OffsetDeleteResponse::default().with_topics(topics)
        }
    }
}
