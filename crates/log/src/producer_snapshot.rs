//! Producer-state snapshots: the `ProducerStateTable` of a partition as of an offset, in a file
//! `<20-digit offset>.snapshot` beside the segments (Kafka's name). A snapshot at offset `o`
//! holds the state built from every batch below `o`; the log writes one when it rolls a segment
//! (at the new segment's base) and when it closes (at the log end), so that opening the log
//! replays only the batches after the latest snapshot instead of the whole log.
//!
//! Format (big-endian), version 1:
//! ```text
//! version u16 | crc32c u32 of everything after it | producer count u32
//! per producer: producer id i64 | epoch i16 | batch count u8
//!   per batch:  first seq i32 | last seq i32 | first offset i64 | last offset i64 | max timestamp i64
//! ```
//! A file is written whole to `<name>.tmp` and renamed, so a reader sees an old file or a
//! complete new one. The CRC catches anything else (a rename that reached the disk before the
//! data did, after a power loss), and a snapshot that fails it is deleted and an older one or a
//! longer replay used instead: a lost snapshot costs recovery time, never correctness. So only
//! the snapshot written at a clean stop is fsynced (the next start should not replay); the ones
//! written at segment rolls are left to the kernel's write-back.

use std::fs;
use std::path::{Path, PathBuf};

use ferrymq_types::{Offset, ProducerEpoch, ProducerId, Sequence};

use crate::error::{io_err, Error, Result};
use crate::index::write_file_synced;
use crate::producer_state::{
    ProducerEntry, ProducerStateTable, RetainedBatch, BATCHES_PER_PRODUCER,
};

/// File name extension of a snapshot.
pub const SNAPSHOT_EXTENSION: &str = "snapshot";

const VERSION: u16 = 1;
const HEADER_BYTES: usize = 2 + 4;
const PRODUCER_BYTES: usize = 8 + 2 + 1;
const BATCH_BYTES: usize = 4 + 4 + 8 + 8 + 8;
const _: () = assert!(BATCHES_PER_PRODUCER <= u8::MAX as usize);

/// The path of the snapshot at `offset` in `dir`.
pub fn path(dir: &Path, offset: Offset) -> PathBuf {
    dir.join(format!(
        "{}.{SNAPSHOT_EXTENSION}",
        crate::segment::file_stem(offset)
    ))
}

/// How durable a snapshot is when `write` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotSync {
    /// The file is fsynced before its rename: durable once the rename is (at the caller's
    /// next directory fsync).
    Fsync,
    /// In the page cache only: the kernel writes it back; a crash may lose or tear it, which
    /// the CRC detects.
    WriteBack,
}

/// Writes the snapshot of `table` at `offset` (see `SnapshotSync` for what is durable).
pub fn write(
    dir: &Path,
    offset: Offset,
    table: &ProducerStateTable,
    sync: SnapshotSync,
) -> Result<()> {
    let target = path(dir, offset);
    let bytes = encode(table);
    match sync {
        SnapshotSync::Fsync => write_file_synced(&target, &bytes),
        SnapshotSync::WriteBack => {
            let tmp = target.with_extension(format!("{SNAPSHOT_EXTENSION}.tmp"));
            fs::write(&tmp, &bytes).map_err(|e| io_err("write", &tmp, e))?;
            fs::rename(&tmp, &target).map_err(|e| io_err("rename", &target, e))
        }
    }
}

/// Reads the snapshot at `offset`; `MalformedFile` if it fails its CRC or format checks.
pub fn read(dir: &Path, offset: Offset) -> Result<ProducerStateTable> {
    let p = path(dir, offset);
    let bytes = fs::read(&p).map_err(|e| io_err("read", &p, e))?;
    decode(&bytes).map_err(|reason| Error::MalformedFile { path: p, reason })
}

