//! Operation-sequence property test of `PartitionLog`, after Redpanda's storage `opfuzz`:
//! random sequences of appends, rolls, reads, truncations, log-start moves with retention,
//! flushes, crashes (drop without close, lose part of the un-flushed tail, reopen unclean) and
//! clean restarts, each checked against a plain in-memory model of segments and batches.
//!
//! After every operation: the log's end, start, recovery point, segment count and size equal
//! the model's; a read from every offset serves the model's batch holding it, byte for byte and
//! CRC-valid; the whole log reads back as the model's batches; the leader-epoch cache and the
//! timestamp lookups answer as the model's batches say. A crash may lose only a suffix at or
//! above the recovery point. Some appends come from idempotent producers (which sometimes bump
//! their epoch) and some are their retries: a retry is answered with the original offsets and
//! writes nothing, and the producer state always equals what a replay of the model's batches
//! builds, whatever truncation, retention, crash or restart came before.
//!
//! `PROPTEST_CASES` raises the case count for a longer soak.

use std::fs;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use ferrymq_log::batch::testing::{batch, batch_with_producer};
use ferrymq_log::batch::{validate_produce_records, BatchHeader, HEADER_BYTES};
use ferrymq_log::producer_state::{IdempotentBatch, ProducerStateTable, RetainedBatch};
use ferrymq_log::{Error, LeaderAppend, LogConfig, OpenOptions, PartitionLog, ValidatedBatch};
use ferrymq_types::{LeaderEpoch, Offset, ProducerEpoch, ProducerId, Sequence};
use proptest::prelude::*;
use proptest::sample::Index;

/// One step of a sequence. Offsets are chosen as an `Index` into the range that makes sense
/// when the step runs, so that shrinking keeps sequences meaningful.
#[derive(Debug, Clone)]
enum Op {
    /// Append a batch of `records` records of `value_bytes` bytes each, as leader; the epoch
    /// first grows by one when `new_epoch`. With `producer`, the batch is that idempotent
    /// producer's next one, after it bumps its own epoch when `bump_producer_epoch`.
    Append {
        records: usize,
        value_bytes: usize,
        new_epoch: bool,
        producer: Option<usize>,
        bump_producer_epoch: bool,
    },
    /// An idempotent producer resends one of the batches the log remembers for it.
    Retry { producer: usize, which: Index },
    /// Roll the active segment.
    Roll,
    /// Read at an offset in `[log_start - 1, leo + 1]`, up to an upper bound in
    /// `[offset, leo + 2]`.
    Read {
        at: Index,
        upper: Index,
        max_bytes: usize,
        min_one: bool,
    },
    /// Truncate to an offset in `[0, leo + 1]`.
    TruncateTo { at: Index },
    /// Move the log start to an offset in `[log_start, leo + 1]`, then enforce retention with
    /// the HW at the log end.
    AdvanceLogStart { at: Index },
    /// Enforce `retention.bytes = limit` once.
    RetainBytes { limit: u64 },
    /// Take a flush job, run it, report it (through either reporting method).
    Flush { by_job: bool },
    /// A flush job whose report arrives after a truncation and a new append.
    FlushOvertakenByTruncation { at: Index },
    /// Drop the log without closing it, cut up to `cut` of the un-flushed bytes off the active
    /// segment, reopen unclean from the last recovery point.
    Crash { cut: Index },
    /// Close and reopen clean.
    CleanRestart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => (
            1usize..=6,
            0usize..=300,
            prop::bool::weighted(0.15),
            prop::option::weighted(0.6, 0..PRODUCERS),
            prop::bool::weighted(0.1),
        )
            .prop_map(|(records, value_bytes, new_epoch, producer, bump_producer_epoch)| {
                Op::Append { records, value_bytes, new_epoch, producer, bump_producer_epoch }
            }),
        3 => (0..PRODUCERS, any::<Index>()).prop_map(|(producer, which)| Op::Retry { producer, which }),
        1 => Just(Op::Roll),
        3 => (any::<Index>(), any::<Index>(), 1usize..=3000, any::<bool>()).prop_map(
            |(at, upper, max_bytes, min_one)| Op::Read { at, upper, max_bytes, min_one }
        ),
        1 => any::<Index>().prop_map(|at| Op::TruncateTo { at }),
        1 => any::<Index>().prop_map(|at| Op::AdvanceLogStart { at }),
        1 => (0u64..=6000).prop_map(|limit| Op::RetainBytes { limit }),
        2 => any::<bool>().prop_map(|by_job| Op::Flush { by_job }),
        1 => any::<Index>().prop_map(|at| Op::FlushOvertakenByTruncation { at }),
        1 => any::<Index>().prop_map(|cut| Op::Crash { cut }),
        1 => Just(Op::CleanRestart),
    ]
}

