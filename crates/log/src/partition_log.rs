//! The log of one partition replica: an ordered set of segments, the offsets that bound it, and
//! its leader-epoch cache.
//!
//! Ownership and durability: the owner (the broker's partition) serialises every mutation. An
//! append returns once the bytes are in the page cache; nothing is durable until a `FlushJob`
//! taken from the log has run (outside the owner's lock) and `mark_flushed` recorded it. The
//! recovery point is the offset below which everything is known to be fsynced.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ferrymq_types::{LeaderEpoch, Offset};

use crate::batch::{BatchHeader, ValidatedBatch};
use crate::checkpoint;
use crate::config::LogConfig;
use crate::epoch::EpochCache;
use crate::error::{io_err, Error, Result};
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

/// Data to serve for a read, located under the lock, read after.
#[derive(Debug, Clone)]
pub struct ReadSlice {
    /// The bytes to send: whole batches, except possibly a partial last one, as Kafka.
    pub slice: Option<FileSlice>,
}

/// fsync work taken from the log under its lock and run outside it.
#[derive(Debug)]
pub struct FlushJob {
    files: Vec<(Arc<File>, PathBuf)>,
    dir: Option<PathBuf>,
    /// Everything below this offset is durable once the job has run.
    pub upto: Offset,
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
}

impl PartitionLog {
    /// Creates an empty log in a new directory, starting at `start`.
    pub fn create(dir: &Path, config: LogConfig, start: Offset) -> Result<PartitionLog> {
        fs::create_dir_all(dir).map_err(|e| io_err("mkdir", dir, e))?;
        let mut segments = BTreeMap::new();
        segments.insert(start, Segment::create(dir, start, config.index_interval_bytes)?);
        Ok(PartitionLog {
            dir: dir.to_path_buf(),
            config,
            segments,
            log_start_offset: start,
            recovery_point: start,
            epochs: EpochCache::default(),
            dir_dirty: true,
        })
    }

