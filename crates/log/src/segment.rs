//! One segment of a partition log: a `.log` file of back-to-back batches starting at
//! `base_offset`, with its sparse offset and time indexes.
//!
//! The file is opened in append mode, so every write lands at the file's end whatever the
//! cursor says (one writer: the log's owner); reads use positional reads on a shared
//! `Arc<File>`, so a reader never races a writer and a segment deleted by retention stays
//! readable by a fetch already holding it.

use std::fs::{self, File, OpenOptions};
use std::io::{IoSlice, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use ferrymq_types::{LeaderEpoch, Offset};

use crate::batch::{check_integrity, BatchError, BatchHeader, ValidatedBatch, HEADER_BYTES};
use crate::error::{io_err, Error, Result};
use crate::index::{IndexEntry, OffsetIndex, TimeIndex, TimeIndexEntry};

/// Largest segment file: positions in the index are u32, and Kafka caps `segment.bytes` at
/// `i32::MAX`.
pub const SEGMENT_BYTES_MAX: u32 = i32::MAX as u32;

/// File name stem of a segment: the base offset as 20 zero-padded digits, as Kafka.
pub fn file_stem(base_offset: Offset) -> String {
    format!("{:020}", base_offset.0)
}

/// Where a batch lies in a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLocation {
    /// Byte position of the batch in the `.log` file.
    pub position: u32,
    /// Its header.
    pub header: BatchHeader,
}

/// A byte range of a segment file, read outside the log's lock.
#[derive(Debug, Clone)]
pub struct FileSlice {
    /// The segment file (kept open even if the segment is deleted meanwhile).
    pub file: Arc<File>,
    /// Start of the range.
    pub position: u64,
    /// Length of the range in bytes.
    pub len: usize,
}

impl FileSlice {
    /// Reads the range into memory: the one copy from the page cache on the fetch path. Every
    /// whole batch in it has its header and CRC checked again (the read-back half of the paired
    /// checks), so bytes that rotted on disk are never served to a consumer or a follower: they
    /// come back as an `InvalidData` error instead. A partial batch at the end (a fetch's byte
    /// limit) is returned unchecked; the reader asks for it again whole.
    pub fn read(&self) -> std::io::Result<Bytes> {
        let buf = self.read_unchecked()?;
        if let Some((at, e)) = first_invalid_whole_batch(&buf) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "corrupt batch at file position {}: {e}",
                    self.position + at as u64
                ),
            ));
        }
        Ok(buf)
    }

    /// Reads the range as it is on disk, for callers that validate it themselves.
    fn read_unchecked(&self) -> std::io::Result<Bytes> {
        let mut buf = BytesMut::zeroed(self.len);
        self.file.read_exact_at(&mut buf, self.position)?;
        Ok(buf.freeze())
    }
}

/// The position and fault of the first whole batch of `bytes` whose header or CRC is invalid.
fn first_invalid_whole_batch(bytes: &[u8]) -> Option<(usize, BatchError)> {
    let mut at = 0;
    while bytes.len() - at >= HEADER_BYTES {
        let rest = &bytes[at..];
        let h = match BatchHeader::parse(rest).and_then(|h| h.check_offsets().map(|()| h)) {
            Ok(h) => h,
            Err(e) => return Some((at, e)),
        };
        if h.total_bytes() > rest.len() {
            return None;
        }
        if let Err(e) = check_integrity(&h, &rest[..h.total_bytes()]) {
            return Some((at, e));
        }
        at += h.total_bytes();
    }
    None
}

/// What a recovery scan found.
#[derive(Debug, Default)]
pub struct ScanOutcome {
    /// Bytes cut from the end of the file because they did not form valid batches.
    pub truncated_bytes: u64,
    /// Why the scan stopped early, if it did.
    pub stopped_by: Option<String>,
    /// The segment was to be opened from its index files, but they were missing or did not
    /// match the log, so it was scanned and its indexes rebuilt in memory (written at the next
    /// roll or close).
    pub indexes_rebuilt: bool,
}