/// Idempotent producers taking part; their ids are `PRODUCER_ID_BASE + index`.
const PRODUCERS: usize = 3;
const PRODUCER_ID_BASE: i64 = 500;

/// A batch as the model expects it on disk: offsets assigned, epoch stamped.
#[derive(Debug, Clone)]
struct ModelBatch {
    /// The idempotent producer's fields, if it came from one.
    producer: Option<IdempotentBatch>,
    base: i64,
    records: i64,
    epoch: i32,
    /// The batch's largest record timestamp (the model's timestamps only grow).
    max_timestamp: i64,
    bytes: Bytes,
}

impl ModelBatch {
    fn last(&self) -> i64 {
        self.base + self.records - 1
    }
    fn next(&self) -> i64 {
        self.base + self.records
    }
    fn len(&self) -> u64 {
        self.bytes.len() as u64
    }
}

#[derive(Debug, Clone)]
struct ModelSegment {
    base: i64,
    batches: Vec<ModelBatch>,
}

impl ModelSegment {
    fn new(base: i64) -> ModelSegment {
        ModelSegment {
            base,
            batches: Vec::new(),
        }
    }
    fn size(&self) -> u64 {
        self.batches.iter().map(ModelBatch::len).sum()
    }
    fn next(&self) -> i64 {
        self.batches.last().map_or(self.base, ModelBatch::next)
    }
}

/// What the log should hold: its segments and their batches, and the offsets bounding it.
#[derive(Debug)]
struct Model {
    segments: Vec<ModelSegment>,
    log_start: i64,
    /// The recovery point: everything below it was fsynced.
    flushed: i64,
    /// The epoch the next append uses.
    epoch: i32,
    segment_bytes: u64,
}

impl Model {
    fn leo(&self) -> i64 {
        self.segments.last().expect("a segment").next()
    }

    fn batches(&self) -> impl Iterator<Item = &ModelBatch> {
        self.segments.iter().flat_map(|s| s.batches.iter())
    }

    fn size(&self) -> u64 {
        self.segments.iter().map(ModelSegment::size).sum()
    }

    /// The log's roll rule: a non-empty active segment is closed before it would pass
    /// `segment.bytes`.
    fn append(&mut self, b: ModelBatch) {
        let active = self.segments.last().expect("a segment");
        if !active.batches.is_empty() && active.size() + b.len() > self.segment_bytes {
            self.roll();
        }
        self.segments.last_mut().expect("a segment").batches.push(b);
    }

    fn roll(&mut self) {
        let leo = self.leo();
        if self.segments.last().expect("a segment").base != leo {
            self.segments.push(ModelSegment::new(leo));
        }
    }

    fn truncate_to(&mut self, end: i64) {
        if end >= self.leo() {
            return;
        }
        if end <= self.segments[0].base {
            self.segments = vec![ModelSegment::new(end)];
            self.log_start = end;
            self.flushed = end;
            return;
        }
        self.segments.retain(|s| s.base < end);
        let active = self.segments.last_mut().expect("a segment below end");
        active.batches.retain(|b| b.last() < end);
        let leo = self.leo();
        self.flushed = self.flushed.min(leo);
        self.log_start = self.log_start.min(leo);
    }

    /// Retention with the HW at the log end: delete the oldest closed segments while they
    /// lie below the log start or the log is over `retention_bytes`.
    fn retain(&mut self, retention_bytes: Option<u64>) {
        let mut total = self.size();
        while self.segments.len() > 1 {
            let first = &self.segments[0];
            let over_size = retention_bytes.is_some_and(|r| total - first.size() >= r);
            if !(first.next() <= self.log_start || over_size) {
                break;
            }
            total -= first.size();
            self.segments.remove(0);
        }
        self.log_start = self.log_start.max(self.segments[0].base);
    }

