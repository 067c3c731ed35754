//! FindCoordinator (10): which broker coordinates a consumer group. On a single node that is
//! this broker. Transaction coordinators (key type 1) do not exist yet:
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

const KEY_TYPE_GROUP: i8 = 0;

/// Answers a FindCoordinator request (one key before v4, a batch of keys from v4).
pub async fn handle(
    ctx: &Arc<ServerContext>,
    header: &RequestHeader,
    req: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let image = ctx.broker.metadata();
    let me = image.brokers.get(&ctx.broker.config().node_id).cloned();
    let answer = |key: &StrBytes| -> Coordinator {
        let c = Coordinator::default().with_key(key.clone());
        if req.key_type != KEY_TYPE_GROUP {
            return c
                .with_error_code(ResponseError::CoordinatorNotAvailable.code())
                .with_error_message(Some(str_bytes("transactions are not supported yet")))
                .with_node_id(BrokerId(-1))
                .with_port(-1);
        }
        match &me {
            Some(b) => c
                .with_node_id(BrokerId(b.id.0))
                .with_host(str_bytes(b.host.clone()))
                .with_port(b.port as i32),
            None => c
                .with_error_code(ResponseError::CoordinatorNotAvailable.code())
                .with_node_id(BrokerId(-1))
                .with_port(-1),
        }
    };
    if header.request_api_version >= 4 {
        return FindCoordinatorResponse::default()
            .with_coordinators(req.coordinator_keys.iter().map(answer).collect());
    }
    let c = answer(&req.key);
    FindCoordinatorResponse::default()
        .with_error_code(c.error_code)
        .with_error_message(c.error_message)
        .with_node_id(c.node_id)
        .with_host(c.host)
        .with_port(c.port)
}
