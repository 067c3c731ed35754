//! The idempotent-producer state of one partition replica: for each producer id, its epoch and
//! where its last five batches landed. Kafka's `ProducerStateManager`, as a pure table: events
//! in (`check`, `record`, `remove_expired`, `evict_below`), decisions out; no I/O (snapshots are
//! `producer_snapshot`), no clock (time is an argument).
//!
//! The table is derived only from batch headers (producer id, epoch, base sequence, last offset
//! delta, max timestamp) and the offsets the batches got. So a leader checking produces, a
//! follower copying the leader's batches (`record` without `check`) and a replica replaying its
//! own log after a crash all build the same table, and a new leader deduplicates retries too.
//!
//! The rules, as Kafka's since 2.5 (KIP-360):
//! - a batch whose epoch and sequence range equal one of the producer's last five is a retry of
//!   a batch already appended: it is answered with the original offsets and not appended again;
//! - an epoch older than the producer's is fenced (`InvalidProducerEpoch`);
//! - a newer epoch (the producer bumped its own epoch, KIP-360) must start at sequence 0;
//! - within an epoch a batch must start right after the last batch's last sequence, wrapping
//!   from `i32::MAX` to 0; anything else is `OutOfOrderSequence`;
//! - a producer the table does not know (never seen, expired, or all its batches deleted) is
//!   accepted at any sequence. Kafka answered UNKNOWN_PRODUCER_ID here before 2.5 and stopped,
//!   for every Produce version, because the producer cannot tell lost state from a lost batch
//!   and resetting its sequence was unsafe; so this table never refuses an unknown producer.
//!
//! Transactions (a later issue) fit here: a producer entry gains the first offset of its open
//! transaction and its coordinator epoch, the table the set of open transactions (for the last
//! stable offset), and `record` is where a transactional batch opens one and a marker closes it.

use std::collections::{BTreeMap, VecDeque};

use ferrymq_types::{Offset, ProducerEpoch, ProducerId, Sequence};

use crate::batch::BatchHeader;

/// Batches remembered per producer: a retry of any of them is recognised. Kafka's
/// `ProducerStateEntry.NUM_BATCHES_TO_RETAIN`, matching the client's limit of five requests in
/// flight per connection with idempotence.
pub const BATCHES_PER_PRODUCER: usize = 5;

/// The fields of an idempotent batch that the table looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdempotentBatch {
    /// The producer.
    pub producer_id: ProducerId,
    /// Its epoch when it sent the batch.
    pub epoch: ProducerEpoch,
    /// Sequence of the first record.
    pub first_seq: Sequence,
    /// Sequence of the last record (wrapped past `i32::MAX`).
    pub last_seq: Sequence,
    /// The batch's max timestamp: the producer's last activity, for expiry (as Kafka, so that
    /// every replica and every replay computes the same).
    pub max_timestamp: i64,
}

impl IdempotentBatch {
    /// The idempotence fields of a batch, `None` for a batch without a producer id. Control
    /// batches (transaction markers) and batches without a sequence or epoch are `None` too:
    /// they carry no data sequence (a leader refuses such data batches, `batch.rs`), and
    /// transactions will handle markers on their own path.
    pub fn from_header(h: &BatchHeader) -> Option<IdempotentBatch> {
        let has_sequence = h.base_sequence >= 0 && h.producer_epoch.0 >= 0;
        if !h.has_producer_id() || h.is_control() || !has_sequence {
            return None;
        }
        let first_seq = Sequence(h.base_sequence);
        Some(IdempotentBatch {
            producer_id: h.producer_id,
            epoch: h.producer_epoch,
            first_seq,
            last_seq: first_seq.plus(h.last_offset_delta.max(0)),
            max_timestamp: h.max_timestamp,
        })
    }
}

/// A remembered batch: its sequence range and where it landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetainedBatch {
    /// Sequence of its first record.
    pub first_seq: Sequence,
    /// Sequence of its last record.
    pub last_seq: Sequence,
    /// Offset of its first record.
    pub first_offset: Offset,
    /// Offset of its last record.
    pub last_offset: Offset,
    /// Its max timestamp.
    pub max_timestamp: i64,
}

