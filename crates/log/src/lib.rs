//! FerryMQ's storage engine: the append-only, segmented log of one partition replica.
//!
//! It owns bytes, offsets, segments, indexes, checkpoints, recovery, retention and compaction,
//! and knows nothing of Kafka requests, Raft or sockets: record batches are opaque apart from
//! their 61-byte header (`batch`), so a second wire protocol can sit on the same storage. Only
//! compaction and the group coordinator's replay look inside batches (`records`, `builder`).
//!
//! Data flow: a front end validates a batch (`batch::validate_produce_records`), the broker's
//! partition appends it (`PartitionLog::append_as_leader`), fsyncs through a `FlushJob`, and
//! serves reads as `FileSlice`s read outside its lock.

pub mod batch;
pub mod builder;
pub mod checkpoint;
pub mod compaction;
pub mod compression;
pub mod config;
pub mod epoch;
pub mod error;
pub mod index;
pub mod partition_log;
pub mod records;
pub mod segment;

pub use batch::{BatchError, BatchHeader, ValidatedBatch};
pub use config::LogConfig;
pub use error::{Error, Result};
pub use partition_log::{
    AppendInfo, FlushJob, OpenOptions, PartitionLog, ReadSlice, RecoveryReport,
};
pub use segment::FileSlice;