    /// The batch holding `offset`.
    fn batch_holding(&self, offset: i64) -> Option<&ModelBatch> {
        self.batches()
            .find(|b| b.base <= offset && offset <= b.last())
    }
}

struct Harness {
    dir: tempfile::TempDir,
    config: LogConfig,
    log: Option<PartitionLog>,
    model: Model,
    next_timestamp: i64,
    /// Each idempotent producer's own epoch (it only grows; the log may know an older one).
    producer_epochs: [i16; PRODUCERS],
}

impl Harness {
    fn new(config: LogConfig) -> Harness {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = PartitionLog::create(&dir.path().join("p-0"), config.clone(), Offset(0))
            .expect("create");
        let model = Model {
            segments: vec![ModelSegment::new(0)],
            log_start: 0,
            flushed: 0,
            epoch: 0,
            segment_bytes: config.segment_bytes as u64,
        };
        Harness {
            dir,
            config,
            log: Some(log),
            model,
            next_timestamp: 1_000,
            producer_epochs: [0; PRODUCERS],
        }
    }

    fn log(&mut self) -> &mut PartitionLog {
        self.log.as_mut().expect("log is open")
    }

    fn log_dir(&self) -> PathBuf {
        self.dir.path().join("p-0")
    }

    fn run(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match op {
            Op::Append {
                records,
                value_bytes,
                new_epoch,
                producer,
                bump_producer_epoch,
            } => {
                if let (Some(p), true) = (producer, bump_producer_epoch) {
                    self.producer_epochs[*p] += 1;
                }
                self.append(*records, *value_bytes, *new_epoch, *producer)
            }
            Op::Retry { producer, which } => self.retry(*producer, which)?,
            Op::Roll => {
                self.log().roll().expect("roll");
                self.model.roll();
            }
            Op::Read {
                at,
                upper,
                max_bytes,
                min_one,
            } => self.random_read(at, upper, *max_bytes, *min_one)?,
            Op::TruncateTo { at } => {
                let end = at.index(self.model.leo() as usize + 2) as i64;
                self.log().truncate_to(Offset(end)).expect("truncate");
                self.model.truncate_to(end);
            }
            Op::AdvanceLogStart { at } => {
                let (start, leo) = (self.model.log_start, self.model.leo());
                let target = start + at.index((leo - start) as usize + 2) as i64;
                let moved = self
                    .log()
                    .advance_log_start(Offset(target))
                    .expect("advance");
                self.model.log_start = self.model.log_start.max(target.min(leo));
                prop_assert_eq!(moved, Offset(self.model.log_start));
                self.log()
                    .enforce_retention(0, Offset(leo))
                    .expect("retention");
                self.model.retain(None);
            }
            Op::RetainBytes { limit } => {
                let config = LogConfig {
                    retention_bytes: *limit as i64,
                    ..self.config.clone()
                };
                let leo = Offset(self.model.leo());
                let log = self.log();
                log.set_config(config);
                log.enforce_retention(0, leo).expect("retention");
                let config = self.config.clone();
                self.log().set_config(config);
                self.model.retain(Some(*limit));
            }
            Op::Flush { by_job } => {
                let log = self.log();
                let job = log.flush_job();
                job.run().expect("fsync");
                if *by_job {
                    log.mark_job_flushed(&job);
                } else {
                    log.mark_flushed(job.upto);
                }
                self.model.flushed = self.model.leo();
            }
            Op::FlushOvertakenByTruncation { at } => {
                let job = self.log().flush_job();
                job.run().expect("fsync");
                let leo = self.model.leo();
                let end = at.index(leo as usize + 1) as i64;
                self.log().truncate_to(Offset(end)).expect("truncate");
                self.model.truncate_to(end);
                self.append(2, 50, false, None);
                self.log().mark_job_flushed(&job);
                if end == leo {
                    // Nothing was cut: the job still covers what it synced.
                    self.model.flushed = leo;
                }
            }
            Op::Crash { cut } => self.crash(cut)?,
            Op::CleanRestart => self.clean_restart(),
        }
        Ok(())
    }

