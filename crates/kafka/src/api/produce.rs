//! Produce (0): validate each partition's batch without decoding its records, append it on the
//! leader and answer as `acks` asks (acks=0 gets no response at all).

use std::sync::Arc;
use std::time::Duration;

use ferrymq_broker::{Acks, BrokerError};
use ferrymq_log::batch::validate_produce_records;
use futures_util::future::join_all;
use kafka_protocol::messages::produce_request::PartitionProduceData;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, RequestHeader, TopicName};
use kafka_protocol::ResponseError;

use super::{str_bytes, tp};
use crate::context::ServerContext;
use crate::errors;

/// Longest acks=all wait honoured, whatever the client asks.
const PRODUCE_TIMEOUT_MS_MAX: i32 = 300_000;

/// Answers a Produce request; `None` for acks=0.
pub async fn handle(
    ctx: &Arc<ServerContext>,
    header: &RequestHeader,
    req: ProduceRequest,
) -> Option<ProduceResponse> {
    let acks = match req.acks {
        0 => Some(Acks::None),
        1 => Some(Acks::Leader),
        -1 => Some(Acks::All),
        _ => None,
    };
    let timeout = Duration::from_millis(req.timeout_ms.clamp(0, PRODUCE_TIMEOUT_MS_MAX) as u64);
    let client = header
        .client_id
        .as_ref()
        .map(|c| c.to_string())
        .unwrap_or_default();
    let topics = join_all(req.topic_data.into_iter().map(|topic| {
        let client = client.clone();
        async move {
            let parts = join_all(
                topic
                    .partition_data
                    .into_iter()
                    .map(|p| produce_partition(ctx, &topic.name, p, acks, timeout, &client)),
            )
            .await;
            TopicProduceResponse::default()
                .with_name(topic.name)
                .with_partition_responses(parts)
        }
    }))
    .await;
    if acks == Some(Acks::None) {
        return None;
    }
    Some(ProduceResponse::default().with_responses(topics))
}

async fn produce_partition(
    ctx: &Arc<ServerContext>,
    topic: &TopicName,
    p: PartitionProduceData,
    acks: Option<Acks>,
    timeout: Duration,
    client: &str,
) -> PartitionProduceResponse {
    let fail = |e: ResponseError, msg: String| {
        PartitionProduceResponse::default()
            .with_index(p.index)
            .with_error_code(e.code())
            .with_base_offset(-1)
            .with_log_append_time_ms(-1)
            .with_log_start_offset(-1)
            .with_error_message(Some(str_bytes(msg)))
    };
    let Some(acks) = acks else {
        return fail(
            ResponseError::InvalidRequiredAcks,
            "acks must be 0, 1 or -1".into(),
        );
    };
    let tp = tp(topic, p.index);
    if tp.topic == ferrymq_broker::group::OFFSETS_TOPIC {
        // As Kafka: only the group coordinator writes its internal topic.
        return fail(
            ResponseError::InvalidTopicException,
            "cannot produce to an internal topic".into(),
        );
    }
    let Some(records) = p.records.clone() else {
        return fail(ResponseError::InvalidRecord, "no records".into());
    };
    let batch = match validate_produce_records(records) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(partition = %tp, client, error = %e, "produce refused: invalid record batch");
            return fail(errors::batch(&e), e.to_string());
        }
    };
    match ctx.broker.produce(&tp, batch, acks, timeout).await {
        Ok(done) => PartitionProduceResponse::default()
            .with_index(p.index)
            .with_base_offset(done.append.base_offset.0)
            .with_log_append_time_ms(-1)
            .with_log_start_offset(done.log_start_offset.0),
        Err(e) => {
            if matches!(
                e,
                BrokerError::Storage(_) | BrokerError::MessageTooLarge { .. }
            ) {
                tracing::warn!(partition = %tp, client, error = %e, "produce failed");
            }
            fail(errors::broker(&e), e.to_string())
        }
    }
}