    /// Opens an existing log directory, recovering it as `DESIGN.md` §4 says: after an unclean
    /// stop, segments from the recovery point on are scanned, the first invalid batch and
    /// everything after it is cut, and indexes are rebuilt; a clean stop skips the scan.
    pub fn open(dir: &Path, config: LogConfig, opts: OpenOptions) -> Result<(PartitionLog, RecoveryReport)> {
        let mut bases = list_segment_bases(dir)?;
        if bases.is_empty() {
            let log = PartitionLog::create(dir, config, opts.log_start_offset)?;
            return Ok((log, RecoveryReport::default()));
        }
        bases.sort();
        let mut epochs = EpochCache::from_entries(checkpoint::read_epochs(&dir.join(EPOCH_CHECKPOINT))?);
        let mut report = RecoveryReport::default();
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
            let (seg, outcome) = Segment::open(&path, base, config.index_interval_bytes, trust, &mut on_batch)?;
            if !trust {
                report.segments_scanned += 1;
                seg.sync()?;
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
                        reason: format!("segment ends at {} past next segment base {n}", seg.next_offset()),
                    });
                }
            }
            segments.insert(base, seg);
        }
        let first_base = *segments.keys().next().expect("at least one segment");
        let mut log = PartitionLog {
            dir: dir.to_path_buf(),
            config,
            segments,
            log_start_offset: first_base.max(opts.log_start_offset),
            recovery_point: Offset(0),
            epochs,
            dir_dirty: report.segments_dropped > 0,
        };
        let leo = log.log_end_offset();
        log.log_start_offset = log.log_start_offset.min(leo);
        log.epochs.truncate_from_end(leo);
        log.recovery_point = if opts.clean_shutdown { leo } else { opts.recovery_point.min(leo) };
        if report.segments_scanned > 0 {
            // Every scanned segment was validated and fsynced above.
            log.recovery_point = leo;
        }
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

    /// Replaces the settings (topic config changed); they apply from the next append.
    pub fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }

    fn active(&self) -> &Segment {
        self.segments.values().next_back().expect("a log always has a segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments.values_mut().next_back().expect("a log always has a segment")
    }

    /// Appends a producer's batch as leader in `epoch`: assigns offsets from the log end and
    /// stamps the epoch. Bytes are in the page cache on return, not durable.
    pub fn append_as_leader(&mut self, batch: &ValidatedBatch, epoch: LeaderEpoch, now_ms: i64) -> Result<AppendInfo> {
        let base = self.log_end_offset();
        self.maybe_roll(batch, now_ms)?;
        if self.epochs.assign(epoch, base) {
            self.write_epoch_checkpoint()?;
        }
        self.active_mut().append(batch, base, epoch)?;
        let last = base.plus(batch.header().last_offset_delta as i64);
        Ok(AppendInfo {
            base_offset: base,
            last_offset: last,
            log_end_offset: last.next(),
        })
    }

    /// Appends a batch copied from the leader, keeping its offsets and epoch. It must start at
    /// or after the log end (compaction may leave gaps before it).
    pub fn append_as_follower(&mut self, batch: &ValidatedBatch, now_ms: i64) -> Result<AppendInfo> {
        let h = *batch.header();
        let leo = self.log_end_offset();
        if h.base_offset < leo {
            return Err(Error::NonContiguousAppend {
                base: h.base_offset,
                log_end: leo,
            });
        }
        self.maybe_roll(batch, now_ms)?;
        if self.active().is_empty() && self.active().base_offset() < h.base_offset && self.segments.len() == 1 {
            // An empty log following a leader whose log starts later: start where it starts.
            self.truncate_fully_and_start_at(h.base_offset)?;
        }
        if self.epochs.assign(h.leader_epoch, h.base_offset) {
            self.write_epoch_checkpoint()?;
        }
        self.active_mut().append_stored(batch)?;
        Ok(AppendInfo {
            base_offset: h.base_offset,
            last_offset: h.last_offset(),
            log_end_offset: h.next_offset(),
        })
    }

    fn maybe_roll(&mut self, batch: &ValidatedBatch, now_ms: i64) -> Result<()> {
        let active = self.active();
        if active.is_empty() {
            return Ok(());
        }
        let too_big = active.size() as u64 + batch.len() as u64 > self.config.segment_bytes as u64;
        let too_old = active
            .first_batch_timestamp()
            .is_some_and(|t| now_ms.saturating_sub(t) > self.config.segment_ms);
        let offsets_overflow =
            batch.header().last_offset_delta as i64 + self.log_end_offset().0 - active.base_offset().0 > u32::MAX as i64;
        if too_big || too_old || offsets_overflow {
            self.roll()?;
        }
        Ok(())
    }

    /// Closes the active segment (writing its indexes) and starts a new one at the log end.
    pub fn roll(&mut self) -> Result<()> {
        let leo = self.log_end_offset();
        if self.active().base_offset() == leo {
            return Ok(());
        }
        self.active().write_indexes()?;
        let seg = Segment::create(&self.dir, leo, self.config.index_interval_bytes)?;
        self.segments.insert(leo, seg);
        self.dir_dirty = true;
        tracing::debug!(dir = %self.dir.display(), base_offset = leo.0, "rolled segment");
        Ok(())
    }

    /// Locates up to `max_bytes` of batches from `start`, never past `upper` (the high
    /// watermark for consumers, the log end for replicas). With `min_one`, a first batch larger
    /// than `max_bytes` is returned whole (KIP-74), so a consumer never stalls on it.
    pub fn read(&self, start: Offset, max_bytes: usize, upper: Offset, min_one: bool) -> Result<ReadSlice> {
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
        for (_, seg) in self.segments.range(..=start).next_back().into_iter().chain(self.segments.range(start.next()..)) {
            let Some(first) = seg.locate(start)? else { continue };
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

    /// The first batch at or after `ts` (by its max timestamp): `(base offset, max timestamp)`.
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(Offset, i64)>> {
        for seg in self.segments.values() {
            if seg.max_timestamp() < ts {
                continue;
            }
            if let Some(loc) = seg.locate_timestamp(ts)? {
                let offset = loc.header.base_offset.max(self.log_start_offset);
                return Ok(Some((offset, loc.header.max_timestamp)));
            }
        }
        Ok(None)
    }

    /// The largest timestamp in the log and the base offset of the batch holding it.
    pub fn max_timestamp(&self) -> Result<Option<(Offset, i64)>> {
        let Some(seg) = self.segments.values().filter(|s| !s.is_empty()).max_by_key(|s| s.max_timestamp()) else {
            return Ok(None);
        };
        Ok(seg.locate_timestamp(seg.max_timestamp())?.map(|l| (l.header.base_offset, l.header.max_timestamp)))
    }

    /// OffsetForLeaderEpoch: the largest epoch ≤ `epoch` and where it ends in this log.
    pub fn end_offset_for_epoch(&self, epoch: LeaderEpoch) -> Option<(LeaderEpoch, Offset)> {
        self.epochs.end_offset_for(epoch, self.log_end_offset())
    }

    /// Takes the fsync work needed to make everything up to the log end durable.
    pub fn flush_job(&mut self) -> FlushJob {
        let upto = self.log_end_offset();
        let files = self
            .segments
            .values()
            .filter(|s| s.next_offset() > self.recovery_point)
            .map(|s| (s.file(), s.log_path().to_path_buf()))
            .collect();
        let dir = std::mem::take(&mut self.dir_dirty).then(|| self.dir.clone());
        FlushJob { files, dir, upto }
    }

    /// Records that a `FlushJob` up to `upto` completed.
    pub fn mark_flushed(&mut self, upto: Offset) {
        // A truncation may have happened while the job ran; never claim past the log end.
        let upto = upto.min(self.log_end_offset());
        if upto > self.recovery_point {
            self.recovery_point = upto;
        }
    }

    /// Cuts the log so that `end` becomes its end offset (a follower diverged from its leader).
    /// `end` is rounded down to a batch boundary.
    pub fn truncate_to(&mut self, end: Offset) -> Result<()> {
        if end >= self.log_end_offset() {
            return Ok(());
        }
        let first_base = *self.segments.keys().next().expect("a log always has a segment");
        if end <= first_base {
            return self.truncate_fully_and_start_at(end);
        }
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
        self.epochs.truncate_from_end(leo);
        self.write_epoch_checkpoint()
    }

    /// Deletes every segment and starts an empty log at `start` (a replica whose log lies
    /// entirely outside the leader's).
    pub fn truncate_fully_and_start_at(&mut self, start: Offset) -> Result<()> {
        for seg in std::mem::take(&mut self.segments).into_values() {
            seg.delete_files()?;
        }
        self.segments
            .insert(start, Segment::create(&self.dir, start, self.config.index_interval_bytes)?);
        self.dir_dirty = true;
        self.log_start_offset = start;
        self.recovery_point = start;
        self.epochs = EpochCache::default();
        self.write_epoch_checkpoint()
    }

    /// DeleteRecords: moves the log start up to `offset` (≤ the high watermark, checked by the
    /// caller); whole segments below it go at the next retention pass.
    pub fn advance_log_start(&mut self, offset: Offset) -> Result<Offset> {
        let offset = offset.min(self.log_end_offset());
        if offset > self.log_start_offset {
            self.log_start_offset = offset;
            self.epochs.truncate_from_start(offset);
            self.write_epoch_checkpoint()?;
        }
        Ok(self.log_start_offset)
    }

    /// Deletes the oldest closed segments that retention (`retention.ms`, `retention.bytes`) or
    /// the log start offset let go, never at or past `hw`. Returns how many were deleted.
    pub fn enforce_retention(&mut self, now_ms: i64, hw: Offset) -> Result<usize> {
        let expired = |s: &Segment, cfg: &LogConfig| {
            cfg.retention_ms >= 0 && !s.is_empty() && s.max_timestamp() < now_ms.saturating_sub(cfg.retention_ms)
        };
        if expired(self.active(), &self.config) && self.active().next_offset() <= hw {
            self.roll()?;
        }
        let mut total: u64 = self.size_bytes();
        let mut deleted = 0;
        while self.segments.len() > 1 {
            let (&base, seg) = self.segments.iter().next().expect("len > 1");
            let over_size = self.config.retention_bytes >= 0 && total - seg.size() as u64 >= self.config.retention_bytes as u64;
            let below_start = seg.next_offset() <= self.log_start_offset;
            let deletable = seg.next_offset() <= hw && (expired(seg, &self.config) || over_size || below_start);
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
            let first = *self.segments.keys().next().expect("a segment remains");
            self.advance_log_start(first)?;
            tracing::info!(dir = %self.dir.display(), deleted, log_start_offset = self.log_start_offset.0, "retention deleted segments");
        }
        Ok(deleted)
    }

    /// Flushes and writes the active segment's indexes (clean shutdown).
    pub fn close(&mut self) -> Result<()> {
        let job = self.flush_job();
        job.run()?;
        self.mark_flushed(job.upto);
        for seg in self.segments.values() {
            seg.write_indexes()?;
        }
        self.write_epoch_checkpoint()
    }

    /// Removes the log's directory (topic deleted).
    pub fn delete(self) -> Result<()> {
        fs::remove_dir_all(&self.dir).map_err(|e| io_err("delete", &self.dir, e))
    }

    fn write_epoch_checkpoint(&self) -> Result<()> {
        checkpoint::write_epochs(&self.dir.join(EPOCH_CHECKPOINT), self.epochs.entries())
    }
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
        } else if name.ends_with(".tmp") {
            let _ = fs::remove_file(entry.path());
        }
    }
    Ok(bases)
}

fn drop_segment_files(log_path: &Path) -> Result<()> {
    for p in [
        log_path.to_path_buf(),
        log_path.with_extension("index"),
        log_path.with_extension("timeindex"),
    ] {
        match fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("delete", &p, e)),
        }
    }
    Ok(())
}
