//! The suite's findings and their rendering as Markdown for `docs/benchmarks.md`: one table per
//! measurement, each broker figure beside the matching sink figure and the target it is held
//! to. Rendering is pure; the suite fills the structs.

use std::fmt::Write as _;
use std::time::Duration;

use crate::cpu::CpuUse;
use crate::kafka_client::Acks;
use crate::latency::LatencyOutcome;
use crate::machine::Machine;
use crate::produce::ProduceOutcome;
use crate::rss::{kib_to_mib, MemoryPeak};
use crate::sink::SyncMode;
use crate::throughput::Throughput;

/// Message size the throughput targets apply to.
const TARGET_MESSAGE_BYTES: usize = 1024;
/// 1 KiB `acks=1` producer throughput, as a share of the page-cache sink, at least.
const PRODUCE_ACKS_1_SHARE_MIN: f64 = 0.70;
/// 1 KiB `acks=all` producer throughput, as a share of the fsync sink, at least.
const PRODUCE_ACKS_ALL_SHARE_MIN: f64 = 0.50;
/// Rate the latency target applies to.
pub const LATENCY_TARGET_RATE_PER_S: u32 = 20_000;
/// End-to-end p99 at that rate, below.
const LATENCY_P99_MAX: Duration = Duration::from_millis(10);
/// Broker peak resident memory, below.
const BROKER_RSS_MIB_MAX: f64 = 150.0;

/// Everything one suite run found.
pub struct Report {
    /// Where and on what it ran.
    pub machine: Machine,
    /// How the broker was started.
    pub broker: String,
    /// Client settings line.
    pub client: String,
    /// Sink settings line.
    pub baseline: String,
    /// One row per producer scenario, with its sink baseline and the consumer read-back.
    pub throughput: Vec<ThroughputRow>,
    /// One row per latency scenario.
    pub latency: Vec<LatencyRow>,
    /// Broker memory over the whole run, if it was sampled.
    pub memory: Option<MemoryPeak>,
    /// Errors met on the way, one line each.
    pub problems: Vec<String>,
    /// Wall time of the suite.
    pub elapsed: Duration,
}

/// A producer scenario, the sink run matching it and the consumer run reading it back.
pub struct ThroughputRow {
    /// Payload bytes per message.
    pub message_bytes: usize,
    /// Acknowledgement level of the producer.
    pub acks: Acks,
    /// Partitions of the topic, written round robin.
    pub partitions: i32,
    /// Messages the scenario sends.
    pub messages: u64,
    /// Producer figures, or why there are none.
    pub produce: Result<ProduceOutcome, String>,
    /// Largest broker RSS sampled while producing, KiB.
    pub produce_rss_kib: u64,
    /// Cores used by the broker and the client while producing.
    pub produce_cpu: Option<CpuUse>,
    /// The sink pushing the same bytes, or why there is none.
    pub sink: Result<SinkRun, String>,
    /// Consumer figures reading the topic back, or why there are none.
    pub consume: Result<Throughput, String>,
    /// Largest broker RSS sampled while consuming, KiB.
    pub consume_rss_kib: u64,
    /// Cores used by the broker and the client while consuming.
    pub consume_cpu: Option<CpuUse>,
}

/// One sink client run.
pub struct SinkRun {
    /// Page cache or fsync before acknowledging.
    pub mode: SyncMode,
    /// Bytes per chunk.
    pub chunk_bytes: usize,
    /// Bytes moved and time taken (its `messages` are chunks).
    pub throughput: Throughput,
}

/// A fixed-rate end-to-end latency scenario.
pub struct LatencyRow {
    /// Payload bytes per message.
    pub message_bytes: usize,
    /// Acknowledgement level of the producer.
    pub acks: Acks,
    /// Partitions of the topic.
    pub partitions: i32,
    /// Messages per second asked.
    pub rate_per_s: u32,
    /// Figures, or why there are none.
    pub outcome: Result<LatencyOutcome, String>,
    /// Largest broker RSS sampled during the run, KiB.
    pub rss_kib: u64,
}

