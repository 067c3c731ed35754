//! This node as a broker of the cluster: it registers with the active controller (a new
//! incarnation at every process start), then heartbeats every `broker.heartbeat.interval.ms`
//! with the metadata offset it has applied. The controller unfences it once it has caught up,
//! and fences it if the heartbeats stop. A duplicate node id is retried until the other
//! incarnation's session expires (a quick restart after a crash); a refusal (another cluster) is
//! final: the node reports it and stops.
//!
//! A broker that goes a whole session without a heartbeat answer (cut off from the controller,
//! or paused) knows the controller has fenced it and given its leaderships to others: it says
//! so in `session_lost`, and the broker stops acting as a leader until an answer comes again.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::controller::Controller;
use crate::raft::rpc::{Heartbeat, Registration, RequestBody, ResponseBody};

/// This node's standing with the controller.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BrokerState {
    /// Registered with the active controller.
    pub registered: bool,
    /// Fenced (not serving) according to the last heartbeat answer.
    pub fenced: bool,
    /// The cluster id learned at registration.
    pub cluster_id: Option<String>,
    /// Set when the controller refused this node for good.
    pub refused: Option<String>,
    /// Set while the controller refuses this node id as a duplicate of a live broker.
    pub duplicate: Option<String>,
    /// This broker is stopping and asks for its leaderships to move first.
    pub want_shutdown: bool,
    /// The controller moved every leadership away: the broker may stop now.
    pub may_shut_down: bool,
    /// No heartbeat answer for longer than the session timeout since the last one: the
    /// controller has fenced this broker, so its leaderships are gone even if its metadata
    /// image does not say so yet.
    pub session_lost: bool,
}

/// Registers, then heartbeats, until the node stops or is refused.
pub async fn run(ctrl: Arc<Controller>) {
    let interval = ctrl.config().heartbeat_interval;
    let mut registered = false;
    let mut hint: Option<String> = None;
    let mut voter_turn = 0usize;
    let mut duplicate_logged = false;
    // When the last heartbeat answer came (`None` before the first).
    let mut last_answer: Option<tokio::time::Instant> = None;
    loop {
        if ctrl.stopping() {
            return;
        }
        let lost = last_answer.is_some_and(|t| t.elapsed() > ctrl.config().session_timeout);
        if lost != ctrl.broker_state().borrow().session_lost {
            if lost {
                tracing::warn!("no heartbeat answer within the session timeout: this broker is fenced by now and stops leading");
            }
            ctrl.set_broker_state(|s| s.session_lost = lost);
        }
        // The active controller as Raft knows it, else a hint from a NotLeader answer, else
        // the voters in turn. This node as leader past its lease is no answer: look elsewhere.
        let me = ctrl.config().node_id.0 as u64;
        let known = ctrl
            .leader()
            .filter(|(id, _)| *id != me || ctrl.is_active());
        let (node, addr) = match (known, hint.take()) {
            (Some((id, addr)), _) => (Some(id), addr),
            (None, Some(addr)) => (None, addr),
            (None, None) => {
                let voters = ctrl.voter_addrs();
                let (id, addr) = voters[voter_turn % voters.len()].clone();
                voter_turn += 1;
                (Some(id), addr)
            }
        };
        let body = if registered {
            RequestBody::Heartbeat(heartbeat(&ctrl))
        } else {
            RequestBody::Register(registration(&ctrl))
        };
        // Bounded by two heartbeat intervals, not the RPC's own session-long timeout: a call
        // stuck on a controller that died or was cut off must give way in time to reach its
        // successor, which fences brokers that do not heartbeat within its takeover grace.
        // And no longer than the session has left: a broker cut off from the controller must
        // see its session lost when it runs out, not a call timeout later (its leaderships
        // are gone by then and its clients are waiting for NOT_LEADER_OR_FOLLOWER).
        // Once lost, calls get their full time again, so a slow controller is still heard.
        let session = ctrl.config().session_timeout;
        let mut call_max = (interval * 2).min(session);
        if let Some(left) = last_answer.and_then(|t| session.checked_sub(t.elapsed())) {
            call_max = call_max.min(left.max(Duration::from_millis(10)));
        }
        let answer = tokio::time::timeout(call_max, ctrl.call_controller(node, &addr, body))
            .await
            .unwrap_or_else(|_| {
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "controller call timed out",
                ))
            });
        match answer {
            Ok(ResponseBody::Registered {
                cluster_id,
                broker_epoch,
            }) => {
                if let Some(known) = &ctrl.config().known_cluster_id {
                    if *known != cluster_id {
                        refuse(&ctrl, format!("this node's data dir belongs to cluster {known}, the controller's cluster is {cluster_id}"));
                        return;
                    }
                }
                tracing::info!(cluster_id, broker_epoch, "registered with the controller");
                registered = true;
                ctrl.set_broker_state(|s| {
                    s.registered = true;
                    s.duplicate = None;
                    // Serving starts with the first heartbeat answer that says unfenced.
                    s.fenced = true;
                    s.cluster_id = Some(cluster_id);
                });
                continue;
            }
            Ok(ResponseBody::HeartbeatAck {
                fenced,
                should_shutdown,
            }) => {
                last_answer = Some(tokio::time::Instant::now());
                ctrl.set_broker_state(|s| {
                    s.fenced = fenced;
                    s.may_shut_down |= should_shutdown;
                    s.session_lost = false;
                });
                if should_shutdown {
                    return;
                }
                tokio::time::sleep(interval).await;
                continue;
            }
            Ok(ResponseBody::ReRegister) => registered = false,
            Ok(ResponseBody::NotLeader { leader_addr }) => hint = leader_addr,
            Ok(ResponseBody::DuplicateBroker { reason }) => {
                // As KRaft: the previous incarnation's session must expire first.
                if !duplicate_logged {
                    tracing::error!(reason, "registration refused: duplicate node id; retrying until the other incarnation's session expires");
                    duplicate_logged = true;
                }
                ctrl.set_broker_state(|s| s.duplicate = Some(reason));
                tokio::time::sleep(ctrl.config().session_timeout / 2).await;
                continue;
            }
            Ok(ResponseBody::Refused { reason }) => {
                refuse(&ctrl, reason);
                return;
            }
            Ok(other) => tracing::debug!(?other, "unexpected controller answer"),
            Err(e) => tracing::debug!(addr, error = %e, "controller unreachable"),
        }
        tokio::time::sleep(Duration::from_millis(50).min(interval)).await;
    }
}

fn refuse(ctrl: &Controller, reason: String) {
    tracing::error!(
        reason,
        "the controller refused this node; it will not serve"
    );
    ctrl.set_broker_state(|s| s.refused = Some(reason));
}

fn registration(ctrl: &Controller) -> Registration {
    let c = ctrl.config();
    Registration {
        node_id: c.node_id,
        incarnation: ctrl.incarnation(),
        host: c.advertised_host.clone(),
        port: c.advertised_port,
        rack: c.rack.clone(),
        controller_addr: c.controller_addr.clone(),
    }
}

fn heartbeat(ctrl: &Controller) -> Heartbeat {
    Heartbeat {
        node_id: ctrl.config().node_id,
        incarnation: ctrl.incarnation(),
        applied_offset: ctrl.image().applied_offset,
        want_shutdown: ctrl.broker_state().borrow().want_shutdown,
    }
}
