//! The Raft log of the metadata quorum, on disk in `__cluster_metadata/`:
//!
//! - `raft-log`: one line per entry, `<crc32c hex> <entry json>`, appended and fsynced before
//!   openraft is told the entries are flushed;
//! - `raft-vote.json`, `raft-committed.json`, `raft-purged.json`: small files replaced
//!   atomically (write, fsync, rename, fsync the directory).
//!
//! On open, the first line that fails its CRC or breaks index order ends the log: it and
//! everything after it are cut (a torn write from a crash). Entries are kept in memory too:
//! metadata logs are small and purged after each snapshot.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftLogReader, Vote};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{storage_err, StorageError, TypeConfig};

const LOG_FILE: &str = "raft-log";
const VOTE_FILE: &str = "raft-vote.json";
const COMMITTED_FILE: &str = "raft-committed.json";
const PURGED_FILE: &str = "raft-purged.json";

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    file: File,
    /// Entries not purged, by index, with the byte position of their line.
    entries: BTreeMap<u64, (Entry<TypeConfig>, u64)>,
    file_len: u64,
    vote: Option<Vote<u64>>,
    committed: Option<LogId<u64>>,
    last_purged: Option<LogId<u64>>,
}

/// The persistent Raft log; cheap to clone (openraft's log reader is a clone).
#[derive(Debug, Clone)]
pub struct LogStore {
    inner: Arc<Mutex<Inner>>,
}

fn io(verb: ErrorVerb, e: impl std::error::Error + 'static) -> StorageError {
    storage_err(ErrorSubject::Logs, verb, e)
}

/// Writes a small JSON file atomically and durably.
pub(crate) fn write_json_synced<T: Serialize>(
    dir: &Path,
    name: &str,
    value: &T,
) -> std::io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let bytes = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    let mut f = File::create(&tmp)?;
    f.write_all(&bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, dir.join(name))?;
    File::open(dir)?.sync_all()
}

