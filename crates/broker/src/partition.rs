//! One partition replica on this broker: its log, its role and leader epoch, and its high
//! watermark, behind one lock held only for in-memory work and page-cache writes.
//!
//! The high watermark (HW) is the commit point: consumers never read at or past it, acks=all
//! waits for it. On the leader `HW = min(LEO of every ISR member)`, and it does not advance while
//! the ISR is smaller than the effective `min.insync.replicas` (`DESIGN.md` §1). Every HW change
//! is published on a watch channel that long-polling fetches and acks=all producers wait on.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use ferrymq_cluster::{PartitionInfo, TopicSettings};
use ferrymq_log::compaction::{self, CleanOptions, CleanStats, Throttle};
use ferrymq_log::{FlushJob, LeaderAppend, LogConfig, OpenOptions, PartitionLog, ValidatedBatch};
use ferrymq_types::{LeaderEpoch, NodeId, Offset, TopicPartition};
use tokio::sync::watch;
use uuid::Uuid;

use crate::clock::Clock;
use crate::error::BrokerError;
use crate::replication::progress::LeaderProgress;

/// Name of the file holding the partition's topic id, as Kafka's `partition.metadata`.
const PARTITION_METADATA: &str = "partition.metadata";

/// Which offsets a reader may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadBound {
    /// Consumers: below the high watermark.
    HighWatermark,
    /// Replicas: everything the leader has.
    LogEnd,
}

/// What ListOffsets asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The log start offset (-2).
    Earliest,
    /// The high watermark (-1).
    Latest,
    /// The record with the largest timestamp (-3).
    MaxTimestamp,
    /// The first record at or after this timestamp.
    Timestamp(i64),
}

/// The answer to ListOffsets for one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListedOffset {
    /// The offset, -1 if none matches.
    pub offset: Offset,
    /// The matching record's timestamp, -1 if not applicable.
    pub timestamp: i64,
    /// The partition's leader epoch.
    pub leader_epoch: LeaderEpoch,
}

/// This replica's part in its partition, as an operator sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// This broker leads the partition.
    Leader,
    /// Another broker leads it.
    Follower,
    /// No leader, or this replica's storage failed.
    Offline,
}

/// A consistent view of one replica for metrics and the admin API.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PartitionSnapshot {
    /// Role of this replica.
    pub role: Role,
    /// Current leader, if any.
    pub leader: Option<NodeId>,
    /// Current leader epoch.
    pub leader_epoch: LeaderEpoch,
    /// Replicas, preferred leader first.
    pub replicas: Vec<NodeId>,
    /// In-sync replicas.
    pub isr: Vec<NodeId>,
    /// Effective `min.insync.replicas` (capped by the replica count).
    pub min_insync_replicas: usize,
    /// High watermark.
    pub high_watermark: Offset,
    /// Log start offset.
    pub log_start_offset: Offset,
    /// Log end offset.
    pub log_end_offset: Offset,
    /// Bytes of the log on disk.
    pub log_size_bytes: u64,
    /// Segments of the log.
    pub segments: usize,
    /// On the leader, each follower's lag; empty elsewhere.
    pub followers: Vec<FollowerLag>,
}

/// How far one follower is behind the leader, as the leader sees it.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct FollowerLag {
    /// The follower.
    pub replica: NodeId,
    /// Leader LEO minus the follower's LEO as of its last fetch (the leader's whole log before
    /// its first fetch in this epoch).
    pub messages: i64,
    /// Time since it was last caught up.
    pub seconds: f64,
}

