//! What `ferrymq-bench cluster` found and its rendering as a Markdown section for
//! `docs/benchmarks.md`: replicated throughput as a share of the single node's in the same
//! run, latency side by side, each failover trial and their median, p90 and maximum against
//! the replication issue's targets. Rendering is pure; `cluster.rs` fills the structs.

use std::fmt::Write as _;
use std::time::Duration;

use crate::cpu::CpuUse;
use crate::failover::{self, Trial};
use crate::latency::LatencyOutcome;
use crate::machine::Machine;
use crate::produce::ProduceOutcome;
use crate::report::{cores, millis, percent, thousands, verdict};

/// Replicated acks=all throughput, as a share of the single node's, at least.
const REPLICATED_SHARE_MIN: f64 = 0.50;
/// Median unavailability after the leader is killed, below (with default settings).
const FAILOVER_MEDIAN_MAX: Duration = Duration::from_secs(2);
/// What the median should come down to.
const FAILOVER_MEDIAN_AIM: Duration = Duration::from_secs(1);

/// The two set-ups measured side by side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// One `ferrymq serve`, topics with replication factor 1.
    Single,
    /// Three nodes, topics with replication factor 3 and `min.insync.replicas=2`.
    Replicated,
}

impl Phase {
    /// For tables and progress lines.
    pub fn label(self) -> &'static str {
        match self {
            Phase::Single => "single node, RF 1",
            Phase::Replicated => "3 nodes, RF 3",
        }
    }

    /// For topic names.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Single => "single",
            Phase::Replicated => "rf3",
        }
    }
}

/// Everything one run found.
pub struct ClusterReport {
    /// Where and on what it ran.
    pub machine: Machine,
    /// `name=value` of the broker defaults the figures depend on.
    pub broker_defaults: Vec<String>,
    /// `--override` settings given to every node, as one cell ("none" for none).
    pub overrides: String,
    /// Throughput and latency client settings.
    pub client: String,
    /// Failover producer settings.
    pub failover_client: String,
    /// Rate of the latency runs.
    pub rate_per_s: u32,
    /// The single node's figures.
    pub single: PhaseResults,
    /// The 3-node cluster's figures.
    pub replicated: PhaseResults,
    /// Failover trials, in order.
    pub trials: Vec<Trial>,
    /// Trials asked for.
    pub trials_asked: usize,
    /// Errors met outside the phases, one line each.
    pub problems: Vec<String>,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// `/proc/loadavg`'s 1-, 5- and 15-minute load at the start and at the end: the machine
    /// is shared, and other work on it shows here.
    pub load: (String, String),
}

/// One set-up's throughput and latency figures.
#[derive(Default)]
pub struct PhaseResults {
    /// One per partition count.
    pub throughput: Vec<ThroughputCell>,
    /// One per partition count.
    pub latency: Vec<LatencyCell>,
    /// Errors met, one line each.
    pub problems: Vec<String>,
}

/// A 1 KiB acks=all producer run.
pub struct ThroughputCell {
    /// Partitions of the topic, written round robin.
    pub partitions: i32,
    /// Messages sent.
    pub messages: u64,
    /// Figures, or why there are none.
    pub produce: Result<ProduceOutcome, String>,
    /// Cores used by all nodes together and by the client.
    pub cpu: Option<CpuUse>,
}

/// A 1 KiB acks=all fixed-rate end-to-end latency run.
pub struct LatencyCell {
    /// Partitions of the topic.
    pub partitions: i32,
    /// Figures, or why there are none.
    pub outcome: Result<LatencyOutcome, String>,
    /// Cores used by all nodes together and by the client.
    pub cpu: Option<CpuUse>,
}

