//! The numbers that cross crate boundaries in FerryMQ, each in its own type so that an offset
//! can never be passed where a leader epoch or a node id was meant (STYLE.md §4).
//!
//! This crate knows nothing of storage, networking or Kafka: it is the vocabulary the other
//! crates share.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! newtype {
    ($(#[$doc:meta])* $name:ident($inner:ty)) => {
        $(#[$doc])*
        #[derive(
            Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(pub $inner);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl From<$inner> for $name {
            fn from(v: $inner) -> Self {
                Self(v)
            }
        }
    };
}

newtype!(
    /// A position in a partition's log, counted in records (Kafka's 64-bit offsets).
    Offset(i64)
);
newtype!(
    /// A leadership period of one partition; bumped at every leadership change and stamped
    /// into every batch the leader appends.
    LeaderEpoch(i32)
);
newtype!(
    /// The id of a broker (and of its controller, in combined mode).
    NodeId(i32)
);
newtype!(
    /// The index of a partition within its topic.
    PartitionId(i32)
);
newtype!(
    /// An idempotent producer's id, unique for the life of the cluster.
    ProducerId(i64)
);
newtype!(
    /// A producer id's epoch. An idempotent producer bumps it itself to restart its sequences
    /// (KIP-360); batches of an older epoch are fenced.
    ProducerEpoch(i16)
);
newtype!(
    /// An idempotent producer's sequence number of a record in one partition: the first record
    /// of an epoch has 0, each next record one more, wrapping from `i32::MAX` to 0.
    Sequence(i32)
);

impl Offset {
    /// The offset after this one.
    pub fn next(self) -> Offset {
        Offset(self.0 + 1)
    }

    /// `self + n`, asserting it does not overflow (offsets are far below `i64::MAX`).
    pub fn plus(self, n: i64) -> Offset {
        Offset(self.0.checked_add(n).expect("offset overflow"))
    }
}

impl Sequence {
    /// The sequence `n` records after this one, wrapping past `i32::MAX` to 0 as Kafka's
    /// `DefaultRecordBatch.incrementSequence`. `n` must not be negative.
    pub fn plus(self, n: i32) -> Sequence {
        assert!(n >= 0, "sequence increment {n} is negative");
        assert!(self.0 >= 0, "sequence {self} is negative");
        if self.0 > i32::MAX - n {
            Sequence(n - (i32::MAX - self.0) - 1)
        } else {
            Sequence(self.0 + n)
        }
    }

    /// The sequence of the record after this one.
    pub fn next(self) -> Sequence {
        self.plus(1)
    }
}

impl LeaderEpoch {
    /// Kafka's "no epoch known" value (-1), used by old clients and empty logs.
    pub const UNKNOWN: LeaderEpoch = LeaderEpoch(-1);
}

/// A partition of a named topic: the key of almost every per-partition map.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TopicPartition {
    /// The topic's name.
    pub topic: String,
    /// The partition's index in the topic.
    pub partition: PartitionId,
}

impl TopicPartition {
    /// Builds a topic-partition from its parts.
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
        Self {
            topic: topic.into(),
            partition: PartitionId(partition),
        }
    }

    /// The name of the partition's directory in the data dir: `<topic>-<partition>`, as Kafka.
    pub fn dir_name(&self) -> String {
        format!("{}-{}", self.topic, self.partition.0)
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_name_is_topic_dash_partition() {
        assert_eq!(
            TopicPartition::new("orders.eu-1", 7).dir_name(),
            "orders.eu-1-7"
        );
    }

    #[test]
    fn sequences_wrap_from_i32_max_to_zero() {
        assert_eq!(Sequence(5).plus(3), Sequence(8));
        assert_eq!(Sequence(i32::MAX).next(), Sequence(0));
        assert_eq!(Sequence(i32::MAX - 1).plus(2), Sequence(0));
        assert_eq!(Sequence(i32::MAX - 1).plus(4), Sequence(2));
        assert_eq!(Sequence(0).plus(i32::MAX), Sequence(i32::MAX));
        assert_eq!(Sequence(1).plus(i32::MAX), Sequence(0));
    }

    #[test]
    fn offsets_order_and_advance() {
        assert!(Offset(3) < Offset(4));
        assert_eq!(Offset(3).next(), Offset(4));
        assert_eq!(Offset(3).plus(10), Offset(13));
    }
}
