//! The log of one partition replica: an ordered set of segments, the offsets that bound it, its
//! leader-epoch cache and its idempotent producers' state.
//!
//! Ownership and durability: the owner (the broker's partition) serialises every mutation. An
//! append returns once the bytes are in the page cache; nothing is durable until a `FlushJob`
//! taken from the log has run (outside the owner's lock) and `mark_job_flushed` recorded it.
//! The recovery point is the offset below which everything is known to be fsynced. Rare
//! metadata changes (truncations, epoch checkpoints) are made durable before they return.
//!
//! Producer state (`producer_state`) follows the batches: a leader append checks and records an
//! idempotent batch in the same step as it assigns offsets, a follower append records it, and
//! opening the log loads the latest snapshot (`producer_snapshot`, written at every roll and at
//! close) and replays the batch headers after it. Truncation reloads it; retention drops the
//! producers and snapshots of deleted segments.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ferrymq_types::{LeaderEpoch, Offset};

use crate::batch::{BatchHeader, ValidatedBatch};
use crate::checkpoint;
use crate::compaction::{CleanSnapshot, Cleaned, SegmentView, CLEANED_SUFFIX};
use crate::config::LogConfig;
use crate::epoch::EpochCache;
use crate::error::{io_err, Error, Result};
use crate::producer_snapshot::{self, SnapshotSync};
use crate::producer_state::{Check, IdempotentBatch, ProducerStateTable};
use crate::segment::{FileSlice, Segment};

const EPOCH_CHECKPOINT: &str = "leader-epoch-checkpoint";

/// How the log is opened.
#[derive(Debug, Clone, Copy)]
pub struct OpenOptions {
    /// The data dir holds a clean-shutdown marker: indexes can be trusted, no scan needed.
    pub clean_shutdown: bool,
    /// Checkpointed recovery point: segments wholly below it are not rescanned.
    pub recovery_point: Offset,
    /// Checkpointed log start offset (DeleteRecords may have moved it inside a segment).
    pub log_start_offset: Offset,
}

/// What opening the log did, for the operator's log line.
#[derive(Debug, Default, Clone)]
pub struct RecoveryReport {
    /// Segments scanned and validated batch by batch.
    pub segments_scanned: usize,
    /// Bytes cut from segment tails.
    pub truncated_bytes: u64,
    /// Segments deleted because they followed a truncated one.
    pub segments_dropped: usize,
    /// Segments opened as trusted whose index files were missing or implausible and rebuilt.
    pub indexes_rebuilt: usize,
}

/// Where an appended batch landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset of its first record.
    pub base_offset: Offset,
    /// Offset of its last record.
    pub last_offset: Offset,
    /// The log end offset after the append.
    pub log_end_offset: Offset,
}

/// What a leader append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaderAppend {
    /// The batch was written.
    Appended(AppendInfo),
    /// The batch is an idempotent producer's retry of one already in the log: nothing was
    /// written. The info holds the original batch's offsets and the current log end.
    Duplicate(AppendInfo),
}

impl LeaderAppend {
    /// Where the batch's records are, whether written now or before.
    pub fn info(&self) -> AppendInfo {
        match self {
            LeaderAppend::Appended(info) | LeaderAppend::Duplicate(info) => *info,
        }
    }

    /// True for a retry answered with the original's offsets.
    pub fn is_duplicate(&self) -> bool {
        matches!(self, LeaderAppend::Duplicate(_))
    }
}

/// Data to serve for a read, located under the lock, read after.
#[derive(Debug, Clone)]
pub struct ReadSlice {
    /// The bytes to send: whole batches, except possibly a partial last one, as Kafka.
    pub slice: Option<FileSlice>,
}

/// fsync work taken from the log under its lock and run outside it.
#[derive(Debug)]
pub struct FlushJob {
    /// Segment files holding bytes at or above the recovery point when the job was taken.
    files: Vec<(Arc<File>, PathBuf)>,
    /// The log directory, if segment files were created or deleted since its last fsync.
    dir: Option<PathBuf>,
    /// Everything below this offset is durable once the job has run.
    pub upto: Offset,
    /// The log's truncation count when the job was taken: a job that a truncation overtook
    /// may cover offsets that were since rewritten, and must not move the recovery point.
    truncations: u64,
}

impl FlushJob {
    /// Runs the fsyncs. The caller then reports `upto` through `PartitionLog::mark_flushed`.
    pub fn run(&self) -> Result<()> {
        for (f, path) in &self.files {
            f.sync_data().map_err(|e| io_err("fsync", path, e))?;
        }
        if let Some(dir) = &self.dir {
            let d = File::open(dir).map_err(|e| io_err("open", dir, e))?;
            d.sync_all().map_err(|e| io_err("fsync", dir, e))?;
        }
        Ok(())
    }