/// One producer's state. Invariants: 1 to `BATCHES_PER_PRODUCER` batches, all of `epoch`,
/// oldest first, offsets increasing, each starting at the sequence after the previous one's
/// last, except where a follower copied a leader's log whose producer broke that rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerEntry {
    epoch: ProducerEpoch,
    batches: VecDeque<RetainedBatch>,
}

impl ProducerEntry {
    /// An entry from stored parts (a snapshot); `None` if the parts break the invariants.
    pub fn from_parts(epoch: ProducerEpoch, batches: Vec<RetainedBatch>) -> Option<ProducerEntry> {
        let sizes_ok = !batches.is_empty() && batches.len() <= BATCHES_PER_PRODUCER;
        let offsets_ok = batches.iter().all(|b| b.first_offset <= b.last_offset)
            && batches
                .windows(2)
                .all(|w| w[0].last_offset < w[1].first_offset);
        (sizes_ok && offsets_ok && epoch.0 >= 0).then(|| ProducerEntry {
            epoch,
            batches: batches.into(),
        })
    }

    /// The producer's current epoch.
    pub fn epoch(&self) -> ProducerEpoch {
        self.epoch
    }

    /// The remembered batches, oldest first.
    pub fn batches(&self) -> impl ExactSizeIterator<Item = &RetainedBatch> {
        self.batches.iter()
    }

    fn last(&self) -> &RetainedBatch {
        self.batches.back().expect("a producer entry has a batch")
    }

    /// Sequence of the last record appended.
    pub fn last_seq(&self) -> Sequence {
        self.last().last_seq
    }

    /// Offset of the last record appended.
    pub fn last_offset(&self) -> Offset {
        self.last().last_offset
    }

    /// Max timestamp of the last batch: when the producer was last active.
    pub fn last_timestamp(&self) -> i64 {
        self.last().max_timestamp
    }

    fn push(&mut self, epoch: ProducerEpoch, batch: RetainedBatch) {
        assert!(
            batch.first_offset > self.last_offset(),
            "producer batches must follow each other in the log: {batch:?} after {self:?}"
        );
        if epoch != self.epoch {
            // A new epoch starts a new sequence: the old epoch's batches can no longer be
            // retried (they would be fenced), so they are forgotten, as Kafka does.
            self.epoch = epoch;
            self.batches.clear();
        }
        if self.batches.len() == BATCHES_PER_PRODUCER {
            self.batches.pop_front();
        }
        self.batches.push_back(batch);
    }
}

/// What a leader should do with an idempotent batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Append it, then `record` it.
    Append,
    /// A retry of this batch, already in the log: answer with its offsets, append nothing.
    Duplicate(RetainedBatch),
}

/// Why a leader refuses an idempotent batch. Operating conditions, not bugs: the Kafka front end
/// maps them to INVALID_PRODUCER_EPOCH (47) and OUT_OF_ORDER_SEQUENCE_NUMBER (45).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProducerError {
    /// The batch's epoch is older than the producer's current one: a zombie or a stale retry.
    #[error("producer {producer_id} epoch {received} is older than its current epoch {current}")]
    InvalidProducerEpoch {
        producer_id: ProducerId,
        current: ProducerEpoch,
        received: ProducerEpoch,
    },
    /// The batch does not start where the producer's sequence says the next one must.
    #[error(
        "producer {producer_id} epoch {epoch}: sequence {received} where {expected} was expected"
    )]
    OutOfOrderSequence {
        producer_id: ProducerId,
        epoch: ProducerEpoch,
        expected: Sequence,
        received: Sequence,
    },
}

/// Every producer with state in one partition replica.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerStateTable {
    /// Ordered by id, so snapshots of equal tables are equal bytes.
    producers: BTreeMap<ProducerId, ProducerEntry>,
}

impl ProducerStateTable {
    /// A table of these entries (a snapshot being loaded).
    pub fn from_entries(entries: impl IntoIterator<Item = (ProducerId, ProducerEntry)>) -> Self {
        ProducerStateTable {
            producers: entries.into_iter().collect(),
        }
    }

