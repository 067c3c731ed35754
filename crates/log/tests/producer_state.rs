//! Idempotent producers' state in a `PartitionLog`: retries answered with the original offsets,
//! refusals that write nothing, and a table that survives every way the log is reopened —
//! from the close snapshot, from a roll snapshot plus replay after a crash, from the log alone
//! when snapshots are damaged — and that follows truncation and retention.

use std::fs;
use std::path::Path;

use ferrymq_log::batch::testing::{batch, batch_with_producer};
use ferrymq_log::batch::validate_produce_records;
use ferrymq_log::producer_snapshot;
use ferrymq_log::{
    Error, LeaderAppend, LogConfig, OpenOptions, PartitionLog, ProducerError, ProducerStateTable,
    ValidatedBatch,
};
use ferrymq_types::{LeaderEpoch, Offset, ProducerEpoch, ProducerId, Sequence};

const V: &[u8] = b"0123456789";
const EPOCH: LeaderEpoch = LeaderEpoch(1);

/// Segments of 1 KiB: nine three-record batches (112 bytes each) per segment.
fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 1024,
        segment_ms: i64::MAX / 2,
        retention_ms: -1,
        retention_bytes: -1,
        index_interval_bytes: 200,
    }
}

/// A three-record batch of producer `pid` in `epoch` from sequence `seq`.
fn idem(pid: i64, epoch: i16, seq: i32) -> ValidatedBatch {
    validate_produce_records(batch_with_producer(&[V, V, V], 1_000, pid, epoch, seq)).unwrap()
}

fn plain() -> ValidatedBatch {
    validate_produce_records(batch(&[V, V, V], 1_000)).unwrap()
}

fn append(log: &mut PartitionLog, b: &ValidatedBatch) -> LeaderAppend {
    log.append_as_leader(b, EPOCH, 0).unwrap()
}

fn open(dir: &Path, clean_shutdown: bool, recovery_point: Offset) -> PartitionLog {
    let opts = OpenOptions {
        clean_shutdown,
        recovery_point,
        log_start_offset: Offset(0),
    };
    PartitionLog::open(dir, config(), opts).unwrap().0
}

/// Producers 1 and 2 alternate, each sending `per_producer` batches in order: offsets
/// `0..6 * per_producer`, producer 1's batches at even multiples of 3.
fn two_producers(log: &mut PartitionLog, per_producer: i32) {
    for i in 0..per_producer {
        append(log, &idem(1, 0, i * 3));
        append(log, &idem(2, 0, i * 3));
    }
}

/// The table a fresh replay of the whole log would build: every batch recorded in order.
fn rebuilt_from_scratch(log: &PartitionLog) -> ProducerStateTable {
    let mut t = ProducerStateTable::default();
    let mut at = log.log_start_offset();
    while let Some(b) = log.read_batch(at).unwrap() {
        let h = *b.header();
        if let Some(i) = ferrymq_log::producer_state::IdempotentBatch::from_header(&h) {
            t.record(&i, h.base_offset, h.last_offset());
        }
        at = h.next_offset();
    }
    t
}

#[test]
fn a_retry_is_answered_with_the_original_offsets_and_not_written_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::create(dir.path(), config(), Offset(0)).unwrap();
    let first = idem(7, 0, 0);
    assert!(
        matches!(append(&mut log, &first), LeaderAppend::Appended(i) if i.base_offset == Offset(0))
    );
    append(&mut log, &plain());
    let size = log.size_bytes();
    match append(&mut log, &first) {
        LeaderAppend::Duplicate(info) => {
            assert_eq!(info.base_offset, Offset(0));
            assert_eq!(info.last_offset, Offset(2));
            assert_eq!(info.log_end_offset, Offset(6));
        }
        other => panic!("expected a duplicate, got {other:?}"),
    }
    assert_eq!(log.size_bytes(), size, "nothing written");
    assert_eq!(log.log_end_offset(), Offset(6));
}

