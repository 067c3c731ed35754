//! Unit tests of `PartitionLog`: appends, reads, rolls, retention, recovery, truncation and
//! producer state, against real files in temp dirs.

use bytes::Bytes;

use super::*;
use crate::batch::testing::batch;
use crate::batch::{validate_produce_records, HEADER_BYTES};

const V: &[u8] = b"0123456789";
/// Size of a `three` batch: 61 header bytes and three 17-byte records.
const THREE_BYTES: u64 = 112;

/// Segments of 1 KiB hold nine `three` batches (27 offsets); an index entry every 200 bytes.
fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 1024,
        segment_ms: 7 * 24 * 3600 * 1000,
        retention_ms: -1,
        retention_bytes: -1,
        index_interval_bytes: 200,
    }
}

fn three(ts: i64) -> ValidatedBatch {
    validate_produce_records(batch(&[V, V, V], ts)).unwrap()
}

fn one(ts: i64) -> ValidatedBatch {
    validate_produce_records(batch(&[V], ts)).unwrap()
}

/// A batch as another replica stored it: offsets and epoch already assigned.
fn stored(base: Offset, epoch: i32, ts: i64) -> ValidatedBatch {
    let b = three(ts);
    let mut raw = b.rewritten_prefix(base, LeaderEpoch(epoch)).to_vec();
    raw.extend_from_slice(b.tail());
    ValidatedBatch::from_stored(Bytes::from(raw)).unwrap()
}

/// Appends `n` `three` batches as leader in `epoch`; batch `i` has timestamps from `ts0 + 10 i`.
fn append_many(log: &mut PartitionLog, n: usize, epoch: i32, ts0: i64) {
    for i in 0..n as i64 {
        log.append_as_leader(&three(ts0 + 10 * i), LeaderEpoch(epoch), ts0)
            .unwrap();
    }
}

/// 30 `three` batches (offsets 0..90) in four segments based at 0, 27, 54 and 81;
/// batch `i` has timestamps `1000 + 10 i ..= 1000 + 10 i + 2`.
fn four_segments(dir: &Path) -> PartitionLog {
    let mut log = PartitionLog::create(dir, config(), Offset(0)).unwrap();
    append_many(&mut log, 30, 1, 1000);
    assert_eq!(log.segment_count(), 4);
    log
}

fn open(
    dir: &Path,
    clean_shutdown: bool,
    recovery_point: Offset,
) -> (PartitionLog, RecoveryReport) {
    let opts = OpenOptions {
        clean_shutdown,
        recovery_point,
        log_start_offset: Offset(0),
    };
    PartitionLog::open(dir, config(), opts).unwrap()
}

fn seg_path(dir: &Path, base: i64, ext: &str) -> PathBuf {
    dir.join(format!("{}.{ext}", crate::segment::file_stem(Offset(base))))
}

fn log_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".log"))
        .collect();
    names.sort();
    names
}

fn flip_byte(path: &Path, position: u64) {
    let mut raw = fs::read(path).unwrap();
    raw[position as usize] ^= 0x5a;
    fs::write(path, raw).unwrap();
}

/// The whole batches at the front of `bytes`, each CRC-checked; a partial tail is dropped.
fn whole_batches(mut bytes: Bytes) -> Vec<ValidatedBatch> {
    let mut out = Vec::new();
    while bytes.len() >= HEADER_BYTES {
        let h = BatchHeader::parse(&bytes).unwrap();
        if h.total_bytes() > bytes.len() {
            break;
        }
        out.push(ValidatedBatch::from_stored(bytes.split_to(h.total_bytes())).unwrap());
    }
    out
}

fn read_slice(
    log: &PartitionLog,
    start: Offset,
    max_bytes: usize,
    upper: Offset,
    min_one: bool,
) -> Option<Bytes> {
    log.read(start, max_bytes, upper, min_one)
        .unwrap()
        .slice
        .map(|s| s.read().unwrap())
}

/// Every batch served from `start` below `upper`, read 300 bytes at a time as a consumer.
fn read_all_batches(log: &PartitionLog, start: Offset, upper: Offset) -> Vec<ValidatedBatch> {
    let mut out = Vec::new();
    let mut next = start;
    while let Some(bytes) = read_slice(log, next, 300, upper, true) {
        let batches = whole_batches(bytes);
        assert!(
            !batches.is_empty(),
            "a read with min_one returns a whole batch"
        );
        next = batches.last().expect("not empty").header().next_offset();
        out.extend(batches);
    }
    out
}

fn read_all(log: &PartitionLog, start: Offset, upper: Offset) -> Vec<BatchHeader> {
    read_all_batches(log, start, upper)
        .iter()
        .map(|b| *b.header())
        .collect()
}