impl ClusterReport {
    /// The section as Markdown.
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        self.write_header(&mut out);
        self.write_throughput(&mut out);
        self.write_latency(&mut out);
        self.write_failover(&mut out);
        let problems = self.all_problems();
        if !problems.is_empty() {
            out.push_str("\n### Problems met\n\n");
            for problem in problems {
                let _ = writeln!(out, "- {}", problem.replace('\n', " / "));
            }
        }
        out
    }

    /// Problems met in every phase.
    pub fn problem_count(&self) -> usize {
        self.all_problems().len()
    }

    fn all_problems(&self) -> Vec<&String> {
        self.single
            .problems
            .iter()
            .chain(&self.replicated.problems)
            .chain(&self.problems)
            .collect()
    }

    fn write_header(&self, out: &mut String) {
        let m = &self.machine;
        let _ = writeln!(out, "## Replication and failover, {}\n", m.date);
        out.push_str(
            "From `ferrymq-bench cluster` after `cargo build --release -p ferrymq-bench -p \
             ferrymq-server` (it finds `ferrymq` through `CARGO_TARGET_DIR`).\n\n",
        );
        let _ = writeln!(out, "| | |\n|---|---|");
        out.push_str(&m.table_rows());
        let overrides = &self.overrides;
        let _ = writeln!(
            out,
            "| single node | `ferrymq serve` with no cluster flags (its own one-voter quorum), \
             fresh data directory; topics with replication factor 1; overrides: {overrides} |"
        );
        let _ = writeln!(
            out,
            "| cluster | 3 × `ferrymq serve` on loopback, every node a controller voter, fresh \
             data directories, default settings ({}); topics with replication factor 3 and \
             min.insync.replicas=2; overrides: {overrides} |",
            self.broker_defaults.join(", ")
        );
        let _ = writeln!(
            out,
            "| throughput and latency client | {}; acks=all, bootstrap = node 1 |",
            self.client
        );
        let _ = writeln!(out, "| failover client | {} |", self.failover_client);
        let _ = writeln!(
            out,
            "| run time | {:.0} s; every node and the client share the same {} CPUs; load \
             average (1, 5, 15 min) {} at the start, {} at the end |",
            self.elapsed.as_secs_f64(),
            m.cpus,
            self.load.0,
            self.load.1
        );
        out.push_str(
            "\nMB = 10^6 payload bytes; cores = CPU seconds used during a measurement ÷ its \
             duration, for the broker processes together and for the benchmark client \
             (librdkafka included).\n",
        );
    }

    fn write_throughput(&self, out: &mut String) {
        out.push_str("\n### Producer throughput, 1 KiB, acks=all\n\n");
        out.push_str(
            "| partitions | messages | single node msgs/s | MB/s | cores broker / client \
             | RF 3 msgs/s | MB/s | cores brokers / client | RF 3 ÷ single | target |\n",
        );
        out.push_str("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n");
        for single in &self.single.throughput {
            let replicated = self
                .replicated
                .throughput
                .iter()
                .find(|c| c.partitions == single.partitions);
            let rate = |cell: Option<&ThroughputCell>| -> Option<(f64, f64)> {
                let p = cell?.produce.as_ref().ok()?;
                Some((p.throughput.messages_per_s(), p.throughput.mb_per_s()))
            };
            let (single_rate, replicated_rate) = (rate(Some(single)), rate(replicated));
            let cells = |r: Option<(f64, f64)>| {
                r.map_or("error | error".to_string(), |(msgs, mb)| {
                    format!("{} | {mb:.1}", thousands(msgs))
                })
            };
            let share = single_rate
                .zip(replicated_rate)
                .map(|((single, _), (replicated, _))| replicated / single.max(1e-9));
            let target = match share {
                Some(share) => format!(
                    "≥ {}: {}",
                    percent(REPLICATED_SHARE_MIN),
                    verdict(share >= REPLICATED_SHARE_MIN)
                ),
                None => format!("≥ {}: not measured", percent(REPLICATED_SHARE_MIN)),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {target} |",
                single.partitions,
                thousands(single.messages as f64),
                cells(single_rate),
                cores(single.cpu),
                cells(replicated_rate),
                cores(replicated.and_then(|c| c.cpu)),
                share.map_or("–".to_string(), |share| format!("{:.1} %", share * 100.0)),
            );
        }
    }

    fn write_latency(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "\n### End-to-end latency, 1 KiB, acks=all, {} msgs/s\n",
            thousands(f64::from(self.rate_per_s))
        );
        out.push_str(
            "Fixed rate; the producer stamps each message with the time it was due, a consumer \
             in the same process (reading from the leaders) subtracts it from the time of \
             receipt. Warm-up excluded.\n\n",
        );
        out.push_str(
            "| partitions | set-up | achieved msgs/s | measured | p50 ms | p99 ms | p99.9 ms \
             | max ms | cores brokers / client |\n",
        );
        out.push_str("|---:|---|---:|---:|---:|---:|---:|---:|---:|\n");
        let mut rows: Vec<(Phase, &LatencyCell)> = self
            .single
            .latency
            .iter()
            .map(|c| (Phase::Single, c))
            .chain(
                self.replicated
                    .latency
                    .iter()
                    .map(|c| (Phase::Replicated, c)),
            )
            .collect();
        rows.sort_by_key(|(_, c)| c.partitions);
        for (phase, cell) in rows {
            let figures = match &cell.outcome {
                Ok(o) => {
                    let l = &o.latency;
                    format!(
                        "{} | {} | {} | {} | {} | {}",
                        thousands(o.achieved_per_s),
                        thousands(l.samples as f64),
                        millis(l.p50),
                        millis(l.p99),
                        millis(l.p999),
                        millis(l.max)
                    )
                }
                Err(_) => "error | error | error | error | error | error".to_string(),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {figures} | {} |",
                cell.partitions,
                phase.label(),
                cores(cell.cpu)
            );
        }
    }

    fn write_failover(&self, out: &mut String) {
        out.push_str("\n### Failover: kill -9 of a partition leader\n\n");
        let _ = writeln!(
            out,
            "On a fresh 3-node cluster, topic `{}`: {} partitions, replication factor 3, \
             min.insync.replicas=2, each node the preferred leader of one partition. For each \
             trial: wait until every partition has a leader and a full ISR; pick a partition \
             whose leader is not the active controller (odd trials) or is (even trials), as \
             `ferrymq cluster status` says, when there is one; point the producer at it and wait \
             for an acknowledgement; `kill -9` the leader's process. **Unavailability** = from \
             the kill to the first delivery report of a message to that partition acknowledged \
             by another broker (librdkafka records which broker answered, so an acknowledgement \
             the old leader sent just before dying does not count). Beside it, Metadata is \
             polled every 10 ms for the partition's new leader. Then the node is restarted on \
             its data and the next trial waits until it is back in every ISR.\n",
            failover::TOPIC,
            failover::PARTITIONS
        );
        out.push_str(
            "\n| trial | partition | killed leader | also active controller | new leader in \
             Metadata after | unavailability | acked by | failed deliveries | restart → ready \
             | restart → back in ISR |\n",
        );
        out.push_str("|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|\n");
        for (index, trial) in self.trials.iter().enumerate() {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                index + 1,
                trial.partition,
                trial.killed,
                match trial.killed_was_controller {
                    Some(true) => "yes",
                    Some(false) => "no",
                    None => "unknown",
                },
                trial
                    .leader_published
                    .map_or("not seen".to_string(), |(d, id)| format!(
                        "{} ms (node {id})",
                        whole_millis(d)
                    )),
                trial
                    .unavailable
                    .as_ref()
                    .map_or_else(|e| e.clone(), |d| format!("{} ms", whole_millis(*d))),
                trial.acked_by.map_or("–".to_string(), |id| id.to_string()),
                trial.failed_deliveries,
                trial.restart_ready.map_or("–".to_string(), seconds),
                trial.back_in_isr.map_or("–".to_string(), seconds),
            );
        }
        self.write_failover_summary(out);
    }

    fn write_failover_summary(&self, out: &mut String) {
        let acknowledged = self.trials.iter().filter(|t| t.unavailable.is_ok()).count();
        let _ = writeln!(
            out,
            "\n{} of {} trials completed; {acknowledged} with an acknowledgement within the \
             trial's bound. The cluster's part of the window is the time until Metadata names \
             the new leader; the rest is the client's.\n",
            self.trials.len(),
            self.trials_asked,
        );
        out.push_str(
            "| trials | count | unavailability median | p90 | max | new leader in Metadata \
             median | max | target (median unavailability) |\n",
        );
        out.push_str("|---|---:|---:|---:|---:|---:|---:|---|\n");
        let subsets = [
            ("**all**", None),
            ("killed leader not the controller", Some(false)),
            ("killed leader also the active controller", Some(true)),
        ];
        for (label, controller) in subsets {
            let trials: Vec<&Trial> = self
                .trials
                .iter()
                .filter(|t| controller.is_none() || t.killed_was_controller == controller)
                .collect();
            let windows: Vec<Duration> = trials
                .iter()
                .filter_map(|t| t.unavailable.as_ref().ok().copied())
                .collect();
            let published: Vec<Duration> = trials
                .iter()
                .filter_map(|t| t.leader_published.map(|(d, _)| d))
                .collect();
            let cell = |values: &[Duration], quantile: f64| {
                percentile(values, quantile)
                    .map_or("–".to_string(), |d| format!("{} ms", whole_millis(d)))
            };
            let _ = writeln!(
                out,
                "| {label} | {} | {} | {} | {} | {} | {} | {} |",
                trials.len(),
                cell(&windows, 0.5),
                cell(&windows, 0.9),
                cell(&windows, 1.0),
                cell(&published, 0.5),
                cell(&published, 1.0),
                failover_target(percentile(&windows, 0.5)),
            );
        }
    }
}