/// One segment. Invariants: `next_offset >= base_offset`; `size` is the file length.
#[derive(Debug)]
pub struct Segment {
    base_offset: Offset,
    log_path: PathBuf,
    file: Arc<File>,
    size: u32,
    next_offset: Offset,
    index: OffsetIndex,
    time_index: TimeIndex,
    bytes_since_index_entry: u32,
    index_interval_bytes: u32,
    /// Largest batch max-timestamp in the segment, -1 when empty.
    max_timestamp: i64,
    /// Max timestamp of the first batch: the segment's age for `segment.ms` rolls.
    first_batch_timestamp: Option<i64>,
}

impl Segment {
    /// Creates an empty segment file (failing if it exists). Index files left at the same base
    /// by an interrupted delete are removed: they describe a log that is gone. Nothing is
    /// durable on return: the directory entry is synced by the log's next `FlushJob`.
    pub fn create(dir: &Path, base_offset: Offset, index_interval_bytes: u32) -> Result<Segment> {
        let log_path = dir.join(format!("{}.log", file_stem(base_offset)));
        for stale in [
            log_path.with_extension("index"),
            log_path.with_extension("timeindex"),
        ] {
            remove_if_present(&stale)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create_new(true)
            .open(&log_path)
            .map_err(|e| io_err("create", &log_path, e))?;
        Ok(Segment {
            base_offset,
            log_path,
            file: Arc::new(file),
            size: 0,
            next_offset: base_offset,
            index: OffsetIndex::default(),
            time_index: TimeIndex::default(),
            bytes_since_index_entry: 0,
            index_interval_bytes,
            max_timestamp: -1,
            first_batch_timestamp: None,
        })
    }

    /// Opens an existing segment. With `trust_files` (clean shutdown) the index files are
    /// loaded and only the last batch is read to learn the next offset; otherwise, or if an
    /// index file is missing or implausible, the whole segment is scanned and validated, and
    /// the file truncated at the first invalid batch.
    pub fn open(
        log_path: &Path,
        base_offset: Offset,
        index_interval_bytes: u32,
        trust_files: bool,
        on_batch: &mut dyn FnMut(&BatchHeader),
    ) -> Result<(Segment, ScanOutcome)> {
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(log_path)
            .map_err(|e| io_err("open", log_path, e))?;
        let len = file
            .metadata()
            .map_err(|e| io_err("stat", log_path, e))?
            .len();
        if len > SEGMENT_BYTES_MAX as u64 {
            return Err(Error::MalformedFile {
                path: log_path.to_path_buf(),
                reason: format!("segment of {len} bytes exceeds {SEGMENT_BYTES_MAX}"),
            });
        }
        let mut seg = Segment {
            base_offset,
            log_path: log_path.to_path_buf(),
            file: Arc::new(file),
            size: len as u32,
            next_offset: base_offset,
            index: OffsetIndex::default(),
            time_index: TimeIndex::default(),
            bytes_since_index_entry: 0,
            index_interval_bytes,
            max_timestamp: -1,
            first_batch_timestamp: None,
        };
        if trust_files {
            if seg.load_indexes(on_batch)? {
                // Trusted indexes say where batches are, not that their bytes are intact: a bit
                // that rotted in a closed segment would otherwise be found only when a reader
                // reaches it. Found now, the scan below cuts the log there and a follower
                // fetches the rest again from its leader.
                match seg.first_invalid_batch()? {
                    None => return Ok((seg, ScanOutcome::default())),
                    Some((position, reason)) => tracing::error!(segment = %seg.log_path.display(),
                        position, reason, "corrupt batch in a segment trusted at open; rescanning it"),
                }
            } else {
                tracing::info!(segment = %seg.log_path.display(), "index missing or implausible; rebuilding");
            }
        }
        let mut outcome = seg.scan_and_rebuild(on_batch)?;
        outcome.indexes_rebuilt = trust_files;
        Ok((seg, outcome))
    }

    /// Loads both index files and finds the segment's end by reading the headers after the
    /// last index entry. Returns false, changing nothing, if the files do not match the log
    /// (missing, implausible, an entry not at a batch start, a torn tail, or a batch after the
    /// last entry so far past it that `note_appended` would have indexed it, which means the
    /// index file is older than the log): the caller then rebuilds by scanning.
    fn load_indexes(&mut self, on_batch: &mut dyn FnMut(&BatchHeader)) -> Result<bool> {
        let Some(index) = OffsetIndex::read_from(&self.index_path(), self.size.max(1)) else {
            return Ok(false);
        };
        let Some(time_index) = TimeIndex::read_from(&self.time_index_path()) else {
            return Ok(false);
        };
        let last_entry = index.floor(u32::MAX);
        // Time entries are written for batches that also get an offset entry.
        let time_entry_after_last = match (time_index.last(), last_entry) {
            (Some(t), Some(e)) => t.relative_offset > e.relative_offset,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if time_entry_after_last {
            return Ok(false);
        }
        let start = last_entry.map_or(0, |e| e.position);
        let mut expected = self
            .base_offset
            .plus(last_entry.map_or(0, |e| e.relative_offset as i64));
        let mut tail = Vec::new();
        let mut pos = start;
        while pos < self.size {
            if pos > start && pos - start >= self.index_interval_bytes {
                return Ok(false);
            }
            let Ok(Some(h)) = self.header_at(pos) else {
                return Ok(false);
            };
            let first_of_tail = pos == start && last_entry.is_some();
            if (first_of_tail && h.base_offset != expected)
                || h.base_offset < expected
                || !self.fits(&h)
            {
                return Ok(false);
            }
            expected = h.next_offset();
            tail.push(h);
            pos += h.total_bytes() as u32;
        }
        let first = match self.header_at(0) {
            Ok(first) => first,
            Err(_) => return Ok(false),
        };
        self.index = index;
        self.time_index = time_index;
        self.max_timestamp = self.time_index.max_timestamp().unwrap_or(-1);
        self.first_batch_timestamp = first.map(|h| h.max_timestamp);
        for h in &tail {
            on_batch(h);
            self.next_offset = h.next_offset();
            self.max_timestamp = self.max_timestamp.max(h.max_timestamp);
        }
        self.bytes_since_index_entry = self.size - start;
        Ok(true)
    }

    /// True if the batch's offsets lie in this segment's range of u32 relative offsets.
    fn fits(&self, h: &BatchHeader) -> bool {
        h.base_offset >= self.base_offset
            && h.last_offset().0 - self.base_offset.0 <= u32::MAX as i64
    }

    /// Scans every batch from the start, validating framing, magic, CRC and offset order;
    /// rebuilds both indexes; truncates the file at the first invalid batch.
    /// Reads every batch of the file and checks its header and CRC; the position and reason of
    /// the first invalid one. Changes nothing.
    fn first_invalid_batch(&self) -> Result<Option<(u32, String)>> {
        let mut reader = std::io::BufReader::with_capacity(1 << 20, &*self.file);
        reader
            .seek(SeekFrom::Start(0))
            .map_err(|e| io_err("seek", &self.log_path, e))?;
        let mut pos: u32 = 0;
        let mut buf = Vec::new();
        while pos < self.size {
            match read_batch(&mut reader, &mut buf, self.size - pos) {
                Ok(h) => pos += h.total_bytes() as u32,
                Err(e) => return Ok(Some((pos, e.to_string()))),
            }
        }
        Ok(None)
    }

    fn scan_and_rebuild(&mut self, on_batch: &mut dyn FnMut(&BatchHeader)) -> Result<ScanOutcome> {
        self.index = OffsetIndex::default();
        self.time_index = TimeIndex::default();
        self.bytes_since_index_entry = 0;
        self.next_offset = self.base_offset;
        self.max_timestamp = -1;
        self.first_batch_timestamp = None;
        let file = self.file.clone();
        let mut reader = std::io::BufReader::with_capacity(1 << 20, &*file);
        reader
            .seek(SeekFrom::Start(0))
            .map_err(|e| io_err("seek", &self.log_path, e))?;
        let mut pos: u32 = 0;
        let mut stopped_by = None;
        let mut buf = Vec::new();
        while pos < self.size {
            match read_batch(&mut reader, &mut buf, self.size - pos) {
                Ok(h) if h.base_offset < self.next_offset => {
                    stopped_by = Some(format!(
                        "batch base offset {} below expected {}",
                        h.base_offset, self.next_offset
                    ));
                    break;
                }
                Ok(h) if !self.fits(&h) => {
                    stopped_by = Some(format!(
                        "batch offsets {}..={} outside the segment based at {}",
                        h.base_offset,
                        h.last_offset(),
                        self.base_offset
                    ));
                    break;
                }
                Ok(h) => {
                    on_batch(&h);
                    self.note_appended(pos, &h);
                    pos += h.total_bytes() as u32;
                }
                Err(e) => {
                    stopped_by = Some(e.to_string());
                    break;
                }
            }
        }
        let truncated_bytes = (self.size - pos) as u64;
        if truncated_bytes > 0 {
            self.file
                .set_len(pos as u64)
                .map_err(|e| io_err("truncate", &self.log_path, e))?;
            self.file
                .sync_all()
                .map_err(|e| io_err("fsync", &self.log_path, e))?;
            self.size = pos;
        }
        Ok(ScanOutcome {
            truncated_bytes,
            stopped_by,
            indexes_rebuilt: false,
        })
    }

    /// Updates indexes and bookkeeping for a batch now at `position`.
    fn note_appended(&mut self, position: u32, h: &BatchHeader) {
        let rel = self.relative(h.base_offset);
        // As Kafka: an entry for the batch that starts after `index.interval.bytes` unindexed
        // bytes, so the first batch (position 0) never needs one.
        if self.bytes_since_index_entry >= self.index_interval_bytes && position > 0 {
            self.index.push(IndexEntry {
                relative_offset: rel,
                position,
            });
            self.time_index.maybe_push(TimeIndexEntry {
                timestamp: self.max_timestamp.max(h.max_timestamp),
                relative_offset: rel,
            });
            self.bytes_since_index_entry = 0;
        }
        self.bytes_since_index_entry += h.total_bytes() as u32;
        if self.first_batch_timestamp.is_none() {
            self.first_batch_timestamp = Some(h.max_timestamp);
        }
        self.max_timestamp = self.max_timestamp.max(h.max_timestamp);
        assert!(
            h.next_offset() > self.next_offset,
            "segment offsets must grow: next={} batch={:?}",
            self.next_offset,
            h
        );
        self.next_offset = h.next_offset();
    }

    fn relative(&self, offset: Offset) -> u32 {
        let rel = offset.0 - self.base_offset.0;
        assert!(
            (0..=u32::MAX as i64).contains(&rel),
            "offset {offset} outside segment based at {}",
            self.base_offset
        );
        rel as u32
    }

    /// Appends a batch, writing its rewritten prefix and its unchanged tail in one `writev`.
    /// On return the bytes are in the page cache, not durable: `sync` makes them so.
    pub fn append(
        &mut self,
        batch: &ValidatedBatch,
        base_offset: Offset,
        epoch: LeaderEpoch,
    ) -> Result<()> {
        let prefix = batch.rewritten_prefix(base_offset, epoch);
        let mut header = *batch.header();
        header.base_offset = base_offset;
        header.leader_epoch = epoch;
        self.write_parts(&[&prefix, batch.tail()], &header)
    }

    /// Appends a batch exactly as stored by another replica (offsets and epoch kept).
    pub fn append_stored(&mut self, batch: &ValidatedBatch) -> Result<()> {
        let header = *batch.header();
        self.write_parts(&[batch.bytes()], &header)
    }

    fn write_parts(&mut self, parts: &[&[u8]], header: &BatchHeader) -> Result<()> {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        assert_eq!(
            total,
            header.total_bytes(),
            "batch parts must add up to its length"
        );
        if self.size as u64 + total as u64 > SEGMENT_BYTES_MAX as u64 {
            return Err(Error::BatchTooLarge {
                bytes: total,
                segment_bytes: SEGMENT_BYTES_MAX,
            });
        }
        let position = self.size;
        write_all_vectored(&self.file, parts).map_err(|e| {
            // Leave no partial batch behind: the file is cut back to the last whole batch.
            let _ = self.file.set_len(position as u64);
            io_err("write", &self.log_path, e)
        })?;
        self.size += total as u32;
        self.note_appended(position, header);
        Ok(())
    }

    /// fsyncs the log file (data only: its length is metadata that `fdatasync` also covers).
    pub fn sync(&self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| io_err("fsync", &self.log_path, e))
    }

    /// A handle to the file, for an fsync done without holding the log's lock.
    pub fn file(&self) -> Arc<File> {
        self.file.clone()
    }

    /// Writes both index files (on roll and clean shutdown).
    pub fn write_indexes(&self) -> Result<()> {
        self.index.write_to(&self.index_path())?;
        self.time_index.write_to(&self.time_index_path())
    }

    /// Reads the header of the batch at `position`, or `None` at or past the end.
    pub fn header_at(&self, position: u32) -> Result<Option<BatchHeader>> {
        if position >= self.size {
            return Ok(None);
        }
        let mut buf = [0u8; HEADER_BYTES];
        let n = (self.size - position).min(HEADER_BYTES as u32) as usize;
        self.file
            .read_exact_at(&mut buf[..n], position as u64)
            .map_err(|e| io_err("read", &self.log_path, e))?;
        let h = BatchHeader::parse(&buf[..n])
            .and_then(|h| h.check_offsets().map(|()| h))
            .map_err(|source| Error::CorruptBatch {
                path: self.log_path.clone(),
                position: position as u64,
                source,
            })?;
        if position as u64 + h.total_bytes() as u64 > self.size as u64 {
            return Err(Error::CorruptBatch {
                path: self.log_path.clone(),
                position: position as u64,
                source: BatchError::Truncated {
                    needed: h.total_bytes(),
                    available: (self.size - position) as usize,
                },
            });
        }
        Ok(Some(h))
    }

    /// The batch holding `offset`, or the first batch after it (for offsets in a gap left by
    /// compaction); `None` if the segment ends before `offset`.
    pub fn locate(&self, offset: Offset) -> Result<Option<BatchLocation>> {
        if offset >= self.next_offset {
            return Ok(None);
        }
        let rel = if offset < self.base_offset {
            0
        } else {
            self.relative(offset)
        };
        let mut position = self.index.floor(rel).map_or(0, |e| e.position);
        while let Some(header) = self.header_at(position)? {
            if header.last_offset() >= offset {
                return Ok(Some(BatchLocation { position, header }));
            }
            position += header.total_bytes() as u32;
        }
        Ok(None)
    }

    /// Calls `f` with the header of every batch starting at or after `from`, in log order
    /// (producer-state replay). Reads headers only.
    pub fn for_each_header_from(
        &self,
        from: Offset,
        f: &mut dyn FnMut(&BatchHeader),
    ) -> Result<()> {
        let Some(first) = self.locate(from)? else {
            return Ok(());
        };
        let mut position = first.position;
        while let Some(h) = self.header_at(position)? {
            if h.base_offset >= from {
                f(&h);
            }
            position += h.total_bytes() as u32;
        }
        Ok(())
    }

    /// The first batch whose max timestamp is at or after `ts`.
    pub fn locate_timestamp(&self, ts: i64) -> Result<Option<BatchLocation>> {
        self.locate_timestamp_from(ts, self.base_offset)
    }

    /// The first batch holding an offset at or after `from` whose max timestamp is at or after
    /// `ts` (batches wholly below the log start are no answer).
    pub fn locate_timestamp_from(&self, ts: i64, from: Offset) -> Result<Option<BatchLocation>> {
        if self.max_timestamp < ts {
            return Ok(None);
        }
        let rel = self.time_index.scan_start_for(ts);
        let start = self.base_offset.plus(rel as i64).max(from);
        let Some(mut loc) = self.locate(start)? else {
            return Ok(None);
        };
        loop {
            if loc.header.max_timestamp >= ts {
                return Ok(Some(loc));
            }
            let next = loc.position + loc.header.total_bytes() as u32;
            match self.header_at(next)? {
                Some(header) => {
                    loc = BatchLocation {
                        position: next,
                        header,
                    }
                }
                None => return Ok(None),
            }
        }
    }

    /// Reads one whole batch at `position` and checks its CRC (the read-back half of the
    /// paired checks: what is served was verified on the way in and on the way out).
    pub fn read_batch_at(&self, loc: &BatchLocation) -> Result<ValidatedBatch> {
        let slice = FileSlice {
            file: self.file.clone(),
            position: loc.position as u64,
            len: loc.header.total_bytes(),
        };
        let bytes = slice
            .read_unchecked()
            .map_err(|e| io_err("read", &self.log_path, e))?;
        ValidatedBatch::from_stored(bytes).map_err(|source| Error::CorruptBatch {
            path: self.log_path.clone(),
            position: loc.position as u64,
            source,
        })
    }

    /// A slice from `position` to `end` (exclusive) of this segment's file.
    pub fn slice(&self, position: u32, end: u32) -> FileSlice {
        assert!(
            position <= end && end <= self.size,
            "slice {position}..{end} of {}",
            self.size
        );
        FileSlice {
            file: self.file.clone(),
            position: position as u64,
            len: (end - position) as usize,
        }
    }

    /// Cuts the segment at `position`, which must be a batch boundary, dropping later index
    /// entries. The next offset becomes `next_offset`. The new length is fsynced before this
    /// returns: cut batches must not come back after a crash, where a recovery scan would find
    /// them valid and serve a history the leader does not have.
    pub fn truncate_to(&mut self, position: u32, next_offset: Offset) -> Result<()> {
        assert!(
            position <= self.size,
            "truncate to {position} beyond size {}",
            self.size
        );
        assert!(
            next_offset >= self.base_offset,
            "truncate below base: {next_offset}"
        );
        self.file
            .set_len(position as u64)
            .map_err(|e| io_err("truncate", &self.log_path, e))?;
        self.file
            .sync_all()
            .map_err(|e| io_err("fsync", &self.log_path, e))?;
        self.size = position;
        self.next_offset = next_offset;
        self.index.truncate_to_position(position);
        self.time_index
            .truncate_to_offset(self.relative(next_offset));
        let last_entry_position = self.index.floor(u32::MAX).map_or(0, |e| e.position);
        self.bytes_since_index_entry = position - last_entry_position;
        // The time index covers the segment up to its last entry; the batches after it still
        // count towards the newest timestamp.
        self.max_timestamp = self.time_index.max_timestamp().unwrap_or(-1);
        let mut pos = last_entry_position;
        while let Some(h) = self.header_at(pos)? {
            self.max_timestamp = self.max_timestamp.max(h.max_timestamp);
            pos += h.total_bytes() as u32;
        }
        if position == 0 {
            self.first_batch_timestamp = None;
        }
        Ok(())
    }

    /// Deletes the segment's files, indexes first so that an interrupted delete leaves a log
    /// file to rebuild them from rather than indexes without a log. Open handles (fetches in
    /// flight) keep reading. The directory entry is synced by the log's next `FlushJob`.
    pub fn delete_files(&self) -> Result<()> {
        for p in [
            self.index_path(),
            self.time_index_path(),
            self.log_path.clone(),
        ] {
            remove_if_present(&p)?;
        }
        Ok(())
    }

    /// Deletes only the index files (compaction, before its cleaned log replaces this one).
    pub(crate) fn delete_index_files(&self) -> Result<()> {
        remove_if_present(&self.index_path())?;
        remove_if_present(&self.time_index_path())
    }

    /// Records that the `.log` file was renamed to `path` (the handle stays valid).
    pub(crate) fn set_log_path(&mut self, path: PathBuf) {
        self.log_path = path;
    }

    fn index_path(&self) -> PathBuf {
        self.log_path.with_extension("index")
    }

    fn time_index_path(&self) -> PathBuf {
        self.log_path.with_extension("timeindex")
    }

    /// Offset of the first batch (file name).
    pub fn base_offset(&self) -> Offset {
        self.base_offset
    }

    /// The offset after the last batch; `base_offset` when empty.
    pub fn next_offset(&self) -> Offset {
        self.next_offset
    }

    /// Bytes in the file.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// Largest timestamp in the segment, -1 when empty.
    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp
    }