fn bases(headers: &[BatchHeader]) -> Vec<i64> {
    headers.iter().map(|h| h.base_offset.0).collect()
}

/// Checks that a read from every offset in `[from, to)` starts with the batch holding it.
fn assert_every_offset_located(log: &PartitionLog, from: i64, to: i64) {
    for o in from..to {
        let bytes = read_slice(log, Offset(o), 1, log.log_end_offset(), true).unwrap();
        let first = whole_batches(bytes).remove(0);
        assert!(first.header().base_offset <= Offset(o), "offset {o}");
        assert!(first.header().last_offset() >= Offset(o), "offset {o}");
    }
}

#[test]
fn rolls_by_size_and_reads_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = four_segments(dir.path());
    assert_eq!(
        log_files(dir.path()),
        [0, 27, 54, 81].map(|b| format!("{:020}.log", b)).to_vec()
    );
    assert_eq!(log.log_end_offset(), Offset(90));
    assert_eq!(log.size_bytes(), 30 * THREE_BYTES);
    let all = read_all(&log, Offset(0), log.log_end_offset());
    assert_eq!(bases(&all), (0..30).map(|i| 3 * i).collect::<Vec<_>>());
    assert!(all.iter().all(|h| h.leader_epoch == LeaderEpoch(1)));
    assert_every_offset_located(&log, 0, 90);
}

#[test]
fn rolls_by_age() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_ms: 1000,
        ..config()
    };
    let mut log = PartitionLog::create(dir.path(), cfg, Offset(0)).unwrap();
    log.append_as_leader(&one(0), LeaderEpoch(0), 0).unwrap();
    log.append_as_leader(&one(1000), LeaderEpoch(0), 1000)
        .unwrap();
    assert_eq!(log.segment_count(), 1, "not older than segment.ms yet");
    log.append_as_leader(&one(1001), LeaderEpoch(0), 1001)
        .unwrap();
    assert_eq!(log.segment_count(), 2);
    // The new segment's age counts from its own first batch.
    log.append_as_leader(&one(2001), LeaderEpoch(0), 2001)
        .unwrap();
    assert_eq!(log.segment_count(), 2);
    log.append_as_leader(&one(2002), LeaderEpoch(0), 2002)
        .unwrap();
    assert_eq!(log.segment_count(), 3);
    assert_eq!(
        bases(&read_all(&log, Offset(0), Offset(5))),
        [0, 1, 2, 3, 4]
    );
}

#[test]
fn read_stops_at_upper_bound() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::create(dir.path(), config(), Offset(0)).unwrap();
    append_many(&mut log, 10, 1, 0);
    let bytes = read_slice(&log, Offset(0), 1 << 20, Offset(15), false).unwrap();
    assert_eq!(
        bytes.len() as u64,
        5 * THREE_BYTES,
        "exactly the batches below 15"
    );
    assert!(read_slice(&log, Offset(15), 1 << 20, Offset(15), true).is_none());
    // An upper bound inside a batch excludes that batch, even for min_one.
    assert_eq!(bases(&read_all(&log, Offset(12), Offset(16))), [12]);
    assert!(read_slice(&log, Offset(15), 1 << 20, Offset(16), true).is_none());
    // An upper bound past the log end is the log end.
    assert_eq!(bases(&read_all(&log, Offset(25), Offset(1000))), [24, 27]);
}

#[test]
fn read_returns_first_batch_whole_when_larger_than_max_bytes_with_min_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::create(dir.path(), config(), Offset(0)).unwrap();
    let big = validate_produce_records(batch(&[&[7u8; 600]], 0)).unwrap();
    log.append_as_leader(&big, LeaderEpoch(0), 0).unwrap();
    append_many(&mut log, 2, 0, 0);
    let leo = log.log_end_offset();
    let bytes = read_slice(&log, Offset(0), 100, leo, true).unwrap();
    assert_eq!(bytes.len(), big.len());
    assert!(read_slice(&log, Offset(0), 100, leo, false).is_none());
    // With room for more, the slice may end inside the next batch, as Kafka's does.
    let bytes = read_slice(&log, Offset(0), big.len() + 10, leo, true).unwrap();
    assert_eq!(bytes.len(), big.len() + 10);
    assert_eq!(whole_batches(bytes).len(), 1);
}

