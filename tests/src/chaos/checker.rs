//! The checker: reads a whole history and lists every anomaly of the Jepsen catalogue that a
//! Kafka-like queue can show (`kafka-anchors.md` §3.5), then the figures of the summary.
//!
//! - lost write: an acknowledged value missing from the final read;
//! - inconsistent offset: an acknowledged value found at another offset than acknowledged, or a
//!   live read of an offset whose value differs from the final log (a read of data that was later
//!   truncated, i.e. read past the high watermark);
//! - duplicate: a value at more than one offset (an error with idempotence, reported without);
//! - reorder: acknowledged values of one partition whose offsets do not follow their send order;
//! - skip / non-monotonic: offsets of the final log not dense from 0 (no compaction or retention
//!   runs here to explain a gap), or a reader jumping within one session;
//! - corrupt: a record whose bytes are not a value that was ever sent;
//! - commit backwards: a consumer group's committed offset observed to decrease;
//! - and what the cluster reports: replicas whose committed prefixes differ, brokers that crashed
//!   or stopped answering after the faults healed, faults whose own expected outcome was missed.

use std::collections::{BTreeMap, HashMap};

use super::history::{History, Outcome, Reader};

/// One thing the checker found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anomaly {
    /// Its kind (`lost`, `duplicate`, ...).
    pub kind: &'static str,
    /// Whether it fails the run.
    pub fatal: bool,
    /// Details.
    pub detail: String,
}

/// Failover of one leader fault: from the last acknowledgement before it to the first after
/// it, on the partition that took longest.
#[derive(Debug, Clone)]
pub struct Failover {
    /// The fault's kind.
    pub kind: String,
    /// The worst partition.
    pub partition: i32,
    /// Time of the fault.
    pub fault_ms: u64,
    /// Last acknowledgement on that partition before the fault.
    pub last_before_ms: Option<u64>,
    /// First acknowledgement after the fault of a value sent after it.
    pub first_after_ms: Option<u64>,
}

impl Failover {
    /// The unavailability window in ms (`None` if production never resumed).
    pub fn window_ms(&self) -> Option<u64> {
        Some(self.first_after_ms? - self.last_before_ms.unwrap_or(self.fault_ms))
    }
}

/// What the checker concluded.
#[derive(Debug, Clone, Default)]
pub struct Verdict {
    /// Everything found, fatal or not.
    pub anomalies: Vec<Anomaly>,
    /// Sends attempted.
    pub attempted: u64,
    /// Sends acknowledged.
    pub acked: u64,
    /// Sends the client gave up on (indeterminate).
    pub failed: u64,
    /// Sends without an outcome at the end (indeterminate).
    pub pending: u64,
    /// Acknowledged values lost.
    pub lost: u64,
    /// Values found at more than one offset (extra copies counted).
    pub duplicated: u64,
    /// Records in the final read.
    pub final_records: u64,
    /// Records read live (assign and group readers).
    pub live_reads: u64,
    /// Failovers of leader faults.
    pub failovers: Vec<Failover>,
}

impl Verdict {
    /// True when nothing fatal was found.
    pub fn ok(&self) -> bool {
        !self.anomalies.iter().any(|a| a.fatal)
    }
}

/// Inputs beyond the history.
#[derive(Debug, Clone, Default)]
pub struct CheckInput {
    /// Producer idempotence was on: duplicates are errors.
    pub idempotence: bool,
    /// Partitions of the topic.
    pub partitions: i32,
    /// Replica comparison failures found by the cluster (`cluster::compare_replicas`).
    pub replica_divergence: Vec<String>,
    /// Brokers that crashed or stopped answering after the faults healed.
    pub broker_failures: Vec<String>,
}

/// Most examples listed per anomaly kind; the counts are always exact.
const EXAMPLES_MAX: usize = 5;

struct Found {
    anomalies: Vec<Anomaly>,
    per_kind: HashMap<&'static str, usize>,
}

impl Found {
    fn add(&mut self, kind: &'static str, fatal: bool, detail: String) {
        let n = self.per_kind.entry(kind).or_default();
        *n += 1;
        if *n <= EXAMPLES_MAX {
            self.anomalies.push(Anomaly {
                kind,
                fatal,
                detail,
            });
        }
    }

