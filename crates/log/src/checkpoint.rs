//! Small text files that record offsets, in Kafka's checkpoint format: a version line, a count
//! line, then one entry per line. Written whole through a temporary file, fsynced, renamed,
//! and the directory fsynced: durable when the write returns.
//!
//! - `leader-epoch-checkpoint` (per partition): `epoch start_offset` lines.
//! - `recovery-point-offset-checkpoint`, `replication-offset-checkpoint` (HW),
//!   `log-start-offset-checkpoint` (per data dir): `topic partition offset` lines.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use ferrymq_types::{LeaderEpoch, Offset, TopicPartition};

use crate::error::{io_err, Error, Result};
use crate::index::write_file_synced;

const VERSION: &str = "0";

fn malformed(path: &Path, reason: impl Into<String>) -> Error {
    Error::MalformedFile {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn render(lines: impl ExactSizeIterator<Item = String>) -> String {
    let mut out = format!("{VERSION}\n{}\n", lines.len());
    for l in lines {
        out.push_str(&l);
        out.push('\n');
    }
    out
}

/// Writes a checkpoint and makes its rename durable: a checkpoint that reverts after a crash
/// would bring back epochs or offsets that the log has since moved past.
fn write_durably(path: &Path, text: &str) -> Result<()> {
    write_file_synced(path, text.as_bytes())?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let d = fs::File::open(dir).map_err(|e| io_err("open", dir, e))?;
    d.sync_all().map_err(|e| io_err("fsync", dir, e))
}

/// Reads the entry lines of a checkpoint file; a missing file reads as empty.
fn read_lines(path: &Path) -> Result<Vec<String>> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("read", path, e)),
    };
    let mut lines = text.lines();
    if lines.next() != Some(VERSION) {
        return Err(malformed(path, "unknown version"));
    }
    let count: usize = lines
        .next()
        .and_then(|c| c.trim().parse().ok())
        .ok_or_else(|| malformed(path, "bad count line"))?;
    let entries: Vec<String> = lines.map(str::to_owned).collect();
    if entries.len() != count {
        return Err(malformed(
            path,
            format!("count {count} but {} entries", entries.len()),
        ));
    }
    Ok(entries)
}

/// Writes a per-data-dir offset checkpoint, durable on return.
pub fn write_offsets(path: &Path, offsets: &BTreeMap<TopicPartition, Offset>) -> Result<()> {
    let lines = offsets
        .iter()
        .map(|(tp, o)| format!("{} {} {}", tp.topic, tp.partition.0, o.0));
    write_durably(path, &render(lines))
}

/// Reads a per-data-dir offset checkpoint; a missing file is empty.
pub fn read_offsets(path: &Path) -> Result<BTreeMap<TopicPartition, Offset>> {
    let mut out = BTreeMap::new();
    for line in read_lines(path)? {
        // Topic names cannot contain spaces, so the last two fields are unambiguous.
        let mut parts = line.rsplitn(3, ' ');
        let (Some(o), Some(p), Some(t)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(malformed(path, format!("bad line {line:?}")));
        };
        let (Ok(p), Ok(o)) = (p.parse::<i32>(), o.parse::<i64>()) else {
            return Err(malformed(path, format!("bad numbers in {line:?}")));
        };
        out.insert(TopicPartition::new(t, p), Offset(o));
    }
    Ok(out)
}

/// Writes a leader-epoch checkpoint, durable on return.
pub fn write_epochs(path: &Path, epochs: &[(LeaderEpoch, Offset)]) -> Result<()> {
    let lines = epochs.iter().map(|(e, o)| format!("{} {}", e.0, o.0));
    write_durably(path, &render(lines))
}

/// Reads a leader-epoch checkpoint; a missing file is empty.
pub fn read_epochs(path: &Path) -> Result<Vec<(LeaderEpoch, Offset)>> {
    let mut out = Vec::new();
    for line in read_lines(path)? {
        let mut parts = line.split(' ');
        let (Some(Ok(e)), Some(Ok(o))) = (
            parts.next().map(str::parse::<i32>),
            parts.next().map(str::parse::<i64>),
        ) else {
            return Err(malformed(path, format!("bad line {line:?}")));
        };
        out.push((LeaderEpoch(e), Offset(o)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("replication-offset-checkpoint");
        assert!(read_offsets(&p).unwrap().is_empty());
        let mut m = BTreeMap::new();
        m.insert(TopicPartition::new("a-b", 0), Offset(5));
        m.insert(TopicPartition::new("x", 12), Offset(99));
        write_offsets(&p, &m).unwrap();
        assert_eq!(read_offsets(&p).unwrap(), m);
        assert_eq!(fs::read_to_string(&p).unwrap(), "0\n2\na-b 0 5\nx 12 99\n");
    }

    #[test]
    fn epochs_round_trip_and_garbage_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("leader-epoch-checkpoint");
        let e = vec![(LeaderEpoch(0), Offset(0)), (LeaderEpoch(3), Offset(120))];
        write_epochs(&p, &e).unwrap();
        assert_eq!(read_epochs(&p).unwrap(), e);
        fs::write(&p, "0\n5\n1 2\n").unwrap();
        assert!(read_epochs(&p).is_err());
    }
}