    /// The next batch of idempotent producer `p` as the log's state says: its sequence
    /// continues the log's last batch of its current epoch, or restarts at 0 in a new epoch.
    fn next_sequence(&self, p: usize) -> (ProducerId, ProducerEpoch, Sequence) {
        let id = ProducerId(PRODUCER_ID_BASE + p as i64);
        let epoch = ProducerEpoch(self.producer_epochs[p]);
        let log = self.log.as_ref().expect("open");
        let seq = match log.producer_state().get(id) {
            Some(e) if e.epoch() == epoch => e.last_seq().next(),
            _ => Sequence(0),
        };
        (id, epoch, seq)
    }

    fn append(
        &mut self,
        records: usize,
        value_bytes: usize,
        new_epoch: bool,
        producer: Option<usize>,
    ) {
        if new_epoch {
            self.model.epoch += 1;
        }
        let value = vec![b'v'; value_bytes];
        let values: Vec<&[u8]> = (0..records).map(|_| value.as_slice()).collect();
        let raw = match producer {
            Some(p) => {
                let (id, epoch, seq) = self.next_sequence(p);
                batch_with_producer(&values, self.next_timestamp, id.0, epoch.0, seq.0)
            }
            None => batch(&values, self.next_timestamp),
        };
        let produced = validate_produce_records(raw).expect("valid batch");
        self.next_timestamp += records as i64;
        let epoch = LeaderEpoch(self.model.epoch);
        let appended = self
            .log()
            .append_as_leader(&produced, epoch, 0)
            .expect("append");
        assert!(
            matches!(appended, LeaderAppend::Appended(_)),
            "{appended:?}"
        );
        let info = appended.info();
        let base = self.model.leo();
        assert_eq!(info.base_offset, Offset(base));
        let mut stored = produced.rewritten_prefix(Offset(base), epoch).to_vec();
        stored.extend_from_slice(produced.tail());
        self.model.append(ModelBatch {
            producer: IdempotentBatch::from_header(produced.header()),
            base,
            records: records as i64,
            epoch: epoch.0,
            max_timestamp: produced.header().max_timestamp,
            bytes: Bytes::from(stored),
        });
    }

    /// Resends one of the batches the log remembers for producer `p` (same epoch and sequence
    /// range; the records need not be the same, the log does not compare them): it must be
    /// answered with that batch's offsets, and nothing may change.
    fn retry(&mut self, p: usize, which: &Index) -> Result<(), TestCaseError> {
        let id = ProducerId(PRODUCER_ID_BASE + p as i64);
        let log = self.log.as_ref().expect("open");
        let Some(entry) = log.producer_state().get(id) else {
            return Ok(());
        };
        let batches: Vec<RetainedBatch> = entry.batches().copied().collect();
        let original = batches[which.index(batches.len())];
        let records = (original.last_seq.0 - original.first_seq.0 + 1) as usize;
        let values: Vec<&[u8]> = (0..records).map(|_| &b"retry"[..]).collect();
        let raw = batch_with_producer(
            &values,
            self.next_timestamp,
            id.0,
            entry.epoch().0,
            original.first_seq.0,
        );
        let resent = validate_produce_records(raw).expect("valid batch");
        let (size, leo) = (log.size_bytes(), log.log_end_offset());
        let epoch = LeaderEpoch(self.model.epoch);
        let answer = self
            .log()
            .append_as_leader(&resent, epoch, 0)
            .expect("a retry is not an error");
        let LeaderAppend::Duplicate(info) = answer else {
            return Err(TestCaseError::fail(format!("retry appended: {answer:?}")));
        };
        prop_assert_eq!(info.base_offset, original.first_offset);
        prop_assert_eq!(info.last_offset, original.last_offset);
        prop_assert_eq!(self.log().size_bytes(), size);
        prop_assert_eq!(self.log().log_end_offset(), leo);
        Ok(())
    }

