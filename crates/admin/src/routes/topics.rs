//! `/v1/topics` and `/v1/topics/{name}`: placement and leadership from the metadata image, and
//! the answering node's own replica (offsets, size) where it hosts one. Offsets are
//! authoritative on the leader: ask the leader's admin API, or use `ferrymq topic describe`,
//! which asks each leader over the Kafka protocol.

use axum::extract::Path;
use axum::Json;
use ferrymq_cluster::{MetadataImage, TopicInfo};
use ferrymq_types::TopicPartition;

use super::Shared;
use crate::error::ApiError;
use crate::views::{LocalReplicaView, PartitionView, TopicSummary, TopicView};

fn summary(t: &TopicInfo, image: &MetadataImage) -> TopicSummary {
    TopicSummary {
        name: t.name.clone(),
        id: t.id.to_string(),
        partitions: t.partitions.len(),
        replication_factor: t.partitions.values().next().map_or(0, |p| p.replicas.len()),
        offline_partitions: t
            .partitions
            .values()
            .filter(|p| !p.leader.is_some_and(|l| image.is_live(l)))
            .count(),
        under_replicated_partitions: t
            .partitions
            .values()
            .filter(|p| p.isr.len() < p.replicas.len())
            .count(),
    }
}

/// `GET /v1/topics`.
pub async fn list(axum::extract::State(s): Shared) -> Json<Vec<TopicSummary>> {
    let image = s.controller.image();
    Json(image.topics.values().map(|t| summary(t, &image)).collect())
}

/// `GET /v1/topics/{name}`.
pub async fn describe(
    axum::extract::State(s): Shared,
    Path(name): Path<String>,
) -> Result<Json<TopicView>, ApiError> {
    let image = s.controller.image();
    let topic = image
        .topic(&name)
        .ok_or_else(|| ApiError::NotFound(format!("unknown topic {name:?}")))?;
    let broker = s.broker().ok();
    let ids = |v: &[ferrymq_types::NodeId]| v.iter().map(|n| n.0).collect::<Vec<_>>();
    let partitions = topic
        .partitions
        .iter()
        .map(|(pid, p)| {
            let local = broker
                .and_then(|b| b.partition(&TopicPartition::new(&name, pid.0)).ok())
                .map(|replica| {
                    let snap = replica.snapshot();
                    LocalReplicaView {
                        role: format!("{:?}", snap.role).to_lowercase(),
                        high_watermark: snap.high_watermark.0,
                        log_start_offset: snap.log_start_offset.0,
                        log_end_offset: snap.log_end_offset.0,
                        log_size_bytes: snap.log_size_bytes,
                        segments: snap.segments,
                    }
                });
            PartitionView {
                partition: pid.0,
                leader: p.leader.filter(|l| image.is_live(*l)).map(|l| l.0),
                leader_epoch: p.leader_epoch.0,
                replicas: ids(&p.replicas),
                isr: ids(&p.isr),
                offline_replicas: p
                    .replicas
                    .iter()
                    .filter(|r| !image.is_live(**r))
                    .map(|r| r.0)
                    .collect(),
                local,
            }
        })
        .collect();
    Ok(Json(TopicView {
        name: topic.name.clone(),
        id: topic.id.to_string(),
        configs: topic.configs.clone(),
        partitions,
    }))
}
