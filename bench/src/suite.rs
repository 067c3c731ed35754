//! The whole matrix in one run: starts a broker and two sink servers on loopback, then for each
//! producer scenario measures the producer, the sink pushing the same bytes, and a consumer
//! reading them back; then the fixed-rate latency runs; broker memory is sampled throughout.
//! Prints the Markdown report on stdout (progress goes to stderr) and kills what it started.
//!
//! Every scenario is bounded by a message count and a timeout, so the suite ends by itself:
//! about three to five minutes on a 2-core machine with the default counts.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::child_process::{free_loopback_addr, ChildProcess};
use crate::consume::{self, ConsumeSpec};
use crate::cpu::CpuMeter;
use crate::kafka_client::{self, Acks, INFLIGHT_REQUESTS_MAX};
use crate::latency;
use crate::machine::Machine;
use crate::pacing::Rate;
use crate::produce::{self, ProduceOutcome, ProduceSpec};
use crate::report::{size_label, LatencyRow, Report, SinkRun, ThroughputRow};
use crate::rss::RssSampler;
use crate::run_dir::{settle_disk, FinishedRun, RunArgs};
use crate::sink::{self, PushSpec, SyncMode};
use crate::throughput::Throughput;

/// Sink chunk size when the producer's statistics did not say what it sent.
const SINK_CHUNK_BYTES_DEFAULT: usize = 256 * 1024;
/// Sink chunk sizes are kept within what librdkafka sends under load.
const SINK_CHUNK_BYTES_MIN: usize = 64 * 1024;
const SINK_CHUNK_BYTES_MAX: usize = 1024 * 1024;
const _: () = assert!(SINK_CHUNK_BYTES_MAX <= sink::CHUNK_BYTES_MAX);

/// Sink runs per scenario; the median is reported, since one run on a shared 2-core machine
/// can be off by a factor of two either way.
const SINK_RUNS: usize = 3;

/// Message sizes of the throughput matrix.
const MESSAGE_SIZES: [usize; 2] = [100, 1024];
/// Partition counts of the throughput matrix.
const PARTITION_COUNTS: [i32; 2] = [1, 8];

/// Command line of `ferrymq-bench suite`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    run: RunArgs,
    /// Messages per 100-byte producer scenario.
    #[arg(long, default_value_t = 10_000_000)]
    messages_100b: u64,
    /// Messages per 1 KiB producer scenario.
    #[arg(long, default_value_t = 2_000_000)]
    messages_1kib: u64,
    /// Rate of the latency runs, messages per second.
    #[arg(long, default_value_t = crate::report::LATENCY_TARGET_RATE_PER_S)]
    e2e_rate: u32,
    /// Measured seconds of each latency run.
    #[arg(long, default_value_t = 15)]
    e2e_duration_s: u64,
    /// Warm-up seconds of each latency run, not measured.
    #[arg(long, default_value_t = 2)]
    e2e_warmup_s: u64,
    /// Bound on each throughput measurement.
    #[arg(long, default_value_t = 60)]
    scenario_timeout_s: u64,
}

/// One cell of the throughput matrix.
#[derive(Clone, Copy, Debug)]
struct Scenario {
    message_bytes: usize,
    acks: Acks,
    partitions: i32,
    messages: u64,
}

impl Scenario {
    fn label(&self) -> String {
        format!(
            "{} acks={} partitions={}",
            size_label(self.message_bytes),
            self.acks.as_config(),
            self.partitions
        )
    }
}

/// The processes a run measures against.
struct Servers {
    broker: ChildProcess,
    sink_page_cache: ChildProcess,
    sink_fsync: ChildProcess,
}

impl Servers {
    fn sink(&self, acks: Acks) -> (SyncMode, SocketAddr) {
        match acks {
            Acks::Leader => (SyncMode::PageCache, self.sink_page_cache.addr()),
            Acks::All => (SyncMode::Fsync, self.sink_fsync.addr()),
        }
    }
}

