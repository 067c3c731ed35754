//! Fetch from a follower (replica id ≥ 0): reads go to the log end, the fetch offsets are the
//! follower's acknowledgements (they move the high watermark), a follower whose log diverges
//! gets `DivergingEpoch` (v12+) instead of data, and the wait is for new data, not for the HW.

use std::sync::Arc;
use std::time::Duration;

use ferrymq_broker::fetch::{ReplicaFetchParams, ReplicaFetchPartitionParams};
use ferrymq_broker::replication::replica::ReplicaRead;
use ferrymq_broker::BrokerError;
use ferrymq_types::{LeaderEpoch, NodeId, Offset};
use kafka_protocol::messages::fetch_response::{
    EpochEndOffset, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::{FetchRequest, FetchResponse, TopicName};
use kafka_protocol::ResponseError;

use super::fetch::{error_partition, resolve, FETCH_RESPONSE_BYTES_MAX};
use super::{epoch, topic_name, tp};
use crate::context::ServerContext;
use crate::errors;

/// Answers a follower's Fetch.
pub async fn handle(
    ctx: &Arc<ServerContext>,
    version: i16,
    req: &FetchRequest,
    replica: NodeId,
) -> FetchResponse {
    let topics = resolve(&ctx.broker.metadata(), version, req);
    let mut partitions = Vec::new();
    for t in &topics {
        let Some(name) = &t.name else { continue };
        for p in &t.partitions {
            partitions.push(ReplicaFetchPartitionParams {
                tp: tp(&topic_name(name), p.partition),
                fetch_offset: Offset(p.fetch_offset),
                last_fetched_epoch: (version >= 12 && p.last_fetched_epoch >= 0)
                    .then_some(LeaderEpoch(p.last_fetched_epoch)),
                current_leader_epoch: epoch(p.current_leader_epoch),
                partition_max_bytes: p.partition_max_bytes.max(0) as usize,
            });
        }
    }
    let params = ReplicaFetchParams {
        max_wait: Duration::from_millis(req.max_wait_ms.max(0) as u64),
        max_bytes: (req.max_bytes.max(0) as usize).min(FETCH_RESPONSE_BYTES_MAX),
        partitions,
    };
    let mut results = ctx.broker.replica_fetch(replica, &params).await.into_iter();
    let mut responses = Vec::new();
    for t in topics {
        let parts = t
            .partitions
            .iter()
            .map(|p| match &t.name {
                None => error_partition(p.partition, ResponseError::UnknownTopicId),
                Some(_) => match results.next().expect("one result per resolved partition") {
                    Ok(ReplicaRead::Data(out)) => PartitionData::default()
                        .with_partition_index(p.partition)
                        .with_high_watermark(out.high_watermark.0)
                        .with_last_stable_offset(out.high_watermark.0)
                        .with_log_start_offset(out.log_start_offset.0)
                        .with_aborted_transactions(Some(Vec::new()))
                        .with_records(Some(out.records.unwrap_or_default())),
                    Ok(ReplicaRead::Diverging {
                        epoch,
                        end_offset,
                        high_watermark,
                        log_start_offset,
                    }) => PartitionData::default()
                        .with_partition_index(p.partition)
                        .with_high_watermark(high_watermark.0)
                        .with_last_stable_offset(high_watermark.0)
                        .with_log_start_offset(log_start_offset.0)
                        .with_diverging_epoch(
                            EpochEndOffset::default()
                                .with_epoch(epoch.0)
                                .with_end_offset(end_offset.0),
                        )
                        .with_aborted_transactions(Some(Vec::new()))
                        .with_records(Some(bytes::Bytes::new())),
                    // A follower out of the leader's range learns where the leader's log starts
                    // and ends, to restart from the start or cut back to the end (Kafka's
                    // followers ask with ListOffsets; ours get it in the answer).
                    Err(BrokerError::OffsetOutOfRange {
                        log_start, log_end, ..
                    }) => error_partition(p.partition, ResponseError::OffsetOutOfRange)
                        .with_log_start_offset(log_start.0)
                        .with_high_watermark(log_end.0),
                    Err(e) => error_partition(p.partition, errors::broker(&e)),
                },
            })
            .collect();
        let name_on_wire = if version >= 13 {
            TopicName::default()
        } else {
            t.wire_name
        };
        responses.push(
            FetchableTopicResponse::default()
                .with_topic(name_on_wire)
                .with_topic_id(t.id)
                .with_partitions(parts),
        );
    }
    FetchResponse::default()
        .with_session_id(0)
        .with_responses(responses)
}