#[test]
fn a_gap_or_a_stale_epoch_is_refused_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::create(dir.path(), config(), Offset(0)).unwrap();
    append(&mut log, &idem(7, 3, 0));
    let gap = log.append_as_leader(&idem(7, 3, 6), EPOCH, 0).unwrap_err();
    assert!(matches!(
        gap,
        Error::Producer(ProducerError::OutOfOrderSequence {
            expected: Sequence(3),
            received: Sequence(6),
            ..
        })
    ));
    let stale = log.append_as_leader(&idem(7, 2, 3), EPOCH, 0).unwrap_err();
    assert!(matches!(
        stale,
        Error::Producer(ProducerError::InvalidProducerEpoch {
            current: ProducerEpoch(3),
            received: ProducerEpoch(2),
            ..
        })
    ));
    assert_eq!(log.log_end_offset(), Offset(3));
    assert!(matches!(
        append(&mut log, &idem(7, 3, 3)),
        LeaderAppend::Appended(_)
    ));
}

#[test]
fn clean_reopen_loads_the_snapshot_written_at_close() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::create(dir.path(), config(), Offset(0)).unwrap();
    two_producers(&mut log, 4);
    let before = log.producer_state().clone();
    log.close().unwrap();
    assert!(producer_snapshot::list(dir.path())
        .unwrap()
        .contains(&Offset(24)));
    drop(log);
    let mut log = open(dir.path(), true, Offset(24));
    assert_eq!(log.producer_state(), &before);
    // The last five batches of each producer are still recognised.
    assert!(append(&mut log, &idem(1, 0, 9)).is_duplicate());
    assert!(append(&mut log, &idem(2, 0, 0)).is_duplicate());
}

#[test]
fn after_a_crash_the_state_is_the_roll_snapshot_plus_a_replay_of_later_batches() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::create(dir.path(), config(), Offset(0)).unwrap();
    two_producers(&mut log, 14); // 28 batches, 84 offsets, segments at 0, 27, 54, 81
    assert_eq!(log.segment_count(), 4);
    assert_eq!(
        producer_snapshot::list(dir.path()).unwrap(),
        vec![Offset(27), Offset(54), Offset(81)],
        "one snapshot at every roll"
    );
    let before = log.producer_state().clone();
    drop(log); // a crash: no close, no snapshot at the log end
    let mut log = open(dir.path(), false, Offset(54));
    assert_eq!(log.producer_state(), &before);
    assert_eq!(log.producer_state(), &rebuilt_from_scratch(&log));
    // Every one of the last five batches of producer 2 is a duplicate, the next one is not.
    for seq in (27..42).step_by(3) {
        assert!(
            append(&mut log, &idem(2, 0, seq)).is_duplicate(),
            "seq {seq}"
        );
    }
    assert!(!append(&mut log, &idem(2, 0, 42)).is_duplicate());
}

#[test]
fn damaged_snapshots_are_deleted_and_the_state_rebuilt_from_an_older_one_or_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::create(dir.path(), config(), Offset(0)).unwrap();
    two_producers(&mut log, 14);
    let before = log.producer_state().clone();
    drop(log);
    let snap = |o| producer_snapshot::path(dir.path(), Offset(o));
    let mut raw = fs::read(snap(81)).unwrap();
    let last = raw.len() - 1;
    raw[last] ^= 1;
    fs::write(snap(81), raw).unwrap();
    let log = open(dir.path(), false, Offset(81));
    assert_eq!(log.producer_state(), &before);
    assert!(!snap(81).exists(), "the damaged snapshot is gone");
    drop(log);
    // With every snapshot unreadable the whole log is replayed.
    for o in producer_snapshot::list(dir.path()).unwrap() {
        fs::write(producer_snapshot::path(dir.path(), o), b"garbage").unwrap();
    }
    let log = open(dir.path(), false, Offset(81));
    assert_eq!(log.producer_state(), &before);
    assert!(producer_snapshot::list(dir.path()).unwrap().is_empty());
}

