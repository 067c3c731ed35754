//! What the active controller does besides answering requests: fix the cluster id once, and
//! fence brokers whose session expired or whose process is gone, moving the partitions they
//! led to another in-sync replica (`election.rs`). Runs on every node and acts only while it
//! leads the quorum.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::peer::duties_cluster_id;
use super::probe;
use super::Controller;
use crate::election;
use crate::records::{BrokerFenceRecord, MetadataRecord, RECORD_VERSION};

/// Runs until the node stops.
pub(super) async fn run(ctrl: Arc<Controller>) {
    // Often enough that a fence follows a missed heartbeat closely (`probe_overdue`).
    let tick = (ctrl.config.heartbeat_interval / 5).max(Duration::from_millis(20));
    let mut was_active = false;
    let mut last_rebalance = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            // A broken Raft connection is looked at at once, not at the next tick.
            _ = ctrl.lost_peers.reported() => {}
        }
        if ctrl.stopping() {
            return;
        }
        let active = ctrl.is_active();
        if !active {
            was_active = false;
            // Reports made while another node was active are stale.
            ctrl.lost_peers.take();
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
        probe_lost(&ctrl).await;
        probe_overdue(&ctrl).await;
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
        fence(
            ctrl,
            id,
            None,
            "broker fenced: no heartbeat within its session",
        )
        .await;
    }
}

/// A broker is probed once its next heartbeat is a fifth of an interval late (heartbeats
/// arrive an interval plus a round trip apart).
fn probe_after(config: &super::ControllerConfig) -> Duration {
    config.heartbeat_interval * 6 / 5
}

/// Fences, ahead of their session, overdue brokers whose process is gone (`probe.rs`): a
/// killed broker's leaderships move about a heartbeat interval after its last heartbeat
/// instead of a whole session. A paused, cut-off or slow broker waits out its session as
/// before.
async fn probe_overdue(ctrl: &Controller) {
    let overdue = {
        let image = ctrl.sm.image();
        ctrl.liveness.lock().expect("liveness lock").overdue(
            &image,
            Instant::now(),
            probe_after(&ctrl.config),
        )
    };
    probe_and_fence(
        ctrl,
        overdue,
        "broker fenced: missed heartbeats and its address refuses connections",
    )
    .await;
}

/// Fences brokers whose Raft connection broke (`LostPeers`) and whose process is gone: this
/// controller heartbeats every node each Raft heartbeat interval, so a killed broker is
/// usually fenced within tens of milliseconds, before it has missed a broker heartbeat.
async fn probe_lost(ctrl: &Controller) {
    let lost: Vec<_> = ctrl
        .lost_peers
        .take()
        .into_iter()
        .filter_map(|id| i32::try_from(id).ok().map(ferrymq_types::NodeId))
        .collect();
    probe_and_fence(
        ctrl,
        lost,
        "broker fenced: its connection broke and its address refuses connections",
    )
    .await;
}

/// Probes the live (unfenced) brokers among `ids` at once and fences those whose address
/// refuses connections. Only a refusal is taken as proof; anything else leaves the broker
/// to its session.
async fn probe_and_fence(ctrl: &Controller, ids: Vec<ferrymq_types::NodeId>, why: &'static str) {
    let targets: Vec<_> = {
        let image = ctrl.sm.image();
        ids.into_iter()
            .filter_map(|id| {
                image
                    .brokers
                    .get(&id)
                    .filter(|b| !b.fenced)
                    .map(|b| (id, b.incarnation, probe_addr(b)))
            })
            .collect()
    };
    if targets.is_empty() {
        return;
    }
    let limit = (ctrl.config.heartbeat_interval / 2).max(Duration::from_millis(20));
    let mut probes = tokio::task::JoinSet::new();
    for (id, incarnation, addr) in targets {
        probes.spawn(async move {
            let refused = probe::refuses(&addr, limit).await;
            (id, incarnation, addr, refused)
        });
    }
    while let Some(Ok((id, incarnation, addr, refused))) = probes.join_next().await {
        if !refused {
            continue;
        }
        tracing::info!(
            node = id.0,
            addr,
            "broker refuses connections: its process is gone"
        );
        fence(ctrl, id, Some(incarnation), why).await;
    }
}

/// Where to look for a broker's process: its controller listener (the inter-node address),
/// else its client listener.
fn probe_addr(b: &crate::image::BrokerInfo) -> String {
    if b.controller_addr.is_empty() {
        format!("{}:{}", b.host, b.port)
    } else {
        b.controller_addr.clone()
    }
}

/// Fences broker `id` (only its incarnation `only`, when given: a process that registered
/// since is not the one that was judged) and moves the partitions it led.
async fn fence(
    ctrl: &Controller,
    id: ferrymq_types::NodeId,
    only: Option<uuid::Uuid>,
    why: &'static str,
) {
    let _serial = ctrl.write_lock.lock().await;
    let Ok(image) = ctrl.leader_image().await else {
        return;
    };
    let Some(b) = image
        .brokers
        .get(&id)
        .filter(|b| !b.fenced && only.is_none_or(|i| i == b.incarnation))
    else {
        return;
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
            broker_epoch = b.epoch,
            session_timeout_ms = ctrl.config.session_timeout.as_millis() as u64,
            partitions_changed = partitions,
            metadata_offset = offset,
            "{why}"
        ),
        Err(e) => tracing::warn!(node = id.0, error = %e, "fencing not committed"),
    }
}
