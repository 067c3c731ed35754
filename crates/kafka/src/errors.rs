//! The one place where errors of the layers below become Kafka error codes (STYLE.md §6).

use ferrymq_broker::group::GroupError;
use ferrymq_broker::BrokerError;
use ferrymq_cluster::ControllerError;
use ferrymq_log::BatchError;
use kafka_protocol::ResponseError;

/// The Kafka error for a broker-core error.
pub fn broker(e: &BrokerError) -> ResponseError {
    match e {
        BrokerError::UnknownTopicOrPartition => ResponseError::UnknownTopicOrPartition,
        BrokerError::NotLeaderOrFollower => ResponseError::NotLeaderOrFollower,
        BrokerError::LeaderNotAvailable => ResponseError::LeaderNotAvailable,
        BrokerError::FencedLeaderEpoch { .. } => ResponseError::FencedLeaderEpoch,
        BrokerError::UnknownLeaderEpoch { .. } => ResponseError::UnknownLeaderEpoch,
        BrokerError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        BrokerError::MessageTooLarge { .. } => ResponseError::MessageTooLarge,
        BrokerError::NotEnoughReplicas { .. } => ResponseError::NotEnoughReplicas,
        BrokerError::NotEnoughReplicasAfterAppend => ResponseError::NotEnoughReplicasAfterAppend,
        BrokerError::RequestTimedOut => ResponseError::RequestTimedOut,
        BrokerError::Storage(_) => ResponseError::KafkaStorageError,
        BrokerError::ShuttingDown => ResponseError::NotLeaderOrFollower,
    }
}

/// The Kafka error for a group coordinator error. A failed write to `__consumer_offsets` is
/// COORDINATOR_NOT_AVAILABLE, as Kafka answers most append errors of its coordinator, so that
/// clients retry.
pub fn group(e: &GroupError) -> ResponseError {
    match e {
        GroupError::InvalidGroupId => ResponseError::InvalidGroupId,
        GroupError::NotCoordinator => ResponseError::NotCoordinator,
        GroupError::CoordinatorNotAvailable => ResponseError::CoordinatorNotAvailable,
        GroupError::CoordinatorLoadInProgress => ResponseError::CoordinatorLoadInProgress,
        GroupError::UnknownMemberId { .. } => ResponseError::UnknownMemberId,
        GroupError::IllegalGeneration { .. } => ResponseError::IllegalGeneration,
        GroupError::RebalanceInProgress => ResponseError::RebalanceInProgress,
        GroupError::FencedInstanceId { .. } => ResponseError::FencedInstanceId,
        GroupError::InconsistentGroupProtocol => ResponseError::InconsistentGroupProtocol,
        GroupError::InvalidSessionTimeout { .. } => ResponseError::InvalidSessionTimeout,
        GroupError::MemberIdRequired { .. } => ResponseError::MemberIdRequired,
        GroupError::GroupIdNotFound => ResponseError::GroupIdNotFound,
        GroupError::NonEmptyGroup => ResponseError::NonEmptyGroup,
        GroupError::OffsetMetadataTooLarge { .. } => ResponseError::OffsetMetadataTooLarge,
        GroupError::UnknownTopicOrPartition => ResponseError::UnknownTopicOrPartition,
        GroupError::GroupSubscribedToTopic => ResponseError::GroupSubscribedToTopic,
        GroupError::Storage(_) => ResponseError::CoordinatorNotAvailable,
    }
}

/// The Kafka error for a refused metadata change.
pub fn controller(e: &ControllerError) -> ResponseError {
    match e {
        ControllerError::InvalidTopic(_) => ResponseError::InvalidTopicException,
        ControllerError::TopicAlreadyExists(_) => ResponseError::TopicAlreadyExists,
        ControllerError::UnknownTopic(_) => ResponseError::UnknownTopicOrPartition,
        ControllerError::InvalidPartitions(_) => ResponseError::InvalidPartitions,
        ControllerError::InvalidReplicationFactor(_) => ResponseError::InvalidReplicationFactor,
        ControllerError::InvalidReplicaAssignment(_) => ResponseError::InvalidReplicaAssignment,
        ControllerError::InvalidConfig(_) => ResponseError::InvalidConfig,
        ControllerError::InvalidRequest(_) => ResponseError::InvalidRequest,
        ControllerError::FencedLeaderEpoch(_) => ResponseError::FencedLeaderEpoch,
        ControllerError::InvalidUpdateVersion(_) => ResponseError::InvalidUpdateVersion,
        ControllerError::ElectionNotNeeded(_) => ResponseError::ElectionNotNeeded,
        ControllerError::IneligibleReplica(_) => ResponseError::IneligibleReplica,
        ControllerError::NotController => ResponseError::NotController,
        ControllerError::NoQuorum(_) => ResponseError::RequestTimedOut,
        ControllerError::Storage(_) => ResponseError::KafkaStorageError,
    }
}