/// The offsets of every snapshot in `dir`, ascending.
pub fn list(dir: &Path) -> Result<Vec<Offset>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| io_err("list", dir, e))? {
        let entry = entry.map_err(|e| io_err("list", dir, e))?;
        let name = entry.file_name();
        let Some(stem) = name
            .to_str()
            .and_then(|n| n.strip_suffix(SNAPSHOT_EXTENSION))
            .and_then(|n| n.strip_suffix('.'))
        else {
            continue;
        };
        if let Ok(offset) = stem.parse::<i64>() {
            out.push(Offset(offset));
        }
    }
    out.sort();
    Ok(out)
}

/// Deletes the snapshot at `offset` if it exists. Durable at the caller's next directory fsync.
pub fn delete(dir: &Path, offset: Offset) -> Result<()> {
    crate::segment::remove_if_present(&path(dir, offset))
}

/// Deletes every snapshot whose offset `doomed` selects; returns how many it deleted.
pub fn delete_where(dir: &Path, doomed: impl Fn(Offset) -> bool) -> Result<usize> {
    let mut deleted = 0;
    for offset in list(dir)? {
        if doomed(offset) {
            delete(dir, offset)?;
            deleted += 1;
        }
    }
    Ok(deleted)
}

/// The snapshot bytes of `table`.
pub fn encode(table: &ProducerStateTable) -> Vec<u8> {
    let mut body = Vec::with_capacity(4 + table.len() * (PRODUCER_BYTES + 2 * BATCH_BYTES));
    body.extend_from_slice(&(table.len() as u32).to_be_bytes());
    for (id, entry) in table.entries() {
        body.extend_from_slice(&id.0.to_be_bytes());
        body.extend_from_slice(&entry.epoch().0.to_be_bytes());
        body.push(entry.batches().len() as u8);
        for b in entry.batches() {
            body.extend_from_slice(&b.first_seq.0.to_be_bytes());
            body.extend_from_slice(&b.last_seq.0.to_be_bytes());
            body.extend_from_slice(&b.first_offset.0.to_be_bytes());
            body.extend_from_slice(&b.last_offset.0.to_be_bytes());
            body.extend_from_slice(&b.max_timestamp.to_be_bytes());
        }
    }
    let mut out = Vec::with_capacity(HEADER_BYTES + body.len());
    out.extend_from_slice(&VERSION.to_be_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// A cursor over snapshot bytes that reports running out as an error.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], String> {
        if self.bytes.len() < N {
            return Err(format!(
                "truncated: {} bytes left, {N} needed",
                self.bytes.len()
            ));
        }
        let (head, rest) = self.bytes.split_at(N);
        self.bytes = rest;
        Ok(head.try_into().expect("N bytes"))
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take::<1>()?[0])
    }
    fn i16(&mut self) -> Result<i16, String> {
        Ok(i16::from_be_bytes(self.take()?))
    }
    fn i32(&mut self) -> Result<i32, String> {
        Ok(i32::from_be_bytes(self.take()?))
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_be_bytes(self.take()?))
    }
    fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_be_bytes(self.take()?))
    }
}

