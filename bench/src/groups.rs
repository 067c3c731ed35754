//! `ferrymq-bench groups`: the consumer-group and compaction figures. Starts its own broker
//! and measures (1) how long a group of 10 librdkafka consumers takes to complete a rebalance
//! after an 11th member joins, with the eager (range) and incremental (cooperative-sticky)
//! protocols, and (2) compaction throughput — bytes the cleaner reads and rewrites per second
//! of cleaning — while a producer keeps appending updates to a compacted topic. Prints a
//! Markdown section for `docs/benchmarks.md`. Every wait is bounded; it prints, never asserts.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

use crate::child_process::{free_loopback_addr, ChildProcess};

/// Members before the one that joins.
const MEMBERS: usize = 10;
/// Partitions of the rebalance topic: two per member after the join, nearly.
const REBALANCE_PARTITIONS: i32 = 22;
/// Longest any single wait may take.
const WAIT_MAX: Duration = Duration::from_secs(120);

/// Command line of `ferrymq-bench groups`.
#[derive(clap::Args)]
pub struct Args {
    /// The `ferrymq` binary [default: $CARGO_TARGET_DIR/release/ferrymq].
    #[arg(long)]
    broker_bin: Option<PathBuf>,
    /// Scratch directory parent [default: the system temporary directory].
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Joins measured per assignment strategy.
    #[arg(long, default_value_t = 5)]
    joins: usize,
    /// librdkafka `heartbeat.interval.ms` of the members: members learn of a rebalance from
    /// their next heartbeat, so this bounds how fast any rebalance can be.
    #[arg(long, default_value_t = 500)]
    heartbeat_interval_ms: u32,
    /// Seconds the producer appends to the compacted topic.
    #[arg(long, default_value_t = 30)]
    produce_s: u64,
    /// Rate of that producer in MB/s (1 KiB records over `keys` keys).
    #[arg(long, default_value_t = 20)]
    produce_mb_per_s: u64,
    /// Distinct keys of the compacted topic.
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// The broker's `log.cleaner.io.max.bytes.per.second` (0: no limit).
    #[arg(long, default_value_t = 52_428_800)]
    cleaner_io_max: u64,
}

fn broker_bin(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let path = given.unwrap_or_else(|| {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map_or_else(|| PathBuf::from("target"), PathBuf::from);
        target.join("release").join("ferrymq")
    });
    if !path.is_file() {
        bail!(
            "broker binary {} not found; build it or pass --broker-bin",
            path.display()
        );
    }
    Ok(path)
}

/// Runs both measurements and prints the Markdown section.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let parent = args.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    let work_dir = parent.join(format!("ferrymq-bench-groups-{}", std::process::id()));
    std::fs::create_dir_all(&work_dir)
        .with_context(|| format!("creating {}", work_dir.display()))?;
    let addr = free_loopback_addr()?;
    let mut command = Command::new(broker_bin(args.broker_bin.clone())?);
    command
        .arg("serve")
        .args(["--listen", &addr.to_string()])
        .args(["--admin-listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(work_dir.join("data"))
        .args(["--override", "log.cleaner.backoff.ms=1000"])
        .arg("--override")
        .arg(format!(
            "log.cleaner.io.max.bytes.per.second={}",
            args.cleaner_io_max
        ));
    let log = work_dir.join("broker.log");
    let broker = ChildProcess::start("broker", command, addr, &log).await?;
    let mut out = String::from("| measurement | figure |\n|---|---|\n");
    for strategy in ["range", "cooperative-sticky"] {
        let times = rebalance_times(addr, strategy, &args).await?;
        out.push_str(&format!(
            "| rebalance after an 11th member joins 10 ({strategy}), {} joins | median {:.0} ms, max {:.0} ms |\n",
            times.len(),
            median_ms(&times),
            times.iter().map(Duration::as_secs_f64).fold(0.0, f64::max) * 1e3
        ));
    }
    let produced = produce_compacted(addr, &args).await?;
    // Let the last passes finish before reading their figures.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let c = cleaner_figures(&log)?;
    out.push_str(&format!(
        "| producer while compacting (1 KiB records, {} keys, acks=1) | {:.1} MB/s for {} s |\n",
        args.keys, produced, args.produce_s
    ));
    out.push_str(&format!(
        "| compaction passes | {} passes, {} segments, {:.1} MB read, {:.1} MB written, {:.1} s cleaning |\n",
        c.passes, c.segments, c.read as f64 / 1e6, c.written as f64 / 1e6, c.seconds
    ));
    out.push_str(&format!(
        "| compaction throughput (log.cleaner.io.max.bytes.per.second = {}) | {:.1} MB/s read (key map + rewrite passes), {:.1} MB/s written |\n",
        args.cleaner_io_max,
        c.read as f64 / 1e6 / c.seconds.max(1e-9),
        c.written as f64 / 1e6 / c.seconds.max(1e-9)
    ));
    println!("{out}");
    drop(broker);
    let _ = std::fs::remove_dir_all(&work_dir);
    Ok(())
}

fn median_ms(times: &[Duration]) -> f64 {
    let mut v: Vec<f64> = times.iter().map(|t| t.as_secs_f64() * 1e3).collect();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

async fn create_topic(
    addr: SocketAddr,
    name: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", addr.to_string())
        .create()?;
    let mut t = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    for (k, v) in configs {
        t = t.set(k, v);
    }
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for r in admin.create_topics([&t], &opts).await? {
        if let Err((n, e)) = r {
            bail!("creating {n}: {e}");
        }
    }
    Ok(())
}

fn member(
    addr: SocketAddr,
    group: &str,
    topic: &str,
    strategy: &str,
    heartbeat_ms: u32,
) -> anyhow::Result<BaseConsumer> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", addr.to_string())
        .set("group.id", group)
        .set("partition.assignment.strategy", strategy)
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", heartbeat_ms.to_string())
        .set("enable.auto.commit", "false")
        .create()?;
    c.subscribe(&[topic])?;
    Ok(c)
}

/// Polls every member until their assignments are disjoint, non-empty and cover the topic.
fn wait_balanced(members: &[BaseConsumer]) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        for m in members {
            let _ = m.poll(Duration::from_millis(1));
        }
        let sets: Vec<BTreeSet<i32>> = members
            .iter()
            .map(|m| {
                m.assignment()
                    .map(|a| a.elements().iter().map(|e| e.partition()).collect())
                    .unwrap_or_default()
            })
            .collect();
        let total: usize = sets.iter().map(BTreeSet::len).sum();
        let union: BTreeSet<i32> = sets.iter().flatten().copied().collect();
        if sets.iter().all(|s| !s.is_empty())
            && total == REBALANCE_PARTITIONS as usize
            && union.len() == total
        {
            return Ok(());
        }
        if start.elapsed() > WAIT_MAX {
            bail!("the group never balanced: {sets:?}");
        }
    }
}

