//! InitProducerId (22): a producer id and epoch for an idempotent producer. Served at v0–v5:
//! librdkafka probes v0 and uses up to v4, kafka-python v0–v1 (its idempotent producer), the
//! Java client up to v5; v6 only adds two-phase-commit fields (KIP-939) for transactions.
//!
//! Without a transactional id, Kafka answers on any broker with a new producer id and epoch 0,
//! ignoring the current id and epoch that v3+ may carry (an idempotent producer bumps its epoch
//! itself, KIP-360): so do we (`Broker::init_producer_id`). With a transactional id the request
//! belongs to a transaction coordinator, which FerryMQ does not have yet: we answer
//! COORDINATOR_NOT_AVAILABLE, as FindCoordinator does for transactions, which clients retry until
//! their own timeout; an empty transactional id is INVALID_REQUEST, as Kafka.

use std::sync::Arc;

use kafka_protocol::messages::{
    InitProducerIdRequest, InitProducerIdResponse, ProducerId as WireProducerId, RequestHeader,
};
use kafka_protocol::ResponseError;

use crate::context::ServerContext;
use crate::errors;

/// Answers an InitProducerId request.
pub async fn handle(
    ctx: &Arc<ServerContext>,
    header: &RequestHeader,
    req: InitProducerIdRequest,
) -> InitProducerIdResponse {
    if let Some(txn) = &req.transactional_id {
        let error = if txn.0.is_empty() {
            ResponseError::InvalidRequest
        } else {
            ResponseError::CoordinatorNotAvailable
        };
        return refused(error);
    }
    match ctx.broker.init_producer_id().await {
        Ok((id, epoch)) => {
            tracing::debug!(client = ?header.client_id, producer_id = id.0, "producer id handed out");
            InitProducerIdResponse::default()
                .with_producer_id(WireProducerId(id.0))
                .with_producer_epoch(epoch.0)
        }
        Err(e) => {
            tracing::warn!(error = %e, "InitProducerId failed");
            refused(errors::broker(&e))
        }
    }
}

/// An answer without a producer id, as Kafka's (id and epoch -1).
fn refused(error: ResponseError) -> InitProducerIdResponse {
    InitProducerIdResponse::default()
        .with_error_code(error.code())
        .with_producer_id(WireProducerId(-1))
        .with_producer_epoch(-1)
}
