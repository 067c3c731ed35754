//! The broker core's metrics, through the `metrics` facade: whatever recorder the binary
//! installs (Prometheus in `ferrymq serve`, none in unit tests, where every call is a no-op).
//!
//! Three kinds of source:
//! - **events** recorded where they happen: bytes and messages in and out per topic
//!   (`produced`, `fetched`), fsync latency (`fsync`), requests entering and leaving the
//!   produce and fetch purgatories (`Waiting`), ISR changes seen by a leader (`isr_changed`);
//! - **state** sampled when metrics are scraped (`sample`): partitions by role and health,
//!   log size, segments and offsets per partition, purgatory sizes. Sampling at scrape time, instead of
//!   instrumenting every path that changes them, keeps the hot paths free and the values exact;
//! - **hooks** with one name and one place for metrics whose source lives elsewhere:
//!   `replica_lag` (fed by `sample` from the leader's follower progress), `group_lag` and
//!   `group_committed` (fed at scrape time from the group coordinator by the admin crate).
//!   Hook gauges must be set again at least every few minutes: the exporter drops gauges left
//!   unset for longer (that is how a deleted partition's or group's series go away).
//!
//! Names follow Prometheus conventions: snake case, base units (`_bytes`, `_seconds`), `_total`
//! for counters. Every name is a constant here and described in `describe`.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use ferrymq_types::{NodeId, TopicPartition};
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};

use crate::partition::Role;
use crate::Broker;

/// Record bytes appended by producers, per topic.
pub const TOPIC_BYTES_IN: &str = "ferrymq_topic_bytes_in_total";
/// Records appended by producers, per topic.
pub const TOPIC_MESSAGES_IN: &str = "ferrymq_topic_messages_in_total";
/// Record bytes sent to consumers, per topic.
pub const TOPIC_BYTES_OUT: &str = "ferrymq_topic_bytes_out_total";
/// Records sent to consumers, per topic.
pub const TOPIC_MESSAGES_OUT: &str = "ferrymq_topic_messages_out_total";
/// fsync latency of partition logs.
pub const LOG_FSYNC_SECONDS: &str = "ferrymq_log_fsync_duration_seconds";
/// acks=all produces waiting for the high watermark.
pub const PRODUCE_PURGATORY: &str = "ferrymq_produce_purgatory_size";
/// Long-poll fetches waiting for data.
pub const FETCH_PURGATORY: &str = "ferrymq_fetch_purgatory_size";
/// Hosted replicas by state.
pub const PARTITIONS: &str = "ferrymq_partitions";
/// ISR shrinks seen by the leader.
pub const ISR_SHRINKS: &str = "ferrymq_isr_shrinks_total";
/// ISR expansions seen by the leader.
pub const ISR_EXPANDS: &str = "ferrymq_isr_expands_total";
/// Bytes of a partition's log on disk.
pub const LOG_SIZE_BYTES: &str = "ferrymq_log_size_bytes";
/// Segments of a partition's log.
pub const LOG_SEGMENTS: &str = "ferrymq_log_segments";
/// Log start offset of a partition.
pub const LOG_START_OFFSET: &str = "ferrymq_log_start_offset";
/// Log end offset of a partition.
pub const LOG_END_OFFSET: &str = "ferrymq_log_end_offset";
/// High watermark of a partition.
pub const HIGH_WATERMARK: &str = "ferrymq_high_watermark";
/// Messages a follower is behind the leader.
pub const REPLICA_LAG_MESSAGES: &str = "ferrymq_replica_lag_messages";
/// Seconds since a follower was last caught up.
pub const REPLICA_LAG_SECONDS: &str = "ferrymq_replica_lag_seconds";
/// Messages between a group's committed offset and the high watermark.
pub const GROUP_LAG_MESSAGES: &str = "ferrymq_consumer_group_lag_messages";
/// A group's committed offset.
pub const GROUP_COMMITTED_OFFSET: &str = "ferrymq_consumer_group_committed_offset";

