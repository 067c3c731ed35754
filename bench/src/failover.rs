//! Failover trials on a running cluster: a producer (`failover_producer.rs`) sends a small
//! acks=all message to one partition every few milliseconds; each trial kills that
//! partition's leader with SIGKILL and measures the unavailability window, from the kill to the
//! first message acknowledged afterwards by another broker (its delivery report); then restarts
//! the killed node and waits until it is back in the ISR before the next trial.
//!
//! The topic has one partition per node, each node the preferred leader of one, so trials can
//! alternate between killing a leader that is also the active controller (the controller
//! quorum must elect a new controller before anything moves) and one that is not. Beside the
//! window, Metadata is polled to see when a new leader is published, which splits the window
//! into the cluster's part (detection and election) and the client's (learning the new leader
//! and resending).

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use rdkafka::producer::{BaseProducer, Producer as _};

use crate::broker_nodes::{NodeId, Nodes};
use crate::failover_producer::{self, wall_clock, Pinger, MESSAGE_TIMEOUT_MS};
use crate::kafka_client::{self, PartitionState};

/// The topic the trials use.
pub const TOPIC: &str = "failover";
/// Its partitions: one per node.
pub const PARTITIONS: i32 = 3;
/// Its replicas, partition by partition, the first preferred as leader: each node leads one.
pub const REPLICA_ASSIGNMENT: [&[i32]; PARTITIONS as usize] = [&[1, 2, 3], &[2, 3, 1], &[3, 1, 2]];

/// Bound on one trial's window: past it the trial is recorded without an acknowledgement.
const UNAVAILABLE_MAX: Duration = Duration::from_secs(30);
const _: () = assert!(UNAVAILABLE_MAX.as_millis() < MESSAGE_TIMEOUT_MS as u128);
/// Bound on waiting, before a kill, for every partition to have a leader and a full ISR and
/// for the producer to be acknowledged; and after a restart, for the node to rejoin the ISRs.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How often Metadata is asked for the new leader during a window.
const METADATA_POLL_INTERVAL: Duration = Duration::from_millis(10);
/// Bound on one Metadata request during a window; one sent to the dead broker gives up then.
const METADATA_TIMEOUT: Duration = Duration::from_millis(250);
/// Bound on one Metadata request while settling.
const SETTLE_METADATA_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause between Metadata requests while settling.
const SETTLE_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Bound on `ferrymq cluster status`, asked which node is the active controller.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);

/// What one trial found.
#[derive(Clone, Debug)]
pub struct Trial {
    /// The partition written to, whose leader was killed.
    pub partition: i32,
    /// The partition leader that was killed.
    pub killed: NodeId,
    /// Whether it was also the active controller, if `ferrymq cluster status` said.
    pub killed_was_controller: Option<bool>,
    /// When Metadata first named another leader, after the kill, and which.
    pub leader_published: Option<(Duration, NodeId)>,
    /// From the kill to the first acknowledgement by another broker, or why there was none.
    pub unavailable: Result<Duration, String>,
    /// The broker that sent that acknowledgement.
    pub acked_by: Option<NodeId>,
    /// Messages whose delivery failed during the trial (none expected: retries are on).
    pub failed_deliveries: u64,
    /// From the restart to the node's ready line.
    pub restart_ready: Option<Duration>,
    /// From the restart to the node being back in every partition's ISR.
    pub back_in_isr: Option<Duration>,
}

/// Which leader a trial kills.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    /// A leader that is not the active controller.
    NotController,
    /// The active controller, leading the partition.
    Controller,
}

/// Everything the trials need besides what they create.
pub struct Rig<'a> {
    /// The cluster under test, with the topic created.
    pub nodes: &'a mut Nodes,
    /// The `ferrymq` binary, for `cluster status`.
    pub broker_bin: &'a std::path::Path,
    /// Replicas of each partition: the ISR size that counts as full.
    pub replicas: usize,
    /// librdkafka `debug` contexts for the producer, printed on stderr; `None` for none.
    pub client_debug: Option<String>,
}