    /// True if there is nothing to sync.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty() && self.dir.is_none()
    }
}

/// One partition replica's log. Invariants: at least one segment; segments' offset ranges are
/// increasing and disjoint; `log_start_offset <= log_end_offset`; `recovery_point <= log_end`.
#[derive(Debug)]
pub struct PartitionLog {
    dir: PathBuf,
    config: LogConfig,
    segments: BTreeMap<Offset, Segment>,
    log_start_offset: Offset,
    recovery_point: Offset,
    epochs: EpochCache,
    /// A segment file was created or deleted since the last directory fsync.
    dir_dirty: bool,
    /// How many truncations cut this log since it was opened; see `FlushJob::truncations`.
    truncations: u64,
    /// `truncations` when the latest `FlushJob` was taken, for `mark_flushed`.
    truncations_at_last_job: u64,
    /// Idempotent producers' epochs and last batches, built from the batches below the LEO.
    producers: ProducerStateTable,
}

impl PartitionLog {
    /// Creates an empty log in a new directory, starting at `start`.
    pub fn create(dir: &Path, config: LogConfig, start: Offset) -> Result<PartitionLog> {
        fs::create_dir_all(dir).map_err(|e| io_err("mkdir", dir, e))?;
        let mut segments = BTreeMap::new();
        segments.insert(
            start,
            Segment::create(dir, start, config.index_interval_bytes)?,
        );
        Ok(PartitionLog {
            dir: dir.to_path_buf(),
            config,
            segments,
            log_start_offset: start,
            recovery_point: start,
            epochs: EpochCache::default(),
            dir_dirty: true,
            truncations: 0,
            truncations_at_last_job: 0,
            producers: ProducerStateTable::default(),
        })
    }

    /// Opens an existing log directory, recovering it as `DESIGN.md` §4 says: after an unclean
    /// stop, segments from the recovery point on are scanned, the first invalid batch and
    /// everything after it is cut, and indexes are rebuilt; a clean stop skips the scan.
    /// The producer state is rebuilt from the latest snapshot at or below the recovered log end
    /// and the batches after it. Scanned segments, the epoch checkpoint and snapshot deletions
    /// are durable on return.
    pub fn open(
        dir: &Path,
        config: LogConfig,
        opts: OpenOptions,
    ) -> Result<(PartitionLog, RecoveryReport)> {
        let mut bases = list_segment_bases(dir)?;
        if bases.is_empty() {
            // Snapshots without segments describe a log that is gone.
            producer_snapshot::delete_where(dir, |_| true)?;
            let log = PartitionLog::create(dir, config, opts.log_start_offset)?;
            return Ok((log, RecoveryReport::default()));
        }
        bases.sort();
        let mut epochs =
            EpochCache::from_entries(checkpoint::read_epochs(&dir.join(EPOCH_CHECKPOINT))?);
        let mut report = RecoveryReport::default();
        let segments = open_segments(dir, &config, opts, &bases, &mut epochs, &mut report)?;
        let first_base = *segments.keys().next().expect("at least one segment");
        let mut log = PartitionLog {
            dir: dir.to_path_buf(),
            config,
            segments,
            log_start_offset: first_base.max(opts.log_start_offset),
            recovery_point: Offset(0),
            epochs,
            dir_dirty: report.segments_dropped > 0,
            truncations: 0,
            truncations_at_last_job: 0,
            producers: ProducerStateTable::default(),
        };
        let leo = log.log_end_offset();
        log.log_start_offset = log.log_start_offset.min(leo);
        log.epochs.truncate_from_end(leo);
        log.epochs.truncate_from_start(log.log_start_offset);
        log.recovery_point = if opts.clean_shutdown {
            leo
        } else {
            opts.recovery_point.min(leo)
        };
        if report.segments_scanned > 0 {
            // Every scanned segment was validated and fsynced in `open_segments`.
            log.recovery_point = leo;
        }
        log.load_producer_state()?;
        // Also makes the snapshot deletions of `load_producer_state` durable (directory fsync).
        log.write_epoch_checkpoint()?;
        Ok((log, report))
    }

    /// The offset the next appended record gets (LEO).
    pub fn log_end_offset(&self) -> Offset {
        self.active().next_offset()
    }

    /// The first offset a reader may ask for.
    pub fn log_start_offset(&self) -> Offset {
        self.log_start_offset
    }

    /// Offsets below this are fsynced.
    pub fn recovery_point(&self) -> Offset {
        self.recovery_point
    }

    /// The latest leader epoch written, if any.
    pub fn latest_epoch(&self) -> Option<LeaderEpoch> {
        self.epochs.latest_epoch()
    }