#[test]
fn read_below_log_start_is_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::create(dir.path(), config(), Offset(0)).unwrap();
    append_many(&mut log, 10, 1, 0);
    assert_eq!(log.advance_log_start(Offset(7)).unwrap(), Offset(7));
    let err = log.read(Offset(6), 1000, Offset(30), true).unwrap_err();
    assert!(
        matches!(
            err,
            Error::OffsetOutOfRange {
                requested: Offset(6),
                log_start: Offset(7),
                log_end: Offset(30)
            }
        ),
        "{err}"
    );
    assert!(matches!(
        log.read_batch(Offset(6)),
        Err(Error::OffsetOutOfRange { .. })
    ));
    // The batch holding the log start is served whole.
    assert_eq!(bases(&read_all(&log, Offset(7), Offset(9))), [6]);
    assert!(matches!(
        log.read(Offset(31), 1000, Offset(31), true),
        Err(Error::OffsetOutOfRange { .. })
    ));
    assert!(read_slice(&log, Offset(30), 1000, Offset(30), true).is_none());
    assert_eq!(
        log.advance_log_start(Offset(100)).unwrap(),
        Offset(30),
        "clamped to the log end"
    );
}

#[test]
fn retention_by_time_deletes_only_closed_segments_below_hw() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        retention_ms: 1000,
        ..config()
    };
    let mut log = PartitionLog::create(dir.path(), cfg, Offset(0)).unwrap();
    append_many(&mut log, 18, 1, 0); // segments at 0 and 27, timestamps below 200
    append_many(&mut log, 12, 1, 5000); // segments at 54 and 81 (active)
    assert_eq!(log.segment_count(), 4);
    let now = 5500;
    assert_eq!(
        log.enforce_retention(now, Offset(40)).unwrap(),
        1,
        "the HW holds segment 27"
    );
    assert_eq!(log.log_start_offset(), Offset(27));
    assert_eq!(log.enforce_retention(now, log.log_end_offset()).unwrap(), 1);
    assert_eq!(log.log_start_offset(), Offset(54), "segment 54 is recent");
    assert_eq!(log.enforce_retention(now, log.log_end_offset()).unwrap(), 0);
    let now = 10_000;
    // The active segment expired too but holds offsets at the HW: it is neither rolled nor deleted.
    assert_eq!(log.enforce_retention(now, Offset(85)).unwrap(), 1);
    assert_eq!(log.segment_count(), 1);
    assert_eq!(log.log_start_offset(), Offset(81));
    assert_eq!(log_files(dir.path()), [format!("{:020}.log", 81)]);
    // Once everything is below the HW the expired active segment is rolled and deleted.
    assert_eq!(log.enforce_retention(now, Offset(90)).unwrap(), 1);
    assert_eq!(log.segment_count(), 1);
    assert_eq!(log.size_bytes(), 0);
    assert_eq!(log.log_start_offset(), Offset(90));
    assert_eq!(log.log_end_offset(), Offset(90));
    let info = log
        .append_as_leader(&three(now), LeaderEpoch(1), now)
        .unwrap()
        .info();
    assert_eq!(info.base_offset, Offset(90));
}

#[test]
fn retention_by_size() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = four_segments(dir.path());
    log.set_config(LogConfig {
        retention_bytes: 2000,
        ..config()
    });
    // 3 × 1008 + 336 bytes: dropping the first leaves 2352 ≥ 2000; dropping another would
    // leave 1344 < 2000, so it stays.
    assert_eq!(log.enforce_retention(0, log.log_end_offset()).unwrap(), 1);
    assert_eq!(log.size_bytes(), 21 * THREE_BYTES);
    assert_eq!(log.log_start_offset(), Offset(27));
    assert_eq!(log.enforce_retention(0, log.log_end_offset()).unwrap(), 0);
    log.set_config(LogConfig {
        retention_bytes: 0,
        ..config()
    });
    // Never the active segment, whatever the limit.
    assert_eq!(log.enforce_retention(0, log.log_end_offset()).unwrap(), 2);
    assert_eq!(log.segment_count(), 1);
    assert_eq!(log.log_start_offset(), Offset(81));
}

#[test]
fn advance_log_start_then_retention_drops_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = four_segments(dir.path());
    log.advance_log_start(Offset(85)).unwrap();
    assert_eq!(
        log.enforce_retention(0, Offset(70)).unwrap(),
        2,
        "the HW holds segment 54"
    );
    assert_eq!(
        log.log_start_offset(),
        Offset(85),
        "log start stays inside segment 81"
    );
    assert_eq!(log.enforce_retention(0, Offset(90)).unwrap(), 1);
    assert_eq!(log.segment_count(), 1);
    assert_eq!(log.log_start_offset(), Offset(85));
    assert!(matches!(
        log.read(Offset(84), 100, Offset(90), true),
        Err(Error::OffsetOutOfRange { .. })
    ));
    assert_eq!(bases(&read_all(&log, Offset(85), Offset(90))), [84, 87]);
    let (log, _) = PartitionLog::open(
        dir.path(),
        config(),
        OpenOptions {
            clean_shutdown: false,
            recovery_point: Offset(0),
            log_start_offset: Offset(85),
        },
    )
    .unwrap();
    assert_eq!(log.log_start_offset(), Offset(85));
}