/// The trials of one run and what went wrong on the way.
#[derive(Debug, Default)]
pub struct FailoverRun {
    /// The trials that completed (a window that hit its bound still completes).
    pub trials: Vec<Trial>,
    /// Why trials stopped early, or what may have skewed them.
    pub problems: Vec<String>,
}

/// Runs `count` trials, alternating the target, printing progress on stderr. Stops early only
/// if the cluster cannot be brought back to full ISRs or the producer fails.
pub async fn run_trials(mut rig: Rig<'_>, count: usize) -> FailoverRun {
    let mut run = FailoverRun::default();
    let bootstrap = rig.nodes.bootstrap();
    let metadata: Arc<BaseProducer> = match failover_producer::producer_config(&bootstrap).create()
    {
        Ok(client) => Arc::new(client),
        Err(error) => {
            run.problems
                .push(format!("failover: metadata client: {error}"));
            return run;
        }
    };
    let pinger = match Pinger::start(&bootstrap, TOPIC, 0, rig.client_debug.as_deref()) {
        Ok(pinger) => pinger,
        Err(error) => {
            run.problems.push(format!("failover: {error:#}"));
            return run;
        }
    };
    for index in 1..=count {
        let target = if index % 2 == 1 {
            Target::NotController
        } else {
            Target::Controller
        };
        match run_trial(&mut rig, &metadata, &pinger, target).await {
            Ok(trial) => {
                eprintln!("cluster: failover trial {index}: {}", describe(&trial));
                run.trials.push(trial);
            }
            Err(error) => {
                run.problems
                    .push(format!("failover trial {index}: {error:#}"));
                break;
            }
        }
    }
    let dropped = pinger.dropped();
    if dropped > 0 {
        run.problems.push(format!(
            "failover: {dropped} delivery reports were not kept; a window may be too long"
        ));
    }
    if let Err(error) = pinger.stop() {
        run.problems.push(format!("failover: {error:#}"));
    }
    run
}

/// One trial: settle, pick the partition, kill its leader, watch, restart, wait for the ISRs.
async fn run_trial(
    rig: &mut Rig<'_>,
    metadata: &Arc<BaseProducer>,
    pinger: &Pinger,
    target: Target,
) -> anyhow::Result<Trial> {
    let replicas = rig.replicas;
    let states = wait_for_state(metadata, move |states| all_led_in_sync(states, replicas))
        .await
        .context("before the kill: not every partition had a leader and a full ISR")?;
    let controller = active_controller(rig.broker_bin, rig.nodes).await;
    let chosen =
        choose_partition(&states, controller, target).context("no partition to choose from")?;
    let (partition, leader) = (chosen.partition, NodeId(chosen.leader));
    pinger.switch_to(partition);
    pinger.wait_for_ack(SETTLE_TIMEOUT).await?;
    pinger.drain();
    let killed_at = rig.nodes.node_mut(leader)?.kill()?;
    eprintln!(
        "cluster: {} killed node {leader}, leader of {TOPIC}-{partition}",
        wall_clock()
    );
    let mut trial = watch_window(metadata, pinger, partition, leader, killed_at).await;
    trial.killed_was_controller = controller.map(|c| c == leader);
    let restarted_at = Instant::now();
    rig.nodes.node_mut(leader)?.start().await?;
    trial.restart_ready = Some(restarted_at.elapsed());
    let back = wait_for_state(metadata, move |states| all_led_in_sync(states, replicas)).await;
    trial.back_in_isr = back.is_ok().then(|| restarted_at.elapsed());
    if let Err(error) = back {
        bail!(
            "node {leader} not back in every ISR after its restart ({error:#}); trial so far: {}",
            describe(&trial)
        );
    }
    Ok(trial)
}

/// Every partition of the topic is listed, led, and has `replicas` in-sync replicas.
fn all_led_in_sync(states: &[PartitionState], replicas: usize) -> bool {
    states.len() == PARTITIONS as usize
        && states
            .iter()
            .all(|s| s.leader >= 0 && s.isr.len() == replicas)
}

