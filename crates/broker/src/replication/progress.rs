//! The leader's view of its followers, as pure logic (events in, decisions out; the clock is
//! passed in): each follower's log end offset as its fetches report it, when it was last caught
//! up, the high watermark that follows, and which followers should leave or join the ISR.
//!
//! Rules (`DESIGN.md` §1, Kafka's `Partition`):
//! - A follower's fetch offset is its acknowledgement: it has (durably) everything below it.
//! - `HW = min(LEO of every ISR member)`, leader included; it never moves back, and it does not
//!   move at all while the ISR is smaller than the effective `min.insync.replicas`
//!   (`min(min.insync.replicas, replication factor)`).
//! - A follower is caught up at a fetch if it reached the leader's LEO as of that fetch, or the
//!   leader's LEO as of its previous fetch; one not caught up for `replica.lag.time.max.ms`
//!   leaves the ISR.
//! - A follower outside the ISR joins once it has reached the HW and the start of the current
//!   leader epoch.

use std::collections::BTreeMap;

use ferrymq_types::{NodeId, Offset};

/// One follower's progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerProgress {
    /// Its log end offset as of its last fetch; `None` until it has fetched in this epoch.
    pub leo: Option<Offset>,
    /// When its last fetch arrived.
    pub last_fetch_ms: i64,
    /// The leader's LEO when that fetch arrived.
    pub leader_leo_at_last_fetch: Offset,
    /// When it was last caught up.
    pub last_caught_up_ms: i64,
}

/// The leader's bookkeeping for one partition in one leader epoch.
#[derive(Debug, Clone)]
pub struct LeaderProgress {
    leader: NodeId,
    followers: BTreeMap<NodeId, FollowerProgress>,
    /// First offset of the current leader epoch: a follower below it cannot join the ISR.
    epoch_start: Offset,
}

impl LeaderProgress {
    /// Bookkeeping for a leader that took over at `epoch_start` with these replicas. Followers
    /// get a full lag window from `now_ms` before they can be judged out of sync.
    pub fn new(
        leader: NodeId,
        replicas: &[NodeId],
        epoch_start: Offset,
        now_ms: i64,
    ) -> LeaderProgress {
        let followers = replicas
            .iter()
            .filter(|r| **r != leader)
            .map(|r| {
                (
                    *r,
                    FollowerProgress {
                        leo: None,
                        last_fetch_ms: now_ms,
                        leader_leo_at_last_fetch: epoch_start,
                        last_caught_up_ms: now_ms,
                    },
                )
            })
            .collect();
        LeaderProgress {
            leader,
            followers,
            epoch_start,
        }
    }

    /// Keeps the follower set in line with a new replica list (new replicas start unknown).
    pub fn set_replicas(&mut self, replicas: &[NodeId], now_ms: i64) {
        self.followers.retain(|id, _| replicas.contains(id));
        for r in replicas.iter().filter(|r| **r != self.leader) {
            self.followers.entry(*r).or_insert(FollowerProgress {
                leo: None,
                last_fetch_ms: now_ms,
                leader_leo_at_last_fetch: self.epoch_start,
                last_caught_up_ms: now_ms,
            });
        }
    }

    /// Records a follower fetch at `fetch_offset` while the leader's LEO is `leader_leo`.
    /// Returns false for a node that is not a follower of this partition.
    pub fn on_fetch(
        &mut self,
        follower: NodeId,
        fetch_offset: Offset,
        leader_leo: Offset,
        now_ms: i64,
    ) -> bool {
        let Some(p) = self.followers.get_mut(&follower) else {
            return false;
        };
        if fetch_offset >= leader_leo {
            p.last_caught_up_ms = now_ms;
        } else if fetch_offset >= p.leader_leo_at_last_fetch {
            p.last_caught_up_ms = p.last_caught_up_ms.max(p.last_fetch_ms);
        }
        p.leo = Some(fetch_offset);
        p.last_fetch_ms = now_ms;
        p.leader_leo_at_last_fetch = leader_leo;
        true
    }

    /// The high watermark the ISR allows, or `None` if it cannot move now (a member has not
    /// fetched yet, or the ISR is below the effective minimum).
    pub fn high_watermark(
        &self,
        isr: &[NodeId],
        leader_leo: Offset,
        min_isr: usize,
    ) -> Option<Offset> {
        if isr.len() < min_isr {
            return None;
        }
        let mut hw = leader_leo;
        for member in isr.iter().filter(|m| **m != self.leader) {
            hw = hw.min(self.followers.get(member)?.leo?);
        }
        Some(hw)
    }

    /// ISR members (leader excepted) not caught up within `lag_max_ms`: to be removed.
    pub fn out_of_sync(&self, isr: &[NodeId], now_ms: i64, lag_max_ms: i64) -> Vec<NodeId> {
        isr.iter()
            .filter(|m| **m != self.leader)
            .filter(|m| {
                self.followers
                    .get(m)
                    .is_some_and(|p| now_ms - p.last_caught_up_ms > lag_max_ms)
            })
            .copied()
            .collect()
    }