/// Runs `ferrymq-bench suite`.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let broker_bin = args.run.broker_bin()?;
    let work_dir = args.run.create_work_dir("ferrymq-bench")?;
    let mut report = Report {
        machine: Machine::describe(&work_dir),
        broker: format!(
            "`ferrymq serve`, single node, topics with replication factor 1, fresh data directory; \
             overrides: {}",
            args.run.overrides_label()
        ),
        client: kafka_client::settings_summary(),
        baseline: format!(
            "`ferrymq-bench sink-server`: TCP → one file, page-cache mode (no fsync) beside acks=1, \
             fsync mode (one fdatasync per group of received chunks before acknowledging) beside \
             acks=all; client window {INFLIGHT_REQUESTS_MAX} chunks; chunk = the producer's average \
             produce request size (librdkafka statistics) within {}–{} KiB; median of \
             {SINK_RUNS} runs, each pushing the scenario's payload bytes",
            SINK_CHUNK_BYTES_MIN / 1024,
            SINK_CHUNK_BYTES_MAX / 1024
        ),
        throughput: Vec::new(),
        latency: Vec::new(),
        memory: None,
        problems: Vec::new(),
        elapsed: Duration::ZERO,
    };
    if let Err(error) = run_matrix(&args, &broker_bin, &work_dir, &mut report).await {
        report.problems.push(format!("{error:#}"));
    }
    report.elapsed = started.elapsed();
    let finished = FinishedRun {
        markdown: report.to_markdown(),
        problems: report.problems.len(),
        work_dir: &work_dir,
        keep_work_dir: args.run.keep_work_dir,
        logs: "broker.log has the broker's output",
    };
    finished.publish()
}

/// Starts the servers and runs every scenario, recording into `report`. Returns early only if
/// something could not start; a failing scenario is recorded and the next one runs, unless
/// the broker has died.
async fn run_matrix(
    args: &Args,
    broker_bin: &Path,
    work_dir: &Path,
    report: &mut Report,
) -> anyhow::Result<()> {
    let mut servers = start_servers(broker_bin, work_dir, &args.run.broker_overrides).await?;
    let sampler = RssSampler::start(servers.broker.pid());
    let timeout = Duration::from_secs(args.scenario_timeout_s);
    for scenario in matrix(args) {
        if let Err(error) = servers.broker.check_running() {
            report.problems.push(format!("{error:#}"));
            break;
        }
        eprintln!("suite: throughput {}", scenario.label());
        settle_disk().await;
        let row = throughput_row(scenario, &servers, &sampler, timeout).await;
        note_problems(&mut report.problems, &scenario.label(), &row);
        report.throughput.push(row);
    }
    for acks in [Acks::Leader, Acks::All] {
        if let Err(error) = servers.broker.check_running() {
            report.problems.push(format!("{error:#}"));
            break;
        }
        eprintln!(
            "suite: latency 1 KiB acks={} at {} msgs/s",
            acks.as_config(),
            args.e2e_rate
        );
        settle_disk().await;
        let row = latency_row(args, acks, servers.broker.addr(), &sampler).await;
        if let Err(error) = &row.outcome {
            report
                .problems
                .push(format!("latency acks={}: {error}", acks.as_config()));
        }
        report.latency.push(row);
    }
    report.memory = Some(sampler.finish());
    Ok(())
}

async fn start_servers(
    broker_bin: &Path,
    work_dir: &Path,
    overrides: &[String],
) -> anyhow::Result<Servers> {
    let this_exe = std::env::current_exe().context("locating ferrymq-bench itself")?;
    let start_sink = |mode: SyncMode| {
        let file = work_dir.join(format!("sink-{}.bin", mode.name()));
        let log = work_dir.join(format!("sink-{}.log", mode.name()));
        let this_exe = this_exe.clone();
        async move {
            let addr = free_loopback_addr()?;
            let mut command = Command::new(&this_exe);
            command
                .arg("sink-server")
                .args(["--listen", &addr.to_string(), "--mode", mode.name()])
                .arg("--file")
                .arg(&file);
            ChildProcess::start(
                &format!("sink-server ({})", mode.name()),
                command,
                addr,
                &log,
            )
            .await
        }
    };
    let sink_page_cache = start_sink(SyncMode::PageCache).await?;
    let sink_fsync = start_sink(SyncMode::Fsync).await?;
    let addr = free_loopback_addr()?;
    let data_dir = work_dir.join("broker-data");
    let mut command = Command::new(broker_bin);
    command
        .arg("serve")
        .args(["--listen", &addr.to_string()])
        .arg("--data-dir")
        .arg(&data_dir);
    for setting in overrides {
        command.args(["--override", setting]);
    }
    let broker = ChildProcess::start("broker", command, addr, &work_dir.join("broker.log")).await?;
    eprintln!("suite: broker pid {} on {addr}", broker.pid());
    Ok(Servers {
        broker,
        sink_page_cache,
        sink_fsync,
    })
}

