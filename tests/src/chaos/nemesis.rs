//! The nemesis: each fault kind, how it is injected and healed, and the seeded schedules.
//!
//! A fault is injected, held for a while (longer than the broker session timeout where it
//! matters), then healed; the run then waits for the cluster to be healthy and producing again
//! before the next one. Targets (which leader, which follower, which byte) come from a seeded
//! generator, so a seed replays the same decisions (the timing of a real cluster still varies).

use std::time::Duration;

use anyhow::{Context, Result};

use super::history::Recorder;
use super::net::Network;
use super::nodes::{ChaosCluster, PartitionView};

/// Every kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    /// kill -9 the leader of a partition, restart it after a while.
    KillLeader,
    /// kill -9 a follower of a partition.
    KillFollower,
    /// kill -9 the active controller.
    KillController,
    /// SIGSTOP a leader for longer than the session timeout, then SIGCONT.
    Pause,
    /// Cut a leader off from every other node (clients still reach it).
    IsolateLeader,
    /// Split the nodes into a minority and a majority.
    SplitMinority,
    /// Drop what one node sends to another, one way only.
    OneWayLoss,
    /// Delay and loss with `tc netem` on one node.
    Netem,
    /// SIGTERM and restart every node in turn.
    RollingRestart,
    /// kill -9 two nodes at once, then start both.
    KillTwo,
    /// Fill one broker's (tmpfs) data dir, then free it and restart the broker.
    DiskFull,
    /// Flip a byte in a closed segment of a stopped follower, then restart it.
    CorruptSegment,
}

impl FaultKind {
    /// Every kind, in the short schedule's order (the corruption last, so segments have closed).
    pub const ALL: [FaultKind; 12] = [
        FaultKind::KillLeader,
        FaultKind::KillFollower,
        FaultKind::Pause,
        FaultKind::IsolateLeader,
        FaultKind::SplitMinority,
        FaultKind::OneWayLoss,
        FaultKind::Netem,
        FaultKind::KillController,
        FaultKind::KillTwo,
        FaultKind::RollingRestart,
        FaultKind::DiskFull,
        FaultKind::CorruptSegment,
    ];

    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::KillLeader => "kill-leader",
            FaultKind::KillFollower => "kill-follower",
            FaultKind::KillController => "kill-controller",
            FaultKind::Pause => "pause",
            FaultKind::IsolateLeader => "isolate-leader",
            FaultKind::SplitMinority => "split-minority",
            FaultKind::OneWayLoss => "one-way-loss",
            FaultKind::Netem => "netem",
            FaultKind::RollingRestart => "rolling-restart",
            FaultKind::KillTwo => "kill-two",
            FaultKind::DiskFull => "disk-full",
            FaultKind::CorruptSegment => "corrupt-segment",
        }
    }

    /// The kind named `name`.
    pub fn parse(name: &str) -> Option<FaultKind> {
        FaultKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Faults whose failover counts toward the targets: a leader lost without warning while a
    /// majority of brokers stays up.
    pub fn is_leader_loss(self) -> bool {
        matches!(
            self,
            FaultKind::KillLeader
                | FaultKind::KillFollower
                | FaultKind::KillController
                | FaultKind::Pause
                | FaultKind::IsolateLeader
                | FaultKind::SplitMinority
        )
    }

    /// Why this kind cannot run on `c`, if it cannot.
    pub fn unavailable(self, c: &ChaosCluster) -> Option<String> {
        let net = matches!(
            self,
            FaultKind::IsolateLeader
                | FaultKind::SplitMinority
                | FaultKind::OneWayLoss
                | FaultKind::Netem
        );
        if net {
            if let Network::Loopback { reason } = &c.net {
                return Some(format!(
                    "network faults skipped: nodes run on loopback ({reason})"
                ));
            }
        }
        if self == FaultKind::DiskFull && c.tmpfs.is_none() {
            return Some("disk-full skipped: no tmpfs data dir (needs root to mount one)".into());
        }
        None
    }
}

/// A small seeded generator (SplitMix64): the schedule needs no more.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// One element of `items` (non-empty).
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