    /// Total bytes of all segments.
    pub fn size_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.size() as u64).sum()
    }

    /// Number of segments.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The idempotent producers' state, as of the log end.
    pub fn producer_state(&self) -> &ProducerStateTable {
        &self.producers
    }

    /// Forgets producers idle for `expiration_ms` (`producer.id.expiration.ms`) at `now_ms`.
    /// Returns how many. In memory only: the next snapshot leaves them out.
    pub fn remove_expired_producers(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        self.producers.remove_expired(now_ms, expiration_ms)
    }

    /// Replaces the settings (topic config changed); they apply from the next append.
    pub fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }

    fn first_base(&self) -> Offset {
        *self
            .segments
            .keys()
            .next()
            .expect("a log always has a segment")
    }

    fn active(&self) -> &Segment {
        self.segments
            .values()
            .next_back()
            .expect("a log always has a segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .values_mut()
            .next_back()
            .expect("a log always has a segment")
    }

    /// Appends a producer's batch as leader in `epoch`: assigns offsets from the log end and
    /// stamps the epoch. Bytes are in the page cache on return, not durable (the owner runs a
    /// `FlushJob`); a new epoch's checkpoint is fsynced before the batch is written.
    /// `epoch` must not be older than the latest epoch in the log: a fenced leader appending
    /// is a bug in the caller.
    ///
    /// An idempotent producer's batch is checked against its state first, in the same call
    /// (the owner serialises appends, so check and offset assignment are one step): a retry of
    /// one of its last batches is answered `Duplicate` with the original offsets and not
    /// written; a stale epoch or a sequence gap is `Error::Producer` and nothing is written.
    pub fn append_as_leader(
        &mut self,
        batch: &ValidatedBatch,
        epoch: LeaderEpoch,
        now_ms: i64,
    ) -> Result<LeaderAppend> {
        if let Some(latest) = self.epochs.latest_epoch() {
            assert!(
                epoch >= latest,
                "leader epoch went backwards: append in {epoch} after {latest} in {}",
                self.dir.display()
            );
        }
        let idempotent = IdempotentBatch::from_header(batch.header());
        if let Some(b) = &idempotent {
            if let Check::Duplicate(original) = self.producers.check(b)? {
                return Ok(LeaderAppend::Duplicate(AppendInfo {
                    base_offset: original.first_offset,
                    last_offset: original.last_offset,
                    log_end_offset: self.log_end_offset(),
                }));
            }
        }
        let base = self.log_end_offset();
        self.maybe_roll(batch, base, now_ms)?;
        if self.epochs.assign(epoch, base) {
            self.write_epoch_checkpoint()?;
        }
        self.active_mut().append(batch, base, epoch)?;
        let last = base.plus(batch.header().last_offset_delta as i64);
        if let Some(b) = &idempotent {
            self.producers.record(b, base, last);
        }
        Ok(LeaderAppend::Appended(AppendInfo {
            base_offset: base,
            last_offset: last,
            log_end_offset: last.next(),
        }))
    }

    /// Appends a batch copied from the leader, keeping its offsets and epoch. It must start at
    /// or after the log end (compaction may leave gaps before it). Durability as for
    /// `append_as_leader`. An idempotent batch is recorded in the producer state unchecked:
    /// the leader decided, and the follower builds the state the leader has.
    pub fn append_as_follower(
        &mut self,
        batch: &ValidatedBatch,
        now_ms: i64,
    ) -> Result<AppendInfo> {
        let h = *batch.header();
        let leo = self.log_end_offset();
        if h.base_offset < leo {
            return Err(Error::NonContiguousAppend {
                base: h.base_offset,
                log_end: leo,
            });
        }
        if self.active().is_empty()
            && self.active().base_offset() < h.base_offset
            && self.segments.len() == 1
        {
            // An empty log following a leader whose log starts later: start where it starts.
            self.truncate_fully_and_start_at(h.base_offset)?;
        }
        self.maybe_roll(batch, h.base_offset, now_ms)?;
        if self.epochs.assign(h.leader_epoch, h.base_offset) {
            self.write_epoch_checkpoint()?;
        }
        self.active_mut().append_stored(batch)?;
        if let Some(b) = IdempotentBatch::from_header(&h) {
            self.producers.record(&b, h.base_offset, h.last_offset());
        }
        Ok(AppendInfo {
            base_offset: h.base_offset,
            last_offset: h.last_offset(),
            log_end_offset: h.next_offset(),
        })
    }

    /// Rolls before appending `batch` at `base` if the active segment is full, old, or could
    /// not index the batch's offsets (u32 relative to its base). A new segment starts at
    /// `base`, which is past the log end when a follower's batch follows a compaction gap.
    fn maybe_roll(&mut self, batch: &ValidatedBatch, base: Offset, now_ms: i64) -> Result<()> {
        let active = self.active();
        let last = base.plus(batch.header().last_offset_delta as i64);
        let offsets_overflow = last.0 - active.base_offset().0 > u32::MAX as i64;
        if active.is_empty() {
            if offsets_overflow {
                self.replace_empty_active(base)?;
            }
            return Ok(());
        }
        let too_big = active.size() as u64 + batch.len() as u64 > self.config.segment_bytes as u64;
        let too_old = active
            .first_batch_timestamp()
            .is_some_and(|t| now_ms.saturating_sub(t) > self.config.segment_ms);
        if too_big || too_old || offsets_overflow {
            self.roll_at(base)?;
        }
        Ok(())
    }

    /// Closes the active segment (writing its indexes) and starts a new one at the log end,
    /// with a producer-state snapshot at its base. The index files are fsynced on return, the
    /// snapshot is left to write-back (`SnapshotSync`); the new files' directory entries are
    /// synced by the next `FlushJob`.
    pub fn roll(&mut self) -> Result<()> {
        self.roll_at(self.log_end_offset())
    }

    fn roll_at(&mut self, base: Offset) -> Result<()> {
        let leo = self.log_end_offset();
        assert!(base >= leo, "roll at {base} below the log end {leo}");
        if self.active().base_offset() == base {
            return Ok(());
        }
        self.active().write_indexes()?;
        // The state of every batch below `base` (nothing lies between the log end and `base`).
        producer_snapshot::write(&self.dir, base, &self.producers, SnapshotSync::WriteBack)?;
        let seg = Segment::create(&self.dir, base, self.config.index_interval_bytes)?;
        self.segments.insert(base, seg);
        self.dir_dirty = true;
        tracing::debug!(dir = %self.dir.display(), base_offset = base.0, "rolled segment");
        Ok(())
    }

    /// Swaps the empty active segment for an empty one at `base` (past the log end).
    fn replace_empty_active(&mut self, base: Offset) -> Result<()> {
        let old = self.active().base_offset();
        assert!(
            self.active().is_empty() && base > old,
            "replace {old} by {base}"
        );
        let seg = self.segments.remove(&old).expect("the active segment");
        seg.delete_files()?;
        let seg = Segment::create(&self.dir, base, self.config.index_interval_bytes)?;
        self.segments.insert(base, seg);
        self.dir_dirty = true;
        Ok(())
    }

    /// Locates up to `max_bytes` of batches from `start`, never past `upper` (the high
    /// watermark for consumers, the log end for replicas). With `min_one`, a first batch larger
    /// than `max_bytes` is returned whole (KIP-74), so a consumer never stalls on it.
    pub fn read(
        &self,
        start: Offset,
        max_bytes: usize,
        upper: Offset,
        min_one: bool,
    ) -> Result<ReadSlice> {
        let leo = self.log_end_offset();
        if start < self.log_start_offset || start > leo {
            return Err(Error::OffsetOutOfRange {
                requested: start,
                log_start: self.log_start_offset,
                log_end: leo,
            });
        }
        let upper = upper.min(leo);
        if start >= upper {
            return Ok(ReadSlice { slice: None });
        }
        // Find the segment holding `start` (or the first batch after it, past a gap).
        for (_, seg) in self
            .segments
            .range(..=start)
            .next_back()
            .into_iter()
            .chain(self.segments.range(start.next()..))
        {
            let Some(first) = seg.locate(start)? else {
                continue;
            };
            if first.header.base_offset >= upper {
                return Ok(ReadSlice { slice: None });
            }
            let limit = if upper >= seg.next_offset() {
                seg.size()
            } else {
                // `upper` is a batch boundary (HWs and LEOs always are): its batch starts there.
                seg.locate(upper)?.map_or(seg.size(), |l| l.position)
            };
            let first_end = first.position + first.header.total_bytes() as u32;
            if first_end > limit {
                // `upper` falls inside the first batch: none of it may be served yet.
                return Ok(ReadSlice { slice: None });
            }
            let budget_end = (first.position as u64 + max_bytes as u64).min(limit as u64) as u32;
            let end = if first_end <= budget_end {
                budget_end
            } else if min_one {
                first_end
            } else {
                return Ok(ReadSlice { slice: None });
            };
            return Ok(ReadSlice {
                slice: Some(seg.slice(first.position, end)),
            });
        }
        Ok(ReadSlice { slice: None })
    }

    /// Reads the batch holding `offset` (or the first one after it, past a compaction gap)
    /// and checks its CRC again: the read-back half of the paired checks, for callers that
    /// look inside batches (compaction, producer-state rebuild, tests). `None` at the log end.
    pub fn read_batch(&self, offset: Offset) -> Result<Option<ValidatedBatch>> {
        let leo = self.log_end_offset();
        if offset < self.log_start_offset || offset > leo {
            return Err(Error::OffsetOutOfRange {
                requested: offset,
                log_start: self.log_start_offset,
                log_end: leo,
            });
        }
        let holding = self.segments.range(..=offset).next_back().into_iter();
        for (_, seg) in holding.chain(self.segments.range(offset.next()..)) {
            if let Some(loc) = seg.locate(offset)? {
                return seg.read_batch_at(&loc).map(Some);
            }
        }
        Ok(None)
    }

    /// The first batch at or after `ts` (by its max timestamp) that holds offsets at or past
    /// the log start: `(base offset, or the log start inside that batch; max timestamp)`.
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(Offset, i64)>> {
        for seg in self.segments.values() {
            if seg.next_offset() <= self.log_start_offset || seg.max_timestamp() < ts {
                continue;
            }
            if let Some(loc) = seg.locate_timestamp_from(ts, self.log_start_offset)? {
                // Kafka answers with the first record at or after `ts`, not its batch.
                let batch = seg.read_batch_at(&loc)?;
                let exact =
                    crate::records::record_positions(&loc.header, batch.bytes()).and_then(|recs| {
                        recs.into_iter()
                            .map(|r| {
                                (
                                    loc.header.base_offset.plus(r.offset_delta as i64),
                                    r.timestamp,
                                )
                            })
                            .find(|&(o, t)| t >= ts && o >= self.log_start_offset)
                    });
                let (offset, timestamp) =
                    exact.unwrap_or((loc.header.base_offset, loc.header.max_timestamp));
                return Ok(Some((offset.max(self.log_start_offset), timestamp)));
            }
        }
        Ok(None)
    }

    /// The largest timestamp in the log and the base offset of the first batch holding it.
    pub fn max_timestamp(&self) -> Result<Option<(Offset, i64)>> {
        // The earliest segment among equals, as Kafka: `max_by_key` would pick the last.
        let newest = self
            .segments
            .values()
            .filter(|s| !s.is_empty())
            .reduce(|best, s| {
                if s.max_timestamp() > best.max_timestamp() {
                    s
                } else {
                    best
                }
            });
        let Some(seg) = newest else {
            return Ok(None);
        };
        let Some(loc) = seg.locate_timestamp(seg.max_timestamp())? else {
            return Ok(None);
        };
        // Kafka answers with the record holding the max timestamp, not its batch.
        let batch = seg.read_batch_at(&loc)?;
        let max = loc.header.max_timestamp;
        let record = crate::records::record_positions(&loc.header, batch.bytes())
            .and_then(|recs| recs.into_iter().find(|r| r.timestamp == max))
            .map_or(loc.header.base_offset, |r| {
                loc.header.base_offset.plus(r.offset_delta as i64)
            });
        Ok(Some((record, max)))
    }

    /// OffsetForLeaderEpoch: the largest epoch ≤ `epoch` and where it ends in this log.
    pub fn end_offset_for_epoch(&self, epoch: LeaderEpoch) -> Option<(LeaderEpoch, Offset)> {
        self.epochs.end_offset_for(epoch, self.log_end_offset())
    }

    /// Takes the fsync work needed to make everything up to the log end durable. Nothing is
    /// durable until the caller has run it (outside the lock) and reported it with
    /// `mark_job_flushed`.
    pub fn flush_job(&mut self) -> FlushJob {
        let upto = self.log_end_offset();
        let files = self
            .segments
            .values()
            .filter(|s| s.next_offset() > self.recovery_point)
            .map(|s| (s.file(), s.log_path().to_path_buf()))
            .collect();
        let dir = std::mem::take(&mut self.dir_dirty).then(|| self.dir.clone());
        self.truncations_at_last_job = self.truncations;
        FlushJob {
            files,
            dir,
            upto,
            truncations: self.truncations,
        }
    }

    /// Records that `job` ran: the recovery point moves up to `job.upto`. A job taken before
    /// a truncation is ignored, since its fsyncs may predate batches since written at the
    /// offsets it covers; the next job covers them.
    pub fn mark_job_flushed(&mut self, job: &FlushJob) {
        if job.truncations == self.truncations {
            self.advance_recovery_point(job.upto);
        }
    }

    /// Records that the latest `FlushJob` taken, up to `upto`, ran. Ignored if the log was
    /// truncated since that job was taken (see `mark_job_flushed`, which should be preferred:
    /// with several jobs in flight this cannot tell which one finished).
    pub fn mark_flushed(&mut self, upto: Offset) {
        if self.truncations_at_last_job == self.truncations {
            self.advance_recovery_point(upto);
        }
    }

    fn advance_recovery_point(&mut self, upto: Offset) {
        let upto = upto.min(self.log_end_offset());
        if upto > self.recovery_point {
            self.recovery_point = upto;
        }
    }

    /// Cuts the log so that `end` becomes its end offset (a follower diverged from its leader).
    /// `end` is rounded down to a batch boundary, and the log start follows it down if it was
    /// above. The producer state is rebuilt for the new end, and snapshots past it are deleted.
    /// The cut, the epoch checkpoint and the snapshot deletions are durable on return; the
    /// deleted segments' directory entries are synced by the next `FlushJob`.
    pub fn truncate_to(&mut self, end: Offset) -> Result<()> {
        if end >= self.log_end_offset() {
            return Ok(());
        }
        let first_base = *self
            .segments
            .keys()
            .next()
            .expect("a log always has a segment");
        if end <= first_base {
            return self.truncate_fully_and_start_at(end);
        }
        self.truncations += 1;
        let doomed: Vec<Offset> = self.segments.range(end..).map(|(b, _)| *b).collect();
        for base in doomed {
            if let Some(seg) = self.segments.remove(&base) {
                seg.delete_files()?;
                self.dir_dirty = true;
            }
        }
        let seg = self.active_mut();
        let (position, next) = match seg.locate(end)? {
            Some(loc) => (loc.position, loc.header.base_offset),
            None => (seg.size(), seg.next_offset()),
        };
        seg.truncate_to(position, next)?;
        let leo = self.log_end_offset();
        self.recovery_point = self.recovery_point.min(leo);
        self.log_start_offset = self.log_start_offset.min(leo);
        self.epochs.truncate_from_end(leo);
        self.load_producer_state()?;
        // Also makes the snapshot deletions durable (directory fsync).
        self.write_epoch_checkpoint()
    }

    /// Deletes every segment and starts an empty log at `start` (a replica whose log lies
    /// entirely outside the leader's); the producer state and its snapshots go too. The epoch
    /// checkpoint and the snapshot deletions are durable on return; the segments' directory
    /// entries are synced by the next `FlushJob`.
    pub fn truncate_fully_and_start_at(&mut self, start: Offset) -> Result<()> {
        self.truncations += 1;
        for seg in std::mem::take(&mut self.segments).into_values() {
            seg.delete_files()?;
        }
        self.segments.insert(
            start,
            Segment::create(&self.dir, start, self.config.index_interval_bytes)?,
        );
        self.dir_dirty = true;
        self.log_start_offset = start;
        self.recovery_point = start;
        self.epochs = EpochCache::default();
        self.producers.clear();
        producer_snapshot::delete_where(&self.dir, |_| true)?;
        self.write_epoch_checkpoint()
    }

    /// DeleteRecords: moves the log start up to `offset` (≤ the high watermark, checked by the
    /// caller); whole segments below it go at the next retention pass, producers whose batches
    /// all lie below it go now.
    pub fn advance_log_start(&mut self, offset: Offset) -> Result<Offset> {
        let offset = offset.min(self.log_end_offset());
        if offset > self.log_start_offset {
            self.log_start_offset = offset;
            self.epochs.truncate_from_start(offset);
            self.producers.evict_below(offset);
            self.write_epoch_checkpoint()?;
        }
        Ok(self.log_start_offset)
    }

    /// Deletes the oldest closed segments that retention (`retention.ms`, `retention.bytes`) or
    /// the log start offset let go, never at or past `hw`. Returns how many were deleted.
    pub fn enforce_retention(&mut self, now_ms: i64, hw: Offset) -> Result<usize> {
        let expired = |s: &Segment, cfg: &LogConfig| {
            cfg.retention_ms >= 0
                && !s.is_empty()
                && s.max_timestamp() < now_ms.saturating_sub(cfg.retention_ms)
        };
        if expired(self.active(), &self.config) && self.active().next_offset() <= hw {
            self.roll()?;
        }
        let mut total: u64 = self.size_bytes();
        let mut deleted = 0;
        while self.segments.len() > 1 {
            let (&base, seg) = self.segments.iter().next().expect("len > 1");
            let over_size = self.config.retention_bytes >= 0
                && total - seg.size() as u64 >= self.config.retention_bytes as u64;
            let below_start = seg.next_offset() <= self.log_start_offset;
            let deletable =
                seg.next_offset() <= hw && (expired(seg, &self.config) || over_size || below_start);
            if !deletable {
                break;
            }
            total -= seg.size() as u64;
            let seg = self.segments.remove(&base).expect("present");
            seg.delete_files()?;
            self.dir_dirty = true;
            deleted += 1;
        }
        if deleted > 0 {
            let first = self.first_base();
            // The snapshot at `first` is the state at the new log start; older ones describe
            // deleted segments. Their deletion is durable at the next `FlushJob`.
            producer_snapshot::delete_where(&self.dir, |o| o < first)?;
            self.advance_log_start(first)?;
            tracing::info!(dir = %self.dir.display(), deleted, log_start_offset = self.log_start_offset.0, "retention deleted segments");
        }
        Ok(deleted)
    }

    /// Compaction, step 1 (under the owner's lock): the closed segments wholly below `upto`
    /// (the high watermark) and the recovery point, which a cleaner may rewrite.
    pub fn clean_snapshot(&self, upto: Offset) -> CleanSnapshot {
        let limit = upto.min(self.recovery_point);
        let active = self.active().base_offset();
        let segments = self
            .segments
            .values()
            .filter(|s| s.base_offset() < active && s.next_offset() <= limit && !s.is_empty())
            .map(|s| SegmentView {
                base: s.base_offset(),
                next_offset: s.next_offset(),
                size: s.size(),
                file: s.file(),
                path: s.log_path().to_path_buf(),
            })
            .collect();
        CleanSnapshot {
            segments,
            truncations: self.truncations,
            index_interval_bytes: self.config.index_interval_bytes,
        }
    }

    /// Compaction, step 3 (under the owner's lock): swaps each cleaned segment in for its
    /// original, if that is unchanged since the snapshot. Per segment: old index files go,
    /// the cleaned file (already fsynced) is renamed over the old `.log`, and the new indexes
    /// are written; a crash anywhere leaves one valid version (see `compaction`). Returns the
    /// number of segments swapped; the rest are discarded.
    pub fn install_cleaned(&mut self, cleaned: Cleaned) -> Result<usize> {
        let mut swapped = 0;
        for c in cleaned.segments {
            let base = c.segment.base_offset();
            let cleaned_path = c.segment.log_path().to_path_buf();
            let still_there = cleaned.truncations == self.truncations
                && base != self.active().base_offset()
                && self.segments.get(&base).is_some_and(|old| {
                    old.next_offset() == c.old_next_offset && old.size() == c.old_size
                });
            if !still_there {
                crate::segment::remove_if_present(&cleaned_path)?;
                continue;
            }
            let old = self.segments.remove(&base).expect("checked above");
            let log_path = old.log_path().to_path_buf();
            old.delete_index_files()?;
            fs::rename(&cleaned_path, &log_path).map_err(|e| io_err("rename", &log_path, e))?;
            let mut seg = c.segment;
            seg.set_log_path(log_path);
            seg.write_indexes()?;
            self.segments.insert(base, seg);
            self.dir_dirty = true;
            swapped += 1;
        }
        Ok(swapped)
    }

    /// Clean shutdown: fsyncs every segment and the directory, then writes every segment's
    /// indexes, a producer-state snapshot at the log end and the epoch checkpoint, all durable
    /// on return (the checkpoint's directory fsync covers the snapshot's rename). The caller
    /// then records the recovery point and the clean-shutdown marker.
    pub fn close(&mut self) -> Result<()> {
        let job = self.flush_job();
        job.run()?;
        self.mark_job_flushed(&job);
        for seg in self.segments.values() {
            seg.write_indexes()?;
        }
        let leo = self.log_end_offset();
        producer_snapshot::write(&self.dir, leo, &self.producers, SnapshotSync::Fsync)?;
        self.write_epoch_checkpoint()
    }

    /// Removes the log's directory (topic deleted).
    pub fn delete(self) -> Result<()> {
        fs::remove_dir_all(&self.dir).map_err(|e| io_err("delete", &self.dir, e))
    }

    fn write_epoch_checkpoint(&self) -> Result<()> {
        checkpoint::write_epochs(&self.dir.join(EPOCH_CHECKPOINT), self.epochs.entries())
    }

    /// Rebuilds the producer state for the current segments: from the latest usable snapshot
    /// at or below the log end, then the batch headers after it. Snapshots past the log end
    /// (recovery or truncation cut the batches they saw) and below the first segment (their
    /// segments are deleted) are deleted first; one that fails its checks is deleted and an
    /// older one tried; with none, every batch of the log is replayed. Deletions are durable
    /// at the caller's next directory fsync.
    fn load_producer_state(&mut self) -> Result<()> {
        let leo = self.log_end_offset();
        let first_base = self.first_base();
        producer_snapshot::delete_where(&self.dir, |o| o > leo || o < first_base)?;
        let mut table = ProducerStateTable::default();
        let mut replay_from = first_base;
        for offset in producer_snapshot::list(&self.dir)?.into_iter().rev() {
            match producer_snapshot::read(&self.dir, offset) {
                Ok(t) if t.entries().all(|(_, e)| e.last_offset() < offset) => {
                    table = t;
                    replay_from = offset;
                    break;
                }
                Ok(_) | Err(Error::MalformedFile { .. }) => {
                    tracing::warn!(dir = %self.dir.display(), snapshot = offset.0, "unusable producer-state snapshot deleted");
                    producer_snapshot::delete(&self.dir, offset)?;
                }
                Err(e) => return Err(e),
            }
        }
        // Batches below the log start are deleted even while their segment remains, and
        // producers with nothing above it were dropped when it moved (a snapshot taken before
        // still has them). Neither may enter the rebuilt state: a batch of the same producer
        // id appended since (a fresh start at sequence 0) would join the stale entry, and a
        // retry could be answered with the deleted batch's offsets.
        let log_start = self.log_start_offset;
        table.evict_below(log_start);
        for seg in self.segments.values() {
            if seg.next_offset() <= replay_from {
                continue;
            }
            seg.for_each_header_from(replay_from, &mut |h| {
                if h.last_offset() < log_start {
                    return;
                }
                if let Some(b) = IdempotentBatch::from_header(h) {
                    table.record(&b, h.base_offset, h.last_offset());
                }
            })?;
        }
        table.evict_below(self.log_start_offset);
        self.producers = table;
        Ok(())
    }
}