async fn rebalance_times(
    addr: SocketAddr,
    strategy: &str,
    args: &Args,
) -> anyhow::Result<Vec<Duration>> {
    let topic = format!("rebalance-{strategy}");
    create_topic(addr, &topic, REBALANCE_PARTITIONS, &[]).await?;
    let group = format!("{topic}-group");
    let mut members = (0..MEMBERS)
        .map(|_| member(addr, &group, &topic, strategy, args.heartbeat_interval_ms))
        .collect::<anyhow::Result<Vec<_>>>()?;
    wait_balanced(&members)?;
    let mut times = Vec::with_capacity(args.joins);
    for _ in 0..args.joins {
        let start = Instant::now();
        members.push(member(
            addr,
            &group,
            &topic,
            strategy,
            args.heartbeat_interval_ms,
        )?);
        wait_balanced(&members)?;
        times.push(start.elapsed());
        eprintln!(
            "groups: {strategy} join rebalanced in {:?}",
            start.elapsed()
        );
        let gone = members.pop().expect("just pushed");
        gone.unsubscribe();
        let start = Instant::now();
        while gone.assignment().map(|a| a.count()).unwrap_or(0) > 0 && start.elapsed() < WAIT_MAX {
            let _ = gone.poll(Duration::from_millis(1));
            for m in &members {
                let _ = m.poll(Duration::from_millis(1));
            }
        }
        drop(gone);
        wait_balanced(&members)?;
    }
    Ok(times)
}

/// Appends 1 KiB updates over `keys` keys at the given rate for the given time; returns MB/s.
async fn produce_compacted(addr: SocketAddr, args: &Args) -> anyhow::Result<f64> {
    let topic = "compacted";
    create_topic(
        addr,
        topic,
        1,
        &[("cleanup.policy", "compact"), ("segment.bytes", "8388608")],
    )
    .await?;
    let p: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", addr.to_string())
        .set("acks", "1")
        .set("linger.ms", "5")
        .set("enable.idempotence", "false")
        .create()?;
    let value = vec![b'v'; 1024];
    let per_ms = (args.produce_mb_per_s * 1_000_000 / 1024 / 1000).max(1);
    let start = Instant::now();
    let mut sent: u64 = 0;
    while start.elapsed() < Duration::from_secs(args.produce_s) {
        let due = start.elapsed().as_millis() as u64 * per_ms;
        while sent < due {
            let key = format!("key-{}", sent % args.keys);
            match p.send(BaseRecord::<_, _>::to(topic).key(&key).payload(&value[..])) {
                Ok(()) => sent += 1,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    p.flush(Duration::from_secs(60))?;
    Ok(sent as f64 * 1024.0 / 1e6 / start.elapsed().as_secs_f64())
}

/// Totals of the cleaner's `compacted` log lines.
#[derive(Debug, Default)]
struct CleanerFigures {
    passes: u64,
    segments: u64,
    read: u64,
    written: u64,
    seconds: f64,
}

fn field(line: &str, name: &str) -> u64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn cleaner_figures(log: &Path) -> anyhow::Result<CleanerFigures> {
    let text = std::fs::read_to_string(log)?;
    let mut f = CleanerFigures::default();
    for line in text.lines().filter(|l| l.contains(" compacted")) {
        f.passes += 1;
        f.segments += field(line, "segments");
        f.read += field(line, "bytes_read");
        f.written += field(line, "bytes_written");
        f.seconds += field(line, "elapsed_ms") as f64 / 1e3;
    }
    Ok(f)
}
