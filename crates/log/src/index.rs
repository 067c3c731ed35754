//! Sparse indexes of one segment: offset → file position, and timestamp → offset.
//!
//! Both are kept in memory while the segment is open and written to disk in Kafka's file
//! formats (`.index`: u32 relative offset, u32 position; `.timeindex`: i64 timestamp, u32
//! relative offset; all big-endian) when the segment is rolled, flushed for shutdown, or rebuilt.
//! An index is only a hint to shorten scans: a missing or implausible file is rebuilt from the
//! log on open, so its durability never matters for correctness.

use std::fs;
use std::io::Write;
use std::path::Path;

use crate::error::{io_err, Result};

/// One offset-index entry: a batch starting at `relative_offset` lies at `position`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    /// Batch base offset minus the segment's base offset.
    pub relative_offset: u32,
    /// Byte position of that batch in the segment's log file.
    pub position: u32,
}

/// One time-index entry: records up to `timestamp` lie at or before `relative_offset`'s batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeIndexEntry {
    /// Largest timestamp seen in the segment up to this entry.
    pub timestamp: i64,
    /// Relative offset of the batch that brought that timestamp.
    pub relative_offset: u32,
}

/// The sparse offset index of one segment.
#[derive(Debug, Default, Clone)]
pub struct OffsetIndex {
    entries: Vec<IndexEntry>,
}

impl OffsetIndex {
    /// Adds an entry; entries must increase in both offset and position.
    pub fn push(&mut self, e: IndexEntry) {
        if let Some(last) = self.entries.last() {
            assert!(
                e.relative_offset > last.relative_offset && e.position > last.position,
                "index entries must increase: last={last:?} new={e:?}"
            );
        }
        self.entries.push(e);
    }

    /// The last entry whose offset is ≤ `relative_offset`: where a scan for it may start.
    pub fn floor(&self, relative_offset: u32) -> Option<IndexEntry> {
        let i = self
            .entries
            .partition_point(|e| e.relative_offset <= relative_offset);
        i.checked_sub(1).map(|i| self.entries[i])
    }

    /// Drops entries at or beyond `position` (after truncating the log file there).
    pub fn truncate_to_position(&mut self, position: u32) {
        let keep = self.entries.partition_point(|e| e.position < position);
        self.entries.truncate(keep);
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Writes the index in Kafka's `.index` format and fsyncs it.
    pub fn write_to(&self, path: &Path) -> Result<()> {
        let mut buf = Vec::with_capacity(self.entries.len() * 8);
        for e in &self.entries {
            buf.extend_from_slice(&e.relative_offset.to_be_bytes());
            buf.extend_from_slice(&e.position.to_be_bytes());
        }
        write_file_synced(path, &buf)
    }

    /// Reads an index file; `None` if it is missing or not plausible for a log file of
    /// `log_bytes` (then the caller rebuilds it by scanning).
    pub fn read_from(path: &Path, log_bytes: u32) -> Option<OffsetIndex> {
        let raw = fs::read(path).ok()?;
        if raw.len() % 8 != 0 {
            return None;
        }
        let mut index = OffsetIndex::default();
        for c in raw.chunks_exact(8) {
            let e = IndexEntry {
                relative_offset: u32::from_be_bytes(c[..4].try_into().ok()?),
                position: u32::from_be_bytes(c[4..].try_into().ok()?),
            };
            let increasing = index
                .entries
                .last()
                .is_none_or(|l| e.relative_offset > l.relative_offset && e.position > l.position);
            if !increasing || e.position >= log_bytes {
                return None;
            }
            index.entries.push(e);
        }
        Some(index)
    }
}

/// The sparse time index of one segment.
#[derive(Debug, Default, Clone)]
pub struct TimeIndex {
    entries: Vec<TimeIndexEntry>,
}

impl TimeIndex {
    /// Adds an entry if it raises the largest timestamp seen (timestamps in the index only grow).
    pub fn maybe_push(&mut self, e: TimeIndexEntry) {
        match self.entries.last() {
            Some(last) if e.timestamp <= last.timestamp => {}
            Some(last) => {
                assert!(
                    e.relative_offset >= last.relative_offset,
                    "{last:?} then {e:?}"
                );
                self.entries.push(e)
            }
            None => self.entries.push(e),
        }
    }

    /// The first entry with `timestamp >= ts`: the earliest batch that may hold a record at or
    /// after `ts` lies at or after the previous entry's offset.
    pub fn scan_start_for(&self, ts: i64) -> u32 {
        let i = self.entries.partition_point(|e| e.timestamp < ts);
        match i.checked_sub(1) {
            Some(prev) => self.entries[prev].relative_offset,
            None => 0,
        }
    }

