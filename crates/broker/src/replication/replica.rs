//! The partition's side of replication: serving a follower's fetch as leader (divergence check,
//! progress, HW), and as follower appending what the leader sent, truncating where the logs
//! diverge (by leader epoch, never to a local high watermark: KIP-101), and proposing nothing —
//! only leaders propose ISR changes (`isr_proposal`).

use bytes::Bytes;
use ferrymq_log::batch::split_batches;
use ferrymq_types::{LeaderEpoch, NodeId, Offset};
use uuid::Uuid;

use crate::error::BrokerError;
use crate::partition::{Partition, ReadOutcome};

/// The leader's answer to one partition of a replica fetch.
#[derive(Debug, Clone)]
pub enum ReplicaRead {
    /// The follower's log diverges: it must truncate to the end of `epoch` (at most
    /// `end_offset`) and fetch again.
    Diverging {
        /// Largest epoch the leader has that is ≤ the follower's last epoch.
        epoch: LeaderEpoch,
        /// Where that epoch ends in the leader's log.
        end_offset: Offset,
        /// The leader's HW.
        high_watermark: Offset,
        /// The leader's log start.
        log_start_offset: Offset,
    },
    /// Data (possibly none yet) from the fetch offset.
    Data(ReadOutcome),
}

/// What a follower fetcher needs to fetch one partition.
#[derive(Debug, Clone, Copy)]
pub struct FollowerPosition {
    /// The leader it follows.
    pub leader: NodeId,
    /// The leader epoch it follows.
    pub leader_epoch: LeaderEpoch,
    /// Its log end offset.
    pub fetch_offset: Offset,
    /// Epoch of its last batch.
    pub last_fetched_epoch: Option<LeaderEpoch>,
    /// Its log start offset.
    pub log_start_offset: Offset,
}

/// An ISR change a leader wants committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrProposal {
    /// The topic id.
    pub topic_id: Uuid,
    /// The leader epoch it is based on.
    pub leader_epoch: LeaderEpoch,
    /// The partition epoch it is based on.
    pub partition_epoch: i32,
    /// The ISR wanted.
    pub new_isr: Vec<NodeId>,
}

impl Partition {
    /// Serves a follower's fetch as leader: fences stale epochs, detects divergence from the
    /// follower's last fetched epoch, records its progress (its fetch offset acknowledges
    /// everything below), moves the HW, and reads up to the log end.
    pub fn read_for_replica(
        &self,
        replica: NodeId,
        fetch_offset: Offset,
        last_fetched_epoch: Option<LeaderEpoch>,
        current_epoch: Option<LeaderEpoch>,
        max_bytes: usize,
        min_one: bool,
    ) -> Result<ReplicaRead, BrokerError> {
        self.check_usable()?;
        let now = self.clock.now_ms();
        let slice = {
            let mut inner = self.lock();
            self.check_leader(&inner, current_epoch)?;
            let leo = inner.log.log_end_offset();
            let log_start = inner.log.log_start_offset();
            if let Some(lfe) = last_fetched_epoch.filter(|e| e.0 >= 0) {
                // Kafka's rule: the follower diverges if the leader does not have its last epoch,
                // or that epoch ends before the follower's log does.
                let (epoch, end) = inner
                    .log
                    .end_offset_for_epoch(lfe)
                    .unwrap_or((lfe, log_start));
                if epoch != lfe || end < fetch_offset {
                    return Ok(ReplicaRead::Diverging {
                        epoch,
                        end_offset: end,
                        high_watermark: inner.hw,
                        log_start_offset: log_start,
                    });
                }
            }
            if fetch_offset < log_start || fetch_offset > leo {
                return Err(BrokerError::OffsetOutOfRange {
                    requested: fetch_offset,
                    log_start,
                    log_end: leo,
                });
            }
            let known = inner
                .progress
                .as_mut()
                .expect("a leader has progress")
                .on_fetch(replica, fetch_offset, leo, now);
            if !known {
                return Err(BrokerError::NotLeaderOrFollower);
            }
            self.update_hw(&mut inner);
            let slice = inner
                .log
                .read(fetch_offset, max_bytes, leo, min_one)
                .map_err(BrokerError::from_log)?;
            (slice.slice, inner.hw, log_start, leo)
        };
        let (slice, hw, log_start, leo) = slice;
        let records = match slice {
            Some(s) => Some(s.read().map_err(|e| self.storage_failure("read", e))?),
            None => None,
        };
        Ok(ReplicaRead::Data(ReadOutcome {
            records,
            high_watermark: hw,
            log_start_offset: log_start,
            log_end_offset: leo,
        }))
    }