/// A partition whose leader is (or is not) the active controller, as `target` asks; any
/// partition when none fits or the controller is unknown.
fn choose_partition(
    states: &[PartitionState],
    controller: Option<NodeId>,
    target: Target,
) -> Option<&PartitionState> {
    let fits = |s: &&PartitionState| match (controller, target) {
        (Some(c), Target::Controller) => s.leader == c.0,
        (Some(c), Target::NotController) => s.leader != c.0,
        (None, _) => true,
    };
    states.iter().find(fits).or_else(|| states.first())
}

/// Watches delivery reports and Metadata from the kill until another broker acknowledges a
/// message to `partition` and Metadata names its new leader, or `UNAVAILABLE_MAX` passes.
async fn watch_window(
    metadata: &Arc<BaseProducer>,
    pinger: &Pinger,
    partition: i32,
    killed: NodeId,
    killed_at: Instant,
) -> Trial {
    let mut trial = Trial {
        partition,
        killed,
        killed_was_controller: None,
        leader_published: None,
        unavailable: Err(format!("no acknowledgement within {UNAVAILABLE_MAX:?}")),
        acked_by: None,
        failed_deliveries: 0,
        restart_ready: None,
        back_in_isr: None,
    };
    let deadline = killed_at + UNAVAILABLE_MAX;
    let mut acked = false;
    while Instant::now() < deadline {
        for delivery in pinger.drain() {
            if !delivery.acknowledged {
                trial.failed_deliveries += 1;
            } else if !acked
                && delivery.partition == partition
                && delivery.at > killed_at
                && delivery.broker != killed
            {
                acked = true;
                trial.unavailable = Ok(delivery.at - killed_at);
                trial.acked_by = Some(delivery.broker);
            }
        }
        if trial.leader_published.is_none() {
            let states = query_state(metadata, METADATA_TIMEOUT).await;
            let leader = states
                .ok()
                .and_then(|s| s.into_iter().find(|s| s.partition == partition))
                .map(|s| s.leader);
            if let Some(leader) = leader.filter(|&l| l >= 0 && l != killed.0) {
                trial.leader_published = Some((killed_at.elapsed(), NodeId(leader)));
            }
        }
        if acked && trial.leader_published.is_some() {
            break;
        }
        tokio::time::sleep(METADATA_POLL_INTERVAL).await;
    }
    trial
}

/// The topic's partitions from whichever live broker librdkafka asks.
async fn query_state(
    metadata: &Arc<BaseProducer>,
    timeout: Duration,
) -> anyhow::Result<Vec<PartitionState>> {
    let client = Arc::clone(metadata);
    tokio::task::spawn_blocking(move || kafka_client::topic_state(client.client(), TOPIC, timeout))
        .await
        .context("metadata thread")?
}

/// Polls Metadata until `done` holds for the topic's partitions, or `SETTLE_TIMEOUT` passes.
async fn wait_for_state(
    metadata: &Arc<BaseProducer>,
    done: impl Fn(&[PartitionState]) -> bool,
) -> anyhow::Result<Vec<PartitionState>> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let states = query_state(metadata, SETTLE_METADATA_TIMEOUT).await;
        match &states {
            Ok(s) if done(s) => return states,
            _ if Instant::now() >= deadline => {
                bail!("not within {SETTLE_TIMEOUT:?}; last Metadata: {states:?}")
            }
            _ => tokio::time::sleep(SETTLE_POLL_INTERVAL).await,
        }
    }
}

