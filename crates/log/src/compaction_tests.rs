//! Behaviour of compaction over real segment files.

use std::collections::BTreeMap;
use std::fs;

use bytes::Bytes;
use ferrymq_types::{LeaderEpoch, Offset};

use super::*;
use crate::builder::key_value_batch;
use crate::config::LogConfig;
use crate::partition_log::{OpenOptions, PartitionLog};

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 600,
        segment_ms: i64::MAX,
        retention_ms: -1,
        retention_bytes: -1,
        index_interval_bytes: 100,
    }
}

const OPTS: CleanOptions = CleanOptions {
    now_ms: 10_000,
    delete_retention_ms: 1000,
    key_map_bytes_max: 1 << 20,
};

fn kv(k: &str, v: Option<&str>) -> (Bytes, Option<Bytes>) {
    (
        Bytes::from(k.to_string()),
        v.map(|v| Bytes::from(v.to_string())),
    )
}

/// Appends batches of updates: batch i sets k0..k4 to `v<i>`, at time `ts`.
fn append_updates(log: &mut PartitionLog, batches: usize, ts: i64) {
    for i in 0..batches {
        let recs: Vec<_> = (0..5)
            .map(|k| kv(&format!("k{k}"), Some(&format!("v{i}"))))
            .collect();
        log.append_as_leader(&key_value_batch(&recs, ts), LeaderEpoch(1), ts)
            .unwrap();
    }
}

fn flush(log: &mut PartitionLog) {
    let job = log.flush_job();
    job.run().unwrap();
    log.mark_job_flushed(&job);
}

/// Every record of the log: offset → (key, value).
fn contents(log: &PartitionLog) -> BTreeMap<i64, (String, Option<String>)> {
    let mut out = BTreeMap::new();
    let mut at = log.log_start_offset();
    while let Some(b) = log.read_batch(at).unwrap() {
        for r in decode_records(b.header(), b.bytes()).unwrap() {
            let s = |b: Bytes| String::from_utf8(b.to_vec()).unwrap();
            out.insert(r.offset.0, (s(r.key.unwrap()), r.value.map(s)));
        }
        at = b.header().next_offset();
    }
    out
}

fn compact(log: &mut PartitionLog, opts: &CleanOptions) -> CleanStats {
    let snap = log.clean_snapshot(log.log_end_offset());
    let cleaned = clean(&snap, opts, &mut Throttle::new(0)).unwrap();
    let stats = cleaned.stats;
    log.install_cleaned(cleaned).unwrap();
    stats
}

#[test]
fn keeps_the_latest_record_per_key_at_its_original_offset() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::create(dir.path(), config(), Offset(0)).unwrap();
    append_updates(&mut log, 20, 0);
    flush(&mut log);
    let before = contents(&log);
    assert!(log.segment_count() > 3);
    let stats = compact(&mut log, &OPTS);
    assert!(
        stats.records_removed > 0 && stats.segments_cleaned > 0,
        "{stats:?}"
    );
    let after = contents(&log);
    // Each surviving record is exactly what was at that offset before.
    for (o, rec) in &after {
        assert_eq!(before.get(o), Some(rec), "offset {o}");
    }
    // Closed segments hold each key at most once: the active one may repeat keys.
    let active_base = log.clean_snapshot(Offset(i64::MAX)).end_offset().unwrap();
    let mut closed_keys: Vec<&String> = after.range(..active_base.0).map(|(_, (k, _))| k).collect();
    let n = closed_keys.len();
    closed_keys.sort();
    closed_keys.dedup();
    assert_eq!(
        closed_keys.len(),
        n,
        "a key repeated in closed segments: {after:?}"
    );
    // The latest value of every key is unchanged.
    let latest = |m: &BTreeMap<i64, (String, Option<String>)>| {
        m.values()
            .cloned()
            .collect::<BTreeMap<String, Option<String>>>()
    };
    assert_eq!(latest(&after), latest(&before));
    // Appends and reads go on as usual afterwards.
    append_updates(&mut log, 1, 0);
    assert_eq!(contents(&log).len(), after.len() + 5);
}

