//! Persistence of groups in `__consumer_offsets`: offsets and group metadata are written as
//! key/value records through the ordinary partition append path (the log writer, fsynced before
//! the caller is answered, as acks=all), and a partition is replayed into groups when this node
//! becomes its leader. Compaction of the topic keeps the latest record per key.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use ferrymq_log::batch::{BatchHeader, ValidatedBatch};
use ferrymq_log::builder::key_value_batch;
use ferrymq_log::records::decode_records;
use ferrymq_types::TopicPartition;

use super::error::GroupError;
use super::records::{decode_group_value, decode_key, decode_offset_value, RecordKey};
use super::state::{CommittedOffset, GroupSnapshot};
use crate::log_writer::{AppendQueue, Durability, PendingAppend};
use crate::partition::{Partition, ReadBound};

/// Bytes read from the log per step of a replay.
const REPLAY_READ_BYTES: usize = 1 << 20;

/// A write queued to `__consumer_offsets`; `wait` resolves once it is fsynced.
#[derive(Debug)]
pub struct PendingWrite(PendingAppend);

impl PendingWrite {
    /// Waits until the records are durable.
    pub async fn wait(self) -> Result<(), GroupError> {
        match self.0.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(GroupError::Storage(e.to_string())),
            Err(_) => Err(GroupError::Storage("log writer stopped".into())),
        }
    }
}

/// Queues `records` (key, value or tombstone) as one batch to `partition`, stamped `now_ms`.
/// Records queued by one caller in order are appended in that order.
pub async fn enqueue(
    queue: &AppendQueue,
    partition: Arc<Partition>,
    records: &[(Bytes, Option<Bytes>)],
    now_ms: i64,
) -> Result<PendingWrite, GroupError> {
    assert!(!records.is_empty(), "nothing to write");
    partition
        .check_produce(0, true)
        .map_err(|e| GroupError::Storage(e.to_string()))?;
    let batch = key_value_batch(records, now_ms);
    queue
        .enqueue(partition, batch, Durability::Fsync)
        .await
        .map(PendingWrite)
        .map_err(|e| GroupError::Storage(e.to_string()))
}

/// A group as read back from its partition.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LoadedGroup {
    /// Its latest metadata, if any survives.
    pub metadata: Option<GroupSnapshot>,
    /// Its committed offsets.
    pub offsets: BTreeMap<TopicPartition, CommittedOffset>,
}

/// Replays a partition of `__consumer_offsets` from its log start to its end into groups
/// (blocking: run it off the async workers). Unreadable records are skipped with a warning.
pub fn load(partition: &Partition) -> Result<BTreeMap<String, LoadedGroup>, GroupError> {
    let storage = |e: crate::BrokerError| GroupError::Storage(e.to_string());
    let mut groups: BTreeMap<String, LoadedGroup> = BTreeMap::new();
    let (_, _, mut offset) = partition.checkpoint_offsets();
    loop {
        let out = partition
            .read(offset, REPLAY_READ_BYTES, ReadBound::LogEnd, true, None)
            .map_err(storage)?;
        let Some(mut bytes) = out.records else { break };
        let mut progressed = false;
        while bytes.len() >= ferrymq_log::batch::HEADER_BYTES {
            let Ok(h) = BatchHeader::parse(&bytes) else {
                break;
            };
            if h.total_bytes() > bytes.len() {
                break;
            }
            let raw = bytes.split_to(h.total_bytes());
            let batch =
                ValidatedBatch::from_stored(raw).map_err(|e| GroupError::Storage(e.to_string()))?;
            apply_batch(&mut groups, &batch);
            offset = h.next_offset();
            progressed = true;
        }
        if !progressed || offset >= out.log_end_offset {
            break;
        }
    }
    groups.retain(|_, g| g.metadata.is_some() || !g.offsets.is_empty());
    Ok(groups)
}

fn apply_batch(groups: &mut BTreeMap<String, LoadedGroup>, batch: &ValidatedBatch) {
    let h = batch.header();
    if h.is_control() {
        return;
    }
    let records = match decode_records(h, batch.bytes()) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(base_offset = h.base_offset.0, error = %e, "skipping unreadable __consumer_offsets batch");
            return;
        }
    };
    for r in records {
        let Some(key) = r.key else { continue };
        if let Err(e) = apply_record(groups, &key, r.value.as_deref()) {
            tracing::warn!(offset = r.offset.0, error = %e, "skipping unreadable __consumer_offsets record");
        }
    }
}

fn apply_record(
    groups: &mut BTreeMap<String, LoadedGroup>,
    key: &[u8],
    value: Option<&[u8]>,
) -> Result<(), super::records::FormatError> {
    match decode_key(key)? {
        RecordKey::Offset { group, tp } => {
            let g = groups.entry(group).or_default();
            match value {
                Some(v) => {
                    g.offsets.insert(tp, decode_offset_value(v)?);
                }
                None => {
                    g.offsets.remove(&tp);
                }
            }
        }
        RecordKey::Group { group } => {
            groups.entry(group).or_default().metadata =
                value.map(decode_group_value).transpose()?;
        }
    }
    Ok(())
}
