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
    let image = ctx.broker.metadata();
    match req.endpoint_type {
        1 => {}
        // Controllers (KIP-919): the quorum's voters, and the active one as controller id.
        2 => {
            let controller = ctx.broker.controller();
            let voters = controller
                .voter_addrs()
                .into_iter()
                .map(|(id, addr)| {
                    let (host, port) = addr.rsplit_once(':').unwrap_or((addr.as_str(), "0"));
                    DescribeClusterBroker::default()
                        .with_broker_id(BrokerId(id as i32))
                        .with_host(str_bytes(host))
                        .with_port(port.parse().unwrap_or(0))
                })
                .collect();
            return DescribeClusterResponse::default()
                .with_endpoint_type(2)
                .with_cluster_id(str_bytes(image.cluster_id.clone()))
                .with_controller_id(BrokerId(image.controller_id.map_or(-1, |c| c.0)))
                .with_brokers(voters);
        }
        other => {
            return DescribeClusterResponse::default()
                .with_error_code(ResponseError::UnsupportedEndpointType.code())
                .with_endpoint_type(other);
        }
    }
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