#[test]
fn tombstones_are_dropped_only_after_delete_retention() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::create(dir.path(), config(), Offset(0)).unwrap();
    append_updates(&mut log, 3, 0);
    let t = key_value_batch(&[kv("k1", None)], 9_500);
    log.append_as_leader(&t, LeaderEpoch(1), 0).unwrap();
    append_updates(&mut log, 12, 0);
    // k1 is set again later, k9 only ever deleted.
    let t = key_value_batch(&[kv("k9", Some("x"))], 9_000);
    log.append_as_leader(&t, LeaderEpoch(1), 0).unwrap();
    let t = key_value_batch(&[kv("k9", None)], 9_500);
    log.append_as_leader(&t, LeaderEpoch(1), 0).unwrap();
    append_updates(&mut log, 6, 0);
    flush(&mut log);
    // At 10 000 the k9 tombstone (9 500) is 500 ms old: kept.
    compact(&mut log, &OPTS);
    let has_k9 = |log: &PartitionLog| contents(log).values().any(|(k, _)| k == "k9");
    assert!(has_k9(&log), "a fresh tombstone stays for consumers to see");
    let k9: Vec<_> = contents(&log)
        .into_values()
        .filter(|(k, _)| k == "k9")
        .collect();
    assert_eq!(
        k9,
        vec![("k9".to_string(), None)],
        "only the tombstone remains of k9"
    );
    compact(
        &mut log,
        &CleanOptions {
            now_ms: 10_500,
            ..OPTS
        },
    );
    assert!(!has_k9(&log), "an expired tombstone is gone");
}

#[test]
fn log_reopens_with_the_same_records_after_compaction_clean_or_not() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::create(dir.path(), config(), Offset(0)).unwrap();
    append_updates(&mut log, 20, 0);
    flush(&mut log);
    compact(&mut log, &OPTS);
    let after = contents(&log);
    let leo = log.log_end_offset();
    flush(&mut log);
    let rp = log.recovery_point();
    drop(log);
    for clean_shutdown in [false, true] {
        let opts = OpenOptions {
            clean_shutdown,
            recovery_point: rp,
            log_start_offset: Offset(0),
        };
        let (mut log, _) = PartitionLog::open(dir.path(), config(), opts).unwrap();
        assert_eq!(contents(&log), after, "clean_shutdown={clean_shutdown}");
        assert_eq!(log.log_end_offset(), leo);
        log.close().unwrap();
    }
}

#[test]
fn leftover_cleaned_file_from_a_crash_is_ignored_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::create(dir.path(), config(), Offset(0)).unwrap();
    append_updates(&mut log, 20, 0);
    flush(&mut log);
    let before = contents(&log);
    // A crash between writing the cleaned file and swapping it in.
    let snap = log.clean_snapshot(log.log_end_offset());
    let cleaned = clean(&snap, &OPTS, &mut Throttle::new(0)).unwrap();
    let leftover = cleaned.segments[0].segment.log_path().to_path_buf();
    assert!(leftover.exists());
    std::mem::forget(cleaned);
    drop(log);
    let opts = OpenOptions {
        clean_shutdown: false,
        recovery_point: Offset(0),
        log_start_offset: Offset(0),
    };
    let (log, _) = PartitionLog::open(dir.path(), config(), opts).unwrap();
    assert!(!leftover.exists());
    assert_eq!(contents(&log), before);
    // A crash after the old index files were removed, before the rename: rebuilt on open.
    for e in fs::read_dir(dir.path()).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "index") {
            fs::remove_file(p).unwrap();
        }
    }
    drop(log);
    let opts = OpenOptions {
        clean_shutdown: true,
        recovery_point: Offset(0),
        log_start_offset: Offset(0),
    };
    let (log, report) = PartitionLog::open(dir.path(), config(), opts).unwrap();
    assert!(report.indexes_rebuilt > 0);
    assert_eq!(contents(&log), before);
}

#[test]
fn a_segment_truncated_meanwhile_is_not_swapped() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::create(dir.path(), config(), Offset(0)).unwrap();
    append_updates(&mut log, 20, 0);
    flush(&mut log);
    let snap = log.clean_snapshot(log.log_end_offset());
    let cleaned = clean(&snap, &OPTS, &mut Throttle::new(0)).unwrap();
    log.truncate_to(Offset(40)).unwrap();
    let before = contents(&log);
    assert_eq!(log.install_cleaned(cleaned).unwrap(), 0);
    assert_eq!(contents(&log), before);
    let leftovers = fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(CLEANED_SUFFIX)
        })
        .count();
    assert_eq!(leftovers, 0, "discarded cleaned files are deleted");
}