/// Data read from a partition, with the offsets a fetch response reports.
#[derive(Debug, Clone)]
pub struct ReadOutcome {
    /// Batches, possibly ending in a partial one; `None` when nothing is available.
    pub records: Option<Bytes>,
    /// High watermark at the time of the read.
    pub high_watermark: Offset,
    /// Log start offset.
    pub log_start_offset: Offset,
    /// Log end offset.
    pub log_end_offset: Offset,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) log: PartitionLog,
    pub(crate) leader_epoch: LeaderEpoch,
    pub(crate) partition_epoch: i32,
    pub(crate) leader: Option<NodeId>,
    pub(crate) isr: Vec<NodeId>,
    pub(crate) replicas: Vec<NodeId>,
    pub(crate) hw: Offset,
    pub(crate) settings: TopicSettings,
    pub(crate) unflushed_messages: u64,
    /// The leader's view of its followers; `None` unless this replica leads.
    pub(crate) progress: Option<LeaderProgress>,
    /// Compaction: offsets below this were covered by the last pass (in memory only, so a
    /// restart makes the first pass consider everything, which costs one extra pass).
    pub(crate) first_dirty: Offset,
}

impl Inner {
    /// `min(min.insync.replicas, replication factor)`, as Kafka.
    pub(crate) fn effective_min_isr(&self) -> usize {
        (self.settings.min_insync_replicas.max(1) as usize).min(self.replicas.len().max(1))
    }
}

/// What an acks=all produce waiting for `target` should do now.
#[derive(Debug)]
enum AckState {
    /// The HW passed the batch: answer success.
    Done,
    /// Keep waiting.
    Wait,
    /// Answer with this error.
    Failed(BrokerError),
}

/// A partition replica hosted by this broker.
#[derive(Debug)]
pub struct Partition {
    pub(crate) tp: TopicPartition,
    topic_id: Uuid,
    pub(crate) node_id: NodeId,
    pub(crate) inner: Mutex<Inner>,
    pub(crate) hw_tx: watch::Sender<Offset>,
    /// The log end offset, for replica fetches long-polling on new data.
    pub(crate) leo_tx: watch::Sender<Offset>,
    pub(crate) clock: Arc<dyn Clock>,
    /// Set after a storage error: the partition answers KAFKA_STORAGE_ERROR until restart.
    offline: AtomicBool,
    /// Set when the topic is deleted: late appends fail instead of writing to unlinked files.
    removed: AtomicBool,
}

/// The storage-engine settings of a topic. A topic that is compacted but not `delete` keeps
/// its segments whatever their age or size (only DeleteRecords moves its start).
pub fn log_config(s: &TopicSettings) -> LogConfig {
    let (retention_ms, retention_bytes) = if s.cleanup_delete {
        (s.retention_ms, s.retention_bytes)
    } else {
        (-1, -1)
    };
    LogConfig {
        segment_bytes: s.segment_bytes.max(14) as u32,
        segment_ms: s.segment_ms,
        retention_ms,
        retention_bytes,
        index_interval_bytes: s.index_interval_bytes.max(0) as u32,
    }
}

impl Partition {
    /// Opens (or creates) the replica's log under `data_dir`.
    #[allow(clippy::too_many_arguments)] // each argument is a distinct piece of the replica's identity
    pub fn open(
        data_dir: &Path,
        tp: TopicPartition,
        topic_id: Uuid,
        node_id: NodeId,
        info: &PartitionInfo,
        settings: TopicSettings,
        opts: OpenOptions,
        checkpointed_hw: Offset,
        clock: Arc<dyn Clock>,
    ) -> Result<Partition, BrokerError> {
        let dir = data_dir.join(tp.dir_name());
        prepare_dir(&dir, topic_id)?;
        let (log, report) =
            PartitionLog::open(&dir, log_config(&settings), opts).map_err(BrokerError::from_log)?;
        if report.segments_scanned > 0 || report.truncated_bytes > 0 {
            tracing::warn!(partition = %tp, scanned = report.segments_scanned, truncated_bytes = report.truncated_bytes,
                dropped_segments = report.segments_dropped, log_end_offset = log.log_end_offset().0, "partition log recovered");
        }
        let hw = checkpointed_hw.clamp(log.log_start_offset(), log.log_end_offset());
        let (hw_tx, _) = watch::channel(hw);
        let (leo_tx, _) = watch::channel(log.log_end_offset());
        let now = clock.now_ms();
        let progress = (info.leader == Some(node_id))
            .then(|| LeaderProgress::new(node_id, &info.replicas, log.log_end_offset(), now));
        let p = Partition {
            tp,
            topic_id,
            node_id,
            inner: Mutex::new(Inner {
                log,
                leader_epoch: info.leader_epoch,
                partition_epoch: info.partition_epoch,
                leader: info.leader,
                isr: info.isr.clone(),
                replicas: info.replicas.clone(),
                hw,
                settings,
                unflushed_messages: 0,
                progress,
                first_dirty: Offset(0),
            }),
            hw_tx,
            leo_tx,
            clock,
            offline: AtomicBool::new(false),
            removed: AtomicBool::new(false),
        };
        p.update_hw(&mut p.lock());
        Ok(p)
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().expect("partition lock poisoned")
    }

