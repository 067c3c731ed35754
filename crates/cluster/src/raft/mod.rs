//! The metadata quorum on `openraft`: the type configuration, the persistent log store, the
//! state machine that builds the metadata image, and the network between controller nodes.
//!
//! Every node runs a Raft instance: nodes named in `controller.voters` as voters, the others as
//! learners added when they register. So every broker holds the committed metadata log and
//! applies it, in order, to its own image (`DESIGN.md` §2).

pub mod log_store;
pub mod network;
pub mod rpc;
pub mod runtime;
pub mod state_machine;

use std::io::Cursor;

use crate::records::MetadataCommand;

openraft::declare_raft_types!(
    /// FerryMQ's Raft types: commands are batches of metadata records.
    pub TypeConfig:
        D = MetadataCommand,
        R = CommandOutcome,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = runtime::RaftRuntime,
);

/// What applying a command did: `Err` carries why the image refused it (it is then a no-op
/// on every node, since application is deterministic).
pub type CommandOutcome = Result<(), String>;

/// The Raft handle type.
pub type MetadataRaft = openraft::Raft<TypeConfig>;

/// A storage error of our Raft stores.
pub type StorageError = openraft::StorageError<u64>;

/// Wraps an I/O or decoding failure as an openraft storage error on `subject`.
pub fn storage_err(
    subject: openraft::ErrorSubject<u64>,
    verb: openraft::ErrorVerb,
    e: impl std::error::Error + 'static,
) -> StorageError {
    openraft::StorageIOError::new(subject, verb, openraft::AnyError::new(&e)).into()
}