    fn finish(mut self) -> Vec<Anomaly> {
        for (kind, n) in &self.per_kind {
            if *n > EXAMPLES_MAX {
                let fatal = self.anomalies.iter().any(|a| a.kind == *kind && a.fatal);
                self.anomalies.push(Anomaly {
                    kind,
                    fatal,
                    detail: format!("{n} in all ({EXAMPLES_MAX} listed)"),
                });
            }
        }
        self.anomalies
    }
}

/// Checks the history.
pub fn check(h: &History, input: &CheckInput) -> Verdict {
    let mut f = Found {
        anomalies: Vec::new(),
        per_kind: HashMap::new(),
    };
    let mut v = Verdict {
        attempted: h.sends.len() as u64,
        ..Verdict::default()
    };
    // The final log: partition → offset → seq (None: corrupt bytes).
    let mut log: BTreeMap<i32, BTreeMap<i64, Option<u64>>> = BTreeMap::new();
    for r in h.reads.iter().filter(|r| r.reader == Reader::Final) {
        let prev = log.entry(r.partition).or_default().insert(r.offset, r.seq);
        if prev.is_some() {
            f.add(
                "final-read-repeat",
                true,
                format!(
                    "p{} offset {} read twice by the final read",
                    r.partition, r.offset
                ),
            );
        }
        v.final_records += 1;
    }
    check_final_log(&log, input, &mut f, &mut v);
    check_sends(h, &log, &mut f, &mut v);
    check_live_reads(h, &log, &mut f, &mut v);
    check_commits(h, &mut f);
    for d in &input.replica_divergence {
        f.add("replica-divergence", true, d.clone());
    }
    for b in &input.broker_failures {
        f.add("broker-failure", true, b.clone());
    }
    for fault in &h.faults {
        for u in &fault.unmet {
            f.add(
                "fault-outcome",
                true,
                format!(
                    "{} at {} ms ({}): {u}",
                    fault.kind, fault.at_ms, fault.detail
                ),
            );
        }
    }
    v.failovers = failovers(h);
    v.anomalies = f.finish();
    v
}

/// Dense offsets from 0, no corrupt values, no value twice.
fn check_final_log(
    log: &BTreeMap<i32, BTreeMap<i64, Option<u64>>>,
    input: &CheckInput,
    f: &mut Found,
    v: &mut Verdict,
) {
    let mut seen: HashMap<u64, (i32, i64)> = HashMap::new();
    for (p, offsets) in log {
        let mut expect = 0;
        for (o, seq) in offsets {
            if *o != expect {
                f.add(
                    "offset-skip",
                    true,
                    format!("p{p}: final log jumps from offset {} to {o}", expect - 1),
                );
            }
            expect = o + 1;
            match seq {
                None => f.add(
                    "corrupt",
                    true,
                    format!("p{p} offset {o}: bytes that were never sent"),
                ),
                Some(s) => {
                    if let Some((p0, o0)) = seen.insert(*s, (*p, *o)) {
                        v.duplicated += 1;
                        f.add(
                            "duplicate",
                            input.idempotence,
                            format!("value {s} at p{p0}@{o0} and p{p}@{o}"),
                        );
                    }
                }
            }
        }
    }
}

