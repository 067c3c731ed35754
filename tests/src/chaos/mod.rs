//! The fault-injection harness: a 3- or 5-node FerryMQ cluster of real processes (each in its
//! own network namespace when run as root), real librdkafka clients writing and reading unique
//! values, a nemesis injecting faults on a seeded schedule, and a checker reading the whole
//! history afterwards. `docs/reliability.md` says how to run it and what the last runs found.
//!
//! - `net`: namespaces, bridge, and the network faults (nftables, tc netem);
//! - `nodes`: the cluster's processes and the questions asked of it;
//! - `workload`: producer, assign reader, group member, committed-offset observer, final read;
//! - `nemesis`: the fault kinds and how each is injected and healed;
//! - `history` and `checker`: what happened, and what was wrong with it.
//!
//! A run: start the cluster, create the topic (RF 3, `min.insync.replicas=2`, small segments
//! so closed segments exist to corrupt), start the workloads, inject each scheduled fault and
//! wait for the cluster to be healthy and producing on every partition again, stop producing,
//! read everything back, compare the replicas byte for byte, and check.

pub mod checker;
pub mod history;
pub mod nemesis;
pub mod net;
pub mod nodes;
pub mod workload;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use kafka_protocol::messages::ApiVersionsRequest;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;

use self::checker::{check, percentile, CheckInput, Verdict};
use self::history::Recorder;
use self::nemesis::{run_fault, FaultContext, FaultKind, Holds, Rng};
use self::nodes::ChaosCluster;
use self::workload::{final_read, WorkloadConfig, Workloads};
use crate::RawClient;

/// The workload's topic.
const TOPIC: &str = "chaos";
/// The probe topic (raw produces during the disk-full fault).
const PROBE_TOPIC: &str = "chaos-probe";
/// Replication factor and `min.insync.replicas` of both topics.
const RF: usize = 3;
const MIN_INSYNC: &str = "2";
/// Segment size of the workload topic: small, so segments close within seconds.
const SEGMENT_BYTES: &str = "131072";
/// Longest the cluster may take to be healthy and producing again after a fault.
const RECOVERY_MAX: Duration = Duration::from_secs(60);
/// Size of the tmpfs data dir for the shortest runs; longer runs add what they will write.
const TMPFS_BASE_MIB: u64 = 64;

/// Which faults to run.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// Every kind once, in `FaultKind::ALL` order (the CI schedule).
    EachOnce,
    /// Random kinds (some mixed with a concurrent network fault) until this much time passed.
    Random {
        /// Length of the fault phase.
        duration: Duration,
    },
    /// Exactly these kinds, in order.
    Kinds(Vec<FaultKind>),
}

/// Whether a feature is used: detected from the broker's ApiVersions, or forced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    /// On when the broker advertises the APIs it needs.
    Auto,
    /// Forced on.
    On,
    /// Forced off.
    Off,
}

/// Options of a run.
#[derive(Debug, Clone)]
pub struct ChaosOptions {
    /// Seed of every random decision.
    pub seed: u64,
    /// Cluster size (3 or 5).
    pub nodes: usize,
    /// Which faults.
    pub schedule: Schedule,
    /// Producer idempotence (Auto: when InitProducerId is served).
    pub idempotence: Feature,
    /// Consumer-group workload (Auto: when JoinGroup, SyncGroup, Heartbeat, OffsetCommit and
    /// OffsetFetch are served).
    pub groups: Feature,
    /// Values produced per second.
    pub rate_per_s: u32,
    /// Hold times of faults.
    pub holds: Holds,
    /// Pause between faults once the cluster is healthy again.
    pub quiet: Duration,
    /// Where to keep data dirs, logs and the report (a fresh temp dir if `None`).
    pub dir: Option<PathBuf>,
    /// Keep the run's directory even when the run passes.
    pub keep: bool,
}

