//! The single-node metadata log: committed metadata records in one file of the data dir,
//! `__cluster_metadata/records.log`, one line per record: `<offset> <crc32c hex> <json>`.
//!
//! A record is committed once its line is fsynced. On open, a torn or corrupt last line (a
//! crash mid-write) is cut; a bad line followed by good ones is corruption and refuses to start.
//! The clustered controller replaces this file with the replicated Raft log.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{ControllerError, Result};
use crate::records::MetadataRecord;

/// File name of the log inside `__cluster_metadata/`.
const FILE_NAME: &str = "records.log";

/// An append-only, fsynced file of metadata records.
#[derive(Debug)]
pub struct MetadataLog {
    path: PathBuf,
    file: File,
    next_offset: i64,
}

fn storage(op: &str, path: &Path, e: impl std::fmt::Display) -> ControllerError {
    ControllerError::Storage(format!("{op} {}: {e}", path.display()))
}

impl MetadataLog {
    /// Opens (or creates) the log in `dir`, returning it and every committed record in order.
    pub fn open(dir: &Path) -> Result<(MetadataLog, Vec<(i64, MetadataRecord)>)> {
        fs::create_dir_all(dir).map_err(|e| storage("mkdir", dir, e))?;
        let path = dir.join(FILE_NAME);
        let text = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(storage("read", &path, e)),
        };
        let mut records = Vec::new();
        let mut good_len = 0usize;
        let mut pos = 0usize;
        while pos < text.len() {
            let Some(nl) = text[pos..].iter().position(|&b| b == b'\n') else {
                break;
            };
            let line = &text[pos..pos + nl];
            match parse_line(line) {
                Some((offset, rec)) if offset == records.len() as i64 => {
                    records.push((offset, rec));
                    pos += nl + 1;
                    good_len = pos;
                }
                _ => break,
            }
        }
        if good_len < text.len() {
            // Anything after the first bad line must be only that one torn line.
            let rest = &text[good_len..];
            let lines_after = rest.iter().filter(|&&b| b == b'\n').count();
            if lines_after > 1 {
                return Err(storage(
                    "validate",
                    &path,
                    format!("corrupt record at byte {good_len}"),
                ));
            }
            tracing::warn!(path = %path.display(), bytes = rest.len(), "cutting torn metadata record");
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| storage("open", &path, e))?;
        file.set_len(good_len as u64)
            .map_err(|e| storage("truncate", &path, e))?;
        let mut log = MetadataLog {
            path,
            file,
            next_offset: records.len() as i64,
        };
        log.seek_end()?;
        Ok((log, records))
    }

    fn seek_end(&mut self) -> Result<()> {
        use std::io::Seek;
        self.file
            .seek(std::io::SeekFrom::End(0))
            .map_err(|e| storage("seek", &self.path, e))?;
        Ok(())
    }

    /// Appends records and fsyncs them: they are committed when this returns. Returns the
    /// offset of each.
    pub fn append(&mut self, records: &[MetadataRecord]) -> Result<Vec<i64>> {
        let mut buf = Vec::new();
        let mut offsets = Vec::with_capacity(records.len());
        for r in records {
            let json = serde_json::to_string(r).map_err(|e| storage("encode", &self.path, e))?;
            let offset = self.next_offset + offsets.len() as i64;
            let crc = crc_of(offset, &json);
            buf.extend_from_slice(format!("{offset} {crc:08x} {json}\n").as_bytes());
            offsets.push(offset);
        }
        self.file
            .write_all(&buf)
            .map_err(|e| storage("write", &self.path, e))?;
        self.file
            .sync_data()
            .map_err(|e| storage("fsync", &self.path, e))?;
        self.next_offset += records.len() as i64;
        Ok(offsets)
    }
}

fn crc_of(offset: i64, json: &str) -> u32 {
    crc32c::crc32c(format!("{offset} {json}").as_bytes())
}

fn parse_line(line: &[u8]) -> Option<(i64, MetadataRecord)> {
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.splitn(3, ' ');
    let offset: i64 = parts.next()?.parse().ok()?;
    let crc = u32::from_str_radix(parts.next()?, 16).ok()?;
    let json = parts.next()?;
    if crc_of(offset, json) != crc {
        return None;
    }
    Some((offset, serde_json::from_str(json).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{MetadataRecord, RemoveTopicRecord};
    use uuid::Uuid;

    fn rec(n: u128) -> MetadataRecord {
        MetadataRecord::RemoveTopic(RemoveTopicRecord {
            version: 1,
            id: Uuid::from_u128(n),
        })
    }

    #[test]
    fn records_survive_reopen_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, recs) = MetadataLog::open(dir.path()).unwrap();
        assert!(recs.is_empty());
        assert_eq!(log.append(&[rec(1), rec(2)]).unwrap(), vec![0, 1]);
        drop(log);
        let path = dir.path().join(FILE_NAME);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"2 deadbeef {\"type\":").unwrap();
        let (mut log, recs) = MetadataLog::open(dir.path()).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(log.append(&[rec(3)]).unwrap(), vec![2]);
        let (_, recs) = MetadataLog::open(dir.path()).unwrap();
        assert_eq!(recs.iter().map(|r| r.0).collect::<Vec<_>>(), vec![0, 1, 2]);
    }

    #[test]
    fn corruption_before_the_tail_refuses_to_open() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = MetadataLog::open(dir.path()).unwrap();
        log.append(&[rec(1), rec(2), rec(3)]).unwrap();
        let path = dir.path().join(FILE_NAME);
        let mut text = fs::read(&path).unwrap();
        text[3] ^= 1;
        fs::write(&path, text).unwrap();
        assert!(MetadataLog::open(dir.path()).is_err());
    }
}
