//! OffsetForLeaderEpoch (23): for a leader epoch, the end offset of that epoch in the leader's
//! log (the start of the next epoch, or the log end for the current one). Consumers use it to
//! detect log truncation; followers to find where they diverge (KIP-101).

use std::sync::Arc;

use ferrymq_types::LeaderEpoch;
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{
    OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse, RequestHeader,
};

use super::{epoch, tp};
use crate::context::ServerContext;
use crate::errors;

/// Answers an OffsetForLeaderEpoch request.
pub async fn handle(
    ctx: &Arc<ServerContext>,
    _header: &RequestHeader,
    req: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let parts = t
                .partitions
                .iter()
                .map(|p| {
                    let base = EpochEndOffset::default().with_partition(p.partition);
                    let current = epoch(p.current_leader_epoch);
                    match ctx.broker.end_offset_for_epoch(
                        &tp(&t.topic, p.partition),
                        LeaderEpoch(p.leader_epoch),
                        current,
                    ) {
                        Ok((e, end)) => base.with_leader_epoch(e.0).with_end_offset(end.0),
                        Err(e) => base
                            .with_error_code(errors::broker(&e).code())
                            .with_leader_epoch(-1)
                            .with_end_offset(-1),
                    }
                })
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic)
                .with_partitions(parts)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}