/// Reads a small JSON file; a missing file is `None`.
pub(crate) fn read_json<T: DeserializeOwned>(dir: &Path, name: &str) -> std::io::Result<Option<T>> {
    match fs::read(dir.join(name)) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(std::io::Error::other),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn encode_line(entry: &Entry<TypeConfig>) -> std::io::Result<Vec<u8>> {
    let json = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
    let mut line = format!("{:08x} ", crc32c::crc32c(&json)).into_bytes();
    line.extend_from_slice(&json);
    line.push(b'\n');
    Ok(line)
}

fn decode_line(line: &[u8]) -> Option<Entry<TypeConfig>> {
    let (crc, json) = line.split_at_checked(9)?;
    let crc = u32::from_str_radix(std::str::from_utf8(&crc[..8]).ok()?, 16).ok()?;
    (crc32c::crc32c(json) == crc).then_some(())?;
    serde_json::from_slice(json).ok()
}

impl LogStore {
    /// Opens (or creates) the log in `dir`, cutting a torn tail.
    pub fn open(dir: &Path) -> std::io::Result<LogStore> {
        fs::create_dir_all(dir)?;
        let path = dir.join(LOG_FILE);
        let raw = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let last_purged: Option<LogId<u64>> = read_json(dir, PURGED_FILE)?;
        let mut entries = BTreeMap::new();
        let mut pos = 0usize;
        let mut good = 0usize;
        while let Some(nl) = raw[pos..].iter().position(|&b| b == b'\n') {
            let Some(entry) = decode_line(&raw[pos..pos + nl]) else {
                break;
            };
            let expected = entries.keys().next_back().map(|i| i + 1);
            if expected.is_some_and(|e| e != entry.log_id.index) {
                break;
            }
            if last_purged.is_none_or(|p| entry.log_id.index > p.index) {
                entries.insert(entry.log_id.index, (entry, pos as u64));
            }
            pos += nl + 1;
            good = pos;
        }
        if good < raw.len() {
            tracing::warn!(path = %path.display(), bytes = raw.len() - good, "cutting torn metadata log tail");
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        file.set_len(good as u64)?;
        file.sync_all()?;
        Ok(LogStore {
            inner: Arc::new(Mutex::new(Inner {
                dir: dir.to_path_buf(),
                file,
                entries,
                file_len: good as u64,
                vote: read_json(dir, VOTE_FILE)?,
                committed: read_json(dir, COMMITTED_FILE)?,
                last_purged,
            })),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().expect("raft log lock poisoned")
    }

    /// Index of the last entry, if any (for operators and tests).
    pub fn last_index(&self) -> Option<u64> {
        let inner = self.lock();
        inner
            .entries
            .keys()
            .next_back()
            .copied()
            .or(inner.last_purged.map(|l| l.index))
    }
}

impl Inner {
    /// Rewrites the file with only the entries still held (after a purge).
    fn compact_file(&mut self) -> std::io::Result<()> {
        let tmp = self.dir.join(format!("{LOG_FILE}.tmp"));
        let mut out = Vec::new();
        for (entry, pos) in self.entries.values_mut() {
            *pos = out.len() as u64;
            out.extend_from_slice(&encode_line(entry)?);
        }
        let mut f = File::create(&tmp)?;
        f.write_all(&out)?;
        f.sync_all()?;
        fs::rename(&tmp, self.dir.join(LOG_FILE))?;
        File::open(&self.dir)?.sync_all()?;
        self.file = OpenOptions::new()
            .append(true)
            .open(self.dir.join(LOG_FILE))?;
        self.file_len = out.len() as u64;
        Ok(())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError> {
        Ok(self
            .lock()
            .entries
            .range(range)
            .map(|(_, (e, _))| e.clone())
            .collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let inner = self.lock();
        let last = inner
            .entries
            .values()
            .next_back()
            .map(|(e, _)| e.log_id)
            .or(inner.last_purged);
        Ok(LogState {
            last_purged_log_id: inner.last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError> {
        let mut inner = self.lock();
        write_json_synced(&inner.dir, VOTE_FILE, vote)
            .map_err(|e| storage_err(ErrorSubject::Vote, ErrorVerb::Write, e))?;
        inner.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError> {
        Ok(self.lock().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> Result<(), StorageError> {
        let mut inner = self.lock();
        write_json_synced(&inner.dir, COMMITTED_FILE, &committed)
            .map_err(|e| io(ErrorVerb::Write, e))?;
        inner.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, StorageError> {
        Ok(self.lock().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut inner = self.lock();
        let mut buf = Vec::new();
        let mut added = Vec::new();
        for entry in entries {
            let pos = inner.file_len + buf.len() as u64;
            buf.extend_from_slice(&encode_line(&entry).map_err(|e| io(ErrorVerb::Write, e))?);
            added.push((entry, pos));
        }
        let written = inner
            .file
            .write_all(&buf)
            .and_then(|_| inner.file.sync_data());
        if let Err(e) = written {
            let kind = e.kind();
            callback.log_io_completed(Err(std::io::Error::new(kind, e.to_string())));
            return Err(io(ErrorVerb::Write, e));
        }
        inner.file_len += buf.len() as u64;
        for (entry, pos) in added {
            if let Some(last) = inner.entries.keys().next_back() {
                assert_eq!(
                    entry.log_id.index,
                    last + 1,
                    "raft log indexes are contiguous"
                );
            }
            inner.entries.insert(entry.log_id.index, (entry, pos));
        }
        drop(inner);
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError> {
        let mut inner = self.lock();
        let Some((_, pos)) = inner
            .entries
            .get(&log_id.index)
            .map(|(e, p)| (e.log_id, *p))
        else {
            return Ok(());
        };
        inner
            .file
            .set_len(pos)
            .and_then(|_| inner.file.sync_all())
            .map_err(|e| io(ErrorVerb::Write, e))?;
        inner.file_len = pos;
        inner.entries.retain(|&i, _| i < log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError> {
        let mut inner = self.lock();
        assert!(
            inner.last_purged <= Some(log_id),
            "purge went backwards: {:?} -> {log_id}",
            inner.last_purged
        );
        write_json_synced(&inner.dir, PURGED_FILE, &log_id).map_err(|e| io(ErrorVerb::Write, e))?;
        inner.last_purged = Some(log_id);
        inner.entries.retain(|&i, _| i > log_id.index);
        inner.compact_file().map_err(|e| io(ErrorVerb::Write, e))
    }
}