impl ChaosOptions {
    /// The CI schedule: every fault once on 3 nodes.
    pub fn short(seed: u64) -> ChaosOptions {
        ChaosOptions {
            seed,
            nodes: 3,
            schedule: Schedule::EachOnce,
            idempotence: Feature::Auto,
            groups: Feature::Auto,
            rate_per_s: 500,
            holds: Holds {
                down: Duration::from_secs(3),
                pause: Duration::from_secs(3),
                network: Duration::from_secs(4),
            },
            quiet: Duration::from_secs(1),
            dir: None,
            keep: false,
        }
    }

    /// A long run of random faults for `minutes`.
    pub fn soak(seed: u64, minutes: u64) -> ChaosOptions {
        ChaosOptions {
            schedule: Schedule::Random {
                duration: Duration::from_secs(minutes * 60),
            },
            quiet: Duration::from_secs(2),
            ..ChaosOptions::short(seed)
        }
    }
}

/// What a run produced.
#[derive(Debug)]
pub struct Report {
    /// The checker's verdict.
    pub verdict: Verdict,
    /// The printed summary.
    pub text: String,
    /// The run's directory (kept on failure).
    pub dir: PathBuf,
}

/// Runs the harness.
pub async fn run(opts: &ChaosOptions) -> Result<Report> {
    let (dir, _tmp) = match &opts.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            (d.clone(), None)
        }
        None => {
            let t = tempfile::Builder::new()
                .prefix(&format!("ferrymq-chaos-{}-", opts.seed))
                .tempdir()?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    let outcome = run_in(opts, &dir).await;
    let keep = opts.keep || !outcome.as_ref().is_ok_and(|r| r.verdict.ok());
    if let Some(t) = _tmp {
        if keep {
            let _ = t.keep();
        }
    }
    if let Ok(r) = &outcome {
        let _ = std::fs::write(dir.join("report.txt"), &r.text);
    }
    outcome
}

