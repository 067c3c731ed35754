//! `ferrymq-bench cluster`: replication's cost and failover time, in one run. Starts a single
//! node and measures 1 KiB acks=all producer throughput and fixed-rate end-to-end latency on a
//! 1- and an 8-partition topic (replication factor 1); stops it; starts a 3-node cluster on
//! loopback with default settings and measures the same with replication factor 3 and
//! `min.insync.replicas=2`; then, on a fresh 3-node cluster, runs the failover trials
//! (`failover.rs`). Prints a Markdown section for `docs/benchmarks.md` on stdout, progress on
//! stderr, and kills every node it started (by PID) before it returns.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::broker_nodes::{Nodes, NodesSpec};
use crate::cluster_report::{ClusterReport, LatencyCell, Phase, PhaseResults, ThroughputCell};
use crate::cpu::CpuMeter;
use crate::failover::{self, Rig};
use crate::failover_producer;
use crate::kafka_client::{self, Acks, TopicSpec};
use crate::latency;
use crate::machine::Machine;
use crate::pacing::Rate;
use crate::produce::{self, ProduceOutcome, ProduceSpec};
use crate::report::LATENCY_TARGET_RATE_PER_S;
use crate::run_dir::{settle_disk, FinishedRun, RunArgs};

/// Nodes of the replicated phases.
const CLUSTER_NODES: i32 = 3;
/// Replication factor of the replicated phases' topics.
const REPLICATION_FACTOR: i32 = 3;
/// `min.insync.replicas` of those topics: one replica may be down and acks=all still works.
const MIN_INSYNC_REPLICAS: &str = "2";
const _: () = assert!(REPLICATION_FACTOR <= CLUSTER_NODES);

/// Payload bytes of every throughput and latency message.
pub const MESSAGE_BYTES: usize = 1024;
/// Partition counts measured in both phases.
pub const PARTITION_COUNTS: [i32; 2] = [1, 8];

/// Bound on waiting for a new topic's partitions to have leaders and full ISRs.
const TOPIC_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Broker settings whose defaults the report states, because the figures depend on them.
const REPORTED_DEFAULTS: [&str; 6] = [
    "broker.heartbeat.interval.ms",
    "broker.session.timeout.ms",
    "replica.fetch.wait.max.ms",
    "replica.lag.time.max.ms",
    "log.flush.interval.messages",
    "unclean.leader.election.enable",
];

/// Command line of `ferrymq-bench cluster`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    run: RunArgs,
    /// Messages per producer throughput scenario.
    #[arg(long, default_value_t = 1_000_000)]
    messages: u64,
    /// Rate of the latency runs, messages per second.
    #[arg(long, default_value_t = LATENCY_TARGET_RATE_PER_S)]
    e2e_rate: u32,
    /// Measured seconds of each latency run.
    #[arg(long, default_value_t = 15)]
    e2e_duration_s: u64,
    /// Warm-up seconds of each latency run, not measured.
    #[arg(long, default_value_t = 2)]
    e2e_warmup_s: u64,
    /// Bound on each throughput measurement.
    #[arg(long, default_value_t = 120)]
    scenario_timeout_s: u64,
    /// Failover trials (0 skips them).
    #[arg(long, default_value_t = 20)]
    trials: usize,
    /// librdkafka `debug` contexts for the failover producer (e.g. `broker,metadata,msg`); its
    /// log goes to stderr with UTC times, to set beside the nodes' logs.
    #[arg(long)]
    failover_client_debug: Option<String>,
    /// Skip the throughput and latency phases, run only the failover trials.
    #[arg(long)]
    failover_only: bool,
}

/// Runs `ferrymq-bench cluster`.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let bin = args.run.broker_bin()?;
    let work_dir = args.run.create_work_dir("ferrymq-bench-cluster")?;
    let mut report = ClusterReport {
        machine: Machine::describe(&work_dir),
        broker_defaults: broker_defaults(&bin),
        overrides: args.run.overrides_label(),
        client: kafka_client::settings_summary(),
        failover_client: failover_producer::settings_summary(),
        rate_per_s: args.e2e_rate,
        single: PhaseResults::default(),
        replicated: PhaseResults::default(),
        trials: Vec::new(),
        trials_asked: args.trials,
        problems: Vec::new(),
        elapsed: Duration::ZERO,
        load: (load_average(), String::new()),
    };
    if let Err(error) = run_phases(&args, &bin, &work_dir, &mut report).await {
        report.problems.push(format!("{error:#}"));
    }
    report.elapsed = started.elapsed();
    report.load.1 = load_average();
    let finished = FinishedRun {
        markdown: report.to_markdown(),
        problems: report.problem_count(),
        work_dir: &work_dir,
        keep_work_dir: args.run.keep_work_dir,
        logs: "<phase>/node-<id>.log has each node's output",
    };
    finished.publish()
}