    /// Every producer, by id.
    pub fn entries(&self) -> impl ExactSizeIterator<Item = (&ProducerId, &ProducerEntry)> {
        self.producers.iter()
    }

    /// One producer's state.
    pub fn get(&self, producer_id: ProducerId) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    /// Number of producers with state.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    /// True when no producer has state.
    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Decides what a leader does with `batch` (the rules are in the module header). Changes
    /// nothing: the caller appends, then calls `record` with the offsets the batch got.
    pub fn check(&self, batch: &IdempotentBatch) -> Result<Check, ProducerError> {
        let Some(entry) = self.producers.get(&batch.producer_id) else {
            return Ok(Check::Append);
        };
        if batch.epoch == entry.epoch {
            let retry = entry
                .batches
                .iter()
                .find(|r| r.first_seq == batch.first_seq && r.last_seq == batch.last_seq);
            if let Some(original) = retry {
                return Ok(Check::Duplicate(*original));
            }
        }
        if batch.epoch < entry.epoch {
            return Err(ProducerError::InvalidProducerEpoch {
                producer_id: batch.producer_id,
                current: entry.epoch,
                received: batch.epoch,
            });
        }
        let expected = if batch.epoch > entry.epoch {
            Sequence(0)
        } else {
            entry.last_seq().next()
        };
        if batch.first_seq != expected {
            return Err(ProducerError::OutOfOrderSequence {
                producer_id: batch.producer_id,
                epoch: batch.epoch,
                expected,
                received: batch.first_seq,
            });
        }
        Ok(Check::Append)
    }

    /// Records that `batch` now holds offsets `first_offset..=last_offset`: after a leader's
    /// checked append, a follower's copy of the leader's batch (not checked: the leader decided),
    /// or a replay of the log. A new epoch replaces the producer's remembered batches.
    pub fn record(&mut self, batch: &IdempotentBatch, first_offset: Offset, last_offset: Offset) {
        assert!(
            first_offset <= last_offset,
            "batch offsets {first_offset}..={last_offset} of {batch:?}"
        );
        let retained = RetainedBatch {
            first_seq: batch.first_seq,
            last_seq: batch.last_seq,
            first_offset,
            last_offset,
            max_timestamp: batch.max_timestamp,
        };
        match self.producers.get_mut(&batch.producer_id) {
            Some(entry) => entry.push(batch.epoch, retained),
            None => {
                let entry = ProducerEntry {
                    epoch: batch.epoch,
                    batches: VecDeque::from([retained]),
                };
                self.producers.insert(batch.producer_id, entry);
            }
        }
    }

    /// Forgets producers idle for at least `expiration_ms` (`producer.id.expiration.ms`) at
    /// `now_ms`, judged by their last batch's max timestamp as Kafka does. Returns how many.
    pub fn remove_expired(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers
            .retain(|_, e| now_ms.saturating_sub(e.last_timestamp()) < expiration_ms);
        before - self.producers.len()
    }

    /// Forgets producers whose batches all lie below `log_start` (retention or DeleteRecords
    /// removed them), so the state follows what the log holds. Returns how many.
    ///
    /// Kafka since 2.4 (KAFKA-7190) keeps such producers until they expire instead; we follow
    /// the log, which keeps the table exactly what a replay of the log rebuilds. A producer
    /// forgotten this way is accepted at any sequence (module header), so it is not refused.
    pub fn evict_below(&mut self, log_start: Offset) -> usize {
        let before = self.producers.len();
        self.producers.retain(|_, e| e.last_offset() >= log_start);
        before - self.producers.len()
    }