async fn run_in(opts: &ChaosOptions, dir: &std::path::Path) -> Result<Report> {
    let started = Instant::now();
    let mut rng = Rng::new(opts.seed);
    let tmpfs_node = 1 + rng.below(opts.nodes);
    let tmpfs_mib = TMPFS_BASE_MIB + planned_bytes(opts) / (1 << 20);
    let mut cluster = ChaosCluster::start(dir, opts.nodes, &[], Some((tmpfs_node, tmpfs_mib)))?;
    let mut text = String::new();
    let _ = writeln!(
        text,
        "FerryMQ chaos run: seed {}, {} nodes, dir {}",
        opts.seed,
        opts.nodes,
        dir.display()
    );
    match &cluster.net {
        net::Network::Loopback { reason } => {
            let msg = format!("NOTE: nodes on loopback ({reason}): network faults are skipped");
            eprintln!("{msg}");
            let _ = writeln!(text, "{msg}");
        }
        net::Network::Namespaces(_) => {
            let _ = writeln!(
                text,
                "network: one namespace per node on a private bridge (10.77.0.0/24)"
            );
        }
    }
    create_topics(&cluster).await?;
    cluster
        .wait_healthy(&[TOPIC, PROBE_TOPIC], RF, RECOVERY_MAX)
        .await?;
    let (idempotence, groups) = features(&cluster, opts).await?;
    let _ = writeln!(
        text,
        "producer idempotence: {idempotence}; consumer-group workload: {}",
        if groups {
            "on"
        } else {
            "off (group APIs not served)"
        }
    );
    let partitions = (opts.nodes * 2) as i32;
    let wcfg = WorkloadConfig {
        bootstrap: cluster.bootstrap(),
        topic: TOPIC.into(),
        partitions,
        rate_per_s: opts.rate_per_s,
        idempotence,
        groups,
    };
    let rec = Arc::new(Recorder::new());
    let mut workloads = Workloads::start(&wcfg, rec.clone())?;
    wait_progress(&rec, partitions, Duration::from_secs(30))
        .await
        .context("the workload never got going")?;
    let mut recovery_failures = Vec::new();
    let mut skipped: BTreeMap<&'static str, String> = BTreeMap::new();
    let steps = plan(opts, &mut rng);
    let fault_phase_start = Instant::now();
    let mut step = 0;
    loop {
        let kinds: Vec<FaultKind> = match &steps {
            Plan::Fixed(list) => match list.get(step) {
                Some(k) => vec![*k],
                None => break,
            },
            Plan::Random(duration) => {
                if fault_phase_start.elapsed() >= *duration {
                    break;
                }
                random_step(&mut rng)
            }
        };
        step += 1;
        let runnable: Vec<FaultKind> = kinds
            .into_iter()
            .filter(|k| match k.unavailable(&cluster) {
                Some(why) => {
                    skipped.insert(k.name(), why);
                    false
                }
                None => true,
            })
            .collect();
        if runnable.is_empty() {
            continue;
        }
        eprintln!(
            "[{:>6.1}s] step {step}: {:?}",
            started.elapsed().as_secs_f64(),
            runnable
        );
        run_step(&runnable, &mut cluster, &rec, &mut rng, opts).await;
        if let Err(e) = recover(&mut cluster, &rec, partitions).await {
            let why = format!("after step {step} ({runnable:?}): {e:#}");
            eprintln!("RECOVERY FAILED {why}");
            recovery_failures.push(why);
        }
        tokio::time::sleep(opts.quiet).await;
    }
    for (kind, why) in &skipped {
        let _ = writeln!(text, "skipped {kind}: {why}");
    }
    workloads.stop_producer();
    let mut broker_failures = recovery_failures;
    if let Err(e) = cluster.wait_healthy(&[TOPIC], RF, RECOVERY_MAX).await {
        broker_failures.push(format!("at the end: {e:#}"));
    }
    // Let the readers catch up with the last acknowledged values before they stop.
    tokio::time::sleep(Duration::from_secs(2)).await;
    workloads.stop_readers();
    let hws = final_read(&wcfg, &rec, Duration::from_secs(60))?;
    let views = cluster.partitions(TOPIC, None).await?;
    let replica_divergence = nodes::compare_replicas(&cluster, TOPIC, &views, &hws);
    broker_failures.extend(cluster.crashed());
    let history = rec.snapshot();
    let verdict = check(
        &history,
        &CheckInput {
            idempotence,
            partitions,
            replica_divergence,
            broker_failures,
        },
    );
    summarize(&mut text, &history, &verdict, started.elapsed());
    Ok(Report {
        verdict,
        text,
        dir: dir.to_path_buf(),
    })
}

/// Bytes the workload will write to one broker over the run, for sizing its tmpfs.
fn planned_bytes(opts: &ChaosOptions) -> u64 {
    let secs = match &opts.schedule {
        Schedule::Random { duration } => duration.as_secs() + 120,
        Schedule::EachOnce | Schedule::Kinds(_) => 600,
    };
    // ~150 bytes per record stored on every broker (RF 3 on 3 nodes), twice for slack.
    secs * opts.rate_per_s as u64 * 150 * 2
}

enum Plan {
    Fixed(Vec<FaultKind>),
    Random(Duration),
}

fn plan(opts: &ChaosOptions, _rng: &mut Rng) -> Plan {
    match &opts.schedule {
        Schedule::EachOnce => Plan::Fixed(FaultKind::ALL.to_vec()),
        Schedule::Kinds(k) => Plan::Fixed(k.clone()),
        Schedule::Random { duration } => Plan::Random(*duration),
    }
}