    /// A consumer's read at a random offset, upper bound and size, checked against the rules:
    /// out of range outside `[log_start, leo]`; otherwise a prefix of the model's batches from
    /// the one holding the offset and below the upper bound, at most `max_bytes` long unless
    /// the first batch alone is longer and `min_one` is set.
    fn random_read(
        &mut self,
        at: &Index,
        upper: &Index,
        max_bytes: usize,
        min_one: bool,
    ) -> Result<(), TestCaseError> {
        let (start, leo) = (self.model.log_start, self.model.leo());
        let offset = (start - 1).max(0) + at.index((leo - (start - 1).max(0)) as usize + 2) as i64;
        let upper = offset + upper.index((leo + 2 - offset).max(0) as usize + 1) as i64;
        let log = self.log.as_ref().expect("open");
        let result = log.read(Offset(offset), max_bytes, Offset(upper), min_one);
        if offset < start || offset > leo {
            prop_assert!(
                matches!(result, Err(Error::OffsetOutOfRange { .. })),
                "{:?}",
                result
            );
            return Ok(());
        }
        let served = match result.expect("in range").slice {
            Some(slice) => slice.read().expect("read"),
            None => Bytes::new(),
        };
        let eligible: Vec<&ModelBatch> = self
            .model
            .batches()
            .filter(|b| b.last() >= offset && b.last() < upper.min(leo))
            .collect();
        let Some(first) = eligible.first() else {
            prop_assert!(
                served.is_empty(),
                "nothing below the upper bound, got {} bytes",
                served.len()
            );
            return Ok(());
        };
        if served.is_empty() {
            prop_assert!(
                !min_one && first.len() > max_bytes as u64,
                "nothing served at {}",
                offset
            );
            return Ok(());
        }
        // The log serves from one segment at a time: compare with that segment's batches.
        let same_segment: Vec<u8> = self
            .model
            .segments
            .iter()
            .find(|s| s.batches.iter().any(|b| b.base == first.base))
            .expect("segment of the batch")
            .batches
            .iter()
            .filter(|b| b.base >= first.base && b.last() < upper.min(leo))
            .flat_map(|b| b.bytes.iter().copied())
            .collect();
        prop_assert!(
            served.len() <= same_segment.len(),
            "served past the upper bound"
        );
        prop_assert_eq!(&served[..], &same_segment[..served.len()]);
        let limit = if min_one {
            max_bytes.max(first.len() as usize)
        } else {
            max_bytes
        };
        prop_assert!(
            served.len() <= limit,
            "{} bytes for max_bytes {}",
            served.len(),
            max_bytes
        );
        prop_assert!(
            served.len() as u64 >= first.len(),
            "the first batch is whole"
        );
        check_whole_batches(served)?;
        Ok(())
    }

    fn crash(&mut self, cut: &Index) -> Result<(), TestCaseError> {
        let recovery_point = self.log().recovery_point().0;
        let leo_before = self.model.leo();
        drop(self.log.take());
        // Only bytes at or above the recovery point may be lost, and only those of the active
        // segment, as when the OS had not written back the end of the file.
        let active = self.model.segments.last().expect("a segment").clone();
        let safe: u64 = active
            .batches
            .iter()
            .filter(|b| b.base < recovery_point)
            .map(ModelBatch::len)
            .sum();
        let cut_bytes = cut.index((active.size() - safe) as usize + 1) as u64;
        let path = segment_path(&self.log_dir(), active.base);
        let file = fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open segment");
        file.set_len(active.size() - cut_bytes).expect("cut");
        drop(file);
        let opts = OpenOptions {
            clean_shutdown: false,
            recovery_point: Offset(recovery_point),
            log_start_offset: Offset(self.model.log_start),
        };
        let (log, report) =
            PartitionLog::open(&self.log_dir(), self.config.clone(), opts).expect("reopen");
        // The model keeps the active segment's batches that survived whole.
        let kept_bytes = active.size() - cut_bytes;
        let mut end = 0;
        let model_active = self.model.segments.last_mut().expect("a segment");
        model_active.batches.retain(|b| {
            end += b.len();
            end <= kept_bytes
        });
        let leo = self.model.leo();
        self.model.log_start = self.model.log_start.min(leo);
        self.model.flushed = leo;
        prop_assert!(
            leo >= recovery_point,
            "lost flushed data: leo {} < rp {}",
            leo,
            recovery_point
        );
        prop_assert!(leo <= leo_before);
        prop_assert_eq!(
            report.truncated_bytes,
            kept_bytes - self.model.segments.last().expect("seg").size()
        );
        self.log = Some(log);
        Ok(())
    }

    fn clean_restart(&mut self) {
        let mut log = self.log.take().expect("open");
        log.close().expect("close");
        let recovery_point = log.recovery_point();
        drop(log);
        let opts = OpenOptions {
            clean_shutdown: true,
            recovery_point,
            log_start_offset: Offset(self.model.log_start),
        };
        let (log, report) =
            PartitionLog::open(&self.log_dir(), self.config.clone(), opts).expect("reopen");
        assert_eq!(report.segments_scanned, 0);
        assert_eq!(report.indexes_rebuilt, 0, "close wrote every index");
        self.model.flushed = self.model.leo();
        self.log = Some(log);
    }

