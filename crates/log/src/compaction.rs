//! Log compaction (`cleanup.policy=compact`): closed segments are rewritten keeping, for each
//! key, only its latest record; tombstones (null values) go too once `delete.retention.ms` has
//! passed since they were written. Offsets are preserved: a compacted segment has gaps, which
//! reads and indexes already allow. This is the one place the broker decodes records
//! (decompressing batches as needed).
//!
//! It runs in three steps so that appends and fetches are never blocked for long:
//! 1. `PartitionLog::clean_snapshot`, under the owner's lock: which closed segments, below the
//!    high watermark and the recovery point, may be cleaned (file handles, sizes).
//! 2. `clean`, with no lock: map every key to its latest offset, then rewrite each segment that
//!    loses records into `<base>.log.cleaned`, fsync it, and index it in memory. Reads and
//!    writes are paced by a `Throttle` (`log.cleaner.io.max.bytes.per.second`).
//! 3. `PartitionLog::install_cleaned`, under the lock: each cleaned segment replaces its
//!    original if that is unchanged (no truncation or retention meanwhile): the old index
//!    files are removed, the cleaned file is renamed over the old `.log` (atomic), and the new
//!    indexes are written. A crash at any point leaves either the old or the new segment, both
//!    valid: a leftover `.cleaned` file is deleted on open, missing indexes are rebuilt.
//!
//! Batches that keep every record are copied as they are (compression kept); a batch that
//! loses some is rebuilt uncompressed with the same base offset, offset span, producer fields
//! and leader epoch.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferrymq_types::Offset;

use crate::batch::{BatchHeader, ValidatedBatch, HEADER_BYTES};
use crate::builder::{build_batch, BatchFields, RecordSpec};
use crate::error::{io_err, Error, Result};
use crate::records::{decode_records, Record};
use crate::segment::{Segment, SEGMENT_BYTES_MAX};

/// Suffix of a segment being rewritten; such files are deleted when a log is opened.
pub const CLEANED_SUFFIX: &str = "cleaned";

/// Rough memory of one key-map entry beyond its key bytes (hash map slot, offset, `Bytes`).
const KEY_MAP_ENTRY_OVERHEAD_BYTES: usize = 64;

/// A closed segment as seen when the snapshot was taken.
#[derive(Debug, Clone)]
pub struct SegmentView {
    pub(crate) base: Offset,
    pub(crate) next_offset: Offset,
    pub(crate) size: u32,
    pub(crate) file: Arc<File>,
    pub(crate) path: PathBuf,
}

/// The closed segments that may be cleaned, taken under the log owner's lock.
#[derive(Debug, Clone)]
pub struct CleanSnapshot {
    pub(crate) segments: Vec<SegmentView>,
    pub(crate) truncations: u64,
    pub(crate) index_interval_bytes: u32,
}

impl CleanSnapshot {
    /// Bytes of the cleanable segments.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.size as u64).sum()
    }

    /// Bytes of the cleanable segments at or after `first_dirty` (written since the last pass).
    pub fn dirty_bytes(&self, first_dirty: Offset) -> u64 {
        self.segments
            .iter()
            .filter(|s| s.next_offset > first_dirty)
            .map(|s| s.size as u64)
            .sum()
    }

    /// The offset after the last cleanable segment, `None` if there is none.
    pub fn end_offset(&self) -> Option<Offset> {
        self.segments.last().map(|s| s.next_offset)
    }

    /// True if no segment may be cleaned.
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }
}

/// What a pass may do.
#[derive(Debug, Clone, Copy)]
pub struct CleanOptions {
    /// Now, for tombstone expiry.
    pub now_ms: i64,
    /// `delete.retention.ms`: a tombstone written longer ago than this is dropped.
    pub delete_retention_ms: i64,
    /// `log.cleaner.dedupe.buffer.size`: memory for the key map of one pass.
    pub key_map_bytes_max: usize,
}

/// A rewritten segment, ready to replace its original.
#[derive(Debug)]
pub struct CleanedSegment {
    pub(crate) old_next_offset: Offset,
    pub(crate) old_size: u32,
    pub(crate) segment: Segment,
}

/// Figures of one pass, for logs and the benchmark.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CleanStats {
    /// Bytes read (mapping and rewriting).
    pub bytes_read: u64,
    /// Bytes written to cleaned segments.
    pub bytes_written: u64,
    /// Records dropped (older versions and expired tombstones).
    pub records_removed: u64,
    /// Segments rewritten.
    pub segments_cleaned: usize,
}

/// The result of `clean`, to install with `PartitionLog::install_cleaned`.
#[derive(Debug)]
pub struct Cleaned {
    pub(crate) truncations: u64,
    pub(crate) segments: Vec<CleanedSegment>,
    /// Every record below this offset was considered: the next pass's dirty section starts here.
    pub end: Offset,
    /// Figures of the pass.
    pub stats: CleanStats,
}

/// Paces the cleaner's disk traffic to a byte rate, and stops it when asked (a broker shutting
/// down does not wait for a long pass). Real I/O is paced against real time, so this is the
/// one place in the storage engine that reads the monotonic clock.
pub struct Throttle {
    bytes_per_second: u64,
    window_start: Instant,
    window_bytes: u64,
    stop: Option<Box<dyn Fn() -> bool + Send>>,
}