/// Opens the segments at `bases` (sorted), trusting the index files of those wholly below the
/// recovery point (or all after a clean stop) and scanning the rest; every scanned segment is
/// fsynced. After the first segment whose tail was cut, later segments are deleted: their
/// batches would follow a hole.
fn open_segments(
    dir: &Path,
    config: &LogConfig,
    opts: OpenOptions,
    bases: &[Offset],
    epochs: &mut EpochCache,
    report: &mut RecoveryReport,
) -> Result<BTreeMap<Offset, Segment>> {
    let mut segments = BTreeMap::new();
    let mut cut = false;
    for (i, &base) in bases.iter().enumerate() {
        let path = dir.join(format!("{}.log", crate::segment::file_stem(base)));
        if cut {
            drop_segment_files(&path)?;
            report.segments_dropped += 1;
            continue;
        }
        let next_base = bases.get(i + 1).copied();
        let below_recovery_point = next_base.is_some_and(|n| n <= opts.recovery_point);
        let trust = opts.clean_shutdown || below_recovery_point;
        let mut on_batch = |h: &BatchHeader| {
            epochs.assign(h.leader_epoch, h.base_offset);
        };
        let (seg, outcome) = Segment::open(
            &path,
            base,
            config.index_interval_bytes,
            trust,
            &mut on_batch,
        )?;
        if !trust {
            report.segments_scanned += 1;
            seg.sync()?;
        }
        if outcome.indexes_rebuilt {
            report.indexes_rebuilt += 1;
        }
        if outcome.truncated_bytes > 0 {
            tracing::warn!(
                segment = %path.display(),
                truncated_bytes = outcome.truncated_bytes,
                reason = outcome.stopped_by.as_deref().unwrap_or(""),
                "segment recovered: invalid tail truncated"
            );
            report.truncated_bytes += outcome.truncated_bytes;
            cut = true;
        }
        if let Some(n) = next_base {
            if seg.next_offset() > n {
                return Err(Error::MalformedFile {
                    path,
                    reason: format!(
                        "segment ends at {} past next segment base {n}",
                        seg.next_offset()
                    ),
                });
            }
        }
        segments.insert(base, seg);
    }
    Ok(segments)
}

fn list_segment_bases(dir: &Path) -> Result<Vec<Offset>> {
    let mut bases = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| io_err("list", dir, e))? {
        let entry = entry.map_err(|e| io_err("list", dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(stem) = name.strip_suffix(".log") {
            if let Ok(base) = stem.parse::<i64>() {
                bases.push(Offset(base));
            }
        } else if name.ends_with(".tmp") || name.ends_with(CLEANED_SUFFIX) {
            let _ = fs::remove_file(entry.path());
        }
    }
    Ok(bases)
}

/// Deletes a segment's files by its log path, indexes first (as `Segment::delete_files`).
fn drop_segment_files(log_path: &Path) -> Result<()> {
    for p in [
        log_path.with_extension("index"),
        log_path.with_extension("timeindex"),
        log_path.to_path_buf(),
    ] {
        crate::segment::remove_if_present(&p)?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "partition_log_tests.rs"]
mod tests;