/// fsync latency buckets, seconds: from a battery-backed cache to a struggling disk.
pub const FSYNC_BUCKETS_SECONDS: &[f64] = &[
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Registers help text for every metric of the broker core.
pub fn describe() {
    describe_counter!(
        TOPIC_BYTES_IN,
        "Record-batch bytes appended by producers, per topic."
    );
    describe_counter!(
        TOPIC_MESSAGES_IN,
        "Records appended by producers, per topic."
    );
    describe_counter!(
        TOPIC_BYTES_OUT,
        "Record-batch bytes sent to consumers, per topic."
    );
    describe_counter!(
        TOPIC_MESSAGES_OUT,
        "Records in batches sent to consumers, per topic."
    );
    describe_histogram!(LOG_FSYNC_SECONDS, "Time to fsync one partition's log.");
    describe_gauge!(
        PRODUCE_PURGATORY,
        "acks=all produces waiting for the high watermark."
    );
    describe_gauge!(FETCH_PURGATORY, "Fetches long-polling for data.");
    describe_gauge!(
        PARTITIONS,
        "Replicas hosted here by state: leader, follower, offline (no leader or storage failed), under_replicated and under_min_isr (led here)."
    );
    describe_counter!(ISR_SHRINKS, "ISR shrinks of partitions led here.");
    describe_counter!(ISR_EXPANDS, "ISR expansions of partitions led here.");
    describe_gauge!(
        LOG_SIZE_BYTES,
        "Bytes of the partition's log segments on disk."
    );
    describe_gauge!(LOG_SEGMENTS, "Segments of the partition's log.");
    describe_gauge!(LOG_START_OFFSET, "First offset of the partition's log.");
    describe_gauge!(
        LOG_END_OFFSET,
        "Next offset the partition's log will write."
    );
    describe_gauge!(
        HIGH_WATERMARK,
        "The partition's high watermark (commit point)."
    );
    describe_gauge!(
        REPLICA_LAG_MESSAGES,
        "Messages a follower is behind the leader (reported by the leader)."
    );
    describe_gauge!(
        REPLICA_LAG_SECONDS,
        "Seconds since a follower was last caught up with the leader."
    );
    describe_gauge!(
        GROUP_LAG_MESSAGES,
        "Messages between a consumer group's committed offset and the high watermark (where the coordinator's node leads the partition)."
    );
    describe_gauge!(
        GROUP_COMMITTED_OFFSET,
        "A consumer group's committed offset (reported by the group's coordinator)."
    );
}

fn partition_labels(tp: &TopicPartition) -> [(&'static str, String); 2] {
    [
        ("topic", tp.topic.clone()),
        ("partition", tp.partition.to_string()),
    ]
}

/// A producer's batch was appended to `topic`.
pub fn produced(topic: &str, bytes: usize, messages: u64) {
    counter!(TOPIC_BYTES_IN, "topic" => topic.to_string()).increment(bytes as u64);
    counter!(TOPIC_MESSAGES_IN, "topic" => topic.to_string()).increment(messages);
}

/// Batches were sent to a consumer from `topic`.
pub fn fetched(topic: &str, bytes: usize, messages: u64) {
    counter!(TOPIC_BYTES_OUT, "topic" => topic.to_string()).increment(bytes as u64);
    counter!(TOPIC_MESSAGES_OUT, "topic" => topic.to_string()).increment(messages);
}

/// One partition's fsync took `took`.
pub fn fsync(took: Duration) {
    histogram!(LOG_FSYNC_SECONDS).record(took.as_secs_f64());
}

/// The committed ISR of a partition led here changed from `before` members to `after`; counts
/// a shrink or an expansion. Called by `Partition` when it applies a new image, so changes
/// from fencing (controller) and from AlterPartition (leader) are counted once committed.
pub fn isr_changed(tp: &TopicPartition, before: usize, after: usize) {
    if after < before {
        counter!(ISR_SHRINKS, &partition_labels(tp)).increment(1);
    } else if after > before {
        counter!(ISR_EXPANDS, &partition_labels(tp)).increment(1);
    }
}

/// Hook for the leader's replica tracking (replication): how far `replica` is behind on `tp`,
/// in messages (leader LEO − follower LEO) and in seconds since it was last caught up.
pub fn replica_lag(tp: &TopicPartition, replica: NodeId, messages: i64, seconds: f64) {
    let [t, p] = partition_labels(tp);
    let labels = [t, p, ("replica", replica.0.to_string())];
    gauge!(REPLICA_LAG_MESSAGES, &labels).set(messages as f64);
    gauge!(REPLICA_LAG_SECONDS, &labels).set(seconds);
}

/// `group`'s lag on `tp` (high watermark − committed offset).
pub fn group_lag(group: &str, tp: &TopicPartition, messages: i64) {
    let [t, p] = partition_labels(tp);
    let labels = [("group", group.to_string()), t, p];
    gauge!(GROUP_LAG_MESSAGES, &labels).set(messages as f64);
}

/// `group`'s committed offset on `tp`.
pub fn group_committed(group: &str, tp: &TopicPartition, offset: i64) {
    let [t, p] = partition_labels(tp);
    let labels = [("group", group.to_string()), t, p];
    gauge!(GROUP_COMMITTED_OFFSET, &labels).set(offset as f64);
}

/// Which purgatory a waiting request is in.
#[derive(Debug, Clone, Copy)]
pub enum Purgatory {
    /// acks=all produce waiting for the HW.
    Produce,
    /// Fetch waiting for `min_bytes`.
    Fetch,
}

// Purgatory sizes are kept here and copied to their gauges by `sample`, like every other gauge,
// so the exporter may drop gauges nobody set for a while (deleted partitions) without ever
// losing a count that is only ever incremented and decremented.
static PRODUCE_WAITING: AtomicI64 = AtomicI64::new(0);
static FETCH_WAITING: AtomicI64 = AtomicI64::new(0);

/// Counts a request in a purgatory for as long as it lives.
#[derive(Debug)]
pub struct Waiting(Purgatory);

impl Waiting {
    /// Enters `purgatory`.
    pub fn enter(purgatory: Purgatory) -> Waiting {
        Self::count(purgatory).fetch_add(1, Ordering::Relaxed);
        Waiting(purgatory)
    }

    fn count(p: Purgatory) -> &'static AtomicI64 {
        match p {
            Purgatory::Produce => &PRODUCE_WAITING,
            Purgatory::Fetch => &FETCH_WAITING,
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        Self::count(self.0).fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts of hosted replicas by state.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PartitionCounts {
    /// Led here.
    pub leader: u64,
    /// Followed here.
    pub follower: u64,
    /// Without a leader, or with failed storage here.
    pub offline: u64,
    /// Led here with fewer in-sync replicas than replicas.
    pub under_replicated: u64,
    /// Led here with fewer in-sync replicas than `min.insync.replicas`.
    pub under_min_isr: u64,
}

/// Samples the state gauges of every hosted partition and the purgatories (call before
/// rendering metrics).
pub fn sample(broker: &Broker) -> PartitionCounts {
    gauge!(PRODUCE_PURGATORY).set(PRODUCE_WAITING.load(Ordering::Relaxed) as f64);
    gauge!(FETCH_PURGATORY).set(FETCH_WAITING.load(Ordering::Relaxed) as f64);
    let mut counts = PartitionCounts::default();
    for p in broker.partitions() {
        let s = p.snapshot();
        match s.role {
            Role::Leader => counts.leader += 1,
            Role::Follower => counts.follower += 1,
            Role::Offline => counts.offline += 1,
        }
        if s.role == Role::Leader && s.isr.len() < s.replicas.len() {
            counts.under_replicated += 1;
        }
        if s.role == Role::Leader && s.isr.len() < s.min_insync_replicas {
            counts.under_min_isr += 1;
        }
        let labels = partition_labels(p.tp());
        gauge!(LOG_SIZE_BYTES, &labels).set(s.log_size_bytes as f64);
        gauge!(LOG_SEGMENTS, &labels).set(s.segments as f64);
        gauge!(LOG_START_OFFSET, &labels).set(s.log_start_offset.0 as f64);
        gauge!(LOG_END_OFFSET, &labels).set(s.log_end_offset.0 as f64);
        gauge!(HIGH_WATERMARK, &labels).set(s.high_watermark.0 as f64);
        for f in &s.followers {
            replica_lag(p.tp(), f.replica, f.messages, f.seconds);
        }
    }
    for (state, n) in [
        ("leader", counts.leader),
        ("follower", counts.follower),
        ("offline", counts.offline),
        ("under_replicated", counts.under_replicated),
        ("under_min_isr", counts.under_min_isr),
    ] {
        gauge!(PARTITIONS, "state" => state).set(n as f64);
    }
    counts
}

/// Records and bytes of the whole batches in `records` (a fetch response may end in a partial
/// batch, which is not counted: the client will fetch it again).
pub fn count_batches(records: &[u8]) -> (usize, u64) {
    let mut at = 0;
    let mut bytes = 0;
    let mut messages = 0u64;
    while let Ok(h) = ferrymq_log::BatchHeader::parse(&records[at..]) {
        let size = h.total_bytes();
        if at + size > records.len() {
            break;
        }
        bytes += size;
        messages += h.record_count.max(0) as u64;
        at += size;
    }
    (bytes, messages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_whole_batches_and_skips_a_partial_tail() {
        let one = ferrymq_log::batch::testing::batch(&[&b"a"[..], b"bb", b"ccc"], 0);
        let mut two = one.to_vec();
        two.extend_from_slice(&one);
        assert_eq!(count_batches(&two), (two.len(), 6));
        let cut = &two[..two.len() - 5];
        assert_eq!(count_batches(cut), (one.len(), 3));
        assert_eq!(count_batches(&[]), (0, 0));
    }
}