/// How long each fault is held.
#[derive(Debug, Clone, Copy)]
pub struct Holds {
    /// A killed node stays down this long.
    pub down: Duration,
    /// A paused node stays paused this long (longer than the session timeout).
    pub pause: Duration,
    /// Network faults last this long.
    pub network: Duration,
}

/// What a fault needs to know about the run.
pub struct FaultContext<'a> {
    /// The cluster.
    pub cluster: &'a mut ChaosCluster,
    /// The history.
    pub rec: &'a Recorder,
    /// The seeded generator.
    pub rng: &'a mut Rng,
    /// The workload's topic.
    pub topic: &'a str,
    /// The probe topic (raw produces that must not mix with the workload's values).
    pub probe_topic: &'a str,
    /// Replication factor of the topics (a healthy partition has an ISR this large).
    pub rf: usize,
    /// Hold times.
    pub holds: Holds,
}

impl FaultContext<'_> {
    async fn views(&self) -> Result<Vec<PartitionView>> {
        self.cluster.partitions(self.topic, None).await
    }

    /// Partitions of the workload topic that node `id` leads.
    async fn led_by(&self, ids: &[usize]) -> Vec<i32> {
        self.views()
            .await
            .unwrap_or_default()
            .iter()
            .filter(|p| ids.contains(&(p.leader as usize)))
            .map(|p| p.partition)
            .collect()
    }

    /// A random partition's view.
    async fn random_partition(&mut self) -> Result<PartitionView> {
        let v = self.views().await?;
        anyhow::ensure!(!v.is_empty(), "topic {} has no partitions", self.topic);
        let i = self.rng.below(v.len());
        Ok(v[i].clone())
    }

    async fn random_leader(&mut self) -> Result<(usize, i32)> {
        for _ in 0..20 {
            let p = self.random_partition().await?;
            if p.leader > 0 {
                return Ok((p.leader as usize, p.partition));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        anyhow::bail!("no partition of {} has a leader", self.topic)
    }

    fn namespaces(&self) -> Result<&super::net::Namespaces> {
        match &self.cluster.net {
            Network::Namespaces(ns) => Ok(ns),
            Network::Loopback { .. } => anyhow::bail!("no namespaces"),
        }
    }
}

/// Injects `kind`, holds it, heals it; recorded in the history.
pub async fn run_fault(kind: FaultKind, cx: &mut FaultContext<'_>) -> Result<()> {
    match kind {
        FaultKind::KillLeader => {
            let (leader, p) = cx.random_leader().await?;
            kill_and_restart(cx, kind, leader, format!("node {leader}, leader of p{p}")).await
        }
        FaultKind::KillFollower => {
            let p = cx.random_partition().await?;
            let followers: Vec<usize> = p
                .replicas
                .iter()
                .filter(|r| **r != p.leader)
                .map(|r| *r as usize)
                .collect();
            let f = cx.rng.pick(&followers);
            kill_and_restart(
                cx,
                kind,
                f,
                format!("node {f}, follower of p{}", p.partition),
            )
            .await
        }
        FaultKind::KillController => {
            let c = cx.cluster.active_controller().await?;
            kill_and_restart(cx, kind, c, format!("node {c}, the active controller")).await
        }
        FaultKind::Pause => {
            let (leader, p) = cx.random_leader().await?;
            let led = cx.led_by(&[leader]).await;
            let detail = format!(
                "SIGSTOP node {leader} (leader of p{p}) for {:?}",
                cx.holds.pause
            );
            let i = cx.rec.fault(kind.name(), detail, led);
            cx.cluster.pause(leader, true);
            tokio::time::sleep(cx.holds.pause).await;
            cx.cluster.pause(leader, false);
            cx.rec.healed(i);
            Ok(())
        }
        FaultKind::IsolateLeader => {
            let (leader, p) = cx.random_leader().await?;
            let led = cx.led_by(&[leader]).await;
            let detail = format!("node {leader} (leader of p{p}) cut from the other nodes");
            net_fault(cx, kind, detail, led, |ns| ns.split(&[leader])).await
        }
        FaultKind::SplitMinority => {
            let n = cx.cluster.size();
            let mut minority = Vec::new();
            while minority.len() < (n - 1) / 2 {
                let x = 1 + cx.rng.below(n);
                if !minority.contains(&x) {
                    minority.push(x);
                }
            }
            let led = cx.led_by(&minority).await;
            let detail = format!("nodes {minority:?} split from the rest");
            net_fault(cx, kind, detail, led, |ns| ns.split(&minority)).await
        }
        FaultKind::OneWayLoss => {
            let n = cx.cluster.size();
            let from = 1 + cx.rng.below(n);
            let to = 1 + (from + cx.rng.below(n - 1)) % n;
            let detail = format!("everything node {from} sends to node {to} is dropped");
            net_fault(cx, kind, detail, Vec::new(), |ns| ns.drop_from(from, to)).await
        }
        FaultKind::Netem => {
            let node = 1 + cx.rng.below(cx.cluster.size());
            let delay = 20 + cx.rng.below(130) as u32;
            let loss = 1 + cx.rng.below(10) as u32;
            let i = cx
                .rec
                .fault(kind.name(), format!("node {node}"), Vec::new());
            let applied = cx.namespaces()?.netem(node, delay, delay / 4, loss);
            match &applied {
                Ok(what) => {
                    cx.rec.note(i, what.clone());
                    tokio::time::sleep(cx.holds.network).await;
                }
                Err(e) => cx.rec.note(i, format!("could not apply: {e:#}")),
            }
            cx.namespaces()?.heal().context("healing the network")?;
            cx.rec.healed(i);
            applied.map(|_| ())
        }
        FaultKind::RollingRestart => rolling_restart(cx).await,
        FaultKind::KillTwo => kill_two(cx).await,
        FaultKind::DiskFull => disk_full(cx).await,
        FaultKind::CorruptSegment => corrupt_segment(cx).await,
    }
}

/// Injects network fault `net` (netem or one-way loss), runs `process` while it holds, then
/// heals the network.
pub async fn mixed(net: FaultKind, process: FaultKind, cx: &mut FaultContext<'_>) -> Result<()> {
    let n = cx.cluster.size();
    type Inject = Box<dyn FnOnce(&super::net::Namespaces) -> Result<()>>;
    let (detail, inject): (String, Inject) = match net {
        FaultKind::Netem => {
            let node = 1 + cx.rng.below(n);
            let delay = 20 + cx.rng.below(130) as u32;
            let loss = 1 + cx.rng.below(10) as u32;
            (
                format!("node {node}: +{delay}ms delay, {loss}% loss (mixed)"),
                Box::new(move |ns| ns.netem(node, delay, delay / 4, loss).map(|_| ())),
            )
        }
        _ => {
            let from = 1 + cx.rng.below(n);
            let to = 1 + (from + cx.rng.below(n - 1)) % n;
            (
                format!("everything node {from} sends to node {to} is dropped (mixed)"),
                Box::new(move |ns| ns.drop_from(from, to)),
            )
        }
    };
    let i = cx.rec.fault(net.name(), detail, Vec::new());
    let injected = inject(cx.namespaces()?);
    // A node the process fault restarts may not reach the controller through the network
    // fault (a broker serves only once registered and caught up, as in KRaft): it is judged
    // once the network has healed, not while the fault holds.
    cx.cluster.defer_ready = true;
    let outcome = match &injected {
        Ok(()) => run_fault(process, cx).await,
        Err(_) => Ok(()),
    };
    cx.cluster.defer_ready = false;
    cx.namespaces()?.heal().context("healing the network")?;
    cx.rec.healed(i);
    for (node, e) in cx.cluster.wait_restarted() {
        cx.rec.unmet(
            i,
            format!("node {node} did not come back after the network healed: {e:#}"),
        );
    }
    injected.and(outcome)
}

async fn kill_and_restart(
    cx: &mut FaultContext<'_>,
    kind: FaultKind,
    node: usize,
    detail: String,
) -> Result<()> {
    let led = cx.led_by(&[node]).await;
    let i = cx.rec.fault(kind.name(), detail, led);
    cx.cluster.kill(node);
    tokio::time::sleep(cx.holds.down).await;
    let restarted = cx.cluster.restart(node);
    cx.rec.healed(i);
    if let Err(e) = restarted {
        cx.rec
            .unmet(i, format!("node {node} did not come back: {e:#}"));
    }
    Ok(())
}

async fn net_fault(
    cx: &mut FaultContext<'_>,
    kind: FaultKind,
    detail: String,
    led: Vec<i32>,
    inject: impl FnOnce(&super::net::Namespaces) -> Result<()>,
) -> Result<()> {
    let i = cx.rec.fault(kind.name(), detail, led);
    let started = std::time::Instant::now();
    let injected = inject(cx.namespaces()?);
    let took = started.elapsed();
    if took > Duration::from_millis(100) {
        // The window is measured from the fault's start: say when the rules were all in.
        cx.rec.note(
            i,
            format!("network rules took {} ms to apply", took.as_millis()),
        );
    }
    if injected.is_ok() {
        tokio::time::sleep(cx.holds.network).await;
    }
    cx.namespaces()?.heal().context("healing the network")?;
    cx.rec.healed(i);
    injected
}

async fn rolling_restart(cx: &mut FaultContext<'_>) -> Result<()> {
    let i = cx.rec.fault(
        FaultKind::RollingRestart.name(),
        "SIGTERM and restart every node in turn".into(),
        Vec::new(),
    );
    for node in 1..=cx.cluster.size() {
        match cx.cluster.stop(node) {
            Ok(0) => {}
            Ok(code) => cx
                .rec
                .unmet(i, format!("node {node} exited with {code} on SIGTERM")),
            Err(e) => cx
                .rec
                .unmet(i, format!("node {node} did not stop cleanly: {e:#}")),
        }
        if let Err(e) = cx.cluster.restart(node) {
            cx.rec
                .unmet(i, format!("node {node} did not come back: {e:#}"));
        }
        let topics = [cx.topic];
        let rf = cx.rf;
        if let Err(e) = cx
            .cluster
            .wait_healthy(&topics, rf, Duration::from_secs(60))
            .await
        {
            cx.rec
                .unmet(i, format!("after restarting node {node}: {e:#}"));
        }
    }
    cx.rec.healed(i);
    Ok(())
}

async fn kill_two(cx: &mut FaultContext<'_>) -> Result<()> {
    let n = cx.cluster.size();
    let a = 1 + cx.rng.below(n);
    let b = 1 + (a + cx.rng.below(n - 1)) % n;
    let detail = format!("nodes {a} and {b} killed together");
    // Not a failover: with two of three replicas gone, acks=all waits for them by design.
    let i = cx.rec.fault(FaultKind::KillTwo.name(), detail, Vec::new());
    cx.cluster.kill(a);
    cx.cluster.kill(b);
    tokio::time::sleep(cx.holds.down).await;
    // Both start before either is awaited: neither can serve without the other's vote.
    for node in [a, b] {
        cx.cluster.nodes[node - 1].launch()?;
        cx.cluster.down[node - 1] = false;
    }
    for node in [a, b] {
        if let Err(e) = cx.cluster.nodes[node - 1].wait_serving(Duration::from_secs(90)) {
            cx.rec
                .unmet(i, format!("node {node} did not come back: {e:#}"));
        }
    }
    cx.rec.healed(i);
    Ok(())
}

/// Error codes a produce to a broker with a full disk may get: KAFKA_STORAGE_ERROR, or
/// NOT_ENOUGH_REPLICAS (before or after the append) when the full broker is a follower.
const DISK_FULL_CODES: [i16; 3] = [56, 19, 20];

async fn disk_full(cx: &mut FaultContext<'_>) -> Result<()> {
    let (node, _) = cx.cluster.tmpfs.clone().context("no tmpfs node")?;
    let led = cx.led_by(&[node]).await;
    let probe_views = cx.cluster.partitions(cx.probe_topic, None).await?;
    let detail = format!("node {node}'s data dir filled to the last byte");
    let log_from = cx.cluster.nodes[node - 1].log().len();
    cx.cluster.fill_disk()?;
    // Not a failover: leadership stays while the partitions are offline, and the last
    // partly used tmpfs page still takes a few appends after the fill.
    let _ = led;
    let i = cx.rec.fault(FaultKind::DiskFull.name(), detail, Vec::new());
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Raw produces straight to a probe partition the full broker leads: they must fail with a
    // storage error, never succeed.
    match probe_views.iter().find(|p| p.leader as usize == node) {
        Some(p) => {
            let code = cx
                .cluster
                .produce_probe(node, cx.probe_topic, p.partition, b"disk-full probe")
                .await;
            match code {
                Ok(c) if DISK_FULL_CODES.contains(&c) => cx
                    .rec
                    .note(i, format!("produce to the full broker answered error {c}")),
                Ok(c) => cx.rec.unmet(
                    i,
                    format!(
                        "produce to the full broker answered {c}, not one of {DISK_FULL_CODES:?}"
                    ),
                ),
                Err(e) => cx
                    .rec
                    .unmet(i, format!("produce to the full broker: {e:#}")),
            }
        }
        None => cx.rec.note(
            i,
            format!("node {node} leads no probe partition: produce not probed"),
        ),
    }
    tokio::time::sleep(cx.holds.down).await;
    let log = cx.cluster.nodes[node - 1].log();
    let during = &log[log_from.min(log.len())..];
    if during.contains("storage error") {
        cx.rec
            .note(i, "the broker took the affected partitions offline".into());
    }
    cx.cluster.free_disk()?;
    // Freeing space and restarting brings the broker back.
    if let Err(e) = cx.cluster.stop(node) {
        cx.rec.note(i, format!("clean stop failed ({e:#}); killed"));
        cx.cluster.kill(node);
    }
    if let Err(e) = cx.cluster.restart(node) {
        cx.rec.unmet(
            i,
            format!("node {node} did not come back after space was freed: {e:#}"),
        );
    }
    cx.rec.healed(i);
    Ok(())
}

/// What a broker logs when recovery cuts a segment at an invalid batch.
pub const CORRUPTION_DETECTED: &str = "segment recovered: invalid tail truncated";

async fn corrupt_segment(cx: &mut FaultContext<'_>) -> Result<()> {
    let p = cx.random_partition().await?;
    let followers: Vec<usize> = p
        .replicas
        .iter()
        .filter(|r| **r != p.leader)
        .map(|r| *r as usize)
        .collect();
    let node = cx.rng.pick(&followers);
    let clean = cx.rng.below(2) == 0;
    let led = cx.led_by(&[node]).await;
    let how = if clean { "SIGTERM" } else { "kill -9" };
    let i = cx.rec.fault(
        FaultKind::CorruptSegment.name(),
        format!(
            "node {node} (follower of p{}) stopped by {how}",
            p.partition
        ),
        led,
    );
    if clean {
        if let Err(e) = cx.cluster.stop(node) {
            cx.rec.note(i, format!("clean stop failed ({e:#}); killed"));
            cx.cluster.kill(node);
        }
    } else {
        cx.cluster.kill(node);
    }
    let pick = cx.rng.next_u64();
    let flipped = cx
        .cluster
        .corrupt_closed_segment(node, cx.topic, p.partition, pick)?;
    match &flipped {
        Some(what) => cx.rec.note(i, what.clone()),
        None => cx
            .rec
            .note(i, "no closed segment yet: nothing flipped".into()),
    }
    let restarted = cx.cluster.restart(node);
    cx.rec.healed(i);
    if let Err(e) = restarted {
        cx.rec
            .unmet(i, format!("node {node} did not come back: {e:#}"));
        return Ok(());
    }
    if flipped.is_some() {
        let log = cx.cluster.nodes[node - 1].log_since_launch();
        if log.contains(CORRUPTION_DETECTED) {
            cx.rec.note(
                i,
                "detected by CRC on restart; the replica refetches from the leader".into(),
            );
        } else {
            cx.rec.unmet(
                i,
                format!("node {node} did not detect the corrupted batch on restart"),
            );
        }
    }
    Ok(())
}