impl std::fmt::Debug for Throttle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttle")
            .field("bytes_per_second", &self.bytes_per_second)
            .finish()
    }
}

impl Throttle {
    /// A throttle allowing `bytes_per_second` (0 for no limit).
    pub fn new(bytes_per_second: u64) -> Throttle {
        Throttle {
            bytes_per_second,
            window_start: Instant::now(),
            window_bytes: 0,
            stop: None,
        }
    }

    /// Makes `pace` fail with `Error::Interrupted` once `stop` returns true.
    pub fn with_stop(mut self, stop: impl Fn() -> bool + Send + 'static) -> Throttle {
        self.stop = Some(Box::new(stop));
        self
    }

    /// Accounts for `bytes` of I/O, sleeping as long as needed to stay within the rate.
    pub fn pace(&mut self, bytes: u64) -> Result<()> {
        if self.stop.as_ref().is_some_and(|stop| stop()) {
            return Err(Error::Interrupted);
        }
        if self.bytes_per_second == 0 {
            return Ok(());
        }
        self.window_bytes += bytes;
        let due = Duration::from_secs_f64(self.window_bytes as f64 / self.bytes_per_second as f64);
        let elapsed = self.window_start.elapsed();
        if due > elapsed {
            std::thread::sleep(due - elapsed);
        }
        if self.window_start.elapsed() > Duration::from_secs(1) {
            self.window_start = Instant::now();
            self.window_bytes = 0;
        }
        Ok(())
    }
}

/// Reads the batches of a segment view in order, CRC-checked, handing each to `f`, which
/// returns the bytes it wrote; reads and writes are paced together.
fn for_each_batch(
    seg: &SegmentView,
    throttle: &mut Throttle,
    stats: &mut CleanStats,
    mut f: impl FnMut(ValidatedBatch) -> Result<u64>,
) -> Result<()> {
    let mut pos: u64 = 0;
    let mut header = [0u8; HEADER_BYTES];
    while pos < seg.size as u64 {
        let corrupt = |source| Error::CorruptBatch {
            path: seg.path.clone(),
            position: pos,
            source,
        };
        seg.file
            .read_exact_at(&mut header, pos)
            .map_err(|e| io_err("read", &seg.path, e))?;
        let h = BatchHeader::parse(&header).map_err(corrupt)?;
        let mut buf = vec![0u8; h.total_bytes()];
        seg.file
            .read_exact_at(&mut buf, pos)
            .map_err(|e| io_err("read", &seg.path, e))?;
        let batch = ValidatedBatch::from_stored(Bytes::from(buf)).map_err(corrupt)?;
        stats.bytes_read += h.total_bytes() as u64;
        pos += h.total_bytes() as u64;
        let written = f(batch)?;
        throttle.pace(h.total_bytes() as u64 + written)?;
    }
    Ok(())
}

fn records_of(batch: &ValidatedBatch, path: &Path) -> Result<Vec<Record>> {
    decode_records(batch.header(), batch.bytes()).map_err(|e| Error::MalformedFile {
        path: path.to_path_buf(),
        reason: format!(
            "records of the batch at offset {}: {e}",
            batch.header().base_offset
        ),
    })
}

/// True for batches compaction leaves alone: control and transactional batches (transaction
/// markers must stay with the data they commit or abort).
fn kept_whole(h: &BatchHeader) -> bool {
    h.is_control() || h.is_transactional()
}

/// Runs a pass over `snap` (no lock held): maps keys to their latest offsets, rewrites the
/// segments that lose records, and returns them ready to install. Segments past the point
/// where the key map filled up are left for a later pass.
pub fn clean(
    snap: &CleanSnapshot,
    opts: &CleanOptions,
    throttle: &mut Throttle,
) -> Result<Cleaned> {
    let mut stats = CleanStats::default();
    let mut latest: HashMap<Bytes, Offset> = HashMap::new();
    let mut map_bytes = 0usize;
    let mut mapped = 0usize;
    for seg in &snap.segments {
        let mut seg_keys: Vec<(Bytes, Offset)> = Vec::new();
        for_each_batch(seg, throttle, &mut stats, |batch| {
            if kept_whole(batch.header()) {
                return Ok(0);
            }
            for r in records_of(&batch, &seg.path)? {
                if let Some(k) = r.key {
                    seg_keys.push((k, r.offset));
                }
            }
            Ok(0)
        })?;
        let added: usize = seg_keys
            .iter()
            .filter(|(k, _)| !latest.contains_key(k))
            .map(|(k, _)| k.len() + KEY_MAP_ENTRY_OVERHEAD_BYTES)
            .sum();
        if mapped > 0 && map_bytes + added > opts.key_map_bytes_max {
            break;
        }
        map_bytes += added;
        latest.extend(seg_keys);
        mapped += 1;
    }
    let mut segments = Vec::new();
    for seg in &snap.segments[..mapped] {
        match rewrite(
            seg,
            snap.index_interval_bytes,
            &latest,
            opts,
            throttle,
            &mut stats,
        ) {
            Ok(Some(c)) => segments.push(c),
            Ok(None) => {}
            Err(e) => {
                // Leave no cleaned file of this pass behind (open would delete them anyway).
                for c in &segments {
                    let _ = fs::remove_file(c.segment.log_path());
                }
                return Err(e);
            }
        }
    }
    stats.segments_cleaned = segments.len();
    Ok(Cleaned {
        truncations: snap.truncations,
        segments,
        end: snap.segments[..mapped]
            .last()
            .map_or(Offset(0), |s| s.next_offset),
        stats,
    })
}

