//! Replacing a dead active controller without waiting out Raft's random election timer.
//!
//! openraft 0.9 lets a voter grant its vote only once the leader lease (`election_timeout_max`
//! since it last heard the leader) has passed, and a follower stands only after the lease plus
//! its random election timeout: 1-1.6x the lease of silence. When the leader's process is
//! gone (`probe.rs`: its controller listener refuses connections) nothing is gained by the
//! random part. One follower, the lowest-numbered other voter, then stands as soon as the
//! lease has passed; the others keep their timers, so the two cannot split the vote. A leader
//! that is only slow, paused or cut off does not refuse connections and is left to the timers,
//! and a node that has not heard a leader since it started (the election hold after a
//! restart) never stands here.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{probe, raft_heartbeat_ms, raft_lease, Controller};

/// Runs until the node stops.
pub(super) async fn run(ctrl: Arc<Controller>) {
    let beat = Duration::from_millis(raft_heartbeat_ms(ctrl.config.heartbeat_interval));
    let lease = raft_lease(ctrl.config.heartbeat_interval);
    let me = ctrl.config.node_id.0 as u64;
    loop {
        tokio::time::sleep(beat).await;
        if ctrl.stopping() {
            return;
        }
        let Some(heard) = *ctrl.leader_contact.lock().expect("leader contact lock") else {
            continue;
        };
        // A beat past the lease, so the other voter's lease (refreshed by the same last
        // heartbeat, give or take one) has passed too.
        if heard.elapsed() < lease + beat {
            continue;
        }
        let Some((leader, leader_addr)) = ctrl.leader() else {
            continue;
        };
        if leader == me || !first_in_line(&ctrl.voter_addrs(), leader, me) {
            continue;
        }
        if !probe::refuses(&leader_addr, beat).await {
            continue;
        }
        tracing::info!(
            leader,
            silent_ms = heard.elapsed().as_millis() as u64,
            "the active controller's process is gone: standing for election"
        );
        if let Err(e) = ctrl.raft.trigger().elect().await {
            tracing::warn!(error = %e, "could not stand for election");
        }
        // One try per silence: the Raft timers take over if it did not succeed.
        *ctrl.leader_contact.lock().expect("leader contact lock") = Some(Instant::now());
    }
}

/// True if `me` is the lowest-numbered voter other than `leader`.
fn first_in_line(voters: &[(u64, String)], leader: u64, me: u64) -> bool {
    voters
        .iter()
        .map(|(id, _)| *id)
        .filter(|id| *id != leader)
        .min()
        == Some(me)
}

#[cfg(test)]
mod tests {
    use super::first_in_line;

    #[test]
    fn only_the_lowest_other_voter_stands() {
        let v: Vec<(u64, String)> = [1, 2, 3].iter().map(|i| (*i, String::new())).collect();
        assert!(first_in_line(&v, 1, 2));
        assert!(!first_in_line(&v, 1, 3));
        assert!(first_in_line(&v, 2, 1));
        assert!(!first_in_line(&v, 2, 3));
        // A learner (not among the voters) never stands.
        assert!(!first_in_line(&v, 1, 4));
    }
}