/// Single node, then the 3-node cluster, then failover on a fresh cluster. Each phase's nodes
/// are killed, and their data removed, before the next phase starts.
async fn run_phases(
    args: &Args,
    bin: &Path,
    work_dir: &Path,
    report: &mut ClusterReport,
) -> anyhow::Result<()> {
    let spec = |name: &str| -> anyhow::Result<NodesSpec> {
        let dir = work_dir.join(name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(NodesSpec {
            bin: bin.to_path_buf(),
            dir,
            overrides: args.run.broker_overrides.clone(),
        })
    };
    if !args.failover_only {
        let single = spec("single")?;
        eprintln!("cluster: starting a single node");
        let mut nodes = Nodes::start_single(&single).await?;
        report.single = measure_phase(args, &mut nodes, Phase::Single).await;
        drop(nodes);
        remove_data_dirs(&single.dir)?;

        let replicated = spec("replicated")?;
        eprintln!("cluster: starting {CLUSTER_NODES} nodes");
        let mut nodes = Nodes::start_cluster(&replicated, CLUSTER_NODES).await?;
        report.replicated = measure_phase(args, &mut nodes, Phase::Replicated).await;
        drop(nodes);
        remove_data_dirs(&replicated.dir)?;
    }
    if args.trials > 0 {
        let fresh = spec("failover")?;
        eprintln!("cluster: starting {CLUSTER_NODES} fresh nodes for failover");
        let mut nodes = Nodes::start_cluster(&fresh, CLUSTER_NODES).await?;
        create_failover_topic(&nodes).await?;
        let rig = Rig {
            nodes: &mut nodes,
            broker_bin: bin,
            replicas: REPLICATION_FACTOR as usize,
            client_debug: args.failover_client_debug.clone(),
        };
        let run = failover::run_trials(rig, args.trials).await;
        report.trials = run.trials;
        report.problems.extend(run.problems);
    }
    Ok(())
}

/// Throughput, then latency, on 1 and 8 partitions, with the phase's replication.
async fn measure_phase(args: &Args, nodes: &mut Nodes, phase: Phase) -> PhaseResults {
    let mut results = PhaseResults::default();
    for partitions in PARTITION_COUNTS {
        if let Err(error) = nodes.check_running() {
            results.problems.push(format!("{error:#}"));
            return results;
        }
        eprintln!(
            "cluster: {} throughput, {partitions} partition(s)",
            phase.label()
        );
        let topic = format!("throughput-{}-p{partitions}", phase.name());
        let cell = throughput_cell(args, nodes, phase, &topic, partitions).await;
        if let Err(error) = &cell.produce {
            results.problems.push(format!(
                "{} throughput, {partitions} partition(s): {error}",
                phase.label()
            ));
        }
        results.throughput.push(cell);
    }
    for partitions in PARTITION_COUNTS {
        if let Err(error) = nodes.check_running() {
            results.problems.push(format!("{error:#}"));
            return results;
        }
        eprintln!(
            "cluster: {} latency at {} msgs/s, {partitions} partition(s)",
            phase.label(),
            args.e2e_rate
        );
        let topic = format!("latency-{}-p{partitions}", phase.name());
        let cell = latency_cell(args, nodes, phase, &topic, partitions).await;
        if let Err(error) = &cell.outcome {
            results.problems.push(format!(
                "{} latency, {partitions} partition(s): {error}",
                phase.label()
            ));
        }
        results.latency.push(cell);
    }
    results
}

async fn throughput_cell(
    args: &Args,
    nodes: &Nodes,
    phase: Phase,
    topic: &str,
    partitions: i32,
) -> ThroughputCell {
    let mut cpu = None;
    let attempt = async {
        create_topic(nodes, phase, topic, partitions).await?;
        settle_disk().await;
        let meter = CpuMeter::start(&nodes.pids());
        let outcome = produce::measure(ProduceSpec {
            bootstrap: nodes.first_addr(),
            topic: topic.to_string(),
            messages: args.messages,
            message_bytes: MESSAGE_BYTES,
            acks: Acks::All,
            partitions,
            rate: None,
            timeout: Duration::from_secs(args.scenario_timeout_s),
        })
        .await?;
        cpu = meter.stop(outcome.throughput.elapsed);
        eprintln!("cluster:   produce {}", outcome.throughput);
        outcome.complete()
    };
    let produce: Result<ProduceOutcome, String> = attempt.await.map_err(|e| format!("{e:#}"));
    ThroughputCell {
        partitions,
        messages: args.messages,
        produce,
        cpu,
    }
}

async fn latency_cell(
    args: &Args,
    nodes: &Nodes,
    phase: Phase,
    topic: &str,
    partitions: i32,
) -> LatencyCell {
    let mut cpu = None;
    let attempt = async {
        let rate = Rate::new(args.e2e_rate).context("--e2e-rate must be positive")?;
        create_topic(nodes, phase, topic, partitions).await?;
        settle_disk().await;
        let spec = latency::spec(
            ProduceSpec {
                bootstrap: nodes.first_addr(),
                topic: topic.to_string(),
                messages: 0,
                message_bytes: MESSAGE_BYTES,
                acks: Acks::All,
                partitions,
                rate: Some(rate),
                timeout: Duration::ZERO,
            },
            Duration::from_secs(args.e2e_warmup_s),
            Duration::from_secs(args.e2e_duration_s),
        )?;
        let meter = CpuMeter::start(&nodes.pids());
        let started = Instant::now();
        let outcome = latency::measure(spec).await?;
        cpu = meter.stop(started.elapsed());
        eprintln!(
            "cluster:   {} measured, p50 {:.2} ms, p99 {:.2} ms",
            outcome.latency.samples,
            outcome.latency.p50.as_secs_f64() * 1e3,
            outcome.latency.p99.as_secs_f64() * 1e3
        );
        anyhow::Ok(outcome)
    };
    let outcome = attempt.await.map_err(|e| format!("{e:#}"));
    LatencyCell {
        partitions,
        outcome,
        cpu,
    }
}

/// Creates `topic` with the phase's replication and waits until every partition is led with
/// a full ISR.
async fn create_topic(
    nodes: &Nodes,
    phase: Phase,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<()> {
    let (replication_factor, configs): (i32, &[(&str, &str)]) = match phase {
        Phase::Single => (1, &[]),
        Phase::Replicated => (
            REPLICATION_FACTOR,
            &[("min.insync.replicas", MIN_INSYNC_REPLICAS)],
        ),
    };
    let bootstrap = nodes.bootstrap();
    let spec = TopicSpec {
        name: topic,
        partitions,
        replication_factor,
        replica_assignment: &[],
        configs,
    };
    kafka_client::create_topic_with(&bootstrap, &spec).await?;
    let topic = topic.to_string();
    let replicas = usize::try_from(replication_factor).expect("positive");
    tokio::task::spawn_blocking(move || {
        kafka_client::wait_partitions_led(&bootstrap, &topic, replicas, TOPIC_READY_TIMEOUT)
    })
    .await
    .context("metadata thread")?
}

/// The failover trials' topic: replication factor 3, each node the preferred leader of one
/// partition.
async fn create_failover_topic(nodes: &Nodes) -> anyhow::Result<()> {
    let bootstrap = nodes.bootstrap();
    let spec = TopicSpec {
        name: failover::TOPIC,
        partitions: failover::PARTITIONS,
        replication_factor: REPLICATION_FACTOR,
        replica_assignment: &failover::REPLICA_ASSIGNMENT,
        configs: &[("min.insync.replicas", MIN_INSYNC_REPLICAS)],
    };
    kafka_client::create_topic_with(&bootstrap, &spec).await?;
    let replicas = usize::try_from(REPLICATION_FACTOR).expect("positive");
    tokio::task::spawn_blocking(move || {
        kafka_client::wait_partitions_led(
            &bootstrap,
            failover::TOPIC,
            replicas,
            TOPIC_READY_TIMEOUT,
        )
    })
    .await
    .context("metadata thread")?
}

/// Removes the nodes' data directories (`node-<id>`) under `dir`, keeping their logs: the
/// replicated phase writes three copies of every byte, and the disk is shared.
fn remove_data_dirs(dir: &Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path)
                .with_context(|| format!("removing {}", path.display()))?;
        }
    }
    Ok(())
}

