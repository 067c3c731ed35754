//! The history of a chaos run: every send with its outcome, every record any consumer read,
//! every committed offset observed, and every fault with the partitions it took a leader from.
//! Workload threads and the nemesis append to one `Recorder`; the checker reads a snapshot.
//!
//! Times are milliseconds since the run started (one `Instant`), so the history can be printed
//! and compared without wall clocks.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Instant;

/// The unique value written for sequence number `seq`: the number, then a check string derived
/// from it, so a reader can tell a value that was sent from one that was corrupted on the way.
pub fn value_for(seq: u64) -> String {
    let mut h = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let mut check = String::with_capacity(64);
    for _ in 0..4 {
        h ^= h >> 29;
        h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        let _ = write!(check, "{h:016x}");
    }
    format!("{seq:012}|{check}")
}

/// The sequence number of a value made by `value_for`, if it is exactly such a value.
pub fn seq_of(value: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(value).ok()?;
    let seq: u64 = text.split('|').next()?.parse().ok()?;
    (value_for(seq) == text).then_some(seq)
}

/// What became of one send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// No delivery report yet (the run ended first): indeterminate.
    Pending,
    /// Acknowledged at `offset`.
    Acked { offset: i64, at_ms: u64 },
    /// The client gave up (an error or its message timeout): indeterminate, it may be written.
    Failed { error: String, at_ms: u64 },
}

/// One produce attempt of a unique value.
#[derive(Debug, Clone)]
pub struct Send {
    /// The value's sequence number (its index in `History::sends`).
    pub seq: u64,
    /// The partition it was sent to.
    pub partition: i32,
    /// When it was handed to the client.
    pub sent_ms: u64,
    /// What became of it.
    pub outcome: Outcome,
}

/// Which reader saw a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reader {
    /// The manual-assignment reader tailing every partition from the start during the run.
    Assign,
    /// The consumer-group member (subscribe, commits).
    Group,
    /// The final read of every partition after all faults healed.
    Final,
}

/// One record as a consumer received it.
#[derive(Debug, Clone)]
pub struct Read {
    /// Who read it.
    pub reader: Reader,
    /// The reader's session: it changes whenever the reader is (re)assigned or restarted, so
    /// offsets must follow one another only within a session.
    pub session: u32,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// The value's sequence number, `None` if the bytes are not a value that was ever made.
    pub seq: Option<u64>,
    /// When it was read.
    pub at_ms: u64,
}

/// A committed offset of the consumer group as fetched from the broker (OffsetFetch).
#[derive(Debug, Clone, Copy)]
pub struct CommitSeen {
    /// Partition.
    pub partition: i32,
    /// The committed offset.
    pub offset: i64,
    /// When it was observed.
    pub at_ms: u64,
}

/// One injected fault.
#[derive(Debug, Clone)]
pub struct FaultEvent {
    /// Its kind's name (`kill-leader`, `pause`, ...).
    pub kind: String,
    /// What exactly was done, for the summary.
    pub detail: String,
    /// When it was injected.
    pub at_ms: u64,
    /// When it was healed.
    pub healed_ms: Option<u64>,
    /// Partitions whose leader the fault took away ungracefully: their failover is measured.
    pub leader_partitions: Vec<i32>,
    /// Checks of the fault's own expected outcome that failed (disk faults end in a clear
    /// state, a corrupted byte is detected...).
    pub unmet: Vec<String>,
    /// Notes on what the fault's outcome was, for the report.
    pub notes: Vec<String>,
}

/// The whole history.
#[derive(Debug, Default, Clone)]
pub struct History {
    /// Sends, indexed by sequence number.
    pub sends: Vec<Send>,
    /// Records read.
    pub reads: Vec<Read>,
    /// Committed offsets observed.
    pub commits: Vec<CommitSeen>,
    /// Faults, in order.
    pub faults: Vec<FaultEvent>,
    /// Errors readers hit (offset out of range and the like), with times.
    pub reader_errors: Vec<(u64, String)>,
    /// Sends with a delivery report.
    pub resolved: u64,
    /// Acknowledged sends per partition (index = partition).
    pub acked_by_partition: Vec<u64>,
}

/// How many sends were made and how many have an outcome.
#[derive(Debug, Clone, Copy)]
pub struct Counts {
    /// Sends made.
    pub sent: u64,
    /// Sends with a delivery report.
    pub resolved: u64,
}

