//! FerryMQ's broker core: the partition replicas this node hosts and everything done to them —
//! appends with group commit (`log_writer`), reads with long polling (`fetch`), high
//! watermarks, offsets lookups, retention and checkpoints — kept in step with the cluster
//! metadata (`partitions`), and the consumer-group coordinator (`group`).
//!
//! It sees batches as validated bytes and requests as plain Rust calls: nothing here knows a
//! Kafka request or response type, so another front end (AMQP) can drive the same core.

pub mod broker;
pub mod clock;
pub mod config;
pub mod error;
pub mod fetch;
pub mod group;
pub mod log_writer;
pub mod partition;
pub mod partitions;
pub mod replication;

pub use broker::{Acks, Broker, Produced, CLEAN_SHUTDOWN_MARKER};
pub use clock::{Clock, SystemClock};
pub use config::{BrokerConfig, CleanerConfig};
pub use error::BrokerError;
pub use fetch::{FetchParams, FetchPartition};
pub use partition::{ListedOffset, OffsetSpec, Partition, ReadBound, ReadOutcome};
