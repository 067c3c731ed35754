//! The Raft state machine: committed commands applied in order to the metadata image, which is
//! published to the rest of the node on a watch channel after every batch of entries.
//!
//! Application is deterministic: a command the image refuses (say, a topic created twice by
//! racing requests) is a no-op on every node and its refusal is the command's outcome.
//! Snapshots are the image as JSON, kept in `raft-snapshot.json` beside the log; a restarted
//! node loads it and openraft replays the committed entries after it.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftSnapshotBuilder,
    SnapshotMeta, StoredMembership,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::log_store::{read_json, write_json_synced};
use super::{storage_err, CommandOutcome, StorageError, TypeConfig};
use crate::image::MetadataImage;

const SNAPSHOT_FILE: &str = "raft-snapshot.json";

/// A snapshot as stored: its metadata and the image.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<u64, openraft::BasicNode>,
    image: MetadataImage,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    image: MetadataImage,
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, openraft::BasicNode>,
    snapshot: Option<StoredSnapshot>,
}

/// The state machine; cheap to clone (its snapshot builder is a clone).
#[derive(Debug, Clone)]
pub struct StateMachine {
    inner: Arc<Mutex<Inner>>,
    publish: watch::Sender<Arc<MetadataImage>>,
}

fn sm_err(verb: ErrorVerb, e: impl std::error::Error + 'static) -> StorageError {
    storage_err(ErrorSubject::StateMachine, verb, e)
}

impl StateMachine {
    /// Opens the state machine in `dir`, starting from the stored snapshot if there is one.
    pub fn open(dir: &Path) -> std::io::Result<StateMachine> {
        let snapshot: Option<StoredSnapshot> = read_json(dir, SNAPSHOT_FILE)?;
        let (image, last_applied, membership) = match &snapshot {
            Some(s) => (
                s.image.clone(),
                s.meta.last_log_id,
                s.meta.last_membership.clone(),
            ),
            None => (MetadataImage::new(""), None, StoredMembership::default()),
        };
        let (publish, _) = watch::channel(Arc::new(image.clone()));
        Ok(StateMachine {
            inner: Arc::new(Mutex::new(Inner {
                dir: dir.to_path_buf(),
                image,
                last_applied,
                membership,
                snapshot,
            })),
            publish,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().expect("state machine lock poisoned")
    }

    /// A receiver of every new image.
    pub fn subscribe(&self) -> watch::Receiver<Arc<MetadataImage>> {
        self.publish.subscribe()
    }

    /// The current image.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.publish.borrow().clone()
    }

    fn publish(&self, image: &MetadataImage) {
        self.publish.send_replace(Arc::new(image.clone()));
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let mut inner = self.lock();
        let last = inner.last_applied;
        let meta = SnapshotMeta {
            last_log_id: last,
            last_membership: inner.membership.clone(),
            snapshot_id: format!(
                "{}-{}",
                last.map_or(0, |l| l.leader_id.term),
                last.map_or(0, |l| l.index)
            ),
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            image: inner.image.clone(),
        };
        write_json_synced(&inner.dir, SNAPSHOT_FILE, &stored)
            .map_err(|e| sm_err(ErrorVerb::Write, e))?;
        let data = serde_json::to_vec(&stored.image).map_err(|e| sm_err(ErrorVerb::Write, e))?;
        inner.snapshot = Some(stored);
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<
        (
            Option<LogId<u64>>,
            StoredMembership<u64, openraft::BasicNode>,
        ),
        StorageError,
    > {
        let inner = self.lock();
        Ok((inner.last_applied, inner.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandOutcome>, StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut inner = self.lock();
        let mut out = Vec::new();
        for entry in entries {
            let index = entry.log_id.index as i64;
            inner.last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => {
                    inner.image.advance_to(index);
                    out.push(Ok(()));
                }
                EntryPayload::Normal(cmd) => {
                    let outcome = inner
                        .image
                        .apply_command(index, &cmd.records)
                        .map_err(|e| e.to_string());
                    if let Err(why) = &outcome {
                        tracing::warn!(
                            index,
                            reason = why,
                            "metadata command refused by the image"
                        );
                        inner.image.advance_to(index);
                    }
                    out.push(outcome);
                }
                EntryPayload::Membership(m) => {
                    inner.membership = StoredMembership::new(Some(entry.log_id), m);
                    inner.image.advance_to(index);
                    out.push(Ok(()));
                }
            }
        }
        self.publish(&inner.image);
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, openraft::BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let image: MetadataImage = serde_json::from_slice(snapshot.get_ref()).map_err(|e| {
            storage_err(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Read,
                e,
            )
        })?;
        let mut inner = self.lock();
        let stored = StoredSnapshot {
            meta: meta.clone(),
            image: image.clone(),
        };
        write_json_synced(&inner.dir, SNAPSHOT_FILE, &stored)
            .map_err(|e| sm_err(ErrorVerb::Write, e))?;
        inner.image = image;
        inner.last_applied = meta.last_log_id;
        inner.membership = meta.last_membership.clone();
        inner.snapshot = Some(stored);
        self.publish(&inner.image);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let inner = self.lock();
        let Some(s) = &inner.snapshot else {
            return Ok(None);
        };
        let data = serde_json::to_vec(&s.image).map_err(|e| sm_err(ErrorVerb::Read, e))?;
        Ok(Some(Snapshot {
            meta: s.meta.clone(),
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}