/// The shared, append-only recorder.
#[derive(Debug)]
pub struct Recorder {
    start: Instant,
    history: Mutex<History>,
}

impl Recorder {
    /// A recorder whose clock starts now.
    pub fn new() -> Recorder {
        Recorder {
            start: Instant::now(),
            history: Mutex::new(History::default()),
        }
    }

    /// Milliseconds since the run started.
    pub fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn with<T>(&self, f: impl FnOnce(&mut History) -> T) -> T {
        f(&mut self.history.lock().expect("history lock"))
    }

    /// Records a new send to `partition`; returns its sequence number.
    pub fn send(&self, partition: i32) -> u64 {
        let now = self.now_ms();
        self.with(|h| {
            let seq = h.sends.len() as u64;
            h.sends.push(Send {
                seq,
                partition,
                sent_ms: now,
                outcome: Outcome::Pending,
            });
            seq
        })
    }

    /// Records the delivery report of `seq`.
    pub fn delivered(&self, seq: u64, result: Result<i64, String>) {
        let at_ms = self.now_ms();
        self.with(|h| {
            let s = &mut h.sends[seq as usize];
            let partition = s.partition as usize;
            if s.outcome == Outcome::Pending {
                h.resolved += 1;
            }
            if result.is_ok() {
                if h.acked_by_partition.len() <= partition {
                    h.acked_by_partition.resize(partition + 1, 0);
                }
                h.acked_by_partition[partition] += 1;
            }
            let s = &mut h.sends[seq as usize];
            s.outcome = match result {
                Ok(offset) => Outcome::Acked { offset, at_ms },
                Err(error) => Outcome::Failed { error, at_ms },
            };
        })
    }

    /// Records a record read.
    pub fn read(&self, reader: Reader, session: u32, partition: i32, offset: i64, value: &[u8]) {
        let at_ms = self.now_ms();
        let seq = seq_of(value);
        self.with(|h| {
            h.reads.push(Read {
                reader,
                session,
                partition,
                offset,
                seq,
                at_ms,
            })
        })
    }

    /// Records an error a reader hit.
    pub fn reader_error(&self, what: String) {
        let at = self.now_ms();
        self.with(|h| h.reader_errors.push((at, what)))
    }

    /// Records an observed committed offset.
    pub fn commit_seen(&self, partition: i32, offset: i64) {
        let at_ms = self.now_ms();
        self.with(|h| {
            h.commits.push(CommitSeen {
                partition,
                offset,
                at_ms,
            })
        })
    }

    /// Records a fault as injected now; returns its index.
    pub fn fault(&self, kind: &str, detail: String, leader_partitions: Vec<i32>) -> usize {
        let at_ms = self.now_ms();
        self.with(|h| {
            h.faults.push(FaultEvent {
                kind: kind.to_string(),
                detail,
                at_ms,
                healed_ms: None,
                leader_partitions,
                unmet: Vec::new(),
                notes: Vec::new(),
            });
            h.faults.len() - 1
        })
    }

    /// Records that fault `i` healed now.
    pub fn healed(&self, i: usize) {
        let now = self.now_ms();
        self.with(|h| h.faults[i].healed_ms = Some(now))
    }

    /// Records a failed expectation of fault `i`.
    pub fn unmet(&self, i: usize, what: String) {
        self.with(|h| h.faults[i].unmet.push(what))
    }

    /// Records a note on fault `i`.
    pub fn note(&self, i: usize, what: String) {
        self.with(|h| h.faults[i].notes.push(what))
    }

    /// Acknowledged sends so far, per partition `0..partitions`.
    pub fn acked_per_partition(&self, partitions: i32) -> Vec<u64> {
        self.with(|h| {
            (0..partitions.max(0) as usize)
                .map(|p| h.acked_by_partition.get(p).copied().unwrap_or(0))
                .collect()
        })
    }

    /// Sends made and resolved so far (cheap: no copy).
    pub fn snapshot_counts(&self) -> Counts {
        self.with(|h| Counts {
            sent: h.sends.len() as u64,
            resolved: h.resolved,
        })
    }

    /// A copy of the history.
    pub fn snapshot(&self) -> History {
        self.with(|h| h.clone())
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_corruption_is_seen() {
        let v = value_for(42);
        assert_eq!(seq_of(v.as_bytes()), Some(42));
        let mut bad = v.into_bytes();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(seq_of(&bad), None);
        assert_eq!(seq_of(b"000000000042"), None);
    }
}
