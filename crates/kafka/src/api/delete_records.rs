//! DeleteRecords (21): move partitions' log start offsets forward (offset -1 means the high
//! watermark); whole segments below the new start are deleted.

use std::sync::Arc;

use ferrymq_types::Offset;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse, RequestHeader};

use super::tp;
use crate::context::ServerContext;
use crate::errors;

/// Answers a DeleteRecords request.
pub async fn handle(
    ctx: &Arc<ServerContext>,
    _header: &RequestHeader,
    req: DeleteRecordsRequest,
) -> DeleteRecordsResponse {
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let parts = t
                .partitions
                .iter()
                .map(|p| {
                    let base = DeleteRecordsPartitionResult::default()
                        .with_partition_index(p.partition_index);
                    match ctx
                        .broker
                        .delete_records(&tp(&t.name, p.partition_index), Offset(p.offset))
                    {
                        Ok(low) => base.with_low_watermark(low.0),
                        Err(e) => base
                            .with_error_code(errors::broker(&e).code())
                            .with_low_watermark(-1),
                    }
                })
                .collect();
            DeleteRecordsTopicResult::default()
                .with_name(t.name)
                .with_partitions(parts)
        })
        .collect();
    DeleteRecordsResponse::default().with_topics(topics)
}
