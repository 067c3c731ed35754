//! What the active controller does besides answering requests: fix the cluster id once, and
//! fence brokers whose session expired, moving the partitions they led to another in-sync
//! replica (`election.rs`). Runs on every node and acts only while it leads the quorum.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::peer::duties_cluster_id;
use super::Controller;
use crate::election;
use crate::records::{BrokerFenceRecord, MetadataRecord, RECORD_VERSION};

/// Runs until the node stops.
pub(super) async fn run(ctrl: Arc<Controller>) {
    let tick = (ctrl.config.heartbeat_interval / 2).max(Duration::from_millis(20));
    let mut was_active = false;
    let mut last_rebalance = Instant::now();
    loop {
        tokio::time::sleep(tick).await;
        if ctrl.stopping() {
            return;
        }
        let active = ctrl.is_active();
        if !active {
            was_active = false;
            continue;
        }
        if !was_active {
            // Heartbeats went to the previous controller: give every broker a fresh session.
            ctrl.liveness.lock().expect("liveness lock").reset(
                &ctrl.sm.image(),
                Instant::now(),
                takeover_grace(&ctrl.config),
            );
            was_active = true;
            tracing::info!(
                node = ctrl.config.node_id.0,
                "this node is now the active controller"
            );
        }
        if ctrl.sm.image().cluster_id.is_empty() {
            let _serial = ctrl.write_lock.lock().await;
            if ctrl.sm.image().cluster_id.is_empty() {
                if let Err(e) = ctrl.commit(vec![duties_cluster_id(&ctrl)]).await {
                    tracing::warn!(error = %e, "cluster id not committed yet");
                }
            }
        }
        fence_expired(&ctrl).await;
        if ctrl.config.auto_leader_rebalance
            && last_rebalance.elapsed() >= ctrl.config.leader_imbalance_check_interval
        {
            last_rebalance = Instant::now();
            rebalance_leaders(&ctrl).await;
        }
    }
}

/// How long brokers get to heartbeat a new controller: two heartbeat intervals and a margin,
/// at most a session.
fn takeover_grace(config: &super::ControllerConfig) -> Duration {
    (config.heartbeat_interval * 2 + Duration::from_millis(250)).min(config.session_timeout)
}

/// Moves leadership back to preferred replicas that are live and in sync.
async fn rebalance_leaders(ctrl: &Controller) {
    let _serial = ctrl.write_lock.lock().await;
    let Ok(image) = ctrl.leader_image().await else {
        return;
    };
    let records = election::preferred(&image, None);
    if records.is_empty() {
        return;
    }
    let n = records.len();
    match ctrl.commit(records).await {
        Ok(offset) => tracing::info!(
            partitions = n,
            metadata_offset = offset,
            "preferred leaders restored"
        ),
        Err(e) => tracing::warn!(error = %e, "preferred leader election not committed"),
    }
}

async fn fence_expired(ctrl: &Controller) {
    let expired = {
        let image = ctrl.sm.image();
        ctrl.liveness
            .lock()
            .expect("liveness lock")
            .expired(&image, Instant::now())
    };
    for id in expired {
        let _serial = ctrl.write_lock.lock().await;
        let Ok(image) = ctrl.leader_image().await else {
            return;
        };
        let Some(b) = image.brokers.get(&id).filter(|b| !b.fenced) else {
            continue;
        };
        let mut records = vec![MetadataRecord::BrokerFence(BrokerFenceRecord {
            version: RECORD_VERSION,
            id,
            incarnation: b.incarnation,
            fenced: true,
        })];
        let moved = election::on_fenced(&image, id, &ctrl.config.topic_defaults);
        let partitions = moved.len();
        records.extend(moved);
        match ctrl.commit(records).await {
            Ok(offset) => tracing::warn!(
                node = id.0,
                session_timeout_ms = ctrl.config.session_timeout.as_millis() as u64,
                partitions_changed = partitions,
                metadata_offset = offset,
                "broker fenced: no heartbeat within its session"
            ),
            Err(e) => tracing::warn!(node = id.0, error = %e, "fencing not committed"),
        }
    }
}