    /// Timestamp deciding the segment's age for time-based rolls.
    pub fn first_batch_timestamp(&self) -> Option<i64> {
        self.first_batch_timestamp
    }

    /// True when the segment holds no batch.
    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// Path of the `.log` file.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }
}

/// Removes a file; one that is not there is already removed.
pub(crate) fn remove_if_present(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("delete", path, e)),
    }
}

/// Reads one batch from a sequential reader, fully validated; `remaining` bounds it to the file.
fn read_batch(
    reader: &mut impl Read,
    buf: &mut Vec<u8>,
    remaining: u32,
) -> Result<BatchHeader, BatchError> {
    buf.resize(HEADER_BYTES.min(remaining as usize), 0);
    reader.read_exact(buf).map_err(|_| BatchError::Truncated {
        needed: HEADER_BYTES,
        available: remaining as usize,
    })?;
    let h = BatchHeader::parse(buf)?;
    h.check_offsets()?;
    if h.total_bytes() > remaining as usize {
        return Err(BatchError::Truncated {
            needed: h.total_bytes(),
            available: remaining as usize,
        });
    }
    buf.resize(h.total_bytes(), 0);
    reader
        .read_exact(&mut buf[HEADER_BYTES..])
        .map_err(|_| BatchError::Truncated {
            needed: h.total_bytes(),
            available: remaining as usize,
        })?;
    check_integrity(&h, buf)?;
    Ok(h)
}