    /// The topic-partition.
    pub fn tp(&self) -> &TopicPartition {
        &self.tp
    }

    /// The topic's id.
    pub fn topic_id(&self) -> Uuid {
        self.topic_id
    }

    /// Applies a new metadata image's view of this partition: a new leader epoch makes this
    /// replica leader (fresh follower bookkeeping from its log end) or follower.
    pub fn apply_metadata(&self, info: &PartitionInfo, settings: TopicSettings) {
        let now = self.clock.now_ms();
        let mut inner = self.lock();
        assert!(
            info.leader_epoch >= inner.leader_epoch,
            "leader epoch went backwards for {}: {} -> {}",
            self.tp,
            inner.leader_epoch,
            info.leader_epoch
        );
        self.log_changes(&inner, info);
        let new_epoch = info.leader_epoch != inner.leader_epoch || info.leader != inner.leader;
        inner.leader_epoch = info.leader_epoch;
        inner.partition_epoch = info.partition_epoch;
        inner.leader = info.leader;
        inner.isr = info.isr.clone();
        inner.replicas = info.replicas.clone();
        if inner.settings != settings {
            inner.log.set_config(log_config(&settings));
            inner.settings = settings;
        }
        let leads = info.leader == Some(self.node_id);
        if leads && (new_epoch || inner.progress.is_none()) {
            let leo = inner.log.log_end_offset();
            inner.progress = Some(LeaderProgress::new(self.node_id, &info.replicas, leo, now));
            tracing::info!(partition = %self.tp, leader_epoch = info.leader_epoch.0, log_end_offset = leo.0,
                high_watermark = inner.hw.0, isr = ?info.isr.iter().map(|r| r.0).collect::<Vec<_>>(), "became leader");
        } else if leads {
            inner
                .progress
                .as_mut()
                .expect("leader has progress")
                .set_replicas(&info.replicas, now);
        } else {
            if new_epoch {
                tracing::info!(partition = %self.tp, leader_epoch = info.leader_epoch.0, leader = ?info.leader.map(|l| l.0), "following");
            }
            inner.progress = None;
        }
        self.update_hw(&mut inner);
        // Wake acks=all waiters and fetches: they re-check leadership and the ISR.
        self.hw_tx.send_modify(|_| {});
        self.leo_tx.send_modify(|_| {});
    }

    /// Log lines for changes an operator cares about that `apply_metadata` does not log
    /// itself (it logs "became leader" and "following"): a partition left without a leader,
    /// and ISR changes, with the partition and leader epoch. ISR changes of partitions led
    /// here are counted in metrics.
    fn log_changes(&self, inner: &Inner, info: &PartitionInfo) {
        let leader = info.leader.map(|l| l.0);
        let changed = info.leader != inner.leader || info.leader_epoch != inner.leader_epoch;
        if changed && info.leader.is_none() {
            tracing::warn!(partition = %self.tp, leader_epoch = info.leader_epoch.0, isr = ?ids(&info.isr), "partition has no leader: offline");
        }
        if info.isr != inner.isr {
            tracing::info!(partition = %self.tp, leader, leader_epoch = info.leader_epoch.0,
                isr_before = ?ids(&inner.isr), isr = ?ids(&info.isr), "ISR changed");
            if info.leader == Some(self.node_id) {
                crate::metrics::isr_changed(&self.tp, inner.isr.len(), info.isr.len());
            }
        }
    }