    /// Where this replica stands as a follower, or `None` if it leads or has no leader.
    pub fn follower_position(&self) -> Option<FollowerPosition> {
        if self.check_usable().is_err() {
            return None;
        }
        let inner = self.lock();
        let leader = inner.leader.filter(|l| *l != self.node_id)?;
        Some(FollowerPosition {
            leader,
            leader_epoch: inner.leader_epoch,
            fetch_offset: inner.log.log_end_offset(),
            last_fetched_epoch: inner.log.latest_epoch(),
            log_start_offset: inner.log.log_start_offset(),
        })
    }

    /// Appends what the leader sent (offsets and epochs kept), fsyncs it — a follower's next
    /// fetch offset acknowledges it, and acks=all counts on that being durable — and takes the
    /// leader's HW (clamped to this log). Ignored if the replica stopped following in `epoch`.
    pub fn append_replicated(
        &self,
        epoch: LeaderEpoch,
        records: Bytes,
        leader_hw: Offset,
        leader_log_start: Offset,
    ) -> Result<(), BrokerError> {
        self.check_usable()?;
        let now = self.clock.now_ms();
        let job = {
            let mut inner = self.lock();
            if inner.leader_epoch != epoch || inner.leader == Some(self.node_id) {
                return Ok(());
            }
            // A partial batch at the end of a fetch response is normal; it comes whole next time.
            let whole = whole_batches(&records);
            let batches = split_batches(records.slice(..whole)).map_err(|e| {
                BrokerError::Storage(format!("replicated batch from the leader is invalid: {e}"))
            })?;
            for b in &batches {
                let leo = inner.log.log_end_offset();
                if b.header().next_offset() <= leo {
                    continue;
                }
                if let Err(e) = inner.log.append_as_follower(b, now) {
                    return Err(self.fail_storage(e));
                }
            }
            let start = leader_log_start.min(inner.log.log_end_offset());
            if start > inner.log.log_start_offset() {
                inner
                    .log
                    .advance_log_start(start)
                    .map_err(|e| self.fail_storage(e))?;
            }
            inner.log.flush_job()
        };
        self.run_flush(job)?;
        let mut inner = self.lock();
        let leo = inner.log.log_end_offset();
        let hw = leader_hw.min(leo).max(inner.hw.min(leo));
        if hw != inner.hw {
            inner.hw = hw;
            self.hw_tx.send_replace(hw);
        }
        self.leo_tx.send_replace(leo);
        Ok(())
    }

    /// Truncates a diverged follower log: to the end of `div_epoch` as the leader has it, or
    /// where this log's own `div_epoch` ends if that is earlier. Never to the local HW.
    pub fn truncate_diverged(
        &self,
        epoch: LeaderEpoch,
        div_epoch: LeaderEpoch,
        div_end: Offset,
    ) -> Result<Offset, BrokerError> {
        let mut inner = self.lock();
        if inner.leader_epoch != epoch || inner.leader == Some(self.node_id) {
            return Ok(inner.log.log_end_offset());
        }
        let leo = inner.log.log_end_offset();
        let own_end = match inner.log.end_offset_for_epoch(div_epoch) {
            Some((_, end)) => end,
            None => div_end,
        };
        let target = div_end.min(own_end).min(leo);
        if target < leo {
            tracing::warn!(partition = %self.tp, leader_epoch = epoch.0, diverging_epoch = div_epoch.0,
                from = leo.0, to = target.0, "truncating diverged follower log");
            inner
                .log
                .truncate_to(target)
                .map_err(|e| self.fail_storage(e))?;
            let new_leo = inner.log.log_end_offset();
            if inner.hw > new_leo {
                inner.hw = new_leo;
            }
            self.leo_tx.send_replace(new_leo);
        }
        Ok(inner.log.log_end_offset())
    }