fn matrix(args: &Args) -> Vec<Scenario> {
    let mut scenarios = Vec::new();
    for message_bytes in MESSAGE_SIZES {
        let messages = if message_bytes == 100 {
            args.messages_100b
        } else {
            args.messages_1kib
        };
        for acks in [Acks::Leader, Acks::All] {
            for partitions in PARTITION_COUNTS {
                scenarios.push(Scenario {
                    message_bytes,
                    acks,
                    partitions,
                    messages,
                });
            }
        }
    }
    scenarios
}

/// Producer, then the matching sink, then a consumer reading the topic back.
async fn throughput_row(
    scenario: Scenario,
    servers: &Servers,
    sampler: &RssSampler,
    timeout: Duration,
) -> ThroughputRow {
    let bootstrap = servers.broker.addr();
    let topic = format!(
        "throughput-{}b-acks-{}-p{}",
        scenario.message_bytes,
        scenario.acks.as_config(),
        scenario.partitions
    );
    sampler.take_interval_max_kib();
    let meter = CpuMeter::start(&[servers.broker.pid()]);
    let produce = produce_once(bootstrap, &topic, scenario, timeout).await;
    let produce_cpu = produce
        .as_ref()
        .ok()
        .and_then(|p| meter.stop(p.throughput.elapsed));
    let produce_rss_kib = sampler.take_interval_max_kib();
    let chunk_bytes = sink_chunk_bytes(
        produce
            .as_ref()
            .ok()
            .and_then(|p| p.produce_request_bytes_avg),
    );
    let (mode, sink_addr) = servers.sink(scenario.acks);
    let spec = PushSpec {
        addr: sink_addr,
        total_bytes: scenario.messages * scenario.message_bytes as u64,
        chunk_bytes,
        window_chunks: INFLIGHT_REQUESTS_MAX,
        timeout,
    };
    settle_disk().await;
    let sink = sink_median(spec)
        .await
        .map(|throughput| SinkRun {
            mode,
            chunk_bytes,
            throughput,
        })
        .map_err(|e| format!("sink ({}): {e:#}", mode.name()));
    sampler.take_interval_max_kib();
    let meter = CpuMeter::start(&[servers.broker.pid()]);
    let consume = match &produce {
        Ok(produced) => {
            let spec = ConsumeSpec {
                bootstrap,
                topic,
                timeout,
            };
            consume_all(spec, produced.throughput.messages).await
        }
        Err(_) => Err("not run: nothing was produced".to_string()),
    };
    let consume_cpu = consume.as_ref().ok().and_then(|t| meter.stop(t.elapsed));
    ThroughputRow {
        message_bytes: scenario.message_bytes,
        acks: scenario.acks,
        partitions: scenario.partitions,
        messages: scenario.messages,
        produce,
        produce_rss_kib,
        produce_cpu,
        sink,
        consume,
        consume_rss_kib: sampler.take_interval_max_kib(),
        consume_cpu,
    }
}

/// Pushes `SINK_RUNS` times and keeps the median run.
async fn sink_median(spec: PushSpec) -> anyhow::Result<Throughput> {
    let mut runs = Vec::with_capacity(SINK_RUNS);
    for _ in 0..SINK_RUNS {
        runs.push(sink::push(spec).await?);
    }
    runs.sort_by_key(|run| run.elapsed);
    let median = runs[runs.len() / 2];
    eprintln!("suite:   sink {}", describe_bytes(&median));
    Ok(median)
}

fn describe_bytes(run: &Throughput) -> String {
    format!(
        "{} bytes in {:.3} s: {:.1} MB/s",
        run.payload_bytes,
        run.elapsed.as_secs_f64(),
        run.mb_per_s()
    )
}