    /// Forgets every producer (the log was emptied).
    pub fn clear(&mut self) {
        self.producers.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: ProducerId = ProducerId(1000);

    fn batch(epoch: i16, first_seq: i32, records: i32) -> IdempotentBatch {
        IdempotentBatch {
            producer_id: P,
            epoch: ProducerEpoch(epoch),
            first_seq: Sequence(first_seq),
            last_seq: Sequence(first_seq).plus(records - 1),
            max_timestamp: 1_000,
        }
    }

    /// A table and the next free offset, appending as a leader would: check, then record.
    struct Leader {
        table: ProducerStateTable,
        leo: Offset,
    }

    impl Leader {
        fn new() -> Leader {
            Leader {
                table: ProducerStateTable::default(),
                leo: Offset(0),
            }
        }

        /// Appends if the check says so; returns the batch's first offset (the original's for a
        /// duplicate).
        fn produce(&mut self, b: IdempotentBatch) -> Result<Offset, ProducerError> {
            match self.table.check(&b)? {
                Check::Duplicate(original) => Ok(original.first_offset),
                Check::Append => {
                    let first = self.leo;
                    let count = (b.last_seq.0 as i64 - b.first_seq.0 as i64).rem_euclid(1 << 31);
                    self.leo = first.plus(count + 1);
                    self.table.record(&b, first, self.leo.plus(-1));
                    Ok(first)
                }
            }
        }
    }

    #[test]
    fn in_order_batches_are_appended() {
        let mut l = Leader::new();
        assert_eq!(l.produce(batch(0, 0, 3)), Ok(Offset(0)));
        assert_eq!(l.produce(batch(0, 3, 2)), Ok(Offset(3)));
        assert_eq!(l.produce(batch(0, 5, 1)), Ok(Offset(5)));
        let e = l.table.get(P).unwrap();
        assert_eq!(e.last_seq(), Sequence(5));
        assert_eq!(e.last_offset(), Offset(5));
        assert_eq!(e.batches().len(), 3);
    }

    #[test]
    fn a_retry_of_any_of_the_last_five_batches_gets_its_original_offsets() {
        let mut l = Leader::new();
        for i in 0..7 {
            assert_eq!(l.produce(batch(0, i * 2, 2)), Ok(Offset(i as i64 * 2)));
        }
        // Batches 2..=6 are remembered; each retry is answered with the original offsets.
        for i in 2..7 {
            let b = batch(0, i * 2, 2);
            match l.table.check(&b).unwrap() {
                Check::Duplicate(original) => {
                    assert_eq!(original.first_offset, Offset(i as i64 * 2));
                    assert_eq!(original.last_offset, Offset(i as i64 * 2 + 1));
                }
                Check::Append => panic!("batch {i} not recognised as a retry"),
            }
        }
        assert_eq!(l.leo, Offset(14), "nothing was appended again");
        // The sixth batch back is forgotten: its retry is out of order, as in Kafka.
        assert_eq!(
            l.table.check(&batch(0, 2, 2)),
            Err(ProducerError::OutOfOrderSequence {
                producer_id: P,
                epoch: ProducerEpoch(0),
                expected: Sequence(14),
                received: Sequence(2),
            })
        );
    }

    #[test]
    fn a_retry_with_a_different_range_is_not_a_duplicate() {
        let mut l = Leader::new();
        l.produce(batch(0, 0, 3)).unwrap();
        assert!(matches!(
            l.table.check(&batch(0, 0, 2)),
            Err(ProducerError::OutOfOrderSequence { .. })
        ));
    }

    #[test]
    fn a_gap_in_sequence_is_out_of_order() {
        let mut l = Leader::new();
        l.produce(batch(0, 0, 3)).unwrap();
        let err = l.produce(batch(0, 4, 1)).unwrap_err();
        assert_eq!(
            err,
            ProducerError::OutOfOrderSequence {
                producer_id: P,
                epoch: ProducerEpoch(0),
                expected: Sequence(3),
                received: Sequence(4),
            }
        );
        // Nothing changed: the expected batch still goes in.
        assert_eq!(l.produce(batch(0, 3, 1)), Ok(Offset(3)));
    }

    #[test]
    fn sequence_wraps_from_i32_max_to_zero() {
        let mut l = Leader::new();
        l.produce(batch(0, i32::MAX - 2, 3)).unwrap();
        assert_eq!(l.table.get(P).unwrap().last_seq(), Sequence(i32::MAX));
        // A batch straddling the wrap: MAX-1, MAX, 0, 1 would have been written as one.
        assert!(matches!(
            l.table.check(&batch(0, 1, 1)),
            Err(ProducerError::OutOfOrderSequence {
                expected: Sequence(0),
                ..
            })
        ));
        assert_eq!(l.produce(batch(0, 0, 2)), Ok(Offset(3)));
        assert_eq!(l.table.get(P).unwrap().last_seq(), Sequence(1));
    }

    #[test]
    fn a_batch_straddling_the_wrap_ends_past_zero_and_is_recognised_on_retry() {
        let mut l = Leader::new();
        l.produce(batch(0, i32::MAX - 1, 1)).unwrap();
        let straddling = batch(0, i32::MAX, 3);
        assert_eq!(straddling.last_seq, Sequence(1));
        assert_eq!(l.produce(straddling), Ok(Offset(1)));
        assert_eq!(l.produce(straddling), Ok(Offset(1)), "retry deduplicated");
        assert_eq!(l.produce(batch(0, 2, 1)), Ok(Offset(4)));
    }

    #[test]
    fn an_epoch_bump_restarts_the_sequence_at_zero() {
        let mut l = Leader::new();
        l.produce(batch(0, 0, 5)).unwrap();
        let err = l.produce(batch(1, 5, 1)).unwrap_err();
        assert_eq!(
            err,
            ProducerError::OutOfOrderSequence {
                producer_id: P,
                epoch: ProducerEpoch(1),
                expected: Sequence(0),
                received: Sequence(5),
            }
        );
        assert_eq!(l.produce(batch(1, 0, 2)), Ok(Offset(5)));
        let e = l.table.get(P).unwrap();
        assert_eq!(e.epoch(), ProducerEpoch(1));
        assert_eq!(
            e.batches().len(),
            1,
            "the old epoch's batches are forgotten"
        );
        // A bump by more than one is accepted too: the producer owns its epoch.
        assert_eq!(l.produce(batch(7, 0, 1)), Ok(Offset(7)));
    }

    #[test]
    fn a_stale_epoch_is_fenced_even_for_a_former_duplicate() {
        let mut l = Leader::new();
        l.produce(batch(3, 0, 1)).unwrap();
        l.produce(batch(4, 0, 1)).unwrap();
        let fenced = ProducerError::InvalidProducerEpoch {
            producer_id: P,
            current: ProducerEpoch(4),
            received: ProducerEpoch(3),
        };
        assert_eq!(l.table.check(&batch(3, 0, 1)), Err(fenced.clone()));
        assert_eq!(l.table.check(&batch(3, 1, 1)), Err(fenced));
    }

    #[test]
    fn epoch_at_i16_max_is_an_ordinary_epoch() {
        let mut l = Leader::new();
        l.produce(batch(i16::MAX - 1, 0, 1)).unwrap();
        assert_eq!(l.produce(batch(i16::MAX, 0, 1)), Ok(Offset(1)));
        assert!(matches!(
            l.produce(batch(i16::MAX - 1, 1, 1)),
            Err(ProducerError::InvalidProducerEpoch { .. })
        ));
    }

    #[test]
    fn an_unknown_producer_is_accepted_at_any_sequence() {
        let mut l = Leader::new();
        assert_eq!(l.produce(batch(2, 12_345, 2)), Ok(Offset(0)));
        assert_eq!(l.table.get(P).unwrap().last_seq(), Sequence(12_346));
        assert_eq!(l.produce(batch(2, 12_347, 1)), Ok(Offset(2)));
    }

    #[test]
    fn producers_are_independent() {
        let mut l = Leader::new();
        let other = |seq| IdempotentBatch {
            producer_id: ProducerId(7),
            ..batch(0, seq, 1)
        };
        l.produce(batch(0, 0, 1)).unwrap();
        l.produce(other(0)).unwrap();
        l.produce(other(1)).unwrap();
        assert_eq!(l.produce(batch(0, 1, 1)), Ok(Offset(3)));
        assert_eq!(l.table.len(), 2);
    }

    #[test]
    fn producers_expire_after_their_last_timestamp_plus_expiration() {
        let mut t = ProducerStateTable::default();
        let at = |producer, ts| IdempotentBatch {
            producer_id: ProducerId(producer),
            max_timestamp: ts,
            ..batch(0, 0, 1)
        };
        t.record(&at(1, 1_000), Offset(0), Offset(0));
        t.record(&at(2, 5_000), Offset(1), Offset(1));
        assert_eq!(t.remove_expired(10_999, 10_000), 0);
        assert_eq!(
            t.remove_expired(11_000, 10_000),
            1,
            "idle exactly the expiration"
        );
        assert!(t.get(ProducerId(1)).is_none());
        assert!(t.get(ProducerId(2)).is_some());
        // Expired, the producer is unknown: its next batch is accepted at any sequence.
        assert_eq!(t.check(&at(1, 20_000)), Ok(Check::Append));
    }

    #[test]
    fn producers_whose_batches_are_all_below_the_log_start_are_evicted() {
        let mut t = ProducerStateTable::default();
        let of = |producer, seq| IdempotentBatch {
            producer_id: ProducerId(producer),
            ..batch(0, seq, 1)
        };
        t.record(&of(1, 0), Offset(0), Offset(0));
        t.record(&of(2, 0), Offset(1), Offset(1));
        t.record(&of(1, 1), Offset(2), Offset(2));
        assert_eq!(t.evict_below(Offset(2)), 1);
        assert!(t.get(ProducerId(2)).is_none());
        assert_eq!(t.get(ProducerId(1)).unwrap().batches().len(), 2);
        assert_eq!(t.evict_below(Offset(3)), 1);
        assert!(t.is_empty());
    }

    #[test]
    fn a_followers_record_builds_the_leaders_table_without_checks() {
        let mut leader = Leader::new();
        let mut follower = ProducerStateTable::default();
        let sent = [
            batch(0, 0, 2),
            batch(0, 2, 3),
            batch(1, 0, 1),
            batch(1, 1, 1),
        ];
        for b in sent {
            let first = leader.produce(b).unwrap();
            let last = leader.table.get(P).unwrap().last_offset();
            follower.record(&b, first, last);
        }
        assert_eq!(follower, leader.table);
    }

    #[test]
    fn from_header_reads_idempotence_fields_and_skips_others() {
        use crate::batch::testing::{batch as plain, batch_with_producer};
        use crate::batch::validate_produce_records;
        let b = validate_produce_records(batch_with_producer(&[b"a", b"b"], 50, 9, 2, i32::MAX))
            .unwrap();
        let i = IdempotentBatch::from_header(b.header()).unwrap();
        assert_eq!(i.producer_id, ProducerId(9));
        assert_eq!(i.epoch, ProducerEpoch(2));
        assert_eq!((i.first_seq, i.last_seq), (Sequence(i32::MAX), Sequence(0)));
        assert_eq!(i.max_timestamp, 51);
        let b = validate_produce_records(plain(&[b"a"], 0)).unwrap();
        assert_eq!(IdempotentBatch::from_header(b.header()), None);
    }

    #[test]
    fn entries_from_parts_must_keep_the_invariants() {
        let r = |first: i64, last: i64| RetainedBatch {
            first_seq: Sequence(0),
            last_seq: Sequence(0),
            first_offset: Offset(first),
            last_offset: Offset(last),
            max_timestamp: 0,
        };
        assert!(ProducerEntry::from_parts(ProducerEpoch(0), vec![r(0, 1), r(2, 2)]).is_some());
        assert!(ProducerEntry::from_parts(ProducerEpoch(0), vec![]).is_none());
        assert!(ProducerEntry::from_parts(ProducerEpoch(0), vec![r(0, 1), r(1, 2)]).is_none());
        assert!(ProducerEntry::from_parts(ProducerEpoch(0), vec![r(2, 1)]).is_none());
        assert!(ProducerEntry::from_parts(ProducerEpoch(-1), vec![r(0, 0)]).is_none());
        assert!(ProducerEntry::from_parts(ProducerEpoch(0), vec![r(0, 0); 6]).is_none());
    }
}
