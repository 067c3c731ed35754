//! PreVote, which openraft 0.9 lacks: a voter's election timer runs only while a majority of
//! the voters (itself included) have lost the leader too.
//!
//! Without it, a voter that was cut off or paused stands as soon as its timer fires, again and
//! again, raising its term each time. When it reaches the others again the healthy controller
//! sees the higher term and steps down. Until a new one is elected no broker's heartbeat is
//! answered, so every broker stops leading when its session runs out. The chaos harness saw
//! about one controller election in four come right after a partition healed or a paused voter
//! resumed, and the longest isolate-leader window of seed 20261203 (5.2 s) was one.
//!
//! The gate runs on every voter. While the voter hears a leader (AppendEntries within the
//! lease) its timer is off. After a lease of silence it asks the other voters (`PreVote`); a
//! voter says yes when it is not the leader and has heard none within the lease either
//! (`Controller::lost_leader`). With a majority of yeses the timer is switched on and openraft
//! elects as usual; otherwise it stays off and the voter asks again a heartbeat interval later.
//! A voter cut off from the others hears no yes and never raises its term; a restarted one hears
//! no from voters that still have their leader. The stand-in (`stand_in.rs`) triggers its
//! election directly, which this switch does not hold back: it acts only when the leader's
//! process is gone.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

use super::{raft_heartbeat_ms, raft_lease, Controller};
use crate::raft::rpc::{PeerClient, RequestBody, ResponseBody};

/// Runs until the node stops; does nothing on a learner or on the only voter.
pub(super) async fn run(ctrl: Arc<Controller>) {
    let me = ctrl.config.node_id.0 as u64;
    let voters = ctrl.voter_addrs();
    if voters.len() < 2 || !voters.iter().any(|(id, _)| *id == me) {
        return;
    }
    let others: Vec<Arc<PeerClient>> = voters
        .iter()
        .filter(|(id, _)| *id != me)
        .map(|(_, addr)| Arc::new(PeerClient::new(addr.clone())))
        .collect();
    let beat = Duration::from_millis(raft_heartbeat_ms(ctrl.config.heartbeat_interval));
    let lease = raft_lease(ctrl.config.heartbeat_interval);
    let majority = voters.len() / 2 + 1;
    // `Controller::start` switched the timer off for every voter of a multi-voter quorum.
    let mut open = false;
    loop {
        tokio::time::sleep(beat).await;
        if ctrl.stopping() {
            return;
        }
        let want =
            ctrl.lost_leader() && majority_lost_leader(&ctrl, &others, majority, lease).await;
        if want != open {
            open = want;
            ctrl.raft.runtime_config().elect(open);
            tracing::debug!(open, "election timer");
        }
    }
}

/// Asks the other voters whether they have lost the leader; true once `majority` voters,
/// this one included, have said so. Each question gets at most `limit`.
async fn majority_lost_leader(
    ctrl: &Controller,
    others: &[Arc<PeerClient>],
    majority: usize,
    limit: Duration,
) -> bool {
    let mut asked = JoinSet::new();
    for client in others {
        let client = client.clone();
        let req = ctrl.identity.request(RequestBody::PreVote);
        asked.spawn(async move {
            matches!(
                client.call(&req, limit).await,
                Ok(ResponseBody::PreVote { granted: true })
            )
        });
    }
    let mut yes = 1;
    while let Some(answer) = asked.join_next().await {
        if answer.unwrap_or(false) {
            yes += 1;
            if yes >= majority {
                // Dropping the set cancels the questions still out; a peer call is
                // cancellation-safe (`PeerClient::call`).
                return true;
            }
        }
    }
    false
}
