//! Persistence of groups in `__consumer_offsets`: offsets and group metadata are written as
//! key/value records through the ordinary partition append path, and the caller is answered
//! only once every in-sync replica has them (the high watermark passed them), as Kafka's
//! coordinator writes with acks=all: an offset commit acknowledged on the leader alone would go
//! backwards when a follower without it takes over. A partition is replayed into groups when
//! this node becomes its leader. Compaction of the topic keeps the latest record per key.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferrymq_log::batch::{BatchHeader, ValidatedBatch};
use ferrymq_log::builder::key_value_batch;
use ferrymq_log::records::decode_records;
use ferrymq_types::{LeaderEpoch, Offset, TopicPartition};
use tokio::sync::watch;

use super::error::GroupError;
use super::records::{decode_group_value, decode_key, decode_offset_value, RecordKey};
use super::state::{CommittedOffset, GroupSnapshot};
use crate::log_writer::{AppendQueue, Durability, PendingAppend};
use crate::partition::{Partition, ReadBound};
use crate::BrokerError;

/// Bytes read from the log per step of a replay.
const REPLAY_READ_BYTES: usize = 1 << 20;

/// How long a group write may wait for the in-sync replicas (Kafka's
/// `offsets.commit.timeout.ms` default); past it the caller gets COORDINATOR_NOT_AVAILABLE.
const REPLICATION_WAIT: Duration = Duration::from_secs(5);

/// A write queued to `__consumer_offsets`; `wait` resolves once every in-sync replica has it.
#[derive(Debug)]
pub struct PendingWrite {
    append: PendingAppend,
    partition: Arc<Partition>,
    /// The leader epoch the write was queued under: a new epoch means it may be lost.
    epoch: LeaderEpoch,
    hw: watch::Receiver<Offset>,
}

impl PendingWrite {
    /// Waits until the records are fsynced here and on every in-sync replica.
    pub async fn wait(mut self) -> Result<(), GroupError> {
        let appended = match self.append.await {
            Ok(Ok(a)) => a,
            Ok(Err(BrokerError::NotLeaderOrFollower)) => return Err(GroupError::NotCoordinator),
            Ok(Err(e)) => return Err(GroupError::Storage(e.to_string())),
            Err(_) => return Err(GroupError::Storage("log writer stopped".into())),
        };
        let target = appended.info().last_offset.next();
        let replicated = self.partition.replicated(target, self.epoch, &mut self.hw);
        match tokio::time::timeout(REPLICATION_WAIT, replicated).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(BrokerError::NotLeaderOrFollower)) => Err(GroupError::NotCoordinator),
            Ok(Err(e)) => Err(GroupError::Storage(e.to_string())),
            Err(_) => Err(GroupError::Storage(format!(
                "{} not replicated to the ISR within {REPLICATION_WAIT:?}",
                self.partition.tp()
            ))),
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
    let (epoch, hw) = (partition.leader_epoch(), partition.subscribe_hw());
    let append = queue
        .enqueue(partition.clone(), batch, Durability::Fsync)
        .await
        .map_err(|e| GroupError::Storage(e.to_string()))?;
    Ok(PendingWrite {
        append,
        partition,
        epoch,
        hw,
    })
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
