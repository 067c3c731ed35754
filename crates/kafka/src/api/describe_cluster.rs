//! DescribeCluster (60): the cluster id, the controller and the brokers, for admin clients.

use std::sync::Arc;

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{
    BrokerId, DescribeClusterRequest, DescribeClusterResponse, RequestHeader,
};
use kafka_protocol::ResponseError;

use super::str_bytes;
use crate::context::ServerContext;

/// Answers a DescribeCluster request.
pub async fn handle(
    ctx: &Arc<ServerContext>,
    _header: &RequestHeader,
    req: DescribeClusterRequest,
) -> DescribeClusterResponse {
    // Endpoint type 1 is brokers; 2 (controllers) is not exposed separately in combined mode.
    if req.endpoint_type != 1 {
        return DescribeClusterResponse::default()
            .with_error_code(ResponseError::UnsupportedEndpointType.code())
            .with_endpoint_type(req.endpoint_type);
    }
    let image = ctx.broker.metadata();
    // Fenced brokers are listed only when asked (v2, KIP-1073), flagged as fenced.
    let brokers = image
        .brokers
        .values()
        .filter(|b| !b.fenced || req.include_fenced_brokers)
        .map(|b| {
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(b.id.0))
                .with_host(str_bytes(b.host.clone()))
                .with_port(b.port as i32)
                .with_rack(b.rack.clone().map(str_bytes))
                .with_is_fenced(b.fenced)
        })
        .collect();
    DescribeClusterResponse::default()
        .with_endpoint_type(1)
        .with_cluster_id(str_bytes(image.cluster_id.clone()))
        // Admin requests are forwarded by any broker, so this one is named, as KRaft does.
        .with_controller_id(BrokerId(ctx.broker.config().node_id.0))
        .with_brokers(brokers)
}