    /// Everything the model says, checked against the log.
    fn check(&self) -> Result<(), TestCaseError> {
        let log = self.log.as_ref().expect("open");
        let m = &self.model;
        let leo = m.leo();
        prop_assert_eq!(log.log_end_offset(), Offset(leo));
        prop_assert_eq!(log.log_start_offset(), Offset(m.log_start));
        prop_assert_eq!(log.recovery_point(), Offset(m.flushed));
        prop_assert!(log.recovery_point() <= log.log_end_offset());
        prop_assert_eq!(log.segment_count(), m.segments.len());
        prop_assert_eq!(log.size_bytes(), m.size());
        if m.log_start > 0 {
            let below = log.read(Offset(m.log_start - 1), 1000, Offset(leo), true);
            let out_of_range = matches!(below, Err(Error::OffsetOutOfRange { .. }));
            prop_assert!(out_of_range, "read below the log start: {:?}", below);
        }
        let past_end = log.read(Offset(leo + 1), 1000, Offset(leo + 1), true);
        let out_of_range = matches!(past_end, Err(Error::OffsetOutOfRange { .. }));
        prop_assert!(out_of_range, "read past the log end: {:?}", past_end);
        prop_assert!(log
            .read(Offset(leo), 1000, Offset(leo), true)
            .expect("at leo")
            .slice
            .is_none());
        // A one-byte read with min_one from every offset serves exactly the batch holding it.
        for offset in m.log_start..leo {
            let expected = m.batch_holding(offset).expect("no gaps in a leader's log");
            let slice = log
                .read(Offset(offset), 1, Offset(leo), true)
                .expect("read")
                .slice;
            let served = slice.expect("a batch").read().expect("read");
            prop_assert_eq!(&served, &expected.bytes, "read at {}", offset);
        }
        self.check_sequential_read()?;
        self.check_epochs(log)?;
        self.check_producers(log)?;
        self.check_timestamps(log)
    }

    /// The producer state is what recording the model's batches in order builds, less the
    /// producers with nothing at or past the log start: the same producers, epochs, last
    /// sequences and offsets, and the same remembered batches at or past the log start. Below
    /// it they may differ: a snapshot may remember batches of deleted segments that a replay
    /// cannot see, and a producer evicted and back since has forgotten its older batches.
    fn check_producers(&self, log: &PartitionLog) -> Result<(), TestCaseError> {
        let mut expected = ProducerStateTable::default();
        for b in self.model.batches() {
            if let Some(p) = &b.producer {
                expected.record(p, Offset(b.base), Offset(b.last()));
            }
        }
        expected.evict_below(Offset(self.model.log_start));
        let actual = log.producer_state();
        let log_start = Offset(self.model.log_start);
        let live = |b: &&RetainedBatch| b.last_offset >= log_start;
        prop_assert_eq!(actual.len(), expected.len());
        for ((id, e), (actual_id, a)) in expected.entries().zip(actual.entries()) {
            prop_assert_eq!(id, actual_id);
            prop_assert_eq!(e.epoch(), a.epoch(), "producer {}", id);
            prop_assert_eq!(e.last_seq(), a.last_seq(), "producer {}", id);
            prop_assert_eq!(e.last_offset(), a.last_offset(), "producer {}", id);
            let e_live: Vec<_> = e.batches().filter(live).collect();
            let a_live: Vec<_> = a.batches().filter(live).collect();
            prop_assert_eq!(e_live, a_live, "producer {}", id);
        }
        Ok(())
    }

