//! FerryMQ's Kafka wire front end: framing (`frame`), connections answering in order
//! (`connection`), the dispatch table keyed by API and version (`dispatch`), one handler module
//! per API family (`api`), and the single mapping from internal errors to Kafka error codes
//! (`errors`). Request metrics (`metrics`) are recorded in the dispatch table.
//!
//! This crate never opens a file and holds no replication logic: it translates Kafka requests
//! into calls on the broker core and the controller, and their results back into responses.

pub mod api;
pub mod client;
pub mod connection;
pub mod context;
pub mod dispatch;
pub mod errors;
pub mod frame;
pub mod listener;
pub mod metrics;
pub mod order;
pub mod replica_transport;

pub use context::{FrontEndConfig, Limits, ServerContext};