    /// Followers outside the ISR that have caught up to `hw` and the epoch start, and are
    /// still fetching (within `lag_max_ms`): to be added. A follower that died after catching
    /// up keeps its last offset, which would otherwise look caught up forever.
    pub fn ready_to_join(
        &self,
        isr: &[NodeId],
        hw: Offset,
        now_ms: i64,
        lag_max_ms: i64,
    ) -> Vec<NodeId> {
        self.followers
            .iter()
            .filter(|(id, _)| !isr.contains(id))
            .filter(|(_, p)| now_ms - p.last_fetch_ms <= lag_max_ms)
            .filter(|(_, p)| {
                p.leo
                    .is_some_and(|leo| leo >= hw && leo >= self.epoch_start)
            })
            .map(|(id, _)| *id)
            .collect()
    }

    /// A follower's progress (for metrics and the admin API).
    pub fn follower(&self, id: NodeId) -> Option<&FollowerProgress> {
        self.followers.get(&id)
    }

    /// All followers' progress.
    pub fn followers(&self) -> impl Iterator<Item = (&NodeId, &FollowerProgress)> {
        self.followers.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: NodeId = NodeId(1);
    const F2: NodeId = NodeId(2);
    const F3: NodeId = NodeId(3);

    fn progress() -> LeaderProgress {
        LeaderProgress::new(L, &[L, F2, F3], Offset(0), 0)
    }

    #[test]
    fn hw_waits_for_every_isr_member() {
        let mut p = progress();
        let isr = [L, F2, F3];
        assert_eq!(
            p.high_watermark(&isr, Offset(10), 1),
            None,
            "followers have not fetched yet"
        );
        p.on_fetch(F2, Offset(10), Offset(10), 5);
        assert_eq!(p.high_watermark(&isr, Offset(10), 1), None);
        p.on_fetch(F3, Offset(7), Offset(10), 5);
        assert_eq!(p.high_watermark(&isr, Offset(10), 1), Some(Offset(7)));
        assert_eq!(
            p.high_watermark(&[L, F2], Offset(10), 1),
            Some(Offset(10)),
            "F3 out of the ISR no longer counts"
        );
    }

    #[test]
    fn hw_does_not_move_below_min_insync() {
        let mut p = progress();
        p.on_fetch(F2, Offset(10), Offset(10), 5);
        assert_eq!(p.high_watermark(&[L], Offset(10), 2), None);
        assert_eq!(p.high_watermark(&[L, F2], Offset(10), 2), Some(Offset(10)));
    }

    #[test]
    fn a_follower_that_stops_fetching_falls_out_of_sync_after_the_lag_time() {
        let mut p = progress();
        let isr = [L, F2, F3];
        p.on_fetch(F2, Offset(0), Offset(0), 100);
        p.on_fetch(F3, Offset(0), Offset(0), 100);
        p.on_fetch(F2, Offset(5), Offset(5), 20_000);
        assert_eq!(p.out_of_sync(&isr, 20_000, 10_000), vec![F3]);
        assert!(p.out_of_sync(&isr, 10_000, 10_000).is_empty());
    }

    #[test]
    fn a_slow_follower_that_reaches_the_previous_leo_stays_in_sync() {
        let mut p = progress();
        // Leader moves on between fetches, but the follower always reaches where it was.
        p.on_fetch(F2, Offset(0), Offset(10), 1_000);
        p.on_fetch(F2, Offset(10), Offset(20), 2_000);
        p.on_fetch(F2, Offset(20), Offset(30), 12_500);
        assert_eq!(p.follower(F2).unwrap().last_caught_up_ms, 2_000);
        assert!(p.out_of_sync(&[L, F2], 12_500, 11_000).is_empty());
        // One that never reaches the previous LEO is not caught up.
        let mut q = progress();
        q.on_fetch(F2, Offset(0), Offset(10), 1_000);
        q.on_fetch(F2, Offset(5), Offset(20), 2_000);
        q.on_fetch(F2, Offset(15), Offset(30), 12_500);
        assert_eq!(q.out_of_sync(&[L, F2], 12_500, 10_000), vec![F2]);
    }

    #[test]
    fn a_follower_joins_once_at_the_hw_and_past_the_epoch_start() {
        let mut p = LeaderProgress::new(L, &[L, F2, F3], Offset(50), 0);
        p.on_fetch(F3, Offset(40), Offset(60), 1);
        assert!(
            p.ready_to_join(&[L, F2], Offset(30), 3, 1000).is_empty(),
            "below the epoch start"
        );
        p.on_fetch(F3, Offset(55), Offset(60), 2);
        assert!(
            p.ready_to_join(&[L, F2], Offset(58), 3, 1000).is_empty(),
            "below the hw"
        );
        p.on_fetch(F3, Offset(60), Offset(60), 3);
        assert_eq!(p.ready_to_join(&[L, F2], Offset(58), 3, 1000), vec![F3]);
        assert!(
            p.ready_to_join(&[L, F2], Offset(58), 5000, 1000).is_empty(),
            "a follower that stopped fetching does not join"
        );
    }

    #[test]
    fn unknown_nodes_are_not_followers() {
        let mut p = progress();
        assert!(!p.on_fetch(NodeId(9), Offset(1), Offset(1), 0));
    }
}