async fn produce_once(
    bootstrap: SocketAddr,
    topic: &str,
    scenario: Scenario,
    timeout: Duration,
) -> Result<ProduceOutcome, String> {
    let attempt = async {
        kafka_client::create_topic(bootstrap, topic, scenario.partitions).await?;
        let outcome = produce::measure(ProduceSpec {
            bootstrap,
            topic: topic.to_string(),
            messages: scenario.messages,
            message_bytes: scenario.message_bytes,
            acks: scenario.acks,
            partitions: scenario.partitions,
            rate: None,
            timeout,
        })
        .await?;
        eprintln!("suite:   produce {}", outcome.throughput);
        outcome.complete()
    };
    attempt.await.map_err(|e| format!("produce: {e:#}"))
}

async fn consume_all(spec: ConsumeSpec, messages: u64) -> Result<Throughput, String> {
    let throughput = consume::measure(spec, messages)
        .await
        .map_err(|e| format!("consume: {e:#}"))?;
    eprintln!("suite:   consume {throughput}");
    if throughput.messages < messages {
        return Err(format!(
            "consume: received {} of {messages} messages before the timeout",
            throughput.messages
        ));
    }
    Ok(throughput)
}

async fn latency_row(
    args: &Args,
    acks: Acks,
    bootstrap: SocketAddr,
    sampler: &RssSampler,
) -> LatencyRow {
    const MESSAGE_BYTES: usize = 1024;
    const PARTITIONS: i32 = 1;
    let topic = format!(
        "latency-{MESSAGE_BYTES}b-acks-{}-p{PARTITIONS}",
        acks.as_config()
    );
    sampler.take_interval_max_kib();
    let attempt = async {
        let rate = Rate::new(args.e2e_rate).context("--e2e-rate must be positive")?;
        kafka_client::create_topic(bootstrap, &topic, PARTITIONS).await?;
        let spec = latency::spec(
            ProduceSpec {
                bootstrap,
                topic: topic.clone(),
                messages: 0,
                message_bytes: MESSAGE_BYTES,
                acks,
                partitions: PARTITIONS,
                rate: Some(rate),
                timeout: Duration::ZERO,
            },
            Duration::from_secs(args.e2e_warmup_s),
            Duration::from_secs(args.e2e_duration_s),
        )?;
        latency::measure(spec).await
    };
    let outcome = attempt.await.map_err(|e| format!("{e:#}"));
    if let Ok(o) = &outcome {
        eprintln!(
            "suite:   {} measured, p99 {:.2} ms",
            o.latency.samples,
            o.latency.p99.as_secs_f64() * 1e3
        );
    }
    LatencyRow {
        message_bytes: MESSAGE_BYTES,
        acks,
        partitions: PARTITIONS,
        rate_per_s: args.e2e_rate,
        outcome,
        rss_kib: sampler.take_interval_max_kib(),
    }
}

fn note_problems(problems: &mut Vec<String>, label: &str, row: &ThroughputRow) {
    let errors = [
        row.produce.as_ref().err(),
        row.sink.as_ref().err(),
        row.consume.as_ref().err(),
    ];
    for error in errors.into_iter().flatten() {
        problems.push(format!("{label}: {error}"));
    }
}

/// The sink's chunk size: what librdkafka sent on average, kept within the usual range.
fn sink_chunk_bytes(produce_request_bytes_avg: Option<u64>) -> usize {
    let Some(average) = produce_request_bytes_avg else {
        return SINK_CHUNK_BYTES_DEFAULT;
    };
    let average = usize::try_from(average).unwrap_or(SINK_CHUNK_BYTES_MAX);
    average.clamp(SINK_CHUNK_BYTES_MIN, SINK_CHUNK_BYTES_MAX) / 1024 * 1024
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sink_chunks_follow_the_producer_within_bounds() {
        assert_eq!(sink_chunk_bytes(None), SINK_CHUNK_BYTES_DEFAULT);
        assert_eq!(sink_chunk_bytes(Some(10_000)), 64 * 1024);
        assert_eq!(sink_chunk_bytes(Some(300_000)), 292 * 1024);
        assert_eq!(sink_chunk_bytes(Some(50_000_000)), 1024 * 1024);
    }
}