#[test]
fn truncate_to_mid_log_drops_later_segments_and_epochs() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::create(dir.path(), config(), Offset(0)).unwrap();
    append_many(&mut log, 9, 1, 0);
    append_many(&mut log, 9, 2, 0);
    append_many(&mut log, 12, 3, 0);
    assert_eq!(
        log.end_offset_for_epoch(LeaderEpoch(2)),
        Some((LeaderEpoch(2), Offset(54)))
    );
    log.truncate_to(Offset(40)).unwrap();
    // 40 lies inside batch 39..41: the log is cut before it.
    assert_eq!(log.log_end_offset(), Offset(39));
    assert_eq!(log.segment_count(), 2);
    assert_eq!(
        log_files(dir.path()),
        [0, 27].map(|b| format!("{:020}.log", b)).to_vec()
    );
    assert!(!seg_path(dir.path(), 54, "index").exists());
    assert_eq!(
        fs::metadata(seg_path(dir.path(), 27, "log")).unwrap().len(),
        4 * THREE_BYTES
    );
    assert_eq!(log.latest_epoch(), Some(LeaderEpoch(2)));
    assert_eq!(
        log.end_offset_for_epoch(LeaderEpoch(1)),
        Some((LeaderEpoch(1), Offset(27)))
    );
    assert_eq!(
        log.end_offset_for_epoch(LeaderEpoch(3)),
        Some((LeaderEpoch(2), Offset(39)))
    );
    let info = log
        .append_as_leader(&three(0), LeaderEpoch(4), 0)
        .unwrap()
        .info();
    assert_eq!(info.base_offset, Offset(39));
    assert_eq!(
        log.end_offset_for_epoch(LeaderEpoch(2)),
        Some((LeaderEpoch(2), Offset(39)))
    );
    let expected: Vec<i64> = (0..14).map(|i| 3 * i).collect();
    assert_eq!(bases(&read_all(&log, Offset(0), Offset(42))), expected);
    drop(log);
    let (log, _) = open(dir.path(), false, Offset(0));
    assert_eq!(log.log_end_offset(), Offset(42));
    assert_eq!(bases(&read_all(&log, Offset(0), Offset(42))), expected);
    assert_eq!(
        log.end_offset_for_epoch(LeaderEpoch(3)),
        Some((LeaderEpoch(2), Offset(39)))
    );
}

#[test]
fn truncate_below_an_advanced_log_start_keeps_log_start_at_most_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = four_segments(dir.path());
    log.advance_log_start(Offset(60)).unwrap();
    log.truncate_to(Offset(40)).unwrap();
    assert_eq!(log.log_end_offset(), Offset(39));
    assert_eq!(log.log_start_offset(), Offset(39));
    assert!(read_slice(&log, Offset(39), 100, Offset(39), true).is_none());
}

#[test]
fn truncate_fully_and_start_at() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = four_segments(dir.path());
    log.truncate_fully_and_start_at(Offset(1000)).unwrap();
    assert_eq!(log.log_end_offset(), Offset(1000));
    assert_eq!(log.log_start_offset(), Offset(1000));
    assert_eq!(log.recovery_point(), Offset(1000));
    assert_eq!(log.segment_count(), 1);
    assert_eq!(log.latest_epoch(), None);
    assert_eq!(log_files(dir.path()), [format!("{:020}.log", 1000)]);
    assert!(!seg_path(dir.path(), 0, "index").exists());
    let info = log
        .append_as_leader(&three(0), LeaderEpoch(7), 0)
        .unwrap()
        .info();
    assert_eq!(info.base_offset, Offset(1000));
    log.close().unwrap();
    let (log, _) = open(dir.path(), true, Offset(0));
    assert_eq!(log.log_start_offset(), Offset(1000));
    assert_eq!(log.log_end_offset(), Offset(1003));
    assert_eq!(
        log.end_offset_for_epoch(LeaderEpoch(7)),
        Some((LeaderEpoch(7), Offset(1003)))
    );
}