    /// A consistent view of this replica for metrics and the admin API.
    pub fn snapshot(&self) -> PartitionSnapshot {
        let inner = self.lock();
        let role = match inner.leader {
            _ if self.offline.load(Ordering::Acquire) => Role::Offline,
            Some(l) if l == self.node_id => Role::Leader,
            Some(_) => Role::Follower,
            None => Role::Offline,
        };
        PartitionSnapshot {
            role,
            leader: inner.leader,
            leader_epoch: inner.leader_epoch,
            replicas: inner.replicas.clone(),
            isr: inner.isr.clone(),
            min_insync_replicas: inner.effective_min_isr(),
            high_watermark: inner.hw,
            log_start_offset: inner.log.log_start_offset(),
            log_end_offset: inner.log.log_end_offset(),
            log_size_bytes: inner.log.size_bytes(),
            segments: inner.log.segment_count(),
            followers: self.follower_lags(&inner),
        }
    }

    fn follower_lags(&self, inner: &Inner) -> Vec<FollowerLag> {
        let Some(progress) = &inner.progress else {
            return Vec::new();
        };
        let leo = inner.log.log_end_offset();
        let now = self.clock.now_ms();
        progress
            .followers()
            .map(|(id, f)| FollowerLag {
                replica: *id,
                messages: leo.0 - f.leo.map_or(inner.log.log_start_offset().0, |l| l.0),
                seconds: (now - f.last_caught_up_ms).max(0) as f64 / 1000.0,
            })
            .collect()
    }

    /// Recomputes the leader's HW from the ISR's log end offsets and publishes it if it moved.
    /// It never moves back (`DESIGN.md` §1) and not at all below the effective minimum ISR.
    pub(crate) fn update_hw(&self, inner: &mut Inner) {
        let leo = inner.log.log_end_offset();
        let min_isr = inner.effective_min_isr();
        let Some(progress) = &inner.progress else {
            return;
        };
        let Some(hw) = progress.high_watermark(&inner.isr, leo, min_isr) else {
            return;
        };
        assert!(hw <= leo, "hw={hw} leo={leo} partition={}", self.tp);
        if hw > inner.hw {
            inner.hw = hw;
            self.hw_tx.send_replace(hw);
        }
    }

    /// Waits until every in-sync replica has the offsets below `target` (the high watermark
    /// passed it), or until it cannot: leadership moved away from `epoch`, or the ISR fell
    /// below min.insync.replicas. The acks=all wait of produce and of group writes. `hw` must
    /// be subscribed before the append, so that no move of the high watermark is missed.
    pub async fn replicated(
        &self,
        target: Offset,
        epoch: LeaderEpoch,
        hw: &mut watch::Receiver<Offset>,
    ) -> Result<(), BrokerError> {
        loop {
            match self.ack_state(target, epoch) {
                AckState::Done => return Ok(()),
                AckState::Failed(e) => return Err(e),
                AckState::Wait => {}
            }
            if hw.changed().await.is_err() {
                return Err(BrokerError::NotLeaderOrFollower);
            }
        }
    }