/// The failover targets, held to a median window.
fn failover_target(median: Option<Duration>) -> String {
    median.map_or("not measured".to_string(), |median| {
        format!(
            "< {} s: {}; aim ≤ {} s: {}",
            FAILOVER_MEDIAN_MAX.as_secs(),
            verdict(median < FAILOVER_MEDIAN_MAX),
            FAILOVER_MEDIAN_AIM.as_secs(),
            verdict(median <= FAILOVER_MEDIAN_AIM)
        )
    })
}

/// Nearest-rank percentile of unsorted durations.
fn percentile(values: &[Duration], quantile: f64) -> Option<Duration> {
    let mut sorted = values.to_vec();
    sorted.sort();
    failover::percentile(&sorted, quantile)
}

fn whole_millis(duration: Duration) -> String {
    format!("{:.0}", duration.as_secs_f64() * 1e3)
}

fn seconds(duration: Duration) -> String {
    format!("{:.1} s", duration.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker_nodes::NodeId;
    use crate::throughput::Throughput;

    fn produced(messages: u64, elapsed_ms: u64) -> ThroughputCell {
        ThroughputCell {
            partitions: 1,
            messages,
            produce: Ok(ProduceOutcome {
                throughput: Throughput {
                    messages,
                    payload_bytes: messages * 1024,
                    elapsed: Duration::from_millis(elapsed_ms),
                },
                failed: 0,
                not_sent: 0,
                produce_request_bytes_avg: None,
                first_error: None,
            }),
            cpu: None,
        }
    }

    fn trial(window_ms: u64, controller: bool) -> Trial {
        Trial {
            partition: 0,
            killed: NodeId(1),
            killed_was_controller: Some(controller),
            leader_published: Some((Duration::from_millis(window_ms / 2), NodeId(2))),
            unavailable: Ok(Duration::from_millis(window_ms)),
            acked_by: Some(NodeId(2)),
            failed_deliveries: 0,
            restart_ready: None,
            back_in_isr: None,
        }
    }

    fn report() -> ClusterReport {
        ClusterReport {
            machine: Machine::describe(std::path::Path::new("/")),
            broker_defaults: Vec::new(),
            overrides: "none".to_string(),
            client: String::new(),
            failover_client: String::new(),
            rate_per_s: 20_000,
            single: PhaseResults {
                throughput: vec![produced(1000, 1000)],
                ..PhaseResults::default()
            },
            replicated: PhaseResults {
                throughput: vec![produced(1000, 2004)],
                ..PhaseResults::default()
            },
            trials: vec![trial(900, false), trial(1500, false), trial(3000, true)],
            trials_asked: 3,
            problems: Vec::new(),
            elapsed: Duration::ZERO,
            load: (String::new(), String::new()),
        }
    }

    #[test]
    fn replicated_share_just_under_half_is_missed_and_shown_unrounded() {
        let markdown = report().to_markdown();
        assert!(
            markdown.contains("| 49.9 % | ≥ 50 %: **missed** |"),
            "{markdown}"
        );
    }

    #[test]
    fn failover_targets_hold_each_subset_to_its_median() {
        let markdown = report().to_markdown();
        assert!(markdown.contains("| **all** | 3 | 1500 ms |"), "{markdown}");
        assert!(
            markdown.contains(
                "| killed leader not the controller | 2 | 900 ms | 1500 ms | 1500 ms | 450 ms \
                 | 750 ms | < 2 s: met; aim ≤ 1 s: met |"
            ),
            "{markdown}"
        );
        assert!(
            markdown.contains("| killed leader also the active controller | 1 | 3000 ms |"),
            "{markdown}"
        );
        assert!(markdown.contains("< 2 s: **missed**"), "{markdown}");
    }
}