#[test]
fn follower_append_keeps_offsets_and_epochs() {
    let dir = tempfile::tempdir().unwrap();
    let mut leader = PartitionLog::create(&dir.path().join("leader"), config(), Offset(0)).unwrap();
    append_many(&mut leader, 6, 1, 0);
    append_many(&mut leader, 6, 4, 0);
    let batches = read_all_batches(&leader, Offset(0), Offset(36));
    assert_eq!(batches.len(), 12);
    let mut follower =
        PartitionLog::create(&dir.path().join("follower"), config(), Offset(0)).unwrap();
    for b in &batches {
        let info = follower.append_as_follower(b, 0).unwrap();
        assert_eq!(info.base_offset, b.header().base_offset);
        assert_eq!(info.log_end_offset, b.header().next_offset());
    }
    assert_eq!(
        read_all(&follower, Offset(0), Offset(36)),
        read_all(&leader, Offset(0), Offset(36))
    );
    for e in 0..6 {
        let e = LeaderEpoch(e);
        assert_eq!(
            follower.end_offset_for_epoch(e),
            leader.end_offset_for_epoch(e),
            "epoch {e}"
        );
    }
    let err = follower.append_as_follower(&batches[11], 0).unwrap_err();
    assert!(matches!(err, Error::NonContiguousAppend { .. }), "{err}");
    // An empty follower of a leader whose log starts later starts where the leader's does.
    let mut late = PartitionLog::create(&dir.path().join("late"), config(), Offset(0)).unwrap();
    late.append_as_follower(&batches[4], 0).unwrap();
    assert_eq!(late.log_start_offset(), Offset(12));
    assert_eq!(late.log_end_offset(), Offset(15));
}

#[test]
fn follower_append_far_past_the_segment_base_starts_a_segment_at_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    let far = Offset(5_000_000_000);
    let mut log = PartitionLog::create(dir.path(), config(), Offset(0)).unwrap();
    log.append_as_follower(&stored(Offset(0), 1, 0), 0).unwrap();
    log.append_as_follower(&stored(far, 2, 0), 0).unwrap();
    assert_eq!(log.log_end_offset(), far.plus(3));
    assert_eq!(bases(&read_all(&log, Offset(0), far.plus(3))), [0, far.0]);
    // The same from an empty active segment left by a roll.
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::create(dir.path(), config(), Offset(0)).unwrap();
    log.append_as_follower(&stored(Offset(0), 1, 0), 0).unwrap();
    log.roll().unwrap();
    log.append_as_follower(&stored(far, 2, 0), 0).unwrap();
    assert_eq!(bases(&read_all(&log, Offset(0), far.plus(3))), [0, far.0]);
    log.close().unwrap();
    let (log, _) = open(dir.path(), false, Offset(0));
    assert_eq!(log.log_end_offset(), far.plus(3));
}

#[test]
fn offset_for_timestamp_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = four_segments(dir.path());
    // Batch i holds offsets 3i..3i+2 with timestamps ts..ts+2: the answer is the first
    // record at or after the target, as Kafka, not its batch.
    for i in 0..30 {
        let ts = 1000 + 10 * i;
        assert_eq!(
            log.offset_for_timestamp(ts).unwrap(),
            Some((Offset(3 * i), ts)),
            "ts {ts}"
        );
        assert_eq!(
            log.offset_for_timestamp(ts + 2).unwrap(),
            Some((Offset(3 * i + 2), ts + 2))
        );
        let next = (i < 29).then(|| (Offset(3 * i + 3), ts + 10));
        assert_eq!(
            log.offset_for_timestamp(ts + 3).unwrap(),
            next,
            "ts {}",
            ts + 3
        );
    }
    assert_eq!(
        log.offset_for_timestamp(0).unwrap(),
        Some((Offset(0), 1000))
    );
    assert_eq!(log.max_timestamp().unwrap(), Some((Offset(89), 1292)));
    // Batches wholly below the log start are not an answer.
    log.advance_log_start(Offset(31)).unwrap();
    assert_eq!(
        log.offset_for_timestamp(0).unwrap(),
        Some((Offset(31), 1101))
    );
    // After a truncation the segment's newest timestamp is that of its new last batch.
    log.truncate_to(Offset(48)).unwrap();
    assert_eq!(log.max_timestamp().unwrap(), Some((Offset(47), 1152)));
    assert_eq!(
        log.offset_for_timestamp(1151).unwrap(),
        Some((Offset(46), 1151))
    );
    assert_eq!(log.offset_for_timestamp(1153).unwrap(), None);
}