    /// Where an acks=all produce waiting for the HW to reach `target` in `epoch` stands.
    fn ack_state(&self, target: Offset, epoch: LeaderEpoch) -> AckState {
        let inner = self.lock();
        if inner.leader != Some(self.node_id) || inner.leader_epoch != epoch {
            return AckState::Failed(BrokerError::NotLeaderOrFollower);
        }
        if inner.hw >= target {
            return AckState::Done;
        }
        if inner.isr.len() < inner.effective_min_isr() {
            return AckState::Failed(BrokerError::NotEnoughReplicasAfterAppend);
        }
        AckState::Wait
    }

    /// The current leader epoch.
    pub fn leader_epoch(&self) -> LeaderEpoch {
        self.lock().leader_epoch
    }

    pub(crate) fn check_usable(&self) -> Result<(), BrokerError> {
        if self.removed.load(Ordering::Acquire) {
            return Err(BrokerError::UnknownTopicOrPartition);
        }
        if self.offline.load(Ordering::Acquire) {
            return Err(BrokerError::Storage(format!(
                "partition {} is offline",
                self.tp
            )));
        }
        Ok(())
    }

    pub(crate) fn check_leader(
        &self,
        inner: &Inner,
        current_epoch: Option<LeaderEpoch>,
    ) -> Result<(), BrokerError> {
        if let Some(request) = current_epoch.filter(|e| e.0 >= 0) {
            if request < inner.leader_epoch {
                return Err(BrokerError::FencedLeaderEpoch {
                    request,
                    current: inner.leader_epoch,
                });
            }
            if request > inner.leader_epoch {
                return Err(BrokerError::UnknownLeaderEpoch {
                    request,
                    current: inner.leader_epoch,
                });
            }
        }
        match inner.leader {
            Some(l) if l == self.node_id => Ok(()),
            Some(_) => Err(BrokerError::NotLeaderOrFollower),
            None => Err(BrokerError::LeaderNotAvailable),
        }
    }

    /// Checks that a produce may be appended: leader, size, and for acks=all enough replicas.
    pub fn check_produce(&self, batch_bytes: usize, acks_all: bool) -> Result<(), BrokerError> {
        self.check_usable()?;
        let inner = self.lock();
        self.check_leader(&inner, None)?;
        let max = inner.settings.max_message_bytes;
        if batch_bytes > max.max(0) as usize {
            return Err(BrokerError::MessageTooLarge {
                bytes: batch_bytes,
                max,
            });
        }
        let min_isr =
            (inner.settings.min_insync_replicas.max(1) as usize).min(inner.replicas.len().max(1));
        if acks_all && inner.isr.len() < min_isr {
            return Err(BrokerError::NotEnoughReplicas {
                isr: inner.isr.len(),
                min: inner.settings.min_insync_replicas,
            });
        }
        Ok(())
    }

    /// Appends a producer's batch as leader. Called only by the log writer thread. An
    /// idempotent producer's retry is answered `Duplicate` with the original offsets; a batch
    /// breaking its producer's sequence or epoch is refused, and the partition stays online.
    pub fn append_as_leader(
        &self,
        batch: &ValidatedBatch,
        now_ms: i64,
    ) -> Result<LeaderAppend, BrokerError> {
        self.check_usable()?;
        let mut inner = self.lock();
        self.check_leader(&inner, None)?;
        let epoch = inner.leader_epoch;
        let appended = match inner.log.append_as_leader(batch, epoch, now_ms) {
            Ok(appended) => appended,
            Err(ferrymq_log::Error::Producer(e)) => return Err(BrokerError::Producer(e)),
            Err(e) => return Err(self.go_offline(e)),
        };
        self.update_hw(&mut inner);
        if !appended.is_duplicate() {
            inner.unflushed_messages += batch.header().record_count.max(0) as u64;
            self.leo_tx.send_replace(appended.info().log_end_offset);
        }
        Ok(appended)
    }

    /// Forgets idempotent producers idle for `expiration_ms` at `now_ms`; returns how many.
    pub fn remove_expired_producers(&self, now_ms: i64, expiration_ms: i64) -> usize {
        self.lock()
            .log
            .remove_expired_producers(now_ms, expiration_ms)
    }

