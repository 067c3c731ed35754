//! Produce (0): validate each partition's batch without decoding its records, queue it on the
//! leader in request order (the connection's turn, `order.rs`), then wait as `acks` asks.
//! acks=0 gets no response at all — unless a partition failed, in which case the connection is
//! closed, as Kafka does, so the producer notices and refreshes its metadata. An idempotent
//! producer's retry of a batch already appended is answered like the original: no error, its
//! base offset.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ferrymq_broker::{Acks, BrokerError, Produced};
use ferrymq_log::batch::validate_produce_records;
use futures_util::future::join_all;
use kafka_protocol::messages::produce_request::PartitionProduceData;
use kafka_protocol::messages::produce_response::{
    LeaderIdAndEpoch, NodeEndpoint, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{
    BrokerId, ProduceRequest, ProduceResponse, RequestHeader, TopicName,
};
use kafka_protocol::ResponseError;

use super::{str_bytes, tp};
use crate::context::ServerContext;
use crate::errors;
use crate::order::OrderGate;

/// Longest acks=all wait honoured, whatever the client asks.
const PRODUCE_TIMEOUT_MS_MAX: i32 = 300_000;

/// What to do after a produce.
#[derive(Debug)]
pub enum ProduceOutcome {
    /// Send this response.
    Respond(ProduceResponse),
    /// acks=0 and all went well: send nothing.
    Silent,
    /// acks=0 and a partition failed: close the connection.
    Close(String),
}

/// A partition's produce: answered at once (refused) or once its append completes.
type Pending = Pin<Box<dyn Future<Output = Result<Produced, (ResponseError, String)>> + Send>>;

/// Answers a Produce request. `order` is the connection's gate and this request's ticket: the
/// batches are queued only on its turn, so appends follow request order.
pub async fn handle(
    ctx: &Arc<ServerContext>,
    header: &RequestHeader,
    req: ProduceRequest,
    order: (&OrderGate, u64),
) -> ProduceOutcome {
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
    // Queue every partition's batch on this request's turn, then wait for all concurrently.
    let mut queued: Vec<(TopicName, Vec<(i32, Pending)>)> = Vec::new();
    {
        let _turn = order.0.turn(order.1).await;
        for topic in req.topic_data {
            let mut parts = Vec::new();
            for p in topic.partition_data {
                let index = p.index;
                parts.push((
                    index,
                    submit(ctx, &topic.name, p, acks, timeout, &client).await,
                ));
            }
            queued.push((topic.name, parts));
        }
    }
    let mut first_error: Option<String> = None;
    let mut topics = Vec::new();
    for (name, parts) in queued {
        let results = join_all(
            parts
                .into_iter()
                .map(|(index, pending)| async move { (index, pending.await) }),
        )
        .await;
        let responses = results
            .into_iter()
            .map(|(index, r)| match r {
                Ok(done) => {
                    if done.duplicate {
                        tracing::debug!(topic = %name.0.as_str(), partition = index,
                            base_offset = done.append.base_offset.0,
                            "idempotent retry answered with the original offsets");
                    }
                    PartitionProduceResponse::default()
                        .with_index(index)
                        .with_base_offset(done.append.base_offset.0)
                        .with_log_append_time_ms(-1)
                        .with_log_start_offset(done.log_start_offset.0)
                }
                Err((e, msg)) => {
                    first_error
                        .get_or_insert_with(|| format!("{}-{index}: {msg}", name.0.as_str()));
                    PartitionProduceResponse::default()
                        .with_index(index)
                        .with_error_code(e.code())
                        .with_base_offset(-1)
                        .with_log_append_time_ms(-1)
                        .with_log_start_offset(-1)
                        .with_error_message(Some(str_bytes(msg)))
                }
            })
            .collect();
        topics.push(
            TopicProduceResponse::default()
                .with_name(name)
                .with_partition_responses(responses),
        );
    }
    match (acks, first_error) {
        (Some(Acks::None), None) => ProduceOutcome::Silent,
        (Some(Acks::None), Some(e)) => ProduceOutcome::Close(format!("acks=0 produce failed: {e}")),
        _ => ProduceOutcome::Respond(with_leader_hints(
            ctx,
            ProduceResponse::default().with_responses(topics),
        )),
    }
}

/// KIP-951: a partition answered NOT_LEADER_OR_FOLLOWER or FENCED_LEADER_EPOCH carries the
/// current leader and its endpoint (v10+; older versions drop the tagged fields), so the client
/// retries there at once instead of refreshing metadata first.
fn with_leader_hints(ctx: &Arc<ServerContext>, mut resp: ProduceResponse) -> ProduceResponse {
    let image = ctx.broker.metadata();
    let me = ctx.broker.config().node_id;
    let mut endpoints = Vec::new();
    for t in &mut resp.responses {
        for p in &mut t.partition_responses {
            if !super::leader_moved(p.error_code) {
                continue;
            }
            let Some(info) = image
                .topic(t.name.0.as_str())
                .and_then(|x| x.partitions.get(&ferrymq_types::PartitionId(p.index)))
            else {
                continue;
            };
            let Some(leader) = super::leader_hint(&image, info, me) else {
                continue;
            };
            p.current_leader = LeaderIdAndEpoch::default()
                .with_leader_id(BrokerId(leader.id.0))
                .with_leader_epoch(info.leader_epoch.0);
            if !endpoints
                .iter()
                .any(|e: &NodeEndpoint| e.node_id.0 == leader.id.0)
            {
                endpoints.push(
                    NodeEndpoint::default()
                        .with_node_id(BrokerId(leader.id.0))
                        .with_host(str_bytes(leader.host.clone()))
                        .with_port(leader.port as i32)
                        .with_rack(leader.rack.clone().map(str_bytes)),
                );
            }
        }
    }
    resp.node_endpoints = endpoints;
    resp
}

/// Validates and queues one partition's batch; the returned future completes its answer.
async fn submit(
    ctx: &Arc<ServerContext>,
    topic: &TopicName,
    p: PartitionProduceData,
    acks: Option<Acks>,
    timeout: Duration,
    client: &str,
) -> Pending {
    let refuse =
        |e: ResponseError, msg: String| -> Pending { Box::pin(async move { Err((e, msg)) }) };
    let Some(acks) = acks else {
        return refuse(
            ResponseError::InvalidRequiredAcks,
            "acks must be 0, 1 or -1".into(),
        );
    };
    let tp = tp(topic, p.index);
    if tp.topic == ferrymq_broker::group::OFFSETS_TOPIC {
        // As Kafka: only the group coordinator writes its internal topic.
        return refuse(
            ResponseError::InvalidTopicException,
            "cannot produce to an internal topic".into(),
        );
    }
    let Some(records) = p.records else {
        return refuse(ResponseError::InvalidRecord, "no records".into());
    };
    let batch = match validate_produce_records(records) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(partition = %tp, client, error = %e, "produce refused: invalid record batch");
            return refuse(errors::batch(&e), e.to_string());
        }
    };
    let failed = move |e: BrokerError| {
        if matches!(
            e,
            BrokerError::Storage(_) | BrokerError::MessageTooLarge { .. }
        ) {
            tracing::warn!(error = %e, "produce failed");
        }
        (errors::broker(&e), e.to_string())
    };
    match ctx.broker.submit_produce(&tp, batch, acks, timeout).await {
        Ok(done) => Box::pin(async move { done.await.map_err(failed) }),
        Err(e) => {
            let (code, msg) = failed(e);
            refuse(code, msg)
        }
    }
}