#[test]
fn end_offset_for_epoch_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::create(dir.path(), config(), Offset(0)).unwrap();
    append_many(&mut log, 4, 1, 0); // 0..12
    append_many(&mut log, 6, 3, 0); // 12..30
    append_many(&mut log, 5, 5, 0); // 30..45
    let expect = |log: &PartitionLog| {
        assert_eq!(log.latest_epoch(), Some(LeaderEpoch(5)));
        assert_eq!(log.end_offset_for_epoch(LeaderEpoch(0)), None);
        assert_eq!(
            log.end_offset_for_epoch(LeaderEpoch(1)),
            Some((LeaderEpoch(1), Offset(12)))
        );
        assert_eq!(
            log.end_offset_for_epoch(LeaderEpoch(2)),
            Some((LeaderEpoch(1), Offset(12)))
        );
        assert_eq!(
            log.end_offset_for_epoch(LeaderEpoch(3)),
            Some((LeaderEpoch(3), Offset(30)))
        );
        assert_eq!(
            log.end_offset_for_epoch(LeaderEpoch(5)),
            Some((LeaderEpoch(5), Offset(45)))
        );
        assert_eq!(
            log.end_offset_for_epoch(LeaderEpoch(9)),
            Some((LeaderEpoch(5), Offset(45)))
        );
    };
    expect(&log);
    log.close().unwrap();
    let (log, _) = open(dir.path(), true, Offset(0));
    expect(&log);
    drop(log);
    let (log, _) = open(dir.path(), false, Offset(0));
    expect(&log);
    drop(log);
    // Without its checkpoint the cache is rebuilt from the batches a full scan reads.
    fs::remove_file(dir.path().join(EPOCH_CHECKPOINT)).unwrap();
    let (log, _) = open(dir.path(), false, Offset(0));
    expect(&log);
}

#[test]
fn open_drops_epochs_below_the_checkpointed_log_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::create(dir.path(), config(), Offset(0)).unwrap();
    append_many(&mut log, 4, 1, 0); // 0..12
    append_many(&mut log, 6, 3, 0); // 12..30
    log.close().unwrap();
    drop(log);
    // The log start checkpoint moved (DeleteRecords) after the epoch checkpoint was written.
    let opts = OpenOptions {
        clean_shutdown: true,
        recovery_point: Offset(30),
        log_start_offset: Offset(20),
    };
    let (log, _) = PartitionLog::open(dir.path(), config(), opts).unwrap();
    assert_eq!(log.log_start_offset(), Offset(20));
    assert_eq!(log.end_offset_for_epoch(LeaderEpoch(1)), None);
    assert_eq!(
        log.end_offset_for_epoch(LeaderEpoch(3)),
        Some((LeaderEpoch(3), Offset(30)))
    );
    let checkpoint = fs::read_to_string(dir.path().join(EPOCH_CHECKPOINT)).unwrap();
    assert_eq!(checkpoint, "0\n1\n3 20\n");
}

#[test]
fn clean_reopen_trusts_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = four_segments(dir.path());
    log.close().unwrap();
    drop(log);
    // Trusted: the indexes are loaded, not rebuilt, and nothing is cut or fsynced (every
    // batch's CRC is still checked: `corrupted_byte_in_closed_segment_below_recovery_point_
    // is_cut_at_open`).
    let (mut log, report) = open(dir.path(), true, Offset(0));
    assert_eq!(report.segments_scanned, 0);
    assert_eq!(report.indexes_rebuilt, 0);
    assert_eq!(report.truncated_bytes, 0);
    assert_eq!(log.log_end_offset(), Offset(90));
    assert_eq!(log.recovery_point(), Offset(90));
    assert_every_offset_located(&log, 0, 81);
    // An append after a trusted open goes to the end of the active segment.
    let info = log
        .append_as_leader(&three(7), LeaderEpoch(2), 0)
        .unwrap()
        .info();
    assert_eq!(info.base_offset, Offset(90));
    assert_eq!(
        fs::metadata(seg_path(dir.path(), 81, "log")).unwrap().len(),
        4 * THREE_BYTES
    );
    assert_eq!(
        log.read_batch(Offset(90))
            .unwrap()
            .unwrap()
            .header()
            .base_offset,
        Offset(90)
    );
    assert_eq!(
        log.read_batch(Offset(81))
            .unwrap()
            .unwrap()
            .header()
            .base_offset,
        Offset(81)
    );
}

#[test]
fn deleted_index_file_is_rebuilt_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = four_segments(dir.path());
    log.close().unwrap();
    drop(log);
    let index = seg_path(dir.path(), 27, "index");
    let original = fs::read(&index).unwrap();
    assert!(!original.is_empty(), "the segment has index entries");
    for clean_shutdown in [true, false] {
        fs::remove_file(&index).unwrap();
        let (mut log, report) = open(dir.path(), clean_shutdown, Offset(90));
        assert_eq!(report.indexes_rebuilt, 1, "clean_shutdown={clean_shutdown}");
        assert_eq!(report.truncated_bytes, 0);
        assert_eq!(log.log_end_offset(), Offset(90));
        assert_every_offset_located(&log, 0, 90);
        log.close().unwrap();
        assert_eq!(
            fs::read(&index).unwrap(),
            original,
            "clean_shutdown={clean_shutdown}"
        );
    }
}