/// Every acknowledged value at its acknowledged offset, in send order within a partition.
fn check_sends(
    h: &History,
    log: &BTreeMap<i32, BTreeMap<i64, Option<u64>>>,
    f: &mut Found,
    v: &mut Verdict,
) {
    let mut where_is: HashMap<u64, Vec<(i32, i64)>> = HashMap::new();
    for (p, offsets) in log {
        for (o, seq) in offsets {
            if let Some(s) = seq {
                where_is.entry(*s).or_default().push((*p, *o));
            }
        }
    }
    let empty = BTreeMap::new();
    // partition → last acknowledged (seq, offset), for ordering.
    let mut last_acked: HashMap<i32, (u64, i64)> = HashMap::new();
    for s in &h.sends {
        match &s.outcome {
            Outcome::Pending => v.pending += 1,
            Outcome::Failed { .. } => v.failed += 1,
            Outcome::Acked { offset, at_ms } if *offset < 0 => {
                // librdkafka's idempotent producer acknowledges a batch without an offset
                // (RD_KAFKA_OFFSET_INVALID) when it infers the batch was written from the
                // acknowledgement of a later one: it must be in its partition, at an offset
                // nobody was told, so only its presence (and, elsewhere, uniqueness) is checked.
                v.acked += 1;
                let here = where_is
                    .get(&s.seq)
                    .is_some_and(|places| places.iter().any(|(p, _)| *p == s.partition));
                if !here {
                    v.lost += 1;
                    f.add(
                        "lost",
                        true,
                        format!(
                            "value {} acknowledged (offset not reported) in p{} ({at_ms} ms) is not in the final log",
                            s.seq, s.partition
                        ),
                    );
                }
            }
            Outcome::Acked { offset, at_ms } => {
                v.acked += 1;
                let at = log.get(&s.partition).unwrap_or(&empty).get(offset);
                if at != Some(&Some(s.seq)) {
                    match where_is.get(&s.seq) {
                        None => {
                            v.lost += 1;
                            f.add(
                                "lost",
                                true,
                                format!(
                                    "value {} acknowledged at p{}@{offset} ({at_ms} ms) is not in the final log",
                                    s.seq, s.partition
                                ),
                            );
                        }
                        Some(places) => f.add(
                            "inconsistent-offset",
                            true,
                            format!(
                                "value {} acknowledged at p{}@{offset} but found at {places:?}",
                                s.seq, s.partition
                            ),
                        ),
                    }
                }
                if let Some((prev_seq, prev_off)) = last_acked.get(&s.partition) {
                    if *offset <= *prev_off {
                        f.add(
                            "reorder",
                            true,
                            format!(
                                "p{}: value {} sent after {prev_seq} acknowledged at {offset} <= {prev_off}",
                                s.partition, s.seq
                            ),
                        );
                    }
                }
                last_acked.insert(s.partition, (s.seq, *offset));
            }
        }
    }
}

/// Live reads agree with the final log and never skip or go back within a session.
fn check_live_reads(
    h: &History,
    log: &BTreeMap<i32, BTreeMap<i64, Option<u64>>>,
    f: &mut Found,
    v: &mut Verdict,
) {
    let mut last: HashMap<(Reader, u32, i32), i64> = HashMap::new();
    for r in h.reads.iter().filter(|r| r.reader != Reader::Final) {
        v.live_reads += 1;
        let name = match r.reader {
            Reader::Assign => "assign reader",
            _ => "group reader",
        };
        if r.seq.is_none() {
            f.add(
                "corrupt",
                true,
                format!(
                    "{name} got bytes never sent at p{}@{}",
                    r.partition, r.offset
                ),
            );
        }
        match log.get(&r.partition).and_then(|l| l.get(&r.offset)) {
            Some(seq) if *seq == r.seq => {}
            final_seq => f.add(
                "inconsistent-read",
                true,
                format!(
                    "{name} read value {:?} at p{}@{} ({} ms); the final log has {:?}",
                    r.seq, r.partition, r.offset, r.at_ms, final_seq
                ),
            ),
        }
        let key = (r.reader, r.session, r.partition);
        if let Some(prev) = last.insert(key, r.offset) {
            if r.offset <= prev {
                f.add(
                    "nonmonotonic-read",
                    true,
                    format!(
                        "{name} session {}: p{} went from {prev} to {}",
                        r.session, r.partition, r.offset
                    ),
                );
            } else if r.offset != prev + 1 {
                f.add(
                    "read-skip",
                    true,
                    format!(
                        "{name} session {}: p{} jumped from {prev} to {}",
                        r.session, r.partition, r.offset
                    ),
                );
            }
        }
    }
}

/// A group's committed offset never decreases.
fn check_commits(h: &History, f: &mut Found) {
    let mut last: HashMap<i32, (i64, u64)> = HashMap::new();
    for c in &h.commits {
        if let Some((prev, at)) = last.get(&c.partition) {
            if c.offset < *prev {
                f.add(
                    "commit-backwards",
                    true,
                    format!(
                        "p{}: committed offset {prev} ({at} ms) then {} ({} ms)",
                        c.partition, c.offset, c.at_ms
                    ),
                );
            }
        }
        last.insert(c.partition, (c.offset, c.at_ms));
    }
}