    /// Timestamps only grow in the model (record k of a batch has the batch's first timestamp
    /// plus k), so a batch's max timestamp finds its last record; below the log start the first
    /// live record after it answers. The newest batch holds the max timestamp.
    fn check_timestamps(&self, log: &PartitionLog) -> Result<(), TestCaseError> {
        let start = self.model.log_start;
        for b in self.model.batches() {
            let found = log.offset_for_timestamp(b.max_timestamp).expect("lookup");
            let expected = (b.last() >= start).then(|| (Offset(b.last()), b.max_timestamp));
            // A batch wholly below the log start is skipped: the next live record answers.
            let expected = expected.or_else(|| {
                let next = self.model.batches().find(|n| n.last() >= start)?;
                let o = next.base.max(start);
                Some((Offset(o), next.max_timestamp - (next.last() - o)))
            });
            prop_assert_eq!(found, expected, "timestamp {}", b.max_timestamp);
        }
        let newest = self
            .model
            .batches()
            .last()
            .map(|b| (Offset(b.last()), b.max_timestamp));
        prop_assert_eq!(log.max_timestamp().expect("max timestamp"), newest);
        let after = self
            .model
            .batches()
            .last()
            .map_or(0, |b| b.max_timestamp + 1);
        prop_assert_eq!(log.offset_for_timestamp(after).expect("lookup"), None);
        Ok(())
    }

    /// The whole log, read from the start as a consumer would, is the model's batches.
    fn check_sequential_read(&self) -> Result<(), TestCaseError> {
        let log = self.log.as_ref().expect("open");
        let (start, leo) = (self.model.log_start, self.model.leo());
        let expected: Vec<&ModelBatch> =
            self.model.batches().filter(|b| b.last() >= start).collect();
        let mut served = Vec::new();
        let mut next = start;
        while let Some(slice) = log
            .read(Offset(next), 2500, Offset(leo), true)
            .expect("read")
            .slice
        {
            let batches = check_whole_batches(slice.read().expect("read"))?;
            next = batches
                .last()
                .expect("min_one gives a batch")
                .header()
                .next_offset()
                .0;
            served.extend(batches);
        }
        prop_assert_eq!(next, leo.max(start));
        prop_assert_eq!(served.len(), expected.len());
        for (s, e) in served.iter().zip(expected) {
            prop_assert_eq!(s.bytes(), &e.bytes);
            prop_assert_eq!(s.header().leader_epoch, LeaderEpoch(e.epoch));
            prop_assert_eq!(s.header().record_count as i64, e.records);
        }
        Ok(())
    }

    /// The epoch cache, wherever the model still holds batches at or past the log start: the
    /// latest epoch is the last batch's, and each epoch ends where the next one starts.
    fn check_epochs(&self, log: &PartitionLog) -> Result<(), TestCaseError> {
        let live: Vec<&ModelBatch> = self
            .model
            .batches()
            .filter(|b| b.last() >= self.model.log_start)
            .collect();
        let Some(last) = live.last() else {
            return Ok(());
        };
        prop_assert_eq!(log.latest_epoch(), Some(LeaderEpoch(last.epoch)));
        for (i, b) in live.iter().enumerate() {
            let end = live[i..]
                .iter()
                .find(|n| n.epoch > b.epoch)
                .map_or(self.model.leo(), |n| n.base);
            let answer = log.end_offset_for_epoch(LeaderEpoch(b.epoch));
            prop_assert_eq!(
                answer,
                Some((LeaderEpoch(b.epoch), Offset(end))),
                "epoch {}",
                b.epoch
            );
        }
        Ok(())
    }
}

/// Splits served bytes into whole batches, each CRC-checked; a partial tail is allowed.
fn check_whole_batches(mut bytes: Bytes) -> Result<Vec<ValidatedBatch>, TestCaseError> {
    let mut out = Vec::new();
    while bytes.len() >= HEADER_BYTES {
        let h = BatchHeader::parse(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
        if h.total_bytes() > bytes.len() {
            break;
        }
        let b = ValidatedBatch::from_stored(bytes.split_to(h.total_bytes()))
            .map_err(|e| TestCaseError::fail(format!("served a bad batch: {e}")))?;
        out.push(b);
    }
    Ok(out)
}

fn segment_path(dir: &Path, base: i64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}

fn config() -> impl Strategy<Value = LogConfig> {
    (1024u32..=4096, 64u32..=1024).prop_map(|(segment_bytes, index_interval_bytes)| LogConfig {
        segment_bytes,
        segment_ms: i64::MAX,
        retention_ms: -1,
        retention_bytes: -1,
        index_interval_bytes,
    })
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(256)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn log_matches_model_through_random_operations(
        config in config(),
        ops in prop::collection::vec(op(), 1..100),
    ) {
        let mut h = Harness::new(config);
        for op in &ops {
            h.run(op)?;
            h.check()?;
        }
    }
}
