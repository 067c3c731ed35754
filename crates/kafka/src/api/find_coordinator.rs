//! FindCoordinator (10): which broker coordinates a consumer group — the leader of the group's
//! partition of `__consumer_offsets`, created on first use; COORDINATOR_NOT_AVAILABLE while that
//! partition is loading. Transaction coordinators (key type 1) do not exist yet:
//! COORDINATOR_NOT_AVAILABLE, which clients treat as retriable.

use std::sync::Arc;

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{
    BrokerId, FindCoordinatorRequest, FindCoordinatorResponse, RequestHeader,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::str_bytes;
use crate::context::ServerContext;
use crate::errors;

const KEY_TYPE_GROUP: i8 = 0;

/// Answers a FindCoordinator request (one key before v4, a batch of keys from v4).
pub async fn handle(
    ctx: &Arc<ServerContext>,
    header: &RequestHeader,
    req: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let keys: Vec<StrBytes> = if header.request_api_version >= 4 {
        req.coordinator_keys.clone()
    } else {
        vec![req.key.clone()]
    };
    let mut answers = Vec::with_capacity(keys.len());
    for key in &keys {
        answers.push(answer(ctx, req.key_type, key).await);
    }
    if header.request_api_version >= 4 {
        return FindCoordinatorResponse::default().with_coordinators(answers);
    }
    let c = answers.pop().expect("one key");
    FindCoordinatorResponse::default()
        .with_error_code(c.error_code)
        .with_error_message(c.error_message)
        .with_node_id(c.node_id)
        .with_host(c.host)
        .with_port(c.port)
}

async fn answer(ctx: &Arc<ServerContext>, key_type: i8, key: &StrBytes) -> Coordinator {
    let c = Coordinator::default().with_key(key.clone());
    let fail = |c: Coordinator, e: ResponseError, msg: String| {
        c.with_error_code(e.code())
            .with_error_message(Some(str_bytes(msg)))
            .with_node_id(BrokerId(-1))
            .with_port(-1)
    };
    if key_type != KEY_TYPE_GROUP {
        return fail(
            c,
            ResponseError::CoordinatorNotAvailable,
            "transactions are not supported yet".into(),
        );
    }
    match ctx.broker.groups().find_coordinator(key).await {
        Ok(node) => match ctx.broker.metadata().brokers.get(&node) {
            Some(b) => c
                .with_node_id(BrokerId(b.id.0))
                .with_host(str_bytes(b.host.clone()))
                .with_port(b.port as i32),
            None => fail(
                c,
                ResponseError::CoordinatorNotAvailable,
                format!("coordinator node {node} is not registered"),
            ),
        },
        Err(e) => fail(c, errors::group(&e), e.to_string()),
    }
}
