//! The controller listener's request handling: Raft RPCs go to the Raft node; registrations,
//! heartbeats and forwarded admin changes are served by the active controller only (others
//! answer with where it is).

use std::time::Instant;

use openraft::BasicNode;

use super::Controller;
use crate::election;
use crate::raft::rpc::{
    Heartbeat, PeerHandler, PeerRequest, Registration, RequestBody, ResponseBody,
};
use crate::records::{
    BrokerFenceRecord, ClusterIdRecord, MetadataRecord, RegisterBrokerRecord, RECORD_VERSION,
};

impl PeerHandler for Controller {
    async fn handle(&self, req: PeerRequest) -> ResponseBody {
        let ours = self
            .identity
            .cluster_id
            .read()
            .expect("identity lock")
            .clone();
        if !req.cluster_id.is_empty() && !ours.is_empty() && req.cluster_id != ours {
            tracing::warn!(
                from = req.from,
                theirs = req.cluster_id,
                ours,
                "refusing a node of another cluster"
            );
            return ResponseBody::Refused {
                reason: format!(
                    "cluster id mismatch: this cluster is {ours}, the node belongs to {}",
                    req.cluster_id
                ),
            };
        }
        match req.body {
            RequestBody::AppendEntries(r) => {
                *self.leader_contact.lock().expect("leader contact lock") =
                    Some(std::time::Instant::now());
                ResponseBody::AppendEntries(self.raft.append_entries(r).await)
            }
            RequestBody::Vote(r) => ResponseBody::Vote(self.raft.vote(r).await),
            RequestBody::InstallSnapshot(r) => {
                ResponseBody::InstallSnapshot(self.raft.install_snapshot(r).await)
            }
            RequestBody::PreVote => ResponseBody::PreVote {
                granted: self.lost_leader(),
            },
            RequestBody::Register(reg) => self.on_register(reg).await,
            RequestBody::Heartbeat(hb) => self.on_heartbeat(hb).await,
            RequestBody::Admin(op) => {
                if !self.is_active() {
                    return self.not_leader();
                }
                ResponseBody::Admin(self.execute(op).await)
            }
        }
    }
}

impl Controller {
    fn not_leader(&self) -> ResponseBody {
        ResponseBody::NotLeader {
            // Never this node: answering NotLeader, it is at most a leader past its lease.
            leader_addr: self
                .leader()
                .filter(|(id, _)| *id != self.identity.node_id)
                .map(|(_, a)| a)
                .filter(|a| !a.is_empty()),
        }
    }