/// The Kafka error for a refused produce batch, as Kafka's batch reader and validator decide:
/// a CRC mismatch or an unknown magic (> 2) is CORRUPT_MESSAGE; an older magic, a batch cut
/// short of its length (no complete batch), inconsistent counts or several batches are
/// INVALID_RECORD.
pub fn batch(e: &BatchError) -> ResponseError {
    match e {
        BatchError::BadCrc { .. } | BatchError::BadLength { .. } => ResponseError::CorruptMessage,
        BatchError::BadMagic { magic } if *magic > 2 => ResponseError::CorruptMessage,
        _ => ResponseError::InvalidRecord,
    }
}

/// The wire code of an optional error (0 for none).
pub fn code(e: Option<ResponseError>) -> i16 {
    e.map_or(0, |e| e.code())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrymq_types::{LeaderEpoch, Offset};

    #[test]
    fn broker_errors_map_to_kafka_codes() {
        let table: Vec<(BrokerError, i16)> = vec![
            (BrokerError::UnknownTopicOrPartition, 3),
            (BrokerError::NotLeaderOrFollower, 6),
            (BrokerError::LeaderNotAvailable, 5),
            (
                BrokerError::FencedLeaderEpoch {
                    request: LeaderEpoch(1),
                    current: LeaderEpoch(2),
                },
                74,
            ),
            (
                BrokerError::UnknownLeaderEpoch {
                    request: LeaderEpoch(3),
                    current: LeaderEpoch(2),
                },
                75,
            ),
            (
                BrokerError::OffsetOutOfRange {
                    requested: Offset(9),
                    log_start: Offset(0),
                    log_end: Offset(1),
                },
                1,
            ),
            (BrokerError::MessageTooLarge { bytes: 2, max: 1 }, 10),
            (BrokerError::NotEnoughReplicas { isr: 1, min: 2 }, 19),
            (BrokerError::NotEnoughReplicasAfterAppend, 20),
            (BrokerError::RequestTimedOut, 7),
            (BrokerError::Storage("x".into()), 56),
        ];
        for (e, c) in table {
            assert_eq!(broker(&e).code(), c, "{e}");
        }
    }

    #[test]
    fn group_errors_map_to_kafka_codes() {
        let m = || "m".to_string();
        let table: Vec<(GroupError, i16)> = vec![
            (GroupError::InvalidGroupId, 24),
            (GroupError::NotCoordinator, 16),
            (GroupError::CoordinatorNotAvailable, 15),
            (GroupError::CoordinatorLoadInProgress, 14),
            (GroupError::UnknownMemberId { member_id: m() }, 25),
            (
                GroupError::IllegalGeneration {
                    request: 1,
                    current: 2,
                },
                22,
            ),
            (GroupError::RebalanceInProgress, 27),
            (GroupError::FencedInstanceId { instance_id: m() }, 82),
            (GroupError::InconsistentGroupProtocol, 23),
            (
                GroupError::InvalidSessionTimeout {
                    timeout_ms: 1,
                    min_ms: 2,
                    max_ms: 3,
                },
                26,
            ),
            (GroupError::MemberIdRequired { member_id: m() }, 79),
            (GroupError::GroupIdNotFound, 69),
            (GroupError::NonEmptyGroup, 68),
            (GroupError::OffsetMetadataTooLarge { bytes: 5, max: 4 }, 12),
            (GroupError::UnknownTopicOrPartition, 3),
            (GroupError::GroupSubscribedToTopic, 86),
            (GroupError::Storage("x".into()), 15),
        ];
        for (e, c) in table {
            assert_eq!(group(&e).code(), c, "{e}");
        }
    }

    #[test]
    fn controller_and_batch_errors_map_to_kafka_codes() {
        let table: Vec<(ControllerError, i16)> = vec![
            (ControllerError::InvalidTopic("x".into()), 17),
            (ControllerError::TopicAlreadyExists("x".into()), 36),
            (ControllerError::UnknownTopic("x".into()), 3),
            (ControllerError::InvalidPartitions("x".into()), 37),
            (ControllerError::InvalidReplicationFactor("x".into()), 38),
            (ControllerError::InvalidReplicaAssignment("x".into()), 39),
            (ControllerError::InvalidConfig("x".into()), 40),
            (ControllerError::InvalidRequest("x".into()), 42),
            (ControllerError::FencedLeaderEpoch("x".into()), 74),
            (ControllerError::InvalidUpdateVersion("x".into()), 95),
            (ControllerError::ElectionNotNeeded("x".into()), 84),
            (ControllerError::IneligibleReplica("x".into()), 107),
            (ControllerError::NotController, 41),
            (ControllerError::NoQuorum("x".into()), 7),
            (ControllerError::Storage("x".into()), 56),
        ];
        for (e, c) in table {
            assert_eq!(controller(&e).code(), c, "{e}");
        }
        assert_eq!(
            batch(&BatchError::BadCrc {
                stored: 1,
                computed: 2
            })
            .code(),
            2
        );
        assert_eq!(batch(&BatchError::BadMagic { magic: 1 }).code(), 87);
        assert_eq!(batch(&BatchError::BadMagic { magic: 3 }).code(), 2);
        assert_eq!(
            batch(&BatchError::Truncated {
                needed: 9,
                available: 8
            })
            .code(),
            87
        );
        assert_eq!(batch(&BatchError::NotOneBatch { count: 2 }).code(), 87);
    }
}