/// For each fault that took leaders away, the worst partition's unavailability.
fn failovers(h: &History) -> Vec<Failover> {
    // partition → acknowledgements as (ack time, send time), sorted by ack time.
    let mut acks: HashMap<i32, Vec<(u64, u64)>> = HashMap::new();
    for s in &h.sends {
        if let Outcome::Acked { at_ms, .. } = s.outcome {
            acks.entry(s.partition)
                .or_default()
                .push((at_ms, s.sent_ms));
        }
    }
    for a in acks.values_mut() {
        a.sort_unstable();
    }
    let mut out = Vec::new();
    for fault in h.faults.iter().filter(|f| !f.leader_partitions.is_empty()) {
        let t = fault.at_ms;
        let mut worst: Option<Failover> = None;
        for p in &fault.leader_partitions {
            let list = acks.get(p).map(Vec::as_slice).unwrap_or(&[]);
            let last_before = list
                .iter()
                .take_while(|(a, _)| *a <= t)
                .last()
                .map(|(a, _)| *a);
            let first_after = list
                .iter()
                .filter(|(a, sent)| *a > t && *sent >= t)
                .map(|(a, _)| *a)
                .next();
            let candidate = Failover {
                kind: fault.kind.clone(),
                partition: *p,
                fault_ms: t,
                last_before_ms: last_before,
                first_after_ms: first_after,
            };
            let longer = match (&worst, candidate.window_ms()) {
                (None, _) => true,
                (Some(w), Some(c)) => w.window_ms().is_some_and(|wm| c > wm),
                (Some(_), None) => true,
            };
            if longer {
                worst = Some(candidate);
            }
        }
        out.extend(worst);
    }
    out
}

/// The `q`-quantile (0..=1) of `values` by the nearest-rank method.
pub fn percentile(values: &[u64], q: f64) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_unstable();
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(v[rank - 1])
}

#[cfg(test)]
mod tests {
    use super::super::history::{Read, Recorder, Send};
    use super::*;

    fn acked(seq: u64, partition: i32, offset: i64, at_ms: u64) -> Send {
        Send {
            seq,
            partition,
            sent_ms: at_ms.saturating_sub(5),
            outcome: Outcome::Acked { offset, at_ms },
        }
    }

    fn read(reader: Reader, partition: i32, offset: i64, seq: Option<u64>) -> Read {
        Read {
            reader,
            session: 0,
            partition,
            offset,
            seq,
            at_ms: 0,
        }
    }

