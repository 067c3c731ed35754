//! `/v1/cluster` (the cluster at a glance) and `/v1/brokers`, from this node's metadata image.

use axum::Json;

use super::Shared;
use crate::metrics::cluster_counts;
use crate::views::{BrokerView, ClusterView};

/// `GET /v1/cluster`.
pub async fn overview(axum::extract::State(s): Shared) -> Json<ClusterView> {
    let image = s.controller.image();
    let counts = cluster_counts(&image);
    let node_id = s.controller.node_id().0;
    Json(ClusterView {
        cluster_id: image.cluster_id.clone(),
        node_id,
        controller_id: image.controller_id.map(|c| c.0),
        this_node_is_controller: s.controller.is_active(),
        metadata_offset: image.applied_offset,
        brokers: image.brokers.len(),
        fenced_brokers: image
            .brokers
            .values()
            .filter(|b| b.fenced)
            .map(|b| b.id.0)
            .collect(),
        topics: image.topics.len(),
        partitions: counts.partitions,
        offline_partitions: counts.offline_partitions,
        under_replicated_partitions: counts.under_replicated_partitions,
        policies: image.policies.len(),
    })
}

/// `GET /v1/brokers`.
pub async fn brokers(axum::extract::State(s): Shared) -> Json<Vec<BrokerView>> {
    let image = s.controller.image();
    Json(
        image
            .brokers
            .values()
            .map(|b| BrokerView {
                id: b.id.0,
                host: b.host.clone(),
                port: b.port,
                rack: b.rack.clone(),
                state: if b.fenced { "fenced" } else { "live" }.into(),
                epoch: b.epoch,
                controller_addr: b.controller_addr.clone(),
                is_controller: image.controller_id == Some(b.id),
            })
            .collect(),
    )
}