#[test]
fn snapshots_past_a_recovered_log_end_are_not_used() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::create(dir.path(), config(), Offset(0)).unwrap();
    two_producers(&mut log, 14);
    drop(log);
    // Segment 27 lost its tail: segments 54 and 81 go, and so do their snapshots.
    let torn = dir.path().join(format!("{:020}.log", 27));
    fs::OpenOptions::new()
        .write(true)
        .open(&torn)
        .unwrap()
        .set_len(4 * 112 + 50)
        .unwrap();
    let mut log = open(dir.path(), false, Offset(27));
    assert_eq!(log.log_end_offset(), Offset(39));
    assert_eq!(
        producer_snapshot::list(dir.path()).unwrap(),
        vec![Offset(27)]
    );
    assert_eq!(log.producer_state(), &rebuilt_from_scratch(&log));
    // Producer 2's last surviving batch is at 33..36 with sequences 15..=17: its lost batches
    // from sequence 18 on are new again, and the next one is accepted and written.
    let e = log.producer_state().get(ProducerId(2)).unwrap();
    assert_eq!(e.last_seq(), Sequence(17));
    assert_eq!(e.last_offset(), Offset(35));
    assert!(!append(&mut log, &idem(2, 0, 18)).is_duplicate());
}

#[test]
fn truncation_rebuilds_the_state_and_deletes_later_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::create(dir.path(), config(), Offset(0)).unwrap();
    two_producers(&mut log, 14);
    log.truncate_to(Offset(30)).unwrap();
    assert_eq!(
        producer_snapshot::list(dir.path()).unwrap(),
        vec![Offset(27)]
    );
    assert_eq!(log.producer_state(), &rebuilt_from_scratch(&log));
    assert_eq!(
        log.producer_state().get(ProducerId(2)).unwrap().last_seq(),
        Sequence(14)
    );
    log.truncate_fully_and_start_at(Offset(100)).unwrap();
    assert!(log.producer_state().is_empty());
    assert!(producer_snapshot::list(dir.path()).unwrap().is_empty());
}

#[test]
fn retention_drops_the_producers_and_snapshots_of_deleted_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::create(dir.path(), config(), Offset(0)).unwrap();
    // Producer 9 writes only into the first segment; 1 and 2 keep writing.
    append(&mut log, &idem(9, 0, 0));
    two_producers(&mut log, 14);
    assert_eq!(log.producer_state().len(), 3);
    log.advance_log_start(Offset(27)).unwrap();
    assert_eq!(log.producer_state().len(), 2, "producer 9 had nothing left");
    let deleted = log.enforce_retention(0, log.log_end_offset()).unwrap();
    assert_eq!(deleted, 1);
    let snapshots = producer_snapshot::list(dir.path()).unwrap();
    assert_eq!(snapshots.first(), Some(&Offset(27)), "{snapshots:?}");
    // An unclean reopen does not bring producer 9 back from an older snapshot.
    drop(log);
    let opts = OpenOptions {
        clean_shutdown: false,
        recovery_point: Offset(27),
        log_start_offset: Offset(27),
    };
    let (log, _) = PartitionLog::open(dir.path(), config(), opts).unwrap();
    assert!(log.producer_state().get(ProducerId(9)).is_none());
    assert_eq!(log.producer_state().len(), 2);
}

#[test]
fn a_follower_builds_the_same_state_as_its_leader_from_the_copied_batches() {
    let leader_dir = tempfile::tempdir().unwrap();
    let follower_dir = tempfile::tempdir().unwrap();
    let mut leader = PartitionLog::create(leader_dir.path(), config(), Offset(0)).unwrap();
    let mut follower = PartitionLog::create(follower_dir.path(), config(), Offset(0)).unwrap();
    two_producers(&mut leader, 3);
    append(&mut leader, &idem(1, 1, 0)); // producer 1 bumps its epoch
    let mut at = Offset(0);
    while let Some(b) = leader.read_batch(at).unwrap() {
        at = b.header().next_offset();
        follower.append_as_follower(&b, 0).unwrap();
    }
    assert_eq!(follower.producer_state(), leader.producer_state());
    assert_eq!(
        follower
            .producer_state()
            .get(ProducerId(1))
            .unwrap()
            .epoch(),
        ProducerEpoch(1)
    );
}

#[test]
fn expired_producers_are_forgotten_and_then_accepted_at_any_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::create(dir.path(), config(), Offset(0)).unwrap();
    append(&mut log, &idem(5, 0, 0)); // max timestamp 1_002
    assert_eq!(log.remove_expired_producers(1_500, 1_000), 0);
    assert_eq!(log.remove_expired_producers(2_002, 1_000), 1);
    assert!(log.producer_state().is_empty());
    assert!(!append(&mut log, &idem(5, 0, 300)).is_duplicate());
}