impl Report {
    /// The report as Markdown.
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        self.write_header(&mut out);
        self.write_produce(&mut out);
        self.write_consume(&mut out);
        self.write_latency(&mut out);
        self.write_memory(&mut out);
        if !self.problems.is_empty() {
            out.push_str("\n### Problems met\n\n");
            for problem in &self.problems {
                let _ = writeln!(out, "- {}", problem.replace('\n', " / "));
            }
        }
        out
    }

    fn write_header(&self, out: &mut String) {
        let m = &self.machine;
        let _ = writeln!(out, "## Benchmark run {}\n", m.date);
        let _ = writeln!(out, "| | |\n|---|---|");
        out.push_str(&m.table_rows());
        let _ = writeln!(out, "| broker | {} |", self.broker);
        let _ = writeln!(out, "| client | {} |", self.client);
        let _ = writeln!(out, "| baseline | {} |", self.baseline);
        let _ = writeln!(
            out,
            "| suite time | {:.0} s; broker, client and sink share the same {} CPUs |",
            self.elapsed.as_secs_f64(),
            m.cpus
        );
        out.push_str(
            "\nMB = 10^6 payload bytes (record and protocol overhead not counted); memory in MiB; \
             cores = CPU seconds used during a measurement ÷ its duration, for the broker and for \
             the benchmark client (librdkafka included).\n",
        );
    }

    fn write_produce(&self, out: &mut String) {
        out.push_str("\n### Producer throughput\n\n");
        out.push_str(
            "| message | acks | partitions | messages | msgs/s | MB/s | sink MB/s (mode, chunk) \
             | sink msgs/s equiv. | % of sink | target | cores broker / client | broker RSS max |\n",
        );
        out.push_str("|---|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|\n");
        for row in &self.throughput {
            let sink = row.sink.as_ref().ok();
            let sink_cell = sink.map_or("error".to_string(), |s| {
                format!(
                    "{:.1} ({}, {} KiB)",
                    s.throughput.mb_per_s(),
                    s.mode.name(),
                    s.chunk_bytes / 1024
                )
            });
            let sink_msgs = sink.map_or("error".to_string(), |s| {
                thousands(s.throughput.payload_bytes as f64 / row.message_bytes as f64 / secs(s))
            });
            let (rate_cells, share) = match &row.produce {
                Ok(p) => (
                    format!(
                        "{} | {:.1}",
                        thousands(p.throughput.messages_per_s()),
                        p.throughput.mb_per_s()
                    ),
                    sink.map(|s| p.throughput.mb_per_s() / s.throughput.mb_per_s()),
                ),
                Err(_) => ("error | error".to_string(), None),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {rate_cells} | {sink_cell} | {sink_msgs} | {} | {} | {} | {:.0} MiB |",
                size_label(row.message_bytes),
                row.acks.as_config(),
                row.partitions,
                thousands(row.messages as f64),
                share.map_or("–".to_string(), percent),
                produce_target(row, share),
                cores(row.produce_cpu),
                kib_to_mib(row.produce_rss_kib)
            );
        }
    }

    fn write_consume(&self, out: &mut String) {
        out.push_str("\n### Consumer throughput\n\n");
        out.push_str(
            "Reading back each producer scenario's topic from the beginning (manual assignment, \
             data in the page cache). % is of the page-cache sink of the same size, the machine's \
             rate for moving these bytes between a socket and the page cache; a consumer writes \
             nothing to disk, so it can pass 100 %.\n\n",
        );
        out.push_str(
            "| message | produced with acks | partitions | messages | msgs/s | MB/s | % of page-cache sink | cores broker / client | broker RSS max |\n",
        );
        out.push_str("|---|---|---|---:|---:|---:|---:|---:|---:|\n");
        let page_cache_sink = |bytes: usize, partitions: i32| {
            self.throughput
                .iter()
                .filter(|r| r.message_bytes == bytes && r.partitions == partitions)
                .filter_map(|r| r.sink.as_ref().ok())
                .find(|s| s.mode == SyncMode::PageCache)
                .map(|s| s.throughput.mb_per_s())
        };
        for row in &self.throughput {
            let (cells, share) = match &row.consume {
                Ok(t) => (
                    format!(
                        "{} | {} | {:.1}",
                        thousands(t.messages as f64),
                        thousands(t.messages_per_s()),
                        t.mb_per_s()
                    ),
                    page_cache_sink(row.message_bytes, row.partitions).map(|s| t.mb_per_s() / s),
                ),
                Err(_) => ("error | error | error".to_string(), None),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {cells} | {} | {} | {:.0} MiB |",
                size_label(row.message_bytes),
                row.acks.as_config(),
                row.partitions,
                share.map_or("–".to_string(), percent),
                cores(row.consume_cpu),
                kib_to_mib(row.consume_rss_kib)
            );
        }
    }

    fn write_latency(&self, out: &mut String) {
        out.push_str("\n### End-to-end latency\n\n");
        out.push_str(
            "Fixed rate; the producer stamps each message with the time it was due, the consumer \
             subtracts it from the time of receipt (same clock). Warm-up excluded.\n\n",
        );
        out.push_str(
            "| message | acks | partitions | rate | achieved msgs/s | measured | p50 ms | p99 ms | p99.9 ms | max ms | target | broker RSS max |\n",
        );
        out.push_str("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|\n");
        for row in &self.latency {
            let cells = match &row.outcome {
                Ok(o) => {
                    let l = &o.latency;
                    format!(
                        "{} | {} | {} | {} | {} | {} | {}",
                        thousands(o.achieved_per_s),
                        thousands(l.samples as f64),
                        millis(l.p50),
                        millis(l.p99),
                        millis(l.p999),
                        millis(l.max),
                        latency_target(row.rate_per_s, l.p99)
                    )
                }
                Err(_) => "error | error | error | error | error | error | –".to_string(),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {cells} | {:.0} MiB |",
                size_label(row.message_bytes),
                row.acks.as_config(),
                row.partitions,
                thousands(f64::from(row.rate_per_s)),
                kib_to_mib(row.rss_kib)
            );
        }
    }

    fn write_memory(&self, out: &mut String) {
        out.push_str("\n### Broker memory\n\n");
        out.push_str("| peak RSS (VmHWM) | max sampled VmRSS (every 100 ms) | target |\n");
        out.push_str("|---:|---:|---|\n");
        match &self.memory {
            Some(memory) => {
                let peak = kib_to_mib(memory.peak_kib());
                let _ = writeln!(
                    out,
                    "| {} | {:.1} MiB | < {BROKER_RSS_MIB_MAX:.0} MiB: {} |",
                    memory.hwm_kib.map_or("unknown".to_string(), |k| format!(
                        "{:.1} MiB",
                        kib_to_mib(k)
                    )),
                    kib_to_mib(memory.rss_max_kib),
                    verdict(peak < BROKER_RSS_MIB_MAX)
                );
            }
            None => out.push_str("| not sampled | not sampled | – |\n"),
        }
    }
}