    async fn on_register(&self, reg: Registration) -> ResponseBody {
        if !self.is_active() {
            return self.not_leader();
        }
        let _serial = self.write_lock.lock().await;
        let Ok(image) = self.leader_image().await else {
            return self.not_leader();
        };
        let now = Instant::now();
        if let Some(b) = image.brokers.get(&reg.node_id) {
            let alive = self
                .liveness
                .lock()
                .expect("liveness lock")
                .is_alive(reg.node_id, now);
            // This very process registering its own node id: the previous incarnation of this
            // node is necessarily gone (a crash and restart of a single-node or voter
            // broker), so it need not wait out that incarnation's session.
            let this_process =
                reg.node_id == self.config.node_id && reg.incarnation == self.incarnation;
            if b.incarnation != reg.incarnation && !b.fenced && alive && !this_process {
                tracing::warn!(node = reg.node_id.0, "refusing a duplicate node id");
                return ResponseBody::DuplicateBroker {
                    reason: format!(
                        "node id {} is already registered by a live broker at {}:{}",
                        reg.node_id, b.host, b.port
                    ),
                };
            }
        }
        let mut records = Vec::new();
        if image.cluster_id.is_empty() {
            records.push(duties_cluster_id(self));
        }
        // A new incarnation replacing one that was never fenced (it crashed and came back
        // within its session, or it is this very process after a restart): the old one's
        // leaderships and ISR memberships end here, in the same entry, exactly as if its
        // session had expired. Its recovery may have cut its log, so it must not keep leading
        // from it at the old epoch; it rejoins the ISR by catching up like any follower.
        let mut moved = 0;
        if let Some(old) = image
            .brokers
            .get(&reg.node_id)
            .filter(|b| b.incarnation != reg.incarnation && !b.fenced)
        {
            records.push(MetadataRecord::BrokerFence(BrokerFenceRecord {
                version: RECORD_VERSION,
                id: reg.node_id,
                incarnation: old.incarnation,
                fenced: true,
            }));
            let changes = election::on_fenced(&image, reg.node_id, &self.config.topic_defaults);
            moved = changes.len();
            records.extend(changes);
        }
        if image.brokers.get(&reg.node_id).map(|b| b.incarnation) != Some(reg.incarnation) {
            records.push(MetadataRecord::RegisterBroker(RegisterBrokerRecord {
                version: RECORD_VERSION,
                id: reg.node_id,
                incarnation: reg.incarnation,
                host: reg.host.clone(),
                port: reg.port,
                rack: reg.rack.clone(),
                controller_addr: reg.controller_addr.clone(),
            }));
        }
        if !records.is_empty() {
            if let Err(e) = self.commit(records).await {
                tracing::warn!(node = reg.node_id.0, error = %e, "registration not committed");
                return self.not_leader();
            }
            tracing::info!(
                node = reg.node_id.0,
                host = reg.host,
                port = reg.port,
                previous_incarnation_fenced_partitions = moved,
                "broker registered"
            );
        }
        self.liveness
            .lock()
            .expect("liveness lock")
            .heartbeat(reg.node_id, now);
        let member = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&(reg.node_id.0 as u64))
            .is_some();
        if !member && !reg.controller_addr.is_empty() {
            // Brokers follow the metadata log as Raft learners.
            let raft = self.raft.clone();
            let id = reg.node_id.0 as u64;
            let node = BasicNode {
                addr: reg.controller_addr.clone(),
            };
            tokio::spawn(async move {
                if let Err(e) = raft.add_learner(id, node, false).await {
                    tracing::warn!(node = id, error = %e, "adding metadata learner failed");
                }
            });
        }
        let image = self.sm.image();
        let epoch = image.brokers.get(&reg.node_id).map_or(-1, |b| b.epoch);
        ResponseBody::Registered {
            cluster_id: image.cluster_id.clone(),
            broker_epoch: epoch,
        }
    }

    async fn on_heartbeat(&self, hb: Heartbeat) -> ResponseBody {
        if !self.is_active() {
            return self.not_leader();
        }
        let image = self.sm.image();
        let Some(b) = image
            .brokers
            .get(&hb.node_id)
            .filter(|b| b.incarnation == hb.incarnation)
        else {
            return ResponseBody::ReRegister;
        };
        self.liveness
            .lock()
            .expect("liveness lock")
            .heartbeat(hb.node_id, Instant::now());
        if hb.want_shutdown {
            return self.on_controlled_shutdown(&hb).await;
        }
        let mut fenced = b.fenced;
        if b.fenced && hb.applied_offset >= b.epoch && !hb.want_shutdown {
            let _serial = self.write_lock.lock().await;
            let Ok(image) = self.leader_image().await else {
                return self.not_leader();
            };
            let still_fenced = image
                .brokers
                .get(&hb.node_id)
                .is_some_and(|b| b.fenced && b.incarnation == hb.incarnation);
            if still_fenced {
                let mut records = vec![MetadataRecord::BrokerFence(BrokerFenceRecord {
                    version: RECORD_VERSION,
                    id: hb.node_id,
                    incarnation: hb.incarnation,
                    fenced: false,
                })];
                records.extend(election::on_unfenced(&image, hb.node_id));
                match self.commit(records).await {
                    Ok(_) => {
                        tracing::info!(
                            node = hb.node_id.0,
                            "broker unfenced: heartbeating and caught up with metadata"
                        );
                        fenced = false;
                    }
                    Err(e) => {
                        tracing::warn!(node = hb.node_id.0, error = %e, "unfencing not committed")
                    }
                }
            }
        }
        ResponseBody::HeartbeatAck {
            fenced,
            should_shutdown: false,
        }
    }
}

impl Controller {
    /// Controlled shutdown (KRaft's `WantShutDown`): move every leadership of the broker to
    /// another live ISR member and take it out of the ISRs, then fence it and let it stop.
    async fn on_controlled_shutdown(&self, hb: &Heartbeat) -> ResponseBody {
        let _serial = self.write_lock.lock().await;
        let Ok(image) = self.leader_image().await else {
            return self.not_leader();
        };
        let Some(b) = image
            .brokers
            .get(&hb.node_id)
            .filter(|b| b.incarnation == hb.incarnation)
        else {
            return ResponseBody::ReRegister;
        };
        let mut records = election::on_fenced(&image, hb.node_id, &self.config.topic_defaults);
        let moved = records.len();
        if !b.fenced {
            records.push(MetadataRecord::BrokerFence(BrokerFenceRecord {
                version: RECORD_VERSION,
                id: hb.node_id,
                incarnation: hb.incarnation,
                fenced: true,
            }));
        }
        if !records.is_empty() {
            if let Err(e) = self.commit(records).await {
                tracing::warn!(node = hb.node_id.0, error = %e, "controlled shutdown not committed yet");
                return ResponseBody::HeartbeatAck {
                    fenced: b.fenced,
                    should_shutdown: false,
                };
            }
            tracing::info!(
                node = hb.node_id.0,
                partitions_changed = moved,
                "controlled shutdown: leadership moved, broker fenced"
            );
        }
        ResponseBody::HeartbeatAck {
            fenced: true,
            should_shutdown: true,
        }
    }
}

/// The record fixing the cluster id: this node's recorded id, or a new one.
pub(super) fn duties_cluster_id(ctrl: &Controller) -> MetadataRecord {
    let id = ctrl
        .config
        .known_cluster_id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    MetadataRecord::ClusterId(ClusterIdRecord {
        version: RECORD_VERSION,
        id,
    })
}
