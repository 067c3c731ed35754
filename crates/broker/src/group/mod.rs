//! The group coordinator of the classic consumer-group protocol: a pure per-group state machine
//! (`state`, with its events and decisions in `events`), the persistence of offsets and group metadata as records of the internal compacted
//! topic `__consumer_offsets` (`records`, `store`), and the async layer that answers delayed
//! joins and syncs, runs session and rebalance timers and loads groups from the log
//! (`coordinator`).
//!
//! The coordinator of a group is the leader of partition `abs(java_hash(group)) %
//! offsets.topic.num.partitions` of `__consumer_offsets`, Kafka's mapping, so that when
//! replication lands the coordinator moves with its data. Nothing here knows Kafka request or
//! response structs: member metadata and assignments are opaque bytes.

pub mod coordinator;
pub mod error;
pub mod events;
pub mod records;
pub mod state;
pub mod store;

pub use coordinator::{GroupConfig, GroupCoordinator};
pub use error::GroupError;

/// A group's generation: bumped at every completed rebalance; requests carry the one they
/// belong to, and an old one is fenced with ILLEGAL_GENERATION.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Generation(pub i32);

/// Name of the internal topic holding offsets and group metadata.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Java's `String.hashCode` over the UTF-16 code units of `s`, as Kafka uses for the group's
/// partition, so that FerryMQ maps a group to the same partition as Kafka does.
pub fn java_string_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(c as i32))
}

/// The partition of `__consumer_offsets` that holds `group` (Kafka's `Utils.abs(hash) % n`).
pub fn partition_for(group: &str, partitions: i32) -> i32 {
    assert!(partitions > 0, "offsets topic partitions {partitions}");
    let h = java_string_hash(group);
    let abs = if h == i32::MIN { 0 } else { h.abs() };
    abs % partitions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_partition_matches_javas_string_hash_code() {
        // Values of "x".hashCode() in Java.
        assert_eq!(java_string_hash(""), 0);
        assert_eq!(java_string_hash("a"), 97);
        assert_eq!(java_string_hash("my-group"), -1_906_497_762);
        assert_eq!(java_string_hash("polygenelubricants"), i32::MIN);
        assert_eq!(partition_for("polygenelubricants", 50), 0);
        assert_eq!(partition_for("my-group", 50), 1_906_497_762 % 50);
        // Non-ASCII counts UTF-16 code units, as Java does.
        assert_eq!(java_string_hash("é"), 233);
        assert_eq!(java_string_hash("😀"), 0xD83D * 31 + 0xDE00);
    }
}
