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
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::batch::testing::batch;
    use crate::batch::{validate_produce_records, HEADER_BYTES};

    const V: &[u8] = b"0123456789";
    /// Size of a `three` batch: 61 header bytes and three 17-byte records.
    const THREE_BYTES: u64 = 112;

    /// Segments of 1 KiB hold nine `three` batches (27 offsets); an index entry every 200 bytes.
    fn config() -> LogConfig {
        LogConfig {
            segment_bytes: 1024,
            segment_ms: 7 * 24 * 3600 * 1000,
            retention_ms: -1,
            retention_bytes: -1,
            index_interval_bytes: 200,
        }
    }

    fn three(ts: i64) -> ValidatedBatch {
        validate_produce_records(batch(&[V, V, V], ts)).unwrap()
    }

    fn one(ts: i64) -> ValidatedBatch {
        validate_produce_records(batch(&[V], ts)).unwrap()
    }

    /// A batch as another replica stored it: offsets and epoch already assigned.
    fn stored(base: Offset, epoch: i32, ts: i64) -> ValidatedBatch {
        let b = three(ts);
        let mut raw = b.rewritten_prefix(base, LeaderEpoch(epoch)).to_vec();
        raw.extend_from_slice(b.tail());
        ValidatedBatch::from_stored(Bytes::from(raw)).unwrap()
    }

    /// Appends `n` `three` batches as leader in `epoch`; batch `i` has timestamps from `ts0 + 10 i`.
    fn append_many(log: &mut PartitionLog, n: usize, epoch: i32, ts0: i64) {
        for i in 0..n as i64 {
            log.append_as_leader(&three(ts0 + 10 * i), LeaderEpoch(epoch), ts0)
                .unwrap();
        }
    }

    /// 30 `three` batches (offsets 0..90) in four segments based at 0, 27, 54 and 81;
    /// batch `i` has timestamps `1000 + 10 i ..= 1000 + 10 i + 2`.
    fn four_segments(dir: &Path) -> PartitionLog {
        let mut log = PartitionLog::create(dir, config(), Offset(0)).unwrap();
        append_many(&mut log, 30, 1, 1000);
        assert_eq!(log.segment_count(), 4);
        log
    }

    fn open(
        dir: &Path,
        clean_shutdown: bool,
        recovery_point: Offset,
    ) -> (PartitionLog, RecoveryReport) {
        let opts = OpenOptions {
            clean_shutdown,
            recovery_point,
            log_start_offset: Offset(0),
        };
        PartitionLog::open(dir, config(), opts).unwrap()
    }

    fn seg_path(dir: &Path, base: i64, ext: &str) -> PathBuf {
        dir.join(format!("{}.{ext}", crate::segment::file_stem(Offset(base))))
    }

    fn log_files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".log"))
            .collect();
        names.sort();
        names
    }

    fn flip_byte(path: &Path, position: u64) {
        let mut raw = fs::read(path).unwrap();
        raw[position as usize] ^= 0x5a;
        fs::write(path, raw).unwrap();
    }

    /// The whole batches at the front of `bytes`, each CRC-checked; a partial tail is dropped.
    fn whole_batches(mut bytes: Bytes) -> Vec<ValidatedBatch> {
        let mut out = Vec::new();
        while bytes.len() >= HEADER_BYTES {
            let h = BatchHeader::parse(&bytes).unwrap();
            if h.total_bytes() > bytes.len() {
                break;
            }
            out.push(ValidatedBatch::from_stored(bytes.split_to(h.total_bytes())).unwrap());
        }
        out
    }

    fn read_slice(
        log: &PartitionLog,
        start: Offset,
        max_bytes: usize,
        upper: Offset,
        min_one: bool,
    ) -> Option<Bytes> {
        log.read(start, max_bytes, upper, min_one)
            .unwrap()
            .slice
            .map(|s| s.read().unwrap())
    }

    /// Every batch served from `start` below `upper`, read 300 bytes at a time as a consumer.
    fn read_all_batches(log: &PartitionLog, start: Offset, upper: Offset) -> Vec<ValidatedBatch> {
        let mut out = Vec::new();
        let mut next = start;
        while let Some(bytes) = read_slice(log, next, 300, upper, true) {
            let batches = whole_batches(bytes);
            assert!(
                !batches.is_empty(),
                "a read with min_one returns a whole batch"
            );
            next = batches.last().expect("not empty").header().next_offset();
            out.extend(batches);
        }
        out
    }

    fn read_all(log: &PartitionLog, start: Offset, upper: Offset) -> Vec<BatchHeader> {
        read_all_batches(log, start, upper)
            .iter()
            .map(|b| *b.header())
            .collect()
    }

    fn bases(headers: &[BatchHeader]) -> Vec<i64> {
        headers.iter().map(|h| h.base_offset.0).collect()
    }

    /// Checks that a read from every offset in `[from, to)` starts with the batch holding it.
    fn assert_every_offset_located(log: &PartitionLog, from: i64, to: i64) {
        for o in from..to {
            let bytes = read_slice(log, Offset(o), 1, log.log_end_offset(), true).unwrap();
            let first = whole_batches(bytes).remove(0);
            assert!(first.header().base_offset <= Offset(o), "offset {o}");
            assert!(first.header().last_offset() >= Offset(o), "offset {o}");
        }
    }

    #[test]
    fn rolls_by_size_and_reads_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let log = four_segments(dir.path());
        assert_eq!(
            log_files(dir.path()),
            [0, 27, 54, 81].map(|b| format!("{:020}.log", b)).to_vec()
        );
        assert_eq!(log.log_end_offset(), Offset(90));
        assert_eq!(log.size_bytes(), 30 * THREE_BYTES);
        let all = read_all(&log, Offset(0), log.log_end_offset());
        assert_eq!(bases(&all), (0..30).map(|i| 3 * i).collect::<Vec<_>>());
        assert!(all.iter().all(|h| h.leader_epoch == LeaderEpoch(1)));
        assert_every_offset_located(&log, 0, 90);
    }

    #[test]
    fn rolls_by_age() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            segment_ms: 1000,
            ..config()
        };
        let mut log = PartitionLog::create(dir.path(), cfg, Offset(0)).unwrap();
        log.append_as_leader(&one(0), LeaderEpoch(0), 0).unwrap();
        log.append_as_leader(&one(1000), LeaderEpoch(0), 1000)
            .unwrap();
        assert_eq!(log.segment_count(), 1, "not older than segment.ms yet");
        log.append_as_leader(&one(1001), LeaderEpoch(0), 1001)
            .unwrap();
        assert_eq!(log.segment_count(), 2);
        // The new segment's age counts from its own first batch.
        log.append_as_leader(&one(2001), LeaderEpoch(0), 2001)
            .unwrap();
        assert_eq!(log.segment_count(), 2);
        log.append_as_leader(&one(2002), LeaderEpoch(0), 2002)
            .unwrap();
        assert_eq!(log.segment_count(), 3);
        assert_eq!(
            bases(&read_all(&log, Offset(0), Offset(5))),
            [0, 1, 2, 3, 4]
        );
    }

    #[test]
    fn read_stops_at_upper_bound() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = PartitionLog::create(dir.path(), config(), Offset(0)).unwrap();
        append_many(&mut log, 10, 1, 0);
        let bytes = read_slice(&log, Offset(0), 1 << 20, Offset(15), false).unwrap();
        assert_eq!(
            bytes.len() as u64,
            5 * THREE_BYTES,
            "exactly the batches below 15"
        );
        assert!(read_slice(&log, Offset(15), 1 << 20, Offset(15), true).is_none());
        // An upper bound inside a batch excludes that batch, even for min_one.
        assert_eq!(bases(&read_all(&log, Offset(12), Offset(16))), [12]);
        assert!(read_slice(&log, Offset(15), 1 << 20, Offset(16), true).is_none());
        // An upper bound past the log end is the log end.
        assert_eq!(bases(&read_all(&log, Offset(25), Offset(1000))), [24, 27]);
    }

    #[test]
    fn read_returns_first_batch_whole_when_larger_than_max_bytes_with_min_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = PartitionLog::create(dir.path(), config(), Offset(0)).unwrap();
        let big = validate_produce_records(batch(&[&[7u8; 600]], 0)).unwrap();
        log.append_as_leader(&big, LeaderEpoch(0), 0).unwrap();
        append_many(&mut log, 2, 0, 0);
        let leo = log.log_end_offset();
        let bytes = read_slice(&log, Offset(0), 100, leo, true).unwrap();
        assert_eq!(bytes.len(), big.len());
        assert!(read_slice(&log, Offset(0), 100, leo, false).is_none());
        // With room for more, the slice may end inside the next batch, as Kafka's does.
        let bytes = read_slice(&log, Offset(0), big.len() + 10, leo, true).unwrap();
        assert_eq!(bytes.len(), big.len() + 10);
        assert_eq!(whole_batches(bytes).len(), 1);
    }

    #[test]
    fn read_below_log_start_is_out_of_range() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = PartitionLog::create(dir.path(), config(), Offset(0)).unwrap();
        append_many(&mut log, 10, 1, 0);
        assert_eq!(log.advance_log_start(Offset(7)).unwrap(), Offset(7));
        let err = log.read(Offset(6), 1000, Offset(30), true).unwrap_err();
        assert!(
            matches!(
                err,
                Error::OffsetOutOfRange {
                    requested: Offset(6),
                    log_start: Offset(7),
                    log_end: Offset(30)
                }
            ),
            "{err}"
        );
        assert!(matches!(
            log.read_batch(Offset(6)),
            Err(Error::OffsetOutOfRange { .. })
        ));
        // The batch holding the log start is served whole.
        assert_eq!(bases(&read_all(&log, Offset(7), Offset(9))), [6]);
        assert!(matches!(
            log.read(Offset(31), 1000, Offset(31), true),
            Err(Error::OffsetOutOfRange { .. })
        ));
        assert!(read_slice(&log, Offset(30), 1000, Offset(30), true).is_none());
        assert_eq!(
            log.advance_log_start(Offset(100)).unwrap(),
            Offset(30),
            "clamped to the log end"
        );
    }

    #[test]
    fn retention_by_time_deletes_only_closed_segments_below_hw() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            retention_ms: 1000,
            ..config()
        };
        let mut log = PartitionLog::create(dir.path(), cfg, Offset(0)).unwrap();
        append_many(&mut log, 18, 1, 0); // segments at 0 and 27, timestamps below 200
        append_many(&mut log, 12, 1, 5000); // segments at 54 and 81 (active)
        assert_eq!(log.segment_count(), 4);
        let now = 5500;
        assert_eq!(
            log.enforce_retention(now, Offset(40)).unwrap(),
            1,
            "the HW holds segment 27"
        );
        assert_eq!(log.log_start_offset(), Offset(27));
        assert_eq!(log.enforce_retention(now, log.log_end_offset()).unwrap(), 1);
        assert_eq!(log.log_start_offset(), Offset(54), "segment 54 is recent");
        assert_eq!(log.enforce_retention(now, log.log_end_offset()).unwrap(), 0);
        let now = 10_000;
        // The active segment expired too but holds offsets at the HW: it is neither rolled nor deleted.
        assert_eq!(log.enforce_retention(now, Offset(85)).unwrap(), 1);
        assert_eq!(log.segment_count(), 1);
        assert_eq!(log.log_start_offset(), Offset(81));
        assert_eq!(log_files(dir.path()), [format!("{:020}.log", 81)]);
        // Once everything is below the HW the expired active segment is rolled and deleted.
        assert_eq!(log.enforce_retention(now, Offset(90)).unwrap(), 1);
        assert_eq!(log.segment_count(), 1);
        assert_eq!(log.size_bytes(), 0);
        assert_eq!(log.log_start_offset(), Offset(90));
        assert_eq!(log.log_end_offset(), Offset(90));
        let info = log
            .append_as_leader(&three(now), LeaderEpoch(1), now)
            .unwrap()
            .info();
        assert_eq!(info.base_offset, Offset(90));
    }

    #[test]
    fn retention_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = four_segments(dir.path());
        log.set_config(LogConfig {
            retention_bytes: 2000,
            ..config()
        });
        // 3 × 1008 + 336 bytes: dropping the first leaves 2352 ≥ 2000; dropping another would
        // leave 1344 < 2000, so it stays.
        assert_eq!(log.enforce_retention(0, log.log_end_offset()).unwrap(), 1);
        assert_eq!(log.size_bytes(), 21 * THREE_BYTES);
        assert_eq!(log.log_start_offset(), Offset(27));
        assert_eq!(log.enforce_retention(0, log.log_end_offset()).unwrap(), 0);
        log.set_config(LogConfig {
            retention_bytes: 0,
            ..config()
        });
        // Never the active segment, whatever the limit.
        assert_eq!(log.enforce_retention(0, log.log_end_offset()).unwrap(), 2);
        assert_eq!(log.segment_count(), 1);
        assert_eq!(log.log_start_offset(), Offset(81));
    }

    #[test]
    fn advance_log_start_then_retention_drops_segments() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = four_segments(dir.path());
        log.advance_log_start(Offset(85)).unwrap();
        assert_eq!(
            log.enforce_retention(0, Offset(70)).unwrap(),
            2,
            "the HW holds segment 54"
        );
        assert_eq!(
            log.log_start_offset(),
            Offset(85),
            "log start stays inside segment 81"
        );
        assert_eq!(log.enforce_retention(0, Offset(90)).unwrap(), 1);
        assert_eq!(log.segment_count(), 1);
        assert_eq!(log.log_start_offset(), Offset(85));
        assert!(matches!(
            log.read(Offset(84), 100, Offset(90), true),
            Err(Error::OffsetOutOfRange { .. })
        ));
        assert_eq!(bases(&read_all(&log, Offset(85), Offset(90))), [84, 87]);
        let (log, _) = PartitionLog::open(
            dir.path(),
            config(),
            OpenOptions {
                clean_shutdown: false,
                recovery_point: Offset(0),
                log_start_offset: Offset(85),
            },
        )
        .unwrap();
        assert_eq!(log.log_start_offset(), Offset(85));
    }

    #[test]
    fn truncate_to_mid_log_drops_later_segments_and_epochs() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = PartitionLog::create(dir.path(), config(), Offset(0)).unwrap();
        append_many(&mut log, 9, 1, 0);
        append_many(&mut log, 9, 2, 0);
        append_many(&mut log, 12, 3, 0);
        assert_eq!(
            log.end_offset_for_epoch(LeaderEpoch(2)),
            Some((LeaderEpoch(2), Offset(54)))
        );
        log.truncate_to(Offset(40)).unwrap();
        // 40 lies inside batch 39..41: the log is cut before it.
        assert_eq!(log.log_end_offset(), Offset(39));
        assert_eq!(log.segment_count(), 2);
        assert_eq!(
            log_files(dir.path()),
            [0, 27].map(|b| format!("{:020}.log", b)).to_vec()
        );
        assert!(!seg_path(dir.path(), 54, "index").exists());
        assert_eq!(
            fs::metadata(seg_path(dir.path(), 27, "log")).unwrap().len(),
            4 * THREE_BYTES
        );
        assert_eq!(log.latest_epoch(), Some(LeaderEpoch(2)));
        assert_eq!(
            log.end_offset_for_epoch(LeaderEpoch(1)),
            Some((LeaderEpoch(1), Offset(27)))
        );
        assert_eq!(
            log.end_offset_for_epoch(LeaderEpoch(3)),
            Some((LeaderEpoch(2), Offset(39)))
        );
        let info = log
            .append_as_leader(&three(0), LeaderEpoch(4), 0)
            .unwrap()
            .info();
        assert_eq!(info.base_offset, Offset(39));
        assert_eq!(
            log.end_offset_for_epoch(LeaderEpoch(2)),
            Some((LeaderEpoch(2), Offset(39)))
        );
        let expected: Vec<i64> = (0..14).map(|i| 3 * i).collect();
        assert_eq!(bases(&read_all(&log, Offset(0), Offset(42))), expected);
        drop(log);
        let (log, _) = open(dir.path(), false, Offset(0));
        assert_eq!(log.log_end_offset(), Offset(42));
        assert_eq!(bases(&read_all(&log, Offset(0), Offset(42))), expected);
        assert_eq!(
            log.end_offset_for_epoch(LeaderEpoch(3)),
            Some((LeaderEpoch(2), Offset(39)))
        );
    }

    #[test]
    fn truncate_below_an_advanced_log_start_keeps_log_start_at_most_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = four_segments(dir.path());
        log.advance_log_start(Offset(60)).unwrap();
        log.truncate_to(Offset(40)).unwrap();
        assert_eq!(log.log_end_offset(), Offset(39));
        assert_eq!(log.log_start_offset(), Offset(39));
        assert!(read_slice(&log, Offset(39), 100, Offset(39), true).is_none());
    }

    #[test]
    fn truncate_fully_and_start_at() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = four_segments(dir.path());
        log.truncate_fully_and_start_at(Offset(1000)).unwrap();
        assert_eq!(log.log_end_offset(), Offset(1000));
        assert_eq!(log.log_start_offset(), Offset(1000));
        assert_eq!(log.recovery_point(), Offset(1000));
        assert_eq!(log.segment_count(), 1);
        assert_eq!(log.latest_epoch(), None);
        assert_eq!(log_files(dir.path()), [format!("{:020}.log", 1000)]);
        assert!(!seg_path(dir.path(), 0, "index").exists());
        let info = log
            .append_as_leader(&three(0), LeaderEpoch(7), 0)
            .unwrap()
            .info();
        assert_eq!(info.base_offset, Offset(1000));
        log.close().unwrap();
        let (log, _) = open(dir.path(), true, Offset(0));
        assert_eq!(log.log_start_offset(), Offset(1000));
        assert_eq!(log.log_end_offset(), Offset(1003));
        assert_eq!(
            log.end_offset_for_epoch(LeaderEpoch(7)),
            Some((LeaderEpoch(7), Offset(1003)))
        );
    }

    #[test]
    fn follower_append_keeps_offsets_and_epochs() {
        let dir = tempfile::tempdir().unwrap();
        let mut leader =
            PartitionLog::create(&dir.path().join("leader"), config(), Offset(0)).unwrap();
        append_many(&mut leader, 6, 1, 0);
        append_many(&mut leader, 6, 4, 0);
        let batches = read_all_batches(&leader, Offset(0), Offset(36));
        assert_eq!(batches.len(), 12);
        let mut follower =
            PartitionLog::create(&dir.path().join("follower"), config(), Offset(0)).unwrap();
        for b in &batches {
            let info = follower.append_as_follower(b, 0).unwrap();
            assert_eq!(info.base_offset, b.header().base_offset);
            assert_eq!(info.log_end_offset, b.header().next_offset());
        }
        assert_eq!(
            read_all(&follower, Offset(0), Offset(36)),
            read_all(&leader, Offset(0), Offset(36))
        );
        for e in 0..6 {
            let e = LeaderEpoch(e);
            assert_eq!(
                follower.end_offset_for_epoch(e),
                leader.end_offset_for_epoch(e),
                "epoch {e}"
            );
        }
        let err = follower.append_as_follower(&batches[11], 0).unwrap_err();
        assert!(matches!(err, Error::NonContiguousAppend { .. }), "{err}");
        // An empty follower of a leader whose log starts later starts where the leader's does.
        let mut late = PartitionLog::create(&dir.path().join("late"), config(), Offset(0)).unwrap();
        late.append_as_follower(&batches[4], 0).unwrap();
        assert_eq!(late.log_start_offset(), Offset(12));
        assert_eq!(late.log_end_offset(), Offset(15));
    }

    #[test]
    fn follower_append_far_past_the_segment_base_starts_a_segment_at_the_batch() {
        let dir = tempfile::tempdir().unwrap();
        let far = Offset(5_000_000_000);
        let mut log = PartitionLog::create(dir.path(), config(), Offset(0)).unwrap();
        log.append_as_follower(&stored(Offset(0), 1, 0), 0).unwrap();
        log.append_as_follower(&stored(far, 2, 0), 0).unwrap();
        assert_eq!(log.log_end_offset(), far.plus(3));
        assert_eq!(bases(&read_all(&log, Offset(0), far.plus(3))), [0, far.0]);
        // The same from an empty active segment left by a roll.
        let dir = tempfile::tempdir().unwrap();
        let mut log = PartitionLog::create(dir.path(), config(), Offset(0)).unwrap();
        log.append_as_follower(&stored(Offset(0), 1, 0), 0).unwrap();
        log.roll().unwrap();
        log.append_as_follower(&stored(far, 2, 0), 0).unwrap();
        assert_eq!(bases(&read_all(&log, Offset(0), far.plus(3))), [0, far.0]);
        log.close().unwrap();
        let (log, _) = open(dir.path(), false, Offset(0));
        assert_eq!(log.log_end_offset(), far.plus(3));
    }

    #[test]
    fn offset_for_timestamp_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = four_segments(dir.path());
        // Batch i holds offsets 3i..3i+2 with timestamps ts..ts+2: the answer is the first
        // record at or after the target, as Kafka, not its batch.
        for i in 0..30 {
            let ts = 1000 + 10 * i;
            assert_eq!(
                log.offset_for_timestamp(ts).unwrap(),
                Some((Offset(3 * i), ts)),
                "ts {ts}"
            );
            assert_eq!(
                log.offset_for_timestamp(ts + 2).unwrap(),
                Some((Offset(3 * i + 2), ts + 2))
            );
            let next = (i < 29).then(|| (Offset(3 * i + 3), ts + 10));
            assert_eq!(
                log.offset_for_timestamp(ts + 3).unwrap(),
                next,
                "ts {}",
                ts + 3
            );
        }
        assert_eq!(
            log.offset_for_timestamp(0).unwrap(),
            Some((Offset(0), 1000))
        );
        assert_eq!(log.max_timestamp().unwrap(), Some((Offset(89), 1292)));
        // Batches wholly below the log start are not an answer.
        log.advance_log_start(Offset(31)).unwrap();
        assert_eq!(
            log.offset_for_timestamp(0).unwrap(),
            Some((Offset(31), 1101))
        );
        // After a truncation the segment's newest timestamp is that of its new last batch.
        log.truncate_to(Offset(48)).unwrap();
        assert_eq!(log.max_timestamp().unwrap(), Some((Offset(47), 1152)));
        assert_eq!(
            log.offset_for_timestamp(1151).unwrap(),
            Some((Offset(46), 1151))
        );
        assert_eq!(log.offset_for_timestamp(1153).unwrap(), None);
    }

    #[test]
    fn end_offset_for_epoch_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = PartitionLog::create(dir.path(), config(), Offset(0)).unwrap();
        append_many(&mut log, 4, 1, 0); // 0..12
        append_many(&mut log, 6, 3, 0); // 12..30
        append_many(&mut log, 5, 5, 0); // 30..45
        let expect = |log: &PartitionLog| {
            assert_eq!(log.latest_epoch(), Some(LeaderEpoch(5)));
            assert_eq!(log.end_offset_for_epoch(LeaderEpoch(0)), None);
            assert_eq!(
                log.end_offset_for_epoch(LeaderEpoch(1)),
                Some((LeaderEpoch(1), Offset(12)))
            );
            assert_eq!(
                log.end_offset_for_epoch(LeaderEpoch(2)),
                Some((LeaderEpoch(1), Offset(12)))
            );
            assert_eq!(
                log.end_offset_for_epoch(LeaderEpoch(3)),
                Some((LeaderEpoch(3), Offset(30)))
            );
            assert_eq!(
                log.end_offset_for_epoch(LeaderEpoch(5)),
                Some((LeaderEpoch(5), Offset(45)))
            );
            assert_eq!(
                log.end_offset_for_epoch(LeaderEpoch(9)),
                Some((LeaderEpoch(5), Offset(45)))
            );
        };
        expect(&log);
        log.close().unwrap();
        let (log, _) = open(dir.path(), true, Offset(0));
        expect(&log);
        drop(log);
        let (log, _) = open(dir.path(), false, Offset(0));
        expect(&log);
        drop(log);
        // Without its checkpoint the cache is rebuilt from the batches a full scan reads.
        fs::remove_file(dir.path().join(EPOCH_CHECKPOINT)).unwrap();
        let (log, _) = open(dir.path(), false, Offset(0));
        expect(&log);
    }

    #[test]
    fn open_drops_epochs_below_the_checkpointed_log_start() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = PartitionLog::create(dir.path(), config(), Offset(0)).unwrap();
        append_many(&mut log, 4, 1, 0); // 0..12
        append_many(&mut log, 6, 3, 0); // 12..30
        log.close().unwrap();
        drop(log);
        // The log start checkpoint moved (DeleteRecords) after the epoch checkpoint was written.
        let opts = OpenOptions {
            clean_shutdown: true,
            recovery_point: Offset(30),
            log_start_offset: Offset(20),
        };
        let (log, _) = PartitionLog::open(dir.path(), config(), opts).unwrap();
        assert_eq!(log.log_start_offset(), Offset(20));
        assert_eq!(log.end_offset_for_epoch(LeaderEpoch(1)), None);
        assert_eq!(
            log.end_offset_for_epoch(LeaderEpoch(3)),
            Some((LeaderEpoch(3), Offset(30)))
        );
        let checkpoint = fs::read_to_string(dir.path().join(EPOCH_CHECKPOINT)).unwrap();
        assert_eq!(checkpoint, "0\n1\n3 20\n");
    }

    #[test]
    fn clean_reopen_trusts_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = four_segments(dir.path());
        log.close().unwrap();
        drop(log);
        // Trusted: the indexes are loaded, not rebuilt, and nothing is cut or fsynced (every
        // batch's CRC is still checked: `corrupted_byte_in_closed_segment_below_recovery_point_
        // is_cut_at_open`).
        let (mut log, report) = open(dir.path(), true, Offset(0));
        assert_eq!(report.segments_scanned, 0);
        assert_eq!(report.indexes_rebuilt, 0);
        assert_eq!(report.truncated_bytes, 0);
        assert_eq!(log.log_end_offset(), Offset(90));
        assert_eq!(log.recovery_point(), Offset(90));
        assert_every_offset_located(&log, 0, 81);
        // An append after a trusted open goes to the end of the active segment.
        let info = log
            .append_as_leader(&three(7), LeaderEpoch(2), 0)
            .unwrap()
            .info();
        assert_eq!(info.base_offset, Offset(90));
        assert_eq!(
            fs::metadata(seg_path(dir.path(), 81, "log")).unwrap().len(),
            4 * THREE_BYTES
        );
        assert_eq!(
            log.read_batch(Offset(90))
                .unwrap()
                .unwrap()
                .header()
                .base_offset,
            Offset(90)
        );
        assert_eq!(
            log.read_batch(Offset(81))
                .unwrap()
                .unwrap()
                .header()
                .base_offset,
            Offset(81)
        );
    }

    #[test]
    fn deleted_index_file_is_rebuilt_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = four_segments(dir.path());
        log.close().unwrap();
        drop(log);
        let index = seg_path(dir.path(), 27, "index");
        let original = fs::read(&index).unwrap();
        assert!(!original.is_empty(), "the segment has index entries");
        for clean_shutdown in [true, false] {
            fs::remove_file(&index).unwrap();
            let (mut log, report) = open(dir.path(), clean_shutdown, Offset(90));
            assert_eq!(report.indexes_rebuilt, 1, "clean_shutdown={clean_shutdown}");
            assert_eq!(report.truncated_bytes, 0);
            assert_eq!(log.log_end_offset(), Offset(90));
            assert_every_offset_located(&log, 0, 90);
            log.close().unwrap();
            assert_eq!(
                fs::read(&index).unwrap(),
                original,
                "clean_shutdown={clean_shutdown}"
            );
        }
    }

    #[test]
    fn index_file_older_than_its_log_is_rebuilt_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = four_segments(dir.path());
        log.close().unwrap();
        drop(log);
        // An index that stops short of the log (an older file, or one emptied by a crash)
        // would send every lookup on a long scan: it is rebuilt, not trusted.
        let index = seg_path(dir.path(), 27, "index");
        let original = fs::read(&index).unwrap();
        fs::write(&index, []).unwrap();
        let (mut log, report) = open(dir.path(), true, Offset(90));
        assert_eq!(report.indexes_rebuilt, 1);
        assert_every_offset_located(&log, 27, 54);
        log.close().unwrap();
        assert_eq!(fs::read(&index).unwrap(), original);
    }

    #[test]
    fn clean_open_of_a_torn_segment_rebuilds_instead_of_failing() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = four_segments(dir.path());
        log.close().unwrap();
        drop(log);
        let active = seg_path(dir.path(), 81, "log");
        fs::OpenOptions::new()
            .write(true)
            .open(&active)
            .unwrap()
            .set_len(2 * THREE_BYTES + 30)
            .unwrap();
        let (log, report) = open(dir.path(), true, Offset(90));
        assert_eq!(report.indexes_rebuilt, 1);
        assert_eq!(report.truncated_bytes, 30);
        assert_eq!(log.log_end_offset(), Offset(87));
        assert_eq!(log.recovery_point(), Offset(87));
    }

    #[test]
    fn unclean_reopen_stops_at_a_batch_whose_base_offset_is_damaged() {
        let dir = tempfile::tempdir().unwrap();
        let log = four_segments(dir.path());
        drop(log);
        // The base offset lies outside the CRC: a flipped high bit makes it absurd but valid.
        let active = seg_path(dir.path(), 81, "log");
        let mut raw = fs::read(&active).unwrap();
        raw[THREE_BYTES as usize + 2] ^= 0x10;
        fs::write(&active, raw).unwrap();
        let (log, report) = open(dir.path(), false, Offset(81));
        assert_eq!(report.truncated_bytes, 2 * THREE_BYTES);
        assert_eq!(log.log_end_offset(), Offset(84));
    }

    #[test]
    fn unclean_reopen_truncates_torn_tail_and_drops_later_segments() {
        let dir = tempfile::tempdir().unwrap();
        let log = four_segments(dir.path());
        drop(log);
        // Segment 27 lost the end of its sixth batch and everything after it.
        let torn = seg_path(dir.path(), 27, "log");
        fs::OpenOptions::new()
            .write(true)
            .open(&torn)
            .unwrap()
            .set_len(5 * THREE_BYTES + 50)
            .unwrap();
        let (mut log, report) = open(dir.path(), false, Offset(27));
        assert_eq!(report.segments_scanned, 1);
        assert_eq!(report.truncated_bytes, 50);
        assert_eq!(report.segments_dropped, 2);
        assert_eq!(log.log_end_offset(), Offset(42));
        assert_eq!(log.recovery_point(), Offset(42));
        assert_eq!(
            log_files(dir.path()),
            [0, 27].map(|b| format!("{:020}.log", b)).to_vec()
        );
        assert!(!seg_path(dir.path(), 54, "index").exists());
        assert_eq!(fs::metadata(&torn).unwrap().len(), 5 * THREE_BYTES);
        let info = log
            .append_as_leader(&three(0), LeaderEpoch(1), 0)
            .unwrap()
            .info();
        assert_eq!(info.base_offset, Offset(42));
        assert_eq!(fs::metadata(&torn).unwrap().len(), 6 * THREE_BYTES);
        assert_eq!(
            bases(&read_all(&log, Offset(0), Offset(45))),
            (0..15).map(|i| 3 * i).collect::<Vec<_>>()
        );
    }

    #[test]
    fn unclean_reopen_cuts_zeroed_tail_and_appends_right_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let log = four_segments(dir.path());
        drop(log);
        // A crash after the file grew but before its data reached the disk leaves zeros.
        let active = seg_path(dir.path(), 81, "log");
        let mut raw = fs::read(&active).unwrap();
        raw.extend_from_slice(&[0u8; 500]);
        fs::write(&active, raw).unwrap();
        let (mut log, report) = open(dir.path(), false, Offset(81));
        assert_eq!(report.truncated_bytes, 500);
        assert_eq!(log.log_end_offset(), Offset(90));
        log.append_as_leader(&three(0), LeaderEpoch(1), 0).unwrap();
        assert_eq!(fs::metadata(&active).unwrap().len(), 4 * THREE_BYTES);
        assert_eq!(
            bases(&read_all(&log, Offset(81), Offset(93))),
            [81, 84, 87, 90]
        );
    }

    #[test]
    fn corrupted_byte_in_closed_segment_below_recovery_point_is_cut_at_open() {
        // A bit rots in batch 12..15 of the first segment, inside its CRC-covered records,
        // while the broker is down; the segment lies below the recovery point, so only the
        // read-back check of trusted segments finds it. Found, the log is cut at that batch
        // (later segments go too) and a follower refetches the rest from its leader.
        for clean in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let mut log = four_segments(dir.path());
            let job = log.flush_job();
            job.run().unwrap();
            log.mark_flushed(job.upto);
            if clean {
                log.close().unwrap();
            }
            drop(log);
            flip_byte(&seg_path(dir.path(), 0, "log"), 4 * THREE_BYTES + 80);
            let (log, report) = open(dir.path(), clean, Offset(90));
            assert_eq!(log.log_end_offset(), Offset(12), "clean={clean}");
            assert_eq!(report.truncated_bytes, 5 * THREE_BYTES, "clean={clean}");
            assert_eq!(report.segments_dropped, 3, "clean={clean}");
            assert_eq!(log_files(dir.path()), ["00000000000000000000.log"]);
            assert_eq!(
                bases(&read_all(&log, Offset(0), Offset(12))),
                [0, 3, 6, 9],
                "clean={clean}"
            );
        }
    }

    #[test]
    fn corrupted_byte_found_by_a_read_is_never_served() {
        // Rot after open: the fetch path checks every whole batch it hands out.
        let dir = tempfile::tempdir().unwrap();
        let log = four_segments(dir.path());
        flip_byte(&seg_path(dir.path(), 0, "log"), 4 * THREE_BYTES + 80);
        let slice = log
            .read(Offset(9), 1 << 20, Offset(90), true)
            .unwrap()
            .slice
            .unwrap();
        let err = slice.read().unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");
        assert!(
            err.to_string()
                .contains("corrupt batch at file position 448"),
            "{err}"
        );
        // Batches before the damaged one are still served, and so are those after it.
        assert_eq!(
            whole_batches(read_slice(&log, Offset(9), 1 << 20, Offset(12), true).unwrap()).len(),
            1
        );
        assert_eq!(
            log.read_batch(Offset(15))
                .unwrap()
                .unwrap()
                .header()
                .base_offset,
            Offset(15)
        );
        assert!(matches!(
            log.read_batch(Offset(13)).unwrap_err(),
            Error::CorruptBatch { position: 448, .. }
        ));
    }

    #[test]
    fn flush_job_advances_recovery_point() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = PartitionLog::create(dir.path(), config(), Offset(0)).unwrap();
        append_many(&mut log, 12, 1, 0);
        assert_eq!(log.recovery_point(), Offset(0));
        let job = log.flush_job();
        assert_eq!(job.upto, Offset(36));
        assert!(!job.is_empty());
        job.run().unwrap();
        log.mark_flushed(job.upto);
        assert_eq!(log.recovery_point(), Offset(36));
        assert!(log.flush_job().is_empty(), "nothing new to sync");
        append_many(&mut log, 1, 1, 0);
        let job = log.flush_job();
        job.run().unwrap();
        log.mark_flushed(job.upto);
        assert_eq!(log.recovery_point(), Offset(39));
    }

    #[test]
    fn flush_job_finished_after_a_truncation_does_not_cover_new_appends() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = PartitionLog::create(dir.path(), config(), Offset(0)).unwrap();
        append_many(&mut log, 12, 1, 0);
        let job = log.flush_job();
        job.run().unwrap();
        // While the job's completion is on its way, the log is truncated and rewritten.
        log.truncate_to(Offset(15)).unwrap();
        append_many(&mut log, 10, 2, 0);
        log.mark_flushed(job.upto);
        assert!(
            log.recovery_point() <= Offset(15),
            "rp={}",
            log.recovery_point()
        );
        let job = log.flush_job();
        job.run().unwrap();
        log.mark_job_flushed(&job);
        assert_eq!(log.recovery_point(), Offset(45));
    }

    #[test]
    #[should_panic(expected = "leader epoch went backwards")]
    fn leader_append_in_an_older_epoch_is_a_bug() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = PartitionLog::create(dir.path(), config(), Offset(0)).unwrap();
        append_many(&mut log, 1, 3, 0);
        append_many(&mut log, 1, 2, 0);
    }
}