/// The records of `batch` that survive, or `None` if all do.
fn survivors(
    batch: &ValidatedBatch,
    path: &Path,
    latest: &HashMap<Bytes, Offset>,
    opts: &CleanOptions,
) -> Result<Option<Vec<Record>>> {
    if kept_whole(batch.header()) {
        return Ok(None);
    }
    let records = records_of(batch, path)?;
    let total = records.len();
    let kept: Vec<Record> = records
        .into_iter()
        .filter(|r| {
            // Kafka refuses keyless records on compacted topics; any found are dropped.
            let Some(k) = &r.key else { return false };
            let is_latest = latest.get(k) == Some(&r.offset);
            let expired_tombstone = r.value.is_none()
                && r.timestamp.saturating_add(opts.delete_retention_ms) <= opts.now_ms;
            is_latest && !expired_tombstone
        })
        .collect();
    Ok((kept.len() < total).then_some(kept))
}

/// The batch holding only `kept`, with the original's base offset, span and producer fields.
fn rebuilt(batch: &ValidatedBatch, kept: &[Record]) -> Bytes {
    let h = batch.header();
    let fields = BatchFields {
        base_offset: h.base_offset.0,
        partition_leader_epoch: h.leader_epoch.0,
        attributes: h.attributes & !0x07,
        last_offset_delta: Some(h.last_offset_delta),
        base_timestamp: Some(h.base_timestamp),
        producer_id: h.producer_id.0,
        producer_epoch: h.producer_epoch.0,
        base_sequence: h.base_sequence,
    };
    let specs: Vec<RecordSpec> = kept
        .iter()
        .map(|r| RecordSpec {
            offset_delta: (r.offset.0 - h.base_offset.0) as i32,
            timestamp: r.timestamp,
            key: r.key.clone(),
            value: r.value.clone(),
            headers: r.headers.clone(),
        })
        .collect();
    build_batch(fields, &specs)
}

/// Rewrites one segment into `<base>.log.cleaned`; `None` (and no file) if it loses nothing.
fn rewrite(
    seg: &SegmentView,
    index_interval_bytes: u32,
    latest: &HashMap<Bytes, Offset>,
    opts: &CleanOptions,
    throttle: &mut Throttle,
    stats: &mut CleanStats,
) -> Result<Option<CleanedSegment>> {
    let mut name = seg.path.file_name().unwrap_or_default().to_os_string();
    name.push(".");
    name.push(CLEANED_SUFFIX);
    let out_path = seg.path.with_file_name(name);
    crate::segment::remove_if_present(&out_path)?;
    let file = File::create(&out_path).map_err(|e| io_err("create", &out_path, e))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut written: u64 = 0;
    let mut removed: u64 = 0;
    let result = for_each_batch(seg, throttle, stats, |batch| {
        let bytes = match survivors(&batch, &seg.path, latest, opts)? {
            None => batch.bytes().clone(),
            Some(kept) => {
                removed += (batch.header().record_count.max(0) as usize - kept.len()) as u64;
                if kept.is_empty() {
                    return Ok(0);
                }
                rebuilt(&batch, &kept)
            }
        };
        written += bytes.len() as u64;
        if written > SEGMENT_BYTES_MAX as u64 {
            return Err(Error::BatchTooLarge {
                bytes: written as usize,
                segment_bytes: SEGMENT_BYTES_MAX,
            });
        }
        out.write_all(&bytes)
            .map_err(|e| io_err("write", &out_path, e))?;
        Ok(bytes.len() as u64)
    });
    let finished = result.and_then(|()| {
        let file = out
            .into_inner()
            .map_err(|e| io_err("write", &out_path, e.into_error()))?;
        file.sync_all().map_err(|e| io_err("fsync", &out_path, e))
    });
    if let Err(e) = finished {
        let _ = fs::remove_file(&out_path);
        return Err(e);
    }
    if removed == 0 {
        fs::remove_file(&out_path).map_err(|e| io_err("delete", &out_path, e))?;
        return Ok(None);
    }
    stats.records_removed += removed;
    stats.bytes_written += written;
    let (segment, _) = Segment::open(
        &out_path,
        seg.base,
        index_interval_bytes,
        false,
        &mut |_| {},
    )?;
    Ok(Some(CleanedSegment {
        old_next_offset: seg.next_offset,
        old_size: seg.size,
        segment,
    }))
}

#[cfg(test)]
#[path = "compaction_tests.rs"]
mod tests;