    /// A follower whose fetch offset is out of the leader's range: below the leader's log
    /// start it restarts from there (retention deleted what it lacks); beyond the leader's log
    /// end it cuts back to it (only uncommitted data lies beyond). Returns whether anything
    /// changed.
    pub fn reset_out_of_range(
        &self,
        epoch: LeaderEpoch,
        leader_log_start: Offset,
        leader_end: Offset,
    ) -> Result<bool, BrokerError> {
        let mut inner = self.lock();
        if inner.leader_epoch != epoch
            || inner.leader == Some(self.node_id)
            || leader_log_start.0 < 0
        {
            return Ok(false);
        }
        let leo = inner.log.log_end_offset();
        if leo < leader_log_start {
            tracing::warn!(partition = %self.tp, from = leo.0, to = leader_log_start.0, "follower log lies before the leader's log start; restarting from it");
            inner
                .log
                .truncate_fully_and_start_at(leader_log_start)
                .map_err(|e| self.fail_storage(e))?;
            inner.hw = leader_log_start;
        } else if leo > leader_end && leader_end >= inner.log.log_start_offset() {
            tracing::warn!(partition = %self.tp, from = leo.0, to = leader_end.0, "follower log beyond the leader's; cutting uncommitted tail");
            inner
                .log
                .truncate_to(leader_end)
                .map_err(|e| self.fail_storage(e))?;
            inner.hw = inner.hw.min(inner.log.log_end_offset());
        } else {
            return Ok(false);
        }
        self.leo_tx.send_replace(inner.log.log_end_offset());
        Ok(true)
    }

    /// As leader: the ISR change due now (followers out of sync for `lag_max_ms` leave,
    /// caught-up ones join), if any.
    pub fn isr_proposal(&self, lag_max_ms: i64) -> Option<IsrProposal> {
        let now = self.clock.now_ms();
        let inner = self.lock();
        let progress = inner.progress.as_ref()?;
        let leaving = progress.out_of_sync(&inner.isr, now, lag_max_ms);
        let joining = progress.ready_to_join(&inner.isr, inner.hw, now, lag_max_ms);
        if leaving.is_empty() && joining.is_empty() {
            return None;
        }
        let new_isr: Vec<NodeId> = inner
            .replicas
            .iter()
            .filter(|r| (inner.isr.contains(r) && !leaving.contains(r)) || joining.contains(r))
            .copied()
            .collect();
        Some(IsrProposal {
            topic_id: self.topic_id(),
            leader_epoch: inner.leader_epoch,
            partition_epoch: inner.partition_epoch,
            new_isr,
        })
    }

    /// Replication state for operators: (is leader, ISR size, replicas, under min ISR, lag of each
    /// follower in messages).
    pub fn replication_summary(&self) -> ReplicationSummary {
        let inner = self.lock();
        let leo = inner.log.log_end_offset();
        let followers = inner
            .progress
            .as_ref()
            .map(|p| {
                p.followers()
                    .map(|(id, f)| (*id, f.leo.map_or(-1, |l| leo.0 - l.0)))
                    .collect()
            })
            .unwrap_or_default();
        ReplicationSummary {
            leader: inner.leader == Some(self.node_id),
            isr: inner.isr.len(),
            replicas: inner.replicas.len(),
            under_min_isr: inner.isr.len() < inner.effective_min_isr(),
            follower_lag_messages: followers,
        }
    }
}

/// A partition's replication state, for metrics and the admin API.
#[derive(Debug, Clone)]
pub struct ReplicationSummary {
    /// This replica leads.
    pub leader: bool,
    /// ISR size.
    pub isr: usize,
    /// Replication factor.
    pub replicas: usize,
    /// The ISR is below the effective min.insync.replicas.
    pub under_min_isr: bool,
    /// For a leader: each follower's lag in messages (-1 before its first fetch).
    pub follower_lag_messages: Vec<(NodeId, i64)>,
}

/// Bytes of whole batches at the start of `records`.
fn whole_batches(records: &[u8]) -> usize {
    let mut pos = 0usize;
    while records.len() - pos >= ferrymq_log::batch::LOG_OVERHEAD_BYTES {
        let len = i32::from_be_bytes(records[pos + 8..pos + 12].try_into().expect("4 bytes"));
        let total = ferrymq_log::batch::LOG_OVERHEAD_BYTES as i64 + len as i64;
        if len < 0 || pos as i64 + total > records.len() as i64 {
            break;
        }
        pos += total as usize;
    }
    pos
}