/// Parses snapshot bytes, checking version, CRC, lengths and the table's invariants.
pub fn decode(bytes: &[u8]) -> Result<ProducerStateTable, String> {
    let mut r = Reader { bytes };
    let version = u16::from_be_bytes(r.take()?);
    if version != VERSION {
        return Err(format!("unknown snapshot version {version}"));
    }
    let stored = r.u32()?;
    let computed = crc32c::crc32c(r.bytes);
    if stored != computed {
        return Err(format!(
            "crc mismatch: stored {stored:#010x}, computed {computed:#010x}"
        ));
    }
    let count = r.u32()? as usize;
    // Each producer takes at least PRODUCER_BYTES: a count the bytes cannot hold is refused
    // before anything is allocated for it.
    if count > r.bytes.len() / PRODUCER_BYTES {
        return Err(format!("{count} producers do not fit the file"));
    }
    let mut entries = Vec::with_capacity(count);
    for _ in 0..count {
        let id = ProducerId(r.i64()?);
        let epoch = ProducerEpoch(r.i16()?);
        let batch_count = r.u8()? as usize;
        let mut batches = Vec::with_capacity(batch_count.min(BATCHES_PER_PRODUCER));
        for _ in 0..batch_count {
            batches.push(RetainedBatch {
                first_seq: Sequence(r.i32()?),
                last_seq: Sequence(r.i32()?),
                first_offset: Offset(r.i64()?),
                last_offset: Offset(r.i64()?),
                max_timestamp: r.i64()?,
            });
        }
        let entry = ProducerEntry::from_parts(epoch, batches)
            .ok_or_else(|| format!("producer {id}: inconsistent entry"))?;
        if id.0 < 0 || entries.last().is_some_and(|(last, _)| *last >= id) {
            return Err(format!("producer id {id} out of order"));
        }
        entries.push((id, entry));
    }
    if !r.bytes.is_empty() {
        return Err(format!("{} bytes after the last producer", r.bytes.len()));
    }
    Ok(ProducerStateTable::from_entries(entries))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::producer_state::IdempotentBatch;

    fn table() -> ProducerStateTable {
        let mut t = ProducerStateTable::default();
        let mut offset = 0;
        for (producer, epoch, batches) in [(3i64, 0i16, 7i32), (40, 5, 2), (i64::MAX, 1, 1)] {
            for i in 0..batches {
                let b = IdempotentBatch {
                    producer_id: ProducerId(producer),
                    epoch: ProducerEpoch(epoch),
                    first_seq: Sequence(i * 2),
                    last_seq: Sequence(i * 2 + 1),
                    max_timestamp: 1_700_000_000_000 + offset,
                };
                t.record(&b, Offset(offset), Offset(offset + 1));
                offset += 2;
            }
        }
        t
    }

    #[test]
    fn snapshots_round_trip_through_files_named_by_offset() {
        let dir = tempfile::tempdir().unwrap();
        let t = table();
        write(dir.path(), Offset(42), &t, SnapshotSync::Fsync).unwrap();
        let empty = ProducerStateTable::default();
        write(dir.path(), Offset(7), &empty, SnapshotSync::WriteBack).unwrap();
        assert!(!dir
            .path()
            .join("00000000000000000007.snapshot.tmp")
            .exists());
        assert!(dir.path().join("00000000000000000042.snapshot").exists());
        assert_eq!(list(dir.path()).unwrap(), vec![Offset(7), Offset(42)]);
        assert_eq!(read(dir.path(), Offset(42)).unwrap(), t);
        assert!(read(dir.path(), Offset(7)).unwrap().is_empty());
        assert_eq!(delete_where(dir.path(), |o| o > Offset(10)).unwrap(), 1);
        assert_eq!(list(dir.path()).unwrap(), vec![Offset(7)]);
    }

    #[test]
    fn every_flipped_byte_and_every_truncation_is_refused() {
        let bytes = encode(&table());
        assert_eq!(decode(&bytes).unwrap(), table());
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert!(decode(&bad).is_err(), "flipped byte {i} accepted");
            assert!(decode(&bytes[..i]).is_err(), "truncation to {i} accepted");
        }
    }

    #[test]
    fn a_well_checksummed_but_inconsistent_snapshot_is_refused() {
        // Producer count larger than the file can hold, with a valid CRC.
        let mut body = 1_000_000u32.to_be_bytes().to_vec();
        body.extend_from_slice(&[0; 11]);
        let mut bytes = VERSION.to_be_bytes().to_vec();
        bytes.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
        bytes.extend_from_slice(&body);
        assert!(decode(&bytes).unwrap_err().contains("do not fit"));
        // A producer with no batch.
        let mut body = 1u32.to_be_bytes().to_vec();
        body.extend_from_slice(&5i64.to_be_bytes());
        body.extend_from_slice(&0i16.to_be_bytes());
        body.push(0);
        let mut bytes = VERSION.to_be_bytes().to_vec();
        bytes.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
        bytes.extend_from_slice(&body);
        assert!(decode(&bytes).unwrap_err().contains("inconsistent"));
    }
}