    /// Messages appended since the last fsync.
    pub fn unflushed_messages(&self) -> u64 {
        self.lock().unflushed_messages
    }

    /// Takes the fsync work for everything appended so far (run it outside any lock).
    pub fn flush_job(&self) -> FlushJob {
        let mut inner = self.lock();
        inner.unflushed_messages = 0;
        inner.log.flush_job()
    }

    /// Runs a flush job and records its result; a failed fsync takes the partition offline,
    /// because the kernel may have dropped the dirty pages it could not write.
    pub fn run_flush(&self, job: FlushJob) -> Result<Offset, BrokerError> {
        if let Err(e) = job.run() {
            return Err(self.go_offline(e));
        }
        self.lock().log.mark_job_flushed(&job);
        Ok(job.upto)
    }

    /// Offsets below this are durable.
    pub fn recovery_point(&self) -> Offset {
        self.lock().log.recovery_point()
    }

    /// A storage-engine failure: the partition goes offline.
    pub(crate) fn fail_storage(&self, e: ferrymq_log::Error) -> BrokerError {
        self.go_offline(e)
    }

    /// An I/O failure reading this partition: it goes offline.
    pub(crate) fn storage_failure(&self, op: &'static str, e: std::io::Error) -> BrokerError {
        self.go_offline(ferrymq_log::Error::Io {
            op,
            path: PathBuf::from(self.tp.dir_name()),
            source: e,
        })
    }

    fn go_offline(&self, e: ferrymq_log::Error) -> BrokerError {
        let first = !self.offline.swap(true, Ordering::AcqRel);
        if first {
            tracing::error!(partition = %self.tp, error = %e, "storage error: partition taken offline");
        }
        BrokerError::Storage(e.to_string())
    }

    /// The current high watermark.
    pub fn high_watermark(&self) -> Offset {
        *self.hw_tx.borrow()
    }

    /// A receiver woken at every HW change (long-poll fetches, acks=all).
    pub fn subscribe_hw(&self) -> watch::Receiver<Offset> {
        self.hw_tx.subscribe()
    }

    /// Locates and reads up to `max_bytes` from `offset`.
    pub fn read(
        &self,
        offset: Offset,
        max_bytes: usize,
        bound: ReadBound,
        min_one: bool,
        current_epoch: Option<LeaderEpoch>,
    ) -> Result<ReadOutcome, BrokerError> {
        self.check_usable()?;
        let (slice, outcome) = {
            let inner = self.lock();
            self.check_leader(&inner, current_epoch)?;
            let upper = match bound {
                ReadBound::HighWatermark => inner.hw,
                ReadBound::LogEnd => inner.log.log_end_offset(),
            };
            let slice = inner
                .log
                .read(offset, max_bytes, upper, min_one)
                .map_err(BrokerError::from_log)?;
            let outcome = ReadOutcome {
                records: None,
                high_watermark: inner.hw,
                log_start_offset: inner.log.log_start_offset(),
                log_end_offset: inner.log.log_end_offset(),
            };
            (slice.slice, outcome)
        };
        let records = match slice {
            Some(s) => Some(s.read().map_err(|e| {
                self.go_offline(ferrymq_log::Error::Io {
                    op: "read",
                    path: PathBuf::from(self.tp.dir_name()),
                    source: e,
                })
            })?),
            None => None,
        };
        Ok(ReadOutcome { records, ..outcome })
    }