/// The 1-, 5- and 15-minute load averages, "unknown" if `/proc/loadavg` is unreadable.
fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let fields: Vec<&str> = text.split_whitespace().take(3).collect();
    if fields.len() == 3 {
        fields.join(" / ")
    } else {
        "unknown".to_string()
    }
}

/// The defaults of `REPORTED_DEFAULTS`, read from `ferrymq settings` (the broker's own table),
/// as `name=value`; "unknown" for any it did not list.
fn broker_defaults(bin: &Path) -> Vec<String> {
    let table = Command::new(bin)
        .arg("settings")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .unwrap_or_default();
    REPORTED_DEFAULTS
        .iter()
        .map(|name| {
            let value = setting_default(&table, name).unwrap_or("unknown");
            format!("{name}={value}")
        })
        .collect()
}

/// The default column of a `ferrymq settings` row: `` | `name` | `ENV` | `default` | doc | ``.
fn setting_default<'a>(table: &'a str, name: &str) -> Option<&'a str> {
    let key = format!("`{name}`");
    table.lines().find_map(|line| {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        (cells.get(1) == Some(&key.as_str()))
            .then(|| cells.get(3).map(|c| c.trim_matches('`')))
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setting_defaults_are_read_from_the_settings_table() {
        let table = "| setting | environment | default | meaning |\n|---|---|---|---|\n\
                     | `broker.session.timeout.ms` | `FERRYMQ_X` | `1000` | A broker ... |\n";
        assert_eq!(
            setting_default(table, "broker.session.timeout.ms"),
            Some("1000")
        );
        assert_eq!(setting_default(table, "listen"), None);
    }
}
