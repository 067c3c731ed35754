//! ListOffsets (2): earliest (-2), latest (-1, the high watermark), max timestamp (-3),
//! earliest local (-4, the same as earliest without tiered storage) and by timestamp.

use std::sync::Arc;

use ferrymq_broker::OffsetSpec;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse, RequestHeader};
use kafka_protocol::ResponseError;

use super::{epoch, tp};
use crate::context::ServerContext;
use crate::errors;

/// Answers a ListOffsets request.
pub async fn handle(
    ctx: &Arc<ServerContext>,
    header: &RequestHeader,
    req: ListOffsetsRequest,
) -> ListOffsetsResponse {
    // The leader epoch field exists from v4 on.
    let with_epoch = header.request_api_version >= 4;
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let parts = t
                .partitions
                .iter()
                .map(|p| {
                    let spec = match p.timestamp {
                        -2 | -4 => Some(OffsetSpec::Earliest),
                        -1 => Some(OffsetSpec::Latest),
                        -3 => Some(OffsetSpec::MaxTimestamp),
                        ts if ts >= 0 => Some(OffsetSpec::Timestamp(ts)),
                        _ => None,
                    };
                    let base = ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index);
                    let Some(spec) = spec else {
                        return base
                            .with_error_code(ResponseError::InvalidRequest.code())
                            .with_offset(-1)
                            .with_timestamp(-1);
                    };
                    match ctx.broker.list_offset(
                        &tp(&t.name, p.partition_index),
                        spec,
                        epoch(p.current_leader_epoch),
                    ) {
                        Ok(l) => base
                            .with_offset(l.offset.0)
                            .with_timestamp(l.timestamp)
                            .with_leader_epoch(if with_epoch { l.leader_epoch.0 } else { -1 }),
                        Err(e) => base
                            .with_error_code(errors::broker(&e).code())
                            .with_offset(-1)
                            .with_timestamp(-1),
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(t.name)
                .with_partitions(parts)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}