/// The active controller, from `ferrymq cluster status` asked of the first running node;
/// `None` if it could not be learnt (the trial goes on without it).
async fn active_controller(broker_bin: &std::path::Path, nodes: &Nodes) -> Option<NodeId> {
    let (_, via) = *nodes.addrs().first()?;
    let mut command = Command::new(broker_bin);
    command
        .args(["cluster", "status", "--bootstrap", &via.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let output = tokio::task::spawn_blocking(move || bounded_output(command, STATUS_TIMEOUT))
        .await
        .ok()?
        .ok()?;
    parse_active_controller(&output)
}

/// Runs `command` and returns its standard output, killing it (by its PID) past `timeout`.
/// The output is small, under a pipe's buffer, so the child never blocks writing it.
fn bounded_output(mut command: Command, timeout: Duration) -> anyhow::Result<String> {
    let mut child = command.spawn().context("starting ferrymq cluster status")?;
    let deadline = Instant::now() + timeout;
    while child.try_wait()?.is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("ferrymq cluster status took over {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut stdout = String::new();
    if let Some(mut pipe) = child.stdout.take() {
        std::io::Read::read_to_string(&mut pipe, &mut stdout)?;
    }
    Ok(stdout)
}

/// The id marked "(active)" on the `controller quorum:` line of `ferrymq cluster status`.
fn parse_active_controller(status: &str) -> Option<NodeId> {
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("controller quorum:"))?;
    let active = line
        .split(',')
        .map(str::trim)
        .find(|voter| voter.ends_with("(active)"))?;
    let (id, _) = active.split_once('@')?;
    id.parse().ok().map(NodeId)
}

/// One line per trial for progress output.
pub fn describe(trial: &Trial) -> String {
    let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1e3);
    let window = match &trial.unavailable {
        Ok(d) => ms(*d),
        Err(e) => e.clone(),
    };
    let published = trial
        .leader_published
        .map_or("not seen".to_string(), |(d, id)| {
            format!("node {id} after {}", ms(d))
        });
    format!(
        "partition {}, killed leader node {}{}; new leader in Metadata: {published}; \
         first ack after kill: {window}; failed deliveries {}",
        trial.partition,
        trial.killed,
        if trial.killed_was_controller == Some(true) {
            " (active controller)"
        } else {
            ""
        },
        trial.failed_deliveries
    )
}

/// Nearest-rank percentile of sorted durations; `None` when there are none.
pub fn percentile(sorted: &[Duration], quantile: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (quantile * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn active_controller_is_read_from_cluster_status() {
        let status = "cluster abc\ncontroller quorum: 1@127.0.0.1:1, 2@127.0.0.1:2 (active), \
                      3@127.0.0.1:3\n\nbrokers:\n     2  127.0.0.1:9  live controller\n";
        assert_eq!(parse_active_controller(status), Some(NodeId(2)));
        assert_eq!(parse_active_controller("cluster abc\n"), None);
    }

    fn state(partition: i32, leader: i32) -> PartitionState {
        PartitionState {
            partition,
            leader,
            isr: vec![1, 2, 3],
        }
    }

    #[test]
    fn trials_pick_a_partition_led_by_the_controller_or_not() {
        let states = [state(0, 1), state(1, 2), state(2, 1)];
        let pick =
            |controller, target| choose_partition(&states, controller, target).map(|s| s.partition);
        assert_eq!(pick(Some(NodeId(2)), Target::Controller), Some(1));
        assert_eq!(pick(Some(NodeId(2)), Target::NotController), Some(0));
        assert_eq!(pick(Some(NodeId(3)), Target::Controller), Some(0));
        assert_eq!(pick(None, Target::Controller), Some(0));
        assert!(choose_partition(&[], None, Target::Controller).is_none());
    }

    #[test]
    fn full_isrs_on_every_partition_count_as_settled() {
        let settled = [state(0, 1), state(1, 2), state(2, 3)];
        assert!(all_led_in_sync(&settled, 3));
        assert!(!all_led_in_sync(&settled[..2], 3));
        let leaderless = [state(0, 1), state(1, -1), state(2, 3)];
        assert!(!all_led_in_sync(&leaderless, 3));
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let ms: Vec<Duration> = (1..=20).map(Duration::from_millis).collect();
        assert_eq!(percentile(&ms, 0.5), Some(Duration::from_millis(10)));
        assert_eq!(percentile(&ms, 0.9), Some(Duration::from_millis(18)));
        assert_eq!(percentile(&ms, 1.0), Some(Duration::from_millis(20)));
        assert_eq!(percentile(&[], 0.5), None);
    }
}