    fn kinds(v: &Verdict) -> Vec<&'static str> {
        v.anomalies.iter().map(|a| a.kind).collect()
    }

    fn input(idempotence: bool) -> CheckInput {
        CheckInput {
            idempotence,
            partitions: 1,
            ..CheckInput::default()
        }
    }

    #[test]
    fn a_clean_history_passes() {
        let h = History {
            sends: vec![acked(0, 0, 0, 10), acked(1, 0, 1, 11)],
            reads: vec![
                read(Reader::Final, 0, 0, Some(0)),
                read(Reader::Final, 0, 1, Some(1)),
                read(Reader::Assign, 0, 0, Some(0)),
            ],
            ..History::default()
        };
        let v = check(&h, &input(true));
        assert!(v.ok(), "{:?}", v.anomalies);
        assert_eq!((v.acked, v.lost, v.final_records), (2, 0, 2));
    }

    #[test]
    fn an_acknowledged_value_missing_from_the_final_log_is_lost() {
        let h = History {
            sends: vec![acked(0, 0, 0, 10), acked(1, 0, 1, 11)],
            reads: vec![read(Reader::Final, 0, 0, Some(0))],
            ..History::default()
        };
        let v = check(&h, &input(true));
        assert_eq!(kinds(&v), ["lost"]);
        assert_eq!(v.lost, 1);
    }

    #[test]
    fn an_acknowledgement_without_offset_needs_only_the_value_in_its_partition() {
        // librdkafka reports RD_KAFKA_OFFSET_INVALID (-1001) for a batch it infers was written.
        let present = History {
            sends: vec![
                acked(0, 0, 0, 10),
                acked(1, 0, -1001, 11),
                acked(2, 0, 2, 12),
            ],
            reads: vec![
                read(Reader::Final, 0, 0, Some(0)),
                read(Reader::Final, 0, 1, Some(1)),
                read(Reader::Final, 0, 2, Some(2)),
            ],
            ..History::default()
        };
        let v = check(&present, &input(true));
        assert!(v.ok(), "{:?}", v.anomalies);
        let missing = History {
            sends: vec![acked(0, 0, 0, 10), acked(1, 0, -1001, 11)],
            reads: vec![read(Reader::Final, 0, 0, Some(0))],
            ..History::default()
        };
        assert_eq!(kinds(&check(&missing, &input(true))), ["lost"]);
    }

    #[test]
    fn duplicates_fail_only_with_idempotence() {
        let h = History {
            sends: vec![acked(0, 0, 1, 10)],
            reads: vec![
                read(Reader::Final, 0, 0, Some(0)),
                read(Reader::Final, 0, 1, Some(0)),
            ],
            ..History::default()
        };
        assert!(!check(&h, &input(true)).ok());
        let v = check(&h, &input(false));
        assert!(v.ok(), "{:?}", v.anomalies);
        assert_eq!((kinds(&v), v.duplicated), (vec!["duplicate"], 1));
    }

    #[test]
    fn gaps_corruption_reorders_and_dirty_reads_are_found() {
        let h = History {
            sends: vec![acked(0, 0, 2, 10), acked(1, 0, 0, 11)],
            reads: vec![
                read(Reader::Final, 0, 0, Some(1)),
                read(Reader::Final, 0, 2, Some(0)),
                read(Reader::Final, 0, 3, None),
                read(Reader::Assign, 0, 4, Some(7)),
            ],
            ..History::default()
        };
        let mut k = kinds(&check(&h, &input(true)));
        k.sort();
        assert_eq!(
            k,
            ["corrupt", "inconsistent-read", "offset-skip", "reorder"]
        );
    }

    #[test]
    fn a_reader_skipping_within_a_session_is_found_but_not_across_sessions() {
        let mut h = History {
            reads: (0..4)
                .map(|o| read(Reader::Final, 0, o, Some(o as u64)))
                .collect(),
            ..History::default()
        };
        h.sends = (0..4).map(|o| acked(o, 0, o as i64, 10)).collect();
        h.reads.push(read(Reader::Assign, 0, 0, Some(0)));
        h.reads.push(read(Reader::Assign, 0, 2, Some(2)));
        assert_eq!(kinds(&check(&h, &input(true))), ["read-skip"]);
        h.reads.last_mut().unwrap().session = 1;
        assert!(check(&h, &input(true)).ok());
    }

    #[test]
    fn a_committed_offset_going_back_is_found() {
        let rec = Recorder::new();
        rec.commit_seen(0, 10);
        rec.commit_seen(0, 12);
        rec.commit_seen(0, 11);
        assert_eq!(
            kinds(&check(&rec.snapshot(), &input(true))),
            ["commit-backwards"]
        );
    }

    #[test]
    fn failover_runs_from_the_last_ack_before_to_the_first_ack_sent_after() {
        let rec = Recorder::new();
        let mut h = rec.snapshot();
        h.sends = vec![
            acked(0, 0, 0, 100),
            // Sent before the fault, acknowledged after: not proof the new leader serves.
            Send {
                seq: 1,
                partition: 0,
                sent_ms: 150,
                outcome: Outcome::Acked {
                    offset: 1,
                    at_ms: 900,
                },
            },
            Send {
                seq: 2,
                partition: 0,
                sent_ms: 400,
                outcome: Outcome::Acked {
                    offset: 2,
                    at_ms: 1300,
                },
            },
        ];
        h.faults.push(super::super::history::FaultEvent {
            kind: "kill-leader".into(),
            detail: String::new(),
            at_ms: 200,
            healed_ms: None,
            leader_partitions: vec![0],
            unmet: vec![],
            notes: vec![],
        });
        let v = check(&h, &input(true));
        assert_eq!(v.failovers.len(), 1);
        assert_eq!(v.failovers[0].window_ms(), Some(1200));
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.5), Some(50));
        assert_eq!(percentile(&v, 0.99), Some(99));
        assert_eq!(percentile(&[7], 0.99), Some(7));
        assert_eq!(percentile(&[], 0.5), None);
    }
}