    /// ListOffsets for one partition (consumers: offsets at or past the HW are not listed).
    pub fn list_offset(
        &self,
        spec: OffsetSpec,
        current_epoch: Option<LeaderEpoch>,
    ) -> Result<ListedOffset, BrokerError> {
        self.check_usable()?;
        let inner = self.lock();
        self.check_leader(&inner, current_epoch)?;
        let epoch = inner.leader_epoch;
        let none = ListedOffset {
            offset: Offset(-1),
            timestamp: -1,
            leader_epoch: epoch,
        };
        let found = match spec {
            OffsetSpec::Earliest => Some((inner.log.log_start_offset(), -1)),
            OffsetSpec::Latest => Some((inner.hw, -1)),
            OffsetSpec::MaxTimestamp => {
                inner.log.max_timestamp().map_err(|e| self.go_offline(e))?
            }
            OffsetSpec::Timestamp(ts) => inner
                .log
                .offset_for_timestamp(ts)
                .map_err(|e| self.go_offline(e))?,
        };
        Ok(match found {
            Some((offset, timestamp))
                if matches!(spec, OffsetSpec::Earliest | OffsetSpec::Latest)
                    || offset < inner.hw =>
            {
                ListedOffset {
                    offset,
                    timestamp,
                    leader_epoch: epoch,
                }
            }
            _ => none,
        })
    }

    /// OffsetForLeaderEpoch: `(epoch, end offset)` for the largest epoch ≤ `epoch`, or
    /// `(-1, -1)` when the log has no such epoch.
    pub fn end_offset_for_epoch(
        &self,
        epoch: LeaderEpoch,
        current_epoch: Option<LeaderEpoch>,
    ) -> Result<(LeaderEpoch, Offset), BrokerError> {
        self.check_usable()?;
        let inner = self.lock();
        self.check_leader(&inner, current_epoch)?;
        Ok(inner
            .log
            .end_offset_for_epoch(epoch)
            .unwrap_or((LeaderEpoch::UNKNOWN, Offset(-1))))
    }

    /// DeleteRecords: moves the log start to `offset` (-1 means the HW). Returns the new low
    /// watermark.
    pub fn delete_records(&self, offset: Offset) -> Result<Offset, BrokerError> {
        self.check_usable()?;
        let mut inner = self.lock();
        self.check_leader(&inner, None)?;
        let target = if offset.0 == -1 { inner.hw } else { offset };
        if target < Offset(0) || target > inner.hw {
            return Err(BrokerError::OffsetOutOfRange {
                requested: offset,
                log_start: inner.log.log_start_offset(),
                log_end: inner.hw,
            });
        }
        let start = inner
            .log
            .advance_log_start(target)
            .map_err(|e| self.go_offline(e))?;
        let hw = inner.hw;
        // Drop the whole segments now below the log start; `i64::MIN` as "now" keeps time-based
        // retention out of it.
        inner
            .log
            .enforce_retention(i64::MIN, hw)
            .map_err(|e| self.go_offline(e))?;
        Ok(start)
    }

    /// Deletes segments that retention lets go.
    pub fn enforce_retention(&self, now_ms: i64) -> Result<usize, BrokerError> {
        self.check_usable()?;
        let mut inner = self.lock();
        let hw = inner.hw;
        inner
            .log
            .enforce_retention(now_ms, hw)
            .map_err(|e| self.go_offline(e))
    }

    /// One compaction pass if the topic is compacted and enough of it is dirty
    /// (`min.cleanable.dirty.ratio`). Blocking: the rewrite runs without the lock, which is
    /// taken only to snapshot the segments and to swap the cleaned ones in.
    pub fn compact(
        &self,
        now_ms: i64,
        key_map_bytes_max: usize,
        throttle: &mut Throttle,
    ) -> Result<Option<CleanStats>, BrokerError> {
        self.check_usable()?;
        let (snap, opts) = {
            let inner = self.lock();
            if !inner.settings.cleanup_compact {
                return Ok(None);
            }
            let snap = inner.log.clean_snapshot(inner.hw);
            let total = snap.bytes();
            let dirty = snap.dirty_bytes(inner.first_dirty);
            if total == 0
                || (dirty as f64) < inner.settings.min_cleanable_dirty_ratio * total as f64
                || dirty == 0
            {
                return Ok(None);
            }
            let opts = CleanOptions {
                now_ms,
                delete_retention_ms: inner.settings.delete_retention_ms,
                key_map_bytes_max,
            };
            (snap, opts)
        };
        let cleaned = match compaction::clean(&snap, &opts, throttle) {
            Ok(c) => c,
            // A disk error takes the partition offline; a batch the cleaner cannot decode
            // (a producer's malformed records behind a valid CRC) only stops compaction.
            Err(e @ ferrymq_log::Error::Io { .. }) => return Err(self.go_offline(e)),
            Err(ferrymq_log::Error::Interrupted) => return Ok(None),
            Err(e) => return Err(BrokerError::Storage(format!("compaction skipped: {e}"))),
        };
        let stats = cleaned.stats;
        let end = cleaned.end;
        let mut inner = self.lock();
        inner
            .log
            .install_cleaned(cleaned)
            .map_err(|e| self.go_offline(e))?;
        inner.first_dirty = inner.first_dirty.max(end);
        Ok(Some(stats))
    }