/// One random step: usually one fault; a quarter of the time a network fault (netem or one-way
/// loss) held during a process fault.
fn random_step(rng: &mut Rng) -> Vec<FaultKind> {
    let single = rng.pick(&FaultKind::ALL);
    if rng.below(4) != 0 {
        return vec![single];
    }
    let net = rng.pick(&[FaultKind::Netem, FaultKind::OneWayLoss]);
    let process = rng.pick(&[
        FaultKind::KillLeader,
        FaultKind::KillFollower,
        FaultKind::Pause,
        FaultKind::KillController,
    ]);
    vec![net, process]
}

async fn run_step(
    kinds: &[FaultKind],
    cluster: &mut ChaosCluster,
    rec: &Recorder,
    rng: &mut Rng,
    opts: &ChaosOptions,
) {
    let mut cx = FaultContext {
        cluster,
        rec,
        rng,
        topic: TOPIC,
        probe_topic: PROBE_TOPIC,
        rf: RF,
        holds: opts.holds,
    };
    if let [net_kind, process_kind] = kinds {
        // Mixed: the network fault is injected, the process fault runs while it holds, and the
        // network heals after.
        if let Err(e) = nemesis::mixed(*net_kind, *process_kind, &mut cx).await {
            eprintln!("fault {kinds:?} could not run: {e:#}");
        }
        return;
    }
    for k in kinds {
        if let Err(e) = run_fault(*k, &mut cx).await {
            eprintln!("fault {} could not run: {e:#}", k.name());
        }
    }
}

/// Waits until the cluster is healthy and every partition acknowledged new values.
async fn recover(cluster: &mut ChaosCluster, rec: &Recorder, partitions: i32) -> Result<()> {
    cluster.wait_healthy(&[TOPIC], RF, RECOVERY_MAX).await?;
    wait_progress(rec, partitions, RECOVERY_MAX).await
}