#[test]
fn index_file_older_than_its_log_is_rebuilt_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = four_segments(dir.path());
    log.close().unwrap();
    drop(log);
    // An index that stops short of the log (an older file, or one emptied by a crash)
    // would send every lookup on a long scan: it is rebuilt, not trusted.
    let index = seg_path(dir.path(), 27, "index");
    let original = fs::read(&index).unwrap();
    fs::write(&index, []).unwrap();
    let (mut log, report) = open(dir.path(), true, Offset(90));
    assert_eq!(report.indexes_rebuilt, 1);
    assert_every_offset_located(&log, 27, 54);
    log.close().unwrap();
    assert_eq!(fs::read(&index).unwrap(), original);
}

#[test]
fn clean_open_of_a_torn_segment_rebuilds_instead_of_failing() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = four_segments(dir.path());
    log.close().unwrap();
    drop(log);
    let active = seg_path(dir.path(), 81, "log");
    fs::OpenOptions::new()
        .write(true)
        .open(&active)
        .unwrap()
        .set_len(2 * THREE_BYTES + 30)
        .unwrap();
    let (log, report) = open(dir.path(), true, Offset(90));
    assert_eq!(report.indexes_rebuilt, 1);
    assert_eq!(report.truncated_bytes, 30);
    assert_eq!(log.log_end_offset(), Offset(87));
    assert_eq!(log.recovery_point(), Offset(87));
}

#[test]
fn unclean_reopen_stops_at_a_batch_whose_base_offset_is_damaged() {
    let dir = tempfile::tempdir().unwrap();
    let log = four_segments(dir.path());
    drop(log);
    // The base offset lies outside the CRC: a flipped high bit makes it absurd but valid.
    let active = seg_path(dir.path(), 81, "log");
    let mut raw = fs::read(&active).unwrap();
    raw[THREE_BYTES as usize + 2] ^= 0x10;
    fs::write(&active, raw).unwrap();
    let (log, report) = open(dir.path(), false, Offset(81));
    assert_eq!(report.truncated_bytes, 2 * THREE_BYTES);
    assert_eq!(log.log_end_offset(), Offset(84));
}

#[test]
fn unclean_reopen_truncates_torn_tail_and_drops_later_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = four_segments(dir.path());
    drop(log);
    // Segment 27 lost the end of its sixth batch and everything after it.
    let torn = seg_path(dir.path(), 27, "log");
    fs::OpenOptions::new()
        .write(true)
        .open(&torn)
        .unwrap()
        .set_len(5 * THREE_BYTES + 50)
        .unwrap();
    let (mut log, report) = open(dir.path(), false, Offset(27));
    assert_eq!(report.segments_scanned, 1);
    assert_eq!(report.truncated_bytes, 50);
    assert_eq!(report.segments_dropped, 2);
    assert_eq!(log.log_end_offset(), Offset(42));
    assert_eq!(log.recovery_point(), Offset(42));
    assert_eq!(
        log_files(dir.path()),
        [0, 27].map(|b| format!("{:020}.log", b)).to_vec()
    );
    assert!(!seg_path(dir.path(), 54, "index").exists());
    assert_eq!(fs::metadata(&torn).unwrap().len(), 5 * THREE_BYTES);
    let info = log
        .append_as_leader(&three(0), LeaderEpoch(1), 0)
        .unwrap()
        .info();
    assert_eq!(info.base_offset, Offset(42));
    assert_eq!(fs::metadata(&torn).unwrap().len(), 6 * THREE_BYTES);
    assert_eq!(
        bases(&read_all(&log, Offset(0), Offset(45))),
        (0..15).map(|i| 3 * i).collect::<Vec<_>>()
    );
}

#[test]
fn unclean_reopen_cuts_zeroed_tail_and_appends_right_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = four_segments(dir.path());
    drop(log);
    // A crash after the file grew but before its data reached the disk leaves zeros.
    let active = seg_path(dir.path(), 81, "log");
    let mut raw = fs::read(&active).unwrap();
    raw.extend_from_slice(&[0u8; 500]);
    fs::write(&active, raw).unwrap();
    let (mut log, report) = open(dir.path(), false, Offset(81));
    assert_eq!(report.truncated_bytes, 500);
    assert_eq!(log.log_end_offset(), Offset(90));
    log.append_as_leader(&three(0), LeaderEpoch(1), 0).unwrap();
    assert_eq!(fs::metadata(&active).unwrap().len(), 4 * THREE_BYTES);
    assert_eq!(
        bases(&read_all(&log, Offset(81), Offset(93))),
        [81, 84, 87, 90]
    );
}

