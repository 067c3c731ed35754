//! Errors of the storage engine. The Kafka front end maps them to error codes in one place.

use std::path::{Path, PathBuf};

use ferrymq_types::Offset;

use crate::batch::BatchError;

/// What can go wrong in a partition log.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A filesystem call failed: the partition is taken offline by the broker.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A batch read back from disk failed its checks.
    #[error("corrupt batch in {path} at position {position}: {source}")]
    CorruptBatch {
        path: PathBuf,
        position: u64,
        #[source]
        source: BatchError,
    },
    /// A read asked for an offset outside `[log_start, log_end]`.
    #[error("offset {requested} out of range [{log_start}, {log_end}]")]
    OffsetOutOfRange {
        requested: Offset,
        log_start: Offset,
        log_end: Offset,
    },
    /// A batch larger than a segment can hold, or a segment grown past u32 positions.
    #[error("batch of {bytes} bytes does not fit a segment of {segment_bytes} bytes")]
    BatchTooLarge { bytes: usize, segment_bytes: u32 },
    /// A replicated batch does not start at the log end (follower appends keep offsets).
    #[error("batch base offset {base} is not the log end {log_end}")]
    NonContiguousAppend { base: Offset, log_end: Offset },
    /// A long-running job (compaction) was asked to stop; nothing was changed.
    #[error("interrupted")]
    Interrupted,
    /// A checkpoint or metadata file could not be parsed.
    #[error("malformed file {path}: {reason}")]
    MalformedFile { path: PathBuf, reason: String },
}

/// Result alias of the storage engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Wraps an `io::Error` with the operation and path it came from.
pub(crate) fn io_err(op: &'static str, path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}