#[test]
fn only_segments_below_the_high_watermark_and_recovery_point_are_cleanable() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::create(dir.path(), config(), Offset(0)).unwrap();
    append_updates(&mut log, 20, 0);
    assert!(
        log.clean_snapshot(log.log_end_offset()).is_empty(),
        "nothing fsynced yet"
    );
    flush(&mut log);
    let all = log.clean_snapshot(log.log_end_offset());
    let some = log.clean_snapshot(Offset(30));
    assert!(some.end_offset().unwrap() <= Offset(30));
    assert!(some.bytes() < all.bytes());
    assert_eq!(all.dirty_bytes(Offset(0)), all.bytes());
    assert_eq!(all.dirty_bytes(all.end_offset().unwrap()), 0);
}

#[test]
fn compressed_batches_are_read_and_partially_kept_ones_rewritten_uncompressed() {
    use crate::batch::BatchHeader;
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::create(dir.path(), config(), Offset(0)).unwrap();
    // A gzip batch: a=1, b=1; then a=2 in a later batch.
    let plain = key_value_batch(&[kv("a", Some("1")), kv("b", Some("1"))], 0);
    let raw = plain.bytes();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&raw[HEADER_BYTES..]).unwrap();
    let mut b = raw[..HEADER_BYTES].to_vec();
    b.extend_from_slice(&gz.finish().unwrap());
    b[21..23].copy_from_slice(&1i16.to_be_bytes());
    let len = (b.len() - 12) as i32;
    b[8..12].copy_from_slice(&len.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    let gz_batch = ValidatedBatch::from_producer(Bytes::from(b)).unwrap();
    log.append_as_leader(&gz_batch, LeaderEpoch(1), 0).unwrap();
    log.append_as_leader(
        &key_value_batch(&[kv("a", Some("2"))], 0),
        LeaderEpoch(1),
        0,
    )
    .unwrap();
    log.roll().unwrap();
    log.append_as_leader(
        &key_value_batch(&[kv("z", Some("z"))], 0),
        LeaderEpoch(1),
        0,
    )
    .unwrap();
    flush(&mut log);
    compact(&mut log, &OPTS);
    let first = log.read_batch(Offset(0)).unwrap().unwrap();
    let h: &BatchHeader = first.header();
    assert_eq!(h.compression(), 0, "rebuilt without compression");
    assert_eq!(
        (h.base_offset, h.last_offset_delta, h.record_count),
        (Offset(0), 1, 1)
    );
    assert_eq!(
        contents(&log).into_iter().collect::<Vec<_>>(),
        vec![
            (1, ("b".into(), Some("1".into()))),
            (2, ("a".into(), Some("2".into()))),
            (3, ("z".into(), Some("z".into()))),
        ]
    );
}

#[test]
fn a_full_key_map_leaves_later_segments_for_the_next_pass() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::create(dir.path(), config(), Offset(0)).unwrap();
    for i in 0..40 {
        let recs: Vec<_> = (0..5)
            .map(|k| kv(&format!("key-{i}-{k}"), Some("v")))
            .collect();
        log.append_as_leader(&key_value_batch(&recs, 0), LeaderEpoch(1), 0)
            .unwrap();
    }
    flush(&mut log);
    let snap = log.clean_snapshot(log.log_end_offset());
    let tight = CleanOptions {
        key_map_bytes_max: 800,
        ..OPTS
    };
    let cleaned = clean(&snap, &tight, &mut Throttle::new(0)).unwrap();
    assert!(
        cleaned.end < snap.end_offset().unwrap(),
        "stopped early at {}",
        cleaned.end
    );
    assert!(
        cleaned.end > Offset(0),
        "at least one segment is always mapped"
    );
}

#[test]
fn a_stopped_pass_changes_nothing_and_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::create(dir.path(), config(), Offset(0)).unwrap();
    append_updates(&mut log, 20, 0);
    flush(&mut log);
    let before = contents(&log);
    let snap = log.clean_snapshot(log.log_end_offset());
    let mut stopped = Throttle::new(0).with_stop(|| true);
    assert!(matches!(
        clean(&snap, &OPTS, &mut stopped),
        Err(Error::Interrupted)
    ));
    assert_eq!(contents(&log), before);
    let leftovers = fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(CLEANED_SUFFIX)
        })
        .count();
    assert_eq!(leftovers, 0);
}

#[test]
fn throttle_holds_the_byte_rate() {
    let mut t = Throttle::new(1_000_000);
    let start = std::time::Instant::now();
    for _ in 0..10 {
        t.pace(20_000).unwrap();
    }
    assert!(
        start.elapsed() >= Duration::from_millis(190),
        "{:?}",
        start.elapsed()
    );
}