/// `write_vectored` until every part is written.
fn write_all_vectored(file: &File, parts: &[&[u8]]) -> std::io::Result<()> {
    let mut w = file;
    let mut skip = 0usize; // bytes of `parts` already written
    let total: usize = parts.iter().map(|p| p.len()).sum();
    while skip < total {
        let mut slices = Vec::with_capacity(parts.len());
        let mut s = skip;
        for p in parts {
            if s >= p.len() {
                s -= p.len();
                continue;
            }
            slices.push(IoSlice::new(&p[s..]));
            s = 0;
        }
        let n = w.write_vectored(&slices)?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        skip += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::testing::batch;
    use crate::batch::validate_produce_records;

    fn noop() -> impl FnMut(&BatchHeader) {
        |_| {}
    }

    #[test]
    fn appends_then_locates_every_offset() {
        let dir = tempfile::tempdir().unwrap();
        let mut seg = Segment::create(dir.path(), Offset(100), 64).unwrap();
        let mut next = Offset(100);
        for i in 0..50 {
            let b = validate_produce_records(batch(&[b"aaaa", b"bbbb", b"cc"], i)).unwrap();
            seg.append(&b, next, LeaderEpoch(1)).unwrap();
            next = next.plus(3);
        }
        assert_eq!(seg.next_offset(), Offset(250));
        for o in 100..250 {
            let loc = seg.locate(Offset(o)).unwrap().unwrap();
            assert!(loc.header.base_offset <= Offset(o) && loc.header.last_offset() >= Offset(o));
            seg.read_batch_at(&loc).unwrap();
        }
        assert!(seg.locate(Offset(250)).unwrap().is_none());
    }

    #[test]
    fn truncates_torn_batch_at_tail() {
        let dir = tempfile::tempdir().unwrap();
        let mut seg = Segment::create(dir.path(), Offset(0), 4096).unwrap();
        for i in 0..3 {
            let b = validate_produce_records(batch(&[b"v"], i)).unwrap();
            seg.append(&b, Offset(i), LeaderEpoch(0)).unwrap();
        }
        let good = seg.size();
        let path = seg.log_path().to_path_buf();
        drop(seg);
        let torn = batch(&[b"torn"], 9);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&torn[..torn.len() - 3]).unwrap();
        let (seg, outcome) = Segment::open(&path, Offset(0), 4096, false, &mut noop()).unwrap();
        assert_eq!(seg.size(), good);
        assert_eq!(seg.next_offset(), Offset(3));
        assert_eq!(outcome.truncated_bytes, torn.len() as u64 - 3);
        assert_eq!(fs::metadata(&path).unwrap().len(), good as u64);
    }

    #[test]
    fn locates_by_timestamp() {
        let dir = tempfile::tempdir().unwrap();
        let mut seg = Segment::create(dir.path(), Offset(0), 1).unwrap();
        for i in 0..10 {
            let b = validate_produce_records(batch(&[b"v"], i * 100)).unwrap();
            seg.append(&b, Offset(i), LeaderEpoch(0)).unwrap();
        }
        let loc = seg.locate_timestamp(450).unwrap().unwrap();
        assert_eq!(loc.header.base_offset, Offset(5));
        assert_eq!(
            seg.locate_timestamp(0).unwrap().unwrap().header.base_offset,
            Offset(0)
        );
        assert!(seg.locate_timestamp(901).unwrap().is_none());
    }
}