/// The target a producer row is held to, and whether it was met.
fn produce_target(row: &ThroughputRow, share: Option<f64>) -> String {
    if row.message_bytes != TARGET_MESSAGE_BYTES {
        return "–".to_string();
    }
    let minimum = match row.acks {
        Acks::Leader => PRODUCE_ACKS_1_SHARE_MIN,
        Acks::All => PRODUCE_ACKS_ALL_SHARE_MIN,
    };
    match share {
        Some(share) => format!("≥ {}: {}", percent(minimum), verdict(share >= minimum)),
        None => format!("≥ {}: not measured", percent(minimum)),
    }
}

fn latency_target(rate_per_s: u32, p99: Duration) -> String {
    if rate_per_s != LATENCY_TARGET_RATE_PER_S {
        return "–".to_string();
    }
    format!(
        "p99 < {} ms: {}",
        LATENCY_P99_MAX.as_millis(),
        verdict(p99 < LATENCY_P99_MAX)
    )
}

/// "broker / client" cores, "–" when not measured.
pub fn cores(cpu: Option<CpuUse>) -> String {
    cpu.map_or("–".to_string(), |c| {
        format!("{:.2} / {:.2}", c.broker_cores, c.client_cores)
    })
}

/// "met", or "**missed**" in bold.
pub fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "**missed**"
    }
}

fn secs(sink: &SinkRun) -> f64 {
    sink.throughput.elapsed.as_secs_f64().max(1e-9)
}

/// A share as a whole percentage.
pub fn percent(share: f64) -> String {
    format!("{:.0} %", share * 100.0)
}

/// Milliseconds with two decimals.
pub fn millis(duration: Duration) -> String {
    format!("{:.2}", duration.as_secs_f64() * 1e3)
}

/// "100 B", "1 KiB".
pub fn size_label(bytes: usize) -> String {
    match (bytes / 1024, bytes % 1024) {
        (kib, 0) if kib > 0 => format!("{kib} KiB"),
        _ => format!("{bytes} B"),
    }
}

/// A whole number with thousands separated by commas.
pub fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_grouped_by_thousands() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(thousands(1_234_567.0), "1,234,567");
    }

    #[test]
    fn sizes_are_labelled_in_binary_units() {
        assert_eq!(size_label(100), "100 B");
        assert_eq!(size_label(1024), "1 KiB");
    }

    #[test]
    fn targets_apply_to_one_kib_messages_only() {
        let row = |bytes, acks| ThroughputRow {
            message_bytes: bytes,
            acks,
            partitions: 1,
            messages: 1,
            produce: Err("not run".into()),
            produce_rss_kib: 0,
            produce_cpu: None,
            sink: Err("not run".into()),
            consume: Err("not run".into()),
            consume_rss_kib: 0,
            consume_cpu: None,
        };
        assert_eq!(produce_target(&row(100, Acks::Leader), Some(0.1)), "–");
        assert_eq!(
            produce_target(&row(1024, Acks::Leader), Some(0.75)),
            "≥ 70 %: met"
        );
        assert_eq!(
            produce_target(&row(1024, Acks::All), Some(0.4)),
            "≥ 50 %: **missed**"
        );
        assert_eq!(
            latency_target(20_000, Duration::from_millis(3)),
            "p99 < 10 ms: met"
        );
    }
}
