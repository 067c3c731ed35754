//! Follower fetchers: one task per source (leader) broker, fetching every partition this node
//! follows from it in one long-polling request, appending what comes back, truncating where
//! the leader says the logs diverge, and fetching again. The fetch offset of each request is
//! the follower's acknowledgement, so appends are fsynced before the next request goes out.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferrymq_cluster::MetadataImage;
use ferrymq_types::{NodeId, TopicPartition};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use super::gone_leaders::GoneLeaders;
use super::replica::FollowerPosition;
use super::transport::{
    Endpoint, ReplicaFetchError, ReplicaFetchPartition, ReplicaFetchRequest, ReplicaFetchResult,
    ReplicaTransport, TransportError,
};
use crate::partition::Partition;
use crate::partitions::Partitions;

/// Settings of the fetchers (Kafka's `replica.fetch.*`).
#[derive(Debug, Clone, Copy)]
pub struct FetcherConfig {
    /// `replica.fetch.wait.max.ms`: long-poll wait at the leader.
    pub wait_max_ms: u64,
    /// `replica.fetch.max.bytes`: per partition.
    pub partition_max_bytes: usize,
    /// `replica.fetch.response.max.bytes`: per request.
    pub response_max_bytes: usize,
    /// `replica.fetch.backoff.ms`: pause after an error.
    pub backoff_ms: u64,
}

struct Source {
    parts: Arc<Mutex<BTreeSet<TopicPartition>>>,
    wake: Arc<Notify>,
    task: JoinHandle<()>,
}

/// Every fetcher of this node.
pub struct ReplicaFetchers {
    node_id: NodeId,
    transport: Arc<dyn ReplicaTransport>,
    partitions: Arc<Partitions>,
    image: watch::Receiver<Arc<MetadataImage>>,
    config: FetcherConfig,
    sources: Mutex<HashMap<NodeId, Source>>,
    gone: Arc<GoneLeaders>,
    stop: watch::Receiver<bool>,
}

impl std::fmt::Debug for ReplicaFetchers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicaFetchers")
            .field("node_id", &self.node_id)
            .finish()
    }
}

struct Deps {
    node_id: NodeId,
    source: NodeId,
    transport: Arc<dyn ReplicaTransport>,
    partitions: Arc<Partitions>,
    image: watch::Receiver<Arc<MetadataImage>>,
    config: FetcherConfig,
    parts: Arc<Mutex<BTreeSet<TopicPartition>>>,
    wake: Arc<Notify>,
    gone: Arc<GoneLeaders>,
    stop: watch::Receiver<bool>,
}

impl ReplicaFetchers {
    /// Fetchers for this node; none run until `update` names partitions to follow.
    pub fn new(
        node_id: NodeId,
        transport: Arc<dyn ReplicaTransport>,
        partitions: Arc<Partitions>,
        image: watch::Receiver<Arc<MetadataImage>>,
        config: FetcherConfig,
        gone: Arc<GoneLeaders>,
        stop: watch::Receiver<bool>,
    ) -> ReplicaFetchers {
        ReplicaFetchers {
            node_id,
            transport,
            partitions,
            image,
            config,
            sources: Mutex::new(HashMap::new()),
            gone,
            stop,
        }
    }

    /// Sets the partitions followed and from which leader; starts a fetcher for a new source
    /// and empties those of sources no longer followed.
    pub fn update(&self, follow: &[(TopicPartition, NodeId)]) {
        let mut by_source: HashMap<NodeId, BTreeSet<TopicPartition>> = HashMap::new();
        for (tp, leader) in follow {
            by_source.entry(*leader).or_default().insert(tp.clone());
        }
        let mut sources = self.sources.lock().expect("fetchers lock");
        for (id, source) in sources.iter() {
            if !by_source.contains_key(id) {
                source.parts.lock().expect("fetcher parts lock").clear();
                source.wake.notify_one();
                // Not fetched from any more, so a mark could not be cleared by an answer.
                self.gone.clear(*id);
            }
        }
        for (id, parts) in by_source {
            let source = sources.entry(id).or_insert_with(|| self.spawn(id));
            if source.task.is_finished() {
                *source = self.spawn(id);
            }
            *source.parts.lock().expect("fetcher parts lock") = parts;
            source.wake.notify_one();
        }
    }

    /// The leaders fetched from now.
    pub fn sources(&self) -> Vec<NodeId> {
        self.sources
            .lock()
            .expect("fetchers lock")
            .iter()
            .filter(|(_, s)| !s.parts.lock().expect("fetcher parts lock").is_empty())
            .map(|(id, _)| *id)
            .collect()
    }

    fn spawn(&self, source: NodeId) -> Source {
        let parts = Arc::new(Mutex::new(BTreeSet::new()));
        let wake = Arc::new(Notify::new());
        let deps = Deps {
            node_id: self.node_id,
            source,
            transport: self.transport.clone(),
            partitions: self.partitions.clone(),
            image: self.image.clone(),
            config: self.config,
            parts: parts.clone(),
            wake: wake.clone(),
            gone: self.gone.clone(),
            stop: self.stop.clone(),
        };
        Source {
            parts,
            wake,
            task: tokio::spawn(run(deps)),
        }
    }
}