    /// Offsets for the data-dir checkpoints: (recovery point, HW, log start).
    pub fn checkpoint_offsets(&self) -> (Offset, Offset, Offset) {
        let inner = self.lock();
        (
            inner.log.recovery_point(),
            inner.hw,
            inner.log.log_start_offset(),
        )
    }

    /// Sizes for the operator: (bytes, segments, log end offset).
    pub fn log_stats(&self) -> (u64, usize, Offset) {
        let inner = self.lock();
        (
            inner.log.size_bytes(),
            inner.log.segment_count(),
            inner.log.log_end_offset(),
        )
    }

    /// Flushes and writes indexes for a clean shutdown.
    pub fn close(&self) -> Result<(), BrokerError> {
        if self.offline.load(Ordering::Acquire) || self.removed.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut inner = self.lock();
        inner.log.close().map_err(|e| self.go_offline(e))
    }

    /// The topic was deleted: refuse further use and remove the log directory. The directory
    /// is first renamed aside so a topic recreated under the same name never sees old data.
    pub fn remove(&self) -> Result<(), BrokerError> {
        self.removed.store(true, Ordering::Release);
        let inner = self.lock();
        let dir = inner.log.dir().to_path_buf();
        let aside = dir.with_file_name(format!(
            "{}.{}-delete",
            self.tp.dir_name(),
            self.topic_id.simple()
        ));
        std::fs::rename(&dir, &aside)
            .and_then(|_| std::fs::remove_dir_all(&aside))
            .map_err(|e| BrokerError::Storage(format!("deleting {}: {e}", dir.display())))
    }
}

fn ids(nodes: &[NodeId]) -> Vec<i32> {
    nodes.iter().map(|n| n.0).collect()
}

/// Makes sure `dir` belongs to `topic_id`: a directory left by a deleted topic of the same name
/// is removed first. Writes `partition.metadata` for a new directory.
fn prepare_dir(dir: &Path, topic_id: Uuid) -> Result<(), BrokerError> {
    let meta = dir.join(PARTITION_METADATA);
    let storage =
        |op: &str, e: std::io::Error| BrokerError::Storage(format!("{op} {}: {e}", dir.display()));
    if dir.exists() {
        let recorded = std::fs::read_to_string(&meta).ok().and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("topic_id: "))
                .and_then(|v| Uuid::parse_str(v.trim()).ok())
        });
        if recorded == Some(topic_id) {
            return Ok(());
        }
        tracing::warn!(dir = %dir.display(), ?recorded, %topic_id, "partition directory of another topic incarnation; removing");
        std::fs::remove_dir_all(dir).map_err(|e| storage("remove", e))?;
    }
    std::fs::create_dir_all(dir).map_err(|e| storage("mkdir", e))?;
    std::fs::write(&meta, format!("version: 0\ntopic_id: {topic_id}\n"))
        .map_err(|e| storage("write", e))?;
    Ok(())
}