/// Waits until every partition has acknowledged values since now.
async fn wait_progress(rec: &Recorder, partitions: i32, timeout: Duration) -> Result<()> {
    let before = rec.acked_per_partition(partitions);
    let deadline = Instant::now() + timeout;
    loop {
        let now = rec.acked_per_partition(partitions);
        let stuck: Vec<usize> = (0..now.len()).filter(|p| now[*p] <= before[*p]).collect();
        if stuck.is_empty() {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no acknowledgement on partitions {stuck:?} within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn create_topics(c: &ChaosCluster) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", c.bootstrap())
        .create()?;
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let partitions = (c.size() * 2) as i32;
    let main = NewTopic::new(TOPIC, partitions, TopicReplication::Fixed(RF as i32))
        .set("min.insync.replicas", MIN_INSYNC)
        .set("segment.bytes", SEGMENT_BYTES);
    let probe = NewTopic::new(
        PROBE_TOPIC,
        c.size() as i32,
        TopicReplication::Fixed(RF as i32),
    )
    .set("min.insync.replicas", MIN_INSYNC);
    for r in admin.create_topics([&main, &probe], &opts).await? {
        r.map_err(|(t, e)| anyhow::anyhow!("creating {t}: {e}"))?;
    }
    Ok(())
}

/// Whether idempotence and the group workload are used.
async fn features(c: &ChaosCluster, opts: &ChaosOptions) -> Result<(bool, bool)> {
    let mut raw = RawClient::connect(&c.nodes[0].addr).await?;
    let r = raw.call(&ApiVersionsRequest::default(), 3).await?;
    let served = |key: i16| r.api_keys.iter().any(|k| k.api_key == key);
    // InitProducerId 22; JoinGroup 11, SyncGroup 14, Heartbeat 12, OffsetCommit 8, OffsetFetch 9.
    let idem = served(22);
    let groups = [11, 14, 12, 8, 9].into_iter().all(served);
    let pick = |f: Feature, auto: bool| match f {
        Feature::Auto => auto,
        Feature::On => true,
        Feature::Off => false,
    };
    Ok((pick(opts.idempotence, idem), pick(opts.groups, groups)))
}

fn summarize(text: &mut String, h: &history::History, v: &Verdict, took: Duration) {
    let _ = writeln!(text, "took {:.0} s", took.as_secs_f64());
    let _ = writeln!(
        text,
        "operations: {} attempted, {} acknowledged, {} failed (indeterminate), {} unresolved",
        v.attempted, v.acked, v.failed, v.pending
    );
    let _ = writeln!(
        text,
        "reads: {} in the final log, {} live; lost {}, duplicated {}",
        v.final_records, v.live_reads, v.lost, v.duplicated
    );
    // Errors the readers' client gave up on (each starts a new reading session); the first
    // few are shown, since an anomaly within a session often follows one.
    let _ = writeln!(text, "reader errors: {}", h.reader_errors.len());
    for (at, what) in h.reader_errors.iter().take(10) {
        let _ = writeln!(text, "  {:>8.1}s {what}", *at as f64 / 1000.0);
    }
    let mut per_kind: BTreeMap<&str, usize> = BTreeMap::new();
    for f in &h.faults {
        *per_kind.entry(f.kind.as_str()).or_default() += 1;
    }
    let _ = writeln!(text, "faults injected: {} in all", h.faults.len());
    for (k, n) in &per_kind {
        let _ = writeln!(text, "  {k:<16} {n}");
    }
    let _ = writeln!(text, "faults:");
    for f in &h.faults {
        let healed = f
            .healed_ms
            .map_or("-".to_string(), |t| format!("{:.1}s", t as f64 / 1000.0));
        let _ = writeln!(
            text,
            "  {:>7.1}s {:<16} healed {healed:>7}  {}",
            f.at_ms as f64 / 1000.0,
            f.kind,
            f.detail
        );
        for n in &f.notes {
            let _ = writeln!(text, "           note: {n}");
        }
        for u in &f.unmet {
            let _ = writeln!(text, "           UNMET: {u}");
        }
    }
    let _ = writeln!(
        text,
        "leader failover (last ack before -> first ack after, worst partition):"
    );
    let mut all = Vec::new();
    let mut by_kind: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for fo in &v.failovers {
        let window = fo.window_ms();
        let _ = writeln!(
            text,
            "  {:>7.1}s {:<16} p{} {} -> {} = {}",
            fo.fault_ms as f64 / 1000.0,
            fo.kind,
            fo.partition,
            fo.last_before_ms
                .map_or("-".into(), |t| format!("{:.2}s", t as f64 / 1000.0)),
            fo.first_after_ms
                .map_or("never".into(), |t| format!("{:.2}s", t as f64 / 1000.0)),
            window.map_or("never".into(), |w| format!("{w} ms"))
        );
        if let Some(w) = window {
            by_kind.entry(fo.kind.as_str()).or_default().push(w);
            if FaultKind::parse(&fo.kind).is_some_and(FaultKind::is_leader_loss) {
                all.push(w);
            }
        }
    }
    for (k, ws) in &by_kind {
        let _ = writeln!(text, "  {k:<16} {}", quantiles(ws));
    }
    let _ = writeln!(
        text,
        "leader-loss failover (targets: p50 < 2000 ms, p99 < 5000 ms): {}",
        quantiles(&all)
    );
    if v.anomalies.is_empty() {
        let _ = writeln!(text, "checker: no anomaly");
    }
    for a in &v.anomalies {
        let sev = if a.fatal { "ERROR" } else { "info" };
        let _ = writeln!(text, "checker {sev} {}: {}", a.kind, a.detail);
    }
    let _ = writeln!(text, "verdict: {}", if v.ok() { "PASS" } else { "FAIL" });
}

fn quantiles(ws: &[u64]) -> String {
    match (percentile(ws, 0.5), percentile(ws, 0.99), ws.iter().max()) {
        (Some(p50), Some(p99), Some(max)) => {
            format!("n={} p50={p50} ms p99={p99} ms max={max} ms", ws.len())
        }
        _ => "n=0".into(),
    }
}