#[test]
fn corrupted_byte_in_closed_segment_below_recovery_point_is_cut_at_open() {
    // A bit rots in batch 12..15 of the first segment, inside its CRC-covered records,
    // while the broker is down; the segment lies below the recovery point, so only the
    // read-back check of trusted segments finds it. Found, the log is cut at that batch
    // (later segments go too) and a follower refetches the rest from its leader.
    for clean in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let mut log = four_segments(dir.path());
        let job = log.flush_job();
        job.run().unwrap();
        log.mark_flushed(job.upto);
        if clean {
            log.close().unwrap();
        }
        drop(log);
        flip_byte(&seg_path(dir.path(), 0, "log"), 4 * THREE_BYTES + 80);
        let (log, report) = open(dir.path(), clean, Offset(90));
        assert_eq!(log.log_end_offset(), Offset(12), "clean={clean}");
        assert_eq!(report.truncated_bytes, 5 * THREE_BYTES, "clean={clean}");
        assert_eq!(report.segments_dropped, 3, "clean={clean}");
        assert_eq!(log_files(dir.path()), ["00000000000000000000.log"]);
        assert_eq!(
            bases(&read_all(&log, Offset(0), Offset(12))),
            [0, 3, 6, 9],
            "clean={clean}"
        );
    }
}

#[test]
fn corrupted_byte_found_by_a_read_is_never_served() {
    // Rot after open: the fetch path checks every whole batch it hands out.
    let dir = tempfile::tempdir().unwrap();
    let log = four_segments(dir.path());
    flip_byte(&seg_path(dir.path(), 0, "log"), 4 * THREE_BYTES + 80);
    let slice = log
        .read(Offset(9), 1 << 20, Offset(90), true)
        .unwrap()
        .slice
        .unwrap();
    let err = slice.read().unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");
    assert!(
        err.to_string()
            .contains("corrupt batch at file position 448"),
        "{err}"
    );
    // Batches before the damaged one are still served, and so are those after it.
    assert_eq!(
        whole_batches(read_slice(&log, Offset(9), 1 << 20, Offset(12), true).unwrap()).len(),
        1
    );
    assert_eq!(
        log.read_batch(Offset(15))
            .unwrap()
            .unwrap()
            .header()
            .base_offset,
        Offset(15)
    );
    assert!(matches!(
        log.read_batch(Offset(13)).unwrap_err(),
        Error::CorruptBatch { position: 448, .. }
    ));
}

#[test]
fn flush_job_advances_recovery_point() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::create(dir.path(), config(), Offset(0)).unwrap();
    append_many(&mut log, 12, 1, 0);
    assert_eq!(log.recovery_point(), Offset(0));
    let job = log.flush_job();
    assert_eq!(job.upto, Offset(36));
    assert!(!job.is_empty());
    job.run().unwrap();
    log.mark_flushed(job.upto);
    assert_eq!(log.recovery_point(), Offset(36));
    assert!(log.flush_job().is_empty(), "nothing new to sync");
    append_many(&mut log, 1, 1, 0);
    let job = log.flush_job();
    job.run().unwrap();
    log.mark_flushed(job.upto);
    assert_eq!(log.recovery_point(), Offset(39));
}

#[test]
fn flush_job_finished_after_a_truncation_does_not_cover_new_appends() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::create(dir.path(), config(), Offset(0)).unwrap();
    append_many(&mut log, 12, 1, 0);
    let job = log.flush_job();
    job.run().unwrap();
    // While the job's completion is on its way, the log is truncated and rewritten.
    log.truncate_to(Offset(15)).unwrap();
    append_many(&mut log, 10, 2, 0);
    log.mark_flushed(job.upto);
    assert!(
        log.recovery_point() <= Offset(15),
        "rp={}",
        log.recovery_point()
    );
    let job = log.flush_job();
    job.run().unwrap();
    log.mark_job_flushed(&job);
    assert_eq!(log.recovery_point(), Offset(45));
}

#[test]
#[should_panic(expected = "leader epoch went backwards")]
fn leader_append_in_an_older_epoch_is_a_bug() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::create(dir.path(), config(), Offset(0)).unwrap();
    append_many(&mut log, 1, 3, 0);
    append_many(&mut log, 1, 2, 0);
}