    /// Drops entries at or beyond `relative_offset`.
    pub fn truncate_to_offset(&mut self, relative_offset: u32) {
        let keep = self
            .entries
            .partition_point(|e| e.relative_offset < relative_offset);
        self.entries.truncate(keep);
    }

    /// The last entry, if any.
    pub fn last(&self) -> Option<TimeIndexEntry> {
        self.entries.last().copied()
    }

    /// The largest timestamp indexed, if any.
    pub fn max_timestamp(&self) -> Option<i64> {
        self.entries.last().map(|e| e.timestamp)
    }

    /// Writes the index in Kafka's `.timeindex` format and fsyncs it.
    pub fn write_to(&self, path: &Path) -> Result<()> {
        let mut buf = Vec::with_capacity(self.entries.len() * 12);
        for e in &self.entries {
            buf.extend_from_slice(&e.timestamp.to_be_bytes());
            buf.extend_from_slice(&e.relative_offset.to_be_bytes());
        }
        write_file_synced(path, &buf)
    }

    /// Reads a time index file; `None` if missing or implausible.
    pub fn read_from(path: &Path) -> Option<TimeIndex> {
        let raw = fs::read(path).ok()?;
        if raw.len() % 12 != 0 {
            return None;
        }
        let mut index = TimeIndex::default();
        for c in raw.chunks_exact(12) {
            let e = TimeIndexEntry {
                timestamp: i64::from_be_bytes(c[..8].try_into().ok()?),
                relative_offset: u32::from_be_bytes(c[8..].try_into().ok()?),
            };
            let increasing = index.entries.last().is_none_or(|l| {
                e.timestamp > l.timestamp && e.relative_offset >= l.relative_offset
            });
            if !increasing {
                return None;
            }
            index.entries.push(e);
        }
        Some(index)
    }
}

/// Writes `bytes` to `path` through a temporary file (`<name>.tmp`, removed by the log's open
/// if a crash leaves it), fsyncs it and renames it into place, so a crash leaves either the
/// old file or the new one. The rename itself is durable only once the directory is synced.
pub(crate) fn write_file_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let mut f = fs::File::create(&tmp).map_err(|e| io_err("create", &tmp, e))?;
    f.write_all(bytes).map_err(|e| io_err("write", &tmp, e))?;
    f.sync_all().map_err(|e| io_err("fsync", &tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| io_err("rename", path, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(o: u32, p: u32) -> IndexEntry {
        IndexEntry {
            relative_offset: o,
            position: p,
        }
    }

    #[test]
    fn floor_finds_the_last_entry_at_or_before() {
        let mut i = OffsetIndex::default();
        i.push(e(10, 4096));
        i.push(e(20, 8192));
        assert_eq!(i.floor(5), None);
        assert_eq!(i.floor(10), Some(e(10, 4096)));
        assert_eq!(i.floor(19), Some(e(10, 4096)));
        assert_eq!(i.floor(1000), Some(e(20, 8192)));
    }

    #[test]
    #[should_panic(expected = "index entries must increase")]
    fn refuses_entries_out_of_order() {
        let mut i = OffsetIndex::default();
        i.push(e(10, 4096));
        i.push(e(9, 9000));
    }

    #[test]
    fn round_trips_through_a_file_and_rejects_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("0.index");
        let mut i = OffsetIndex::default();
        i.push(e(3, 100));
        i.push(e(9, 5000));
        i.write_to(&p).unwrap();
        assert_eq!(OffsetIndex::read_from(&p, 6000).unwrap().len(), 2);
        // A position past the end of the log makes the file implausible.
        assert!(OffsetIndex::read_from(&p, 4000).is_none());
        std::fs::write(&p, [1, 2, 3]).unwrap();
        assert!(OffsetIndex::read_from(&p, 6000).is_none());
    }

    #[test]
    fn time_index_keeps_only_rising_timestamps() {
        let mut t = TimeIndex::default();
        t.maybe_push(TimeIndexEntry {
            timestamp: 100,
            relative_offset: 0,
        });
        t.maybe_push(TimeIndexEntry {
            timestamp: 90,
            relative_offset: 5,
        });
        t.maybe_push(TimeIndexEntry {
            timestamp: 200,
            relative_offset: 10,
        });
        assert_eq!(t.max_timestamp(), Some(200));
        assert_eq!(t.scan_start_for(50), 0);
        assert_eq!(t.scan_start_for(150), 0);
        assert_eq!(t.scan_start_for(201), 10);
    }
}