/// Waits `d`, or less if woken or stopped.
async fn pause(deps: &mut Deps, d: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = deps.wake.notified() => {}
        _ = deps.stop.changed() => {}
    }
}

async fn run(mut deps: Deps) {
    let backoff = Duration::from_millis(deps.config.backoff_ms.max(1));
    // True after a connection broke and was retried at once; a second break backs off.
    let mut retried = false;
    // True while the leader may be marked gone, so an answered fetch clears the mark without
    // taking the marks' lock on every round (true at first: a mark may predate this task).
    let mut marked = true;
    loop {
        if *deps.stop.borrow() {
            return;
        }
        let followed: Vec<(Arc<Partition>, FollowerPosition)> = {
            let parts = deps.parts.lock().expect("fetcher parts lock").clone();
            parts
                .iter()
                .filter_map(|tp| deps.partitions.get(tp))
                .filter_map(|p| {
                    p.follower_position()
                        .filter(|pos| pos.leader == deps.source)
                        .map(|pos| (p, pos))
                })
                .collect()
        };
        if followed.is_empty() {
            pause(&mut deps, Duration::from_secs(1)).await;
            continue;
        }
        let image = deps.image.borrow().clone();
        let (Some(leader), Some(me)) = (
            image.brokers.get(&deps.source),
            image.brokers.get(&deps.node_id),
        ) else {
            pause(&mut deps, backoff).await;
            continue;
        };
        let incarnation = leader.incarnation;
        let endpoint = Endpoint::of(deps.source, leader);
        let request = ReplicaFetchRequest {
            replica: deps.node_id,
            broker_epoch: me.epoch,
            max_wait_ms: deps.config.wait_max_ms,
            max_bytes: deps.config.response_max_bytes,
            partitions: followed
                .iter()
                .map(|(p, pos)| ReplicaFetchPartition {
                    tp: p.tp().clone(),
                    topic_id: p.topic_id(),
                    fetch_offset: pos.fetch_offset,
                    last_fetched_epoch: pos.last_fetched_epoch,
                    current_leader_epoch: pos.leader_epoch,
                    log_start_offset: pos.log_start_offset,
                    partition_max_bytes: deps.config.partition_max_bytes,
                })
                .collect(),
        };
        let fetched = tokio::select! {
            r = deps.transport.fetch(&endpoint, request) => r,
            _ = deps.stop.changed() => return,
        };
        match fetched {
            Err(e) => {
                tracing::debug!(source = deps.source.0, error = %e, "replica fetch failed");
                match e {
                    TransportError::Broken(_) | TransportError::Refused(_) => {
                        marked = true;
                        if deps.gone.mark(deps.source, incarnation) {
                            tracing::info!(
                                leader = deps.source.0,
                                error = %e,
                                "leader's connection lost: its partitions are named without a leader until it answers or is fenced"
                            );
                        }
                    }
                    TransportError::Failed(_) => {
                        marked = false;
                        deps.gone.clear(deps.source);
                    }
                }
                // A broken connection is tried again at once: a refusal then tells a dead
                // process from a closed connection within a millisecond.
                if matches!(e, TransportError::Broken(_)) && !retried {
                    retried = true;
                    continue;
                }
                retried = false;
                pause(&mut deps, backoff).await;
            }
            Ok(results) => {
                retried = false;
                if std::mem::take(&mut marked) && deps.gone.clear(deps.source) {
                    tracing::info!(leader = deps.source.0, "leader answers again");
                }
                let work: Vec<(Arc<Partition>, FollowerPosition, ReplicaFetchResult)> = followed
                    .into_iter()
                    .filter_map(|(p, pos)| {
                        results
                            .iter()
                            .find(|r| r.tp == *p.tp())
                            .map(|r| (p, pos, r.clone()))
                    })
                    .collect();
                let needs_backoff = tokio::task::spawn_blocking(move || {
                    work.into_iter()
                        .fold(false, |b, (p, pos, r)| apply(&p, &pos, r) || b)
                })
                .await
                .unwrap_or(true);
                if needs_backoff {
                    pause(&mut deps, backoff).await;
                }
            }
        }
    }
}

/// Applies one partition's result; true if the fetcher should back off.
fn apply(p: &Partition, pos: &FollowerPosition, r: ReplicaFetchResult) -> bool {
    let outcome = match (r.error, r.diverging) {
        (None, Some((epoch, end))) => p
            .truncate_diverged(pos.leader_epoch, epoch, end)
            .map(|_| ()),
        (None, None) => p.append_replicated(
            pos.leader_epoch,
            r.records,
            r.high_watermark,
            r.log_start_offset,
        ),
        (Some(ReplicaFetchError::OffsetOutOfRange), _) => {
            match p.reset_out_of_range(pos.leader_epoch, r.log_start_offset, r.high_watermark) {
                // Nothing to change on this side: the views must settle first; back off.
                Ok(false) => return true,
                other => other.map(|_| ()),
            }
        }
        (Some(e), _) => {
            // The leader's view and ours differ (leadership moved, metadata behind): wait for
            // the metadata to settle.
            tracing::debug!(partition = %p.tp(), error = ?e, "replica fetch refused");
            return true;
        }
    };
    match outcome {
        Ok(()) => false,
        Err(e) => {
            tracing::warn!(partition = %p.tp(), error = %e, "applying replicated data failed");
            true
        }
    }
}
