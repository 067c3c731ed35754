//! The broker core as front ends see it: produce, fetch, offsets, and the metadata it follows.
//! It wires the partitions, the log writer and the controller, runs the background duties
//! (applying metadata, retention, checkpoints, periodic flush) and stops cleanly.

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ferrymq_cluster::{Controller, MetadataImage};
use ferrymq_log::compaction::Throttle;
use ferrymq_log::{AppendInfo, ValidatedBatch};
use ferrymq_types::{LeaderEpoch, NodeId, Offset, ProducerEpoch, ProducerId, TopicPartition};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::config::BrokerConfig;
use crate::error::BrokerError;
use crate::fetch::ReplicaFetchParams;
use crate::fetch::{self, FetchParams};
use crate::group::GroupCoordinator;
use crate::log_writer::{Durability, LogWriter};
use crate::metrics;
use crate::partition::{ListedOffset, OffsetSpec, Partition, ReadBound, ReadOutcome};
use crate::partitions::{read_startup_state, Partitions};
use crate::producer_ids::ProducerIdPool;
use crate::replication::fetcher::ReplicaFetchers;
use crate::replication::gone_leaders::GoneLeaders;
use crate::replication::replica::ReplicaRead;
use crate::replication::transport::{Endpoint, ReplicaTransport};

/// Marker file present only after a clean stop.
pub const CLEAN_SHUTDOWN_MARKER: &str = ".clean-shutdown";

/// How many replicas must have a produce before it is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// acks=0: no answer at all.
    None,
    /// acks=1: the leader's append.
    Leader,
    /// acks=all (-1): every ISR member, fsynced.
    All,
}

/// A produce that was appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Produced {
    /// Where the batch landed (for a duplicate: where the original landed).
    pub append: AppendInfo,
    /// The batch was an idempotent producer's retry of one already appended: nothing new was
    /// written, and `append` gives the original's offsets.
    pub duplicate: bool,
    /// The partition's log start offset afterwards.
    pub log_start_offset: Offset,
}

/// The broker core.
#[derive(Debug)]
pub struct Broker {
    config: BrokerConfig,
    clock: Arc<dyn Clock>,
    controller: Arc<Controller>,
    partitions: Arc<Partitions>,
    fetchers: ReplicaFetchers,
    /// Leaders whose process looks gone from here (`gone_leaders.rs`).
    gone_leaders: Arc<GoneLeaders>,
    /// The fetchers' transport, asked whether a leader closed its connection.
    transport: Arc<dyn ReplicaTransport>,
    /// Partitions with an ISR change in flight to the controller.
    isr_pending: std::sync::Mutex<std::collections::HashSet<TopicPartition>>,
    writer: LogWriter,
    /// Producer ids to hand out; a tokio mutex because refilling awaits the controller, and
    /// two requests finding the pool empty must not both ask for a block.
    producer_ids: tokio::sync::Mutex<ProducerIdPool>,
    groups: Arc<GroupCoordinator>,
    shutdown: watch::Sender<bool>,
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
    /// When a follower's fetch last reached this broker (clock ms): contact with peers.
    peer_contact_ms: Arc<AtomicI64>,
}

/// True when this broker is cut off: no heartbeat answer from the controller for a session
/// (`session_lost`) and no follower fetch for as long. The controller has then fenced it and
/// moved its leaderships, so it must stop acting as a leader. A lost session alone is not
/// enough: while the controller quorum elects a new leader every broker goes unanswered, and
/// those in touch with their followers keep serving.
/// How often a waiting acks=all produce rechecks `cut_off` once the session is lost.
const CUT_OFF_RECHECK: Duration = Duration::from_millis(100);

fn cut_off(session_lost: bool, peer_contact_ms: &AtomicI64, now_ms: i64, session_ms: i64) -> bool {
    session_lost && now_ms - peer_contact_ms.load(Ordering::Acquire) > session_ms
}

impl Broker {
    /// Opens every hosted partition (recovering after an unclean stop) and removes the
    /// clean-shutdown marker, so a crash from now on is recognised as one.
    pub fn open(
        config: BrokerConfig,
        controller: Arc<Controller>,
        clock: Arc<dyn Clock>,
        transport: Arc<dyn ReplicaTransport>,
    ) -> Result<Arc<Broker>, BrokerError> {
        let marker = config.data_dir.join(CLEAN_SHUTDOWN_MARKER);
        let clean = marker.exists();
        let startup = read_startup_state(&config.data_dir, clean)?;
        tracing::info!(clean_shutdown = clean, data_dir = %config.data_dir.display(), "opening partitions");
        let partitions = Arc::new(Partitions::new(
            config.node_id,
            config.data_dir.clone(),
            config.topic_defaults.clone(),
            startup,
            clock.clone(),
        ));
        let (shutdown, stop) = watch::channel(false);
        let gone_leaders = Arc::new(GoneLeaders::default());
        let fetchers = ReplicaFetchers::new(
            config.node_id,
            transport.clone(),
            partitions.clone(),
            controller.subscribe(),
            config.fetcher,
            gone_leaders.clone(),
            stop,
        );
        if let Some(follow) = partitions.apply_image(&controller.image()) {
            fetchers.update(&follow);
        }
        if clean {
            std::fs::remove_file(&marker)
                .and_then(|_| sync_dir(&config.data_dir))
                .map_err(|e| BrokerError::Storage(format!("removing {}: {e}", marker.display())))?;
        }
        let writer = LogWriter::start(
            clock.clone(),
            config.flush_interval_messages,
            config.writer_queue_max,
        );
        let peer_contact_ms = Arc::new(AtomicI64::new(clock.now_ms()));
        let groups = Arc::new(GroupCoordinator::new(
            config.node_id,
            config.groups.clone(),
            clock.clone(),
            controller.clone(),
            partitions.clone(),
            writer.queue(),
        ));
        Ok(Arc::new(Broker {
            peer_contact_ms,
            config,
            clock,
            controller,
            partitions,
            fetchers,
            gone_leaders,
            transport,
            isr_pending: std::sync::Mutex::new(std::collections::HashSet::new()),
            writer,
            producer_ids: tokio::sync::Mutex::new(ProducerIdPool::new()),
            groups,
            shutdown,
            tasks: std::sync::Mutex::new(Vec::new()),
        }))
    }

    /// Starts the background duties on the current tokio runtime.
    pub fn start(self: &Arc<Self>) {
        let mut tasks = self.tasks.lock().expect("tasks lock");
        self.groups.on_metadata(&self.controller.image());
        tasks.push(tokio::spawn(
            self.groups.clone().run(self.shutdown.subscribe()),
        ));
        tasks.push(tokio::spawn(follow_metadata(self.clone())));
        let b = self.clone();
        let isr_check_ms = (self.config.replica_lag_time_max_ms / 4).clamp(50, 500);
        tasks.push(every(self.shutdown.subscribe(), isr_check_ms, move || {
            let b = b.clone();
            async move { b.maintain_isr() }
        }));
        let b = self.clone();
        tasks.push(every(
            self.shutdown.subscribe(),
            self.config.retention_check_interval_ms,
            move || {
                let b = b.clone();
                async move {
                    let now = b.clock.now_ms();
                    let parts = b.partitions.all();
                    let _ = tokio::task::spawn_blocking(move || {
                    for p in parts {
                        if let Err(e) = p.enforce_retention(now) {
                            tracing::debug!(partition = %p.tp(), error = %e, "retention skipped");
                        }
                    }
                })
                .await;
                }
            },
        ));
        let b = self.clone();
        tasks.push(every(
            self.shutdown.subscribe(),
            self.config.checkpoint_interval_ms,
            move || {
                let b = b.clone();
                async move {
                    let parts = b.partitions.clone();
                    match tokio::task::spawn_blocking(move || parts.write_checkpoints()).await {
                        Ok(Err(e)) => tracing::error!(error = %e, "writing checkpoints failed"),
                        Err(e) => tracing::error!(error = %e, "checkpoint task failed"),
                        Ok(Ok(())) => {}
                    }
                }
            },
        ));
        if self.config.cleaner.enable {
            let b = self.clone();
            tasks.push(every(
                self.shutdown.subscribe(),
                self.config.cleaner.backoff_ms,
                move || {
                    let b = b.clone();
                    async move {
                        let _ = tokio::task::spawn_blocking(move || b.clean_logs()).await;
                    }
                },
            ));
        }
        let b = self.clone();
        tasks.push(every(
            self.shutdown.subscribe(),
            self.config.producer_id_expiration_check_interval_ms,
            move || {
                let b = b.clone();
                async move {
                    b.remove_expired_producers();
                }
            },
        ));
        let b = self.clone();
        tasks.push(every(
            self.shutdown.subscribe(),
            self.config.flush_interval_ms,
            move || {
                let b = b.clone();
                async move { b.writer.flush_dirty().await }
            },
        ));
    }

    /// One cleaner pass: compacts, one at a time, the compacted partitions that are dirty
    /// enough (blocking; the cleaner's I/O is paced to `log.cleaner.io.max.bytes.per.second`).
    fn clean_logs(&self) {
        let cfg = &self.config.cleaner;
        let stopping = self.shutdown.subscribe();
        let mut throttle =
            Throttle::new(cfg.io_max_bytes_per_second).with_stop(move || *stopping.borrow());
        for p in self.partitions.all() {
            if *self.shutdown.borrow() {
                return;
            }
            let started = std::time::Instant::now();
            match p.compact(self.clock.now_ms(), cfg.dedupe_buffer_bytes, &mut throttle) {
                Ok(Some(s)) => tracing::info!(
                    partition = %p.tp(),
                    segments = s.segments_cleaned,
                    records_removed = s.records_removed,
                    bytes_read = s.bytes_read,
                    bytes_written = s.bytes_written,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "compacted"
                ),
                Ok(None) => {}
                Err(e) => tracing::warn!(partition = %p.tp(), error = %e, "compaction failed"),
            }
        }
    }

    /// The latest metadata image.
    pub fn metadata(&self) -> Arc<MetadataImage> {
        self.controller.image()
    }

    /// Live brokers of `image` whose process looks gone from here: their follower fetch
    /// connection broke or was refused (`gone_leaders.rs`), or has been closed from their
    /// side although the fetch in flight has not noticed yet (it may be busy appending the
    /// last answer, and a client asks about the dead broker at the moment it sees the same
    /// close). Metadata names no leader for their partitions.
    pub fn gone_leaders(&self, image: &MetadataImage) -> Vec<NodeId> {
        let mut gone = self.gone_leaders.in_image(image);
        for source in self.fetchers.sources() {
            if gone.contains(&source) {
                continue;
            }
            let Some(b) = image.brokers.get(&source).filter(|b| !b.fenced) else {
                continue;
            };
            if self.transport.closed_by_peer(&Endpoint::of(source, b)) {
                gone.push(source);
            }
        }
        gone
    }

    /// The controller admin requests go to.
    pub fn controller(&self) -> &Arc<Controller> {
        &self.controller
    }

    /// The group coordinator.
    pub fn groups(&self) -> &Arc<GroupCoordinator> {
        &self.groups
    }

    /// The broker's settings.
    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// Applies the controller's latest image now (after an admin change, so the partitions a
    /// client was just told about exist when it uses them).
    pub fn sync_metadata(&self) {
        self.apply_image(&self.controller.image());
    }

    /// The hosted replica of `tp`.
    pub fn partition(&self, tp: &TopicPartition) -> Result<Arc<Partition>, BrokerError> {
        self.partitions
            .get(tp)
            .ok_or(BrokerError::UnknownTopicOrPartition)
    }

    /// Every hosted replica.
    pub fn partitions(&self) -> Vec<Arc<Partition>> {
        self.partitions.all()
    }

    /// Forgets, in every partition, idempotent producers idle for `producer.id.expiration.ms`.
    /// In-memory work under each partition's lock only.
    pub fn remove_expired_producers(&self) -> usize {
        let now = self.clock.now_ms();
        let expiration_ms = self.config.producer_id_expiration_ms;
        let mut removed = 0;
        for p in self.partitions.all() {
            let n = p.remove_expired_producers(now, expiration_ms);
            if n > 0 {
                tracing::debug!(partition = %p.tp(), expired = n, "idempotent producers expired");
            }
            removed += n;
        }
        removed
    }

    /// InitProducerId for a producer without a transactional id: a producer id never handed
    /// out before in this cluster, with epoch 0. As in Kafka, every call gets a new id, even
    /// from a producer that names its current id and epoch (v3+, KIP-360): an idempotent
    /// producer bumps its epoch itself, and the partitions' producer state enforces the bump
    /// (older epochs fenced, the new one starting at sequence 0). Only a transaction
    /// coordinator, which remembers the id of a transactional id, bumps epochs here.
    pub async fn init_producer_id(&self) -> Result<(ProducerId, ProducerEpoch), BrokerError> {
        let mut pool = self.producer_ids.lock().await;
        if let Some(id) = pool.take() {
            return Ok((id, ProducerEpoch(0)));
        }
        let block = self
            .controller
            .allocate_producer_ids(self.config.node_id)
            .await
            .map_err(|e| BrokerError::ProducerIdsUnavailable(e.to_string()))?;
        tracing::info!(
            first = block.first.0,
            size = block.size,
            "producer id block granted"
        );
        pool.refill(block);
        let id = pool.take().expect("a freshly granted block has ids");
        Ok((id, ProducerEpoch(0)))
    }

    /// Appends a producer's batch and waits as `acks` requires, at most `timeout` for acks=all.
    /// An idempotent producer's retry of a batch already appended is answered with the
    /// original's offsets once those are as durable and committed as `acks` asks.
    pub async fn produce(
        &self,
        tp: &TopicPartition,
        batch: ValidatedBatch,
        acks: Acks,
        timeout: Duration,
    ) -> Result<Produced, BrokerError> {
        self.submit_produce(tp, batch, acks, timeout).await?.await
    }

    /// Checks and queues a producer's batch; returns once it is queued (appends happen in
    /// queueing order, which is how a connection keeps its produce requests in order) with a
    /// future that resolves as `acks` requires.
    pub async fn submit_produce(
        &self,
        tp: &TopicPartition,
        batch: ValidatedBatch,
        acks: Acks,
        timeout: Duration,
    ) -> Result<impl std::future::Future<Output = Result<Produced, BrokerError>>, BrokerError> {
        let partition = self.partition(tp)?;
        let mut session = self.controller.broker_state();
        if self.is_cut_off() {
            // The controller has fenced this broker and moved its leaderships: whatever the
            // local image says, the client must find the new leader.
            return Err(BrokerError::NotLeaderOrFollower);
        }
        partition.check_produce(batch.len(), acks == Acks::All)?;
        let durability = if acks == Acks::All || self.config.flush_interval_messages <= 1 {
            Durability::Fsync
        } else {
            Durability::PageCache
        };
        let mut hw = partition.subscribe_hw();
        let (bytes, messages) = (batch.len(), batch.header().record_count.max(0) as u64);
        let epoch = partition.leader_epoch();
        let (contact, clock) = (self.peer_contact_ms.clone(), self.clock.clone());
        let session_ms = self.controller.config().session_timeout.as_millis() as i64;
        let appended = self
            .writer
            .submit(partition.clone(), batch, durability)
            .await?;
        Ok(async move {
            let appended = appended.await?;
            let append = appended.info();
            if !appended.is_duplicate() {
                metrics::produced(&partition.tp().topic, bytes, messages);
            }
            if acks == Acks::All {
                let _waiting = metrics::Waiting::enter(metrics::Purgatory::Produce);
                // Answered once every ISR member has the batch (fsynced), or with the reason
                // it cannot be: leadership moved, or the ISR fell below min.insync.replicas.
                // For an idempotent retry the batch is the original, already appended.
                let target = append.last_offset.next();
                // Cut off for a session: the batch may never commit here; answering now
                // lets the client retry on the new leader instead of waiting out its request
                // timeout.
                let cut = async {
                    loop {
                        let lost = session.wait_for(|s| s.session_lost).await.is_err();
                        if cut_off(true, &contact, clock.now_ms(), session_ms) || lost {
                            return;
                        }
                        tokio::time::sleep(CUT_OFF_RECHECK).await;
                    }
                };
                let wait = async {
                    tokio::select! {
                        // A batch already replicated is answered even if cut off since.
                        biased;
                        replicated = partition.replicated(target, epoch, &mut hw) => replicated,
                        () = cut => Err(BrokerError::NotLeaderOrFollower),
                    }
                };
                match tokio::time::timeout(timeout, wait).await {
                    Ok(result) => result?,
                    Err(_) => return Err(BrokerError::RequestTimedOut),
                }
            }
            let (_, _, log_start_offset) = partition.checkpoint_offsets();
            Ok(Produced {
                append,
                duplicate: appended.is_duplicate(),
                log_start_offset,
            })
        })
    }

    /// A follower's fetch, long-polling for new data.
    pub async fn replica_fetch(
        &self,
        replica: NodeId,
        params: &ReplicaFetchParams,
    ) -> Vec<Result<ReplicaRead, BrokerError>> {
        self.peer_contact_ms
            .store(self.clock.now_ms(), Ordering::Release);
        let hosted: Vec<_> = params
            .partitions
            .iter()
            .map(|p| self.partition(&p.tp))
            .collect();
        let read = fetch::replica_fetch(&hosted, replica, params).await;
        self.peer_contact_ms
            .store(self.clock.now_ms(), Ordering::Release);
        read
    }

    /// True when this broker must not act as a leader although its image may say it leads:
    /// cut off from the controller and from every follower for a whole session (`cut_off`).
    pub fn is_cut_off(&self) -> bool {
        let lost = self.controller.broker_state().borrow().session_lost;
        let session_ms = self.controller.config().session_timeout.as_millis() as i64;
        cut_off(lost, &self.peer_contact_ms, self.clock.now_ms(), session_ms)
    }

    /// Applies a metadata image: hosted partitions and what the fetchers follow.
    fn apply_image(&self, image: &MetadataImage) {
        if let Some(follow) = self.partitions.apply_image(image) {
            self.fetchers.update(&follow);
            self.groups.on_metadata(image);
        }
    }

    /// Proposes the ISR changes leaders want (AlterPartition), one in flight per partition.
    fn maintain_isr(self: &Arc<Self>) {
        let lag_max = self.config.replica_lag_time_max_ms as i64;
        for p in self.partitions.all() {
            let Some(proposal) = p.isr_proposal(lag_max) else {
                continue;
            };
            if !self
                .isr_pending
                .lock()
                .expect("isr pending lock")
                .insert(p.tp().clone())
            {
                continue;
            }
            let b = self.clone();
            tokio::spawn(async move {
                let tp = p.tp().clone();
                let result = b
                    .controller
                    .alter_partition(
                        proposal.topic_id,
                        tp.partition,
                        proposal.leader_epoch,
                        proposal.partition_epoch,
                        proposal.new_isr.clone(),
                    )
                    .await;
                match result {
                    Ok(()) => {
                        // The controller may have left fenced brokers out: log what committed.
                        let image = b.controller.image();
                        let isr: Vec<i32> = image
                            .topic(&tp.topic)
                            .and_then(|t| t.partitions.get(&tp.partition))
                            .map(|p| p.isr.iter().map(|r| r.0).collect())
                            .unwrap_or_default();
                        tracing::info!(partition = %tp, leader_epoch = proposal.leader_epoch.0, ?isr, "ISR changed")
                    }
                    Err(e) => tracing::debug!(partition = %tp, error = %e, "ISR change refused"),
                }
                b.isr_pending.lock().expect("isr pending lock").remove(&tp);
            });
        }
    }

    /// A fetch, long-polling as its parameters ask.
    pub async fn fetch(&self, params: &FetchParams) -> Vec<Result<ReadOutcome, BrokerError>> {
        let hosted: Vec<_> = params
            .partitions
            .iter()
            .map(|p| self.partition(&p.tp))
            .collect();
        let results = fetch::fetch(&hosted, params).await;
        if params.bound == ReadBound::HighWatermark {
            for (req, out) in params.partitions.iter().zip(&results) {
                if let Ok(ReadOutcome {
                    records: Some(records),
                    ..
                }) = out
                {
                    let (bytes, messages) = metrics::count_batches(records);
                    metrics::fetched(&req.tp.topic, bytes, messages);
                }
            }
        }
        results
    }

    /// ListOffsets for one partition.
    pub fn list_offset(
        &self,
        tp: &TopicPartition,
        spec: OffsetSpec,
        epoch: Option<LeaderEpoch>,
    ) -> Result<ListedOffset, BrokerError> {
        self.partition(tp)?.list_offset(spec, epoch)
    }

    /// OffsetForLeaderEpoch for one partition.
    pub fn end_offset_for_epoch(
        &self,
        tp: &TopicPartition,
        epoch: LeaderEpoch,
        current: Option<LeaderEpoch>,
    ) -> Result<(LeaderEpoch, Offset), BrokerError> {
        self.partition(tp)?.end_offset_for_epoch(epoch, current)
    }

    /// DeleteRecords for one partition.
    pub fn delete_records(
        &self,
        tp: &TopicPartition,
        offset: Offset,
    ) -> Result<Offset, BrokerError> {
        self.partition(tp)?.delete_records(offset)
    }

    /// Clean stop: background duties end, every append is flushed, logs are closed with their
    /// indexes written, checkpoints are written, and the clean-shutdown marker is created last.
    pub async fn shutdown(self: &Arc<Self>) -> Result<(), BrokerError> {
        self.shutdown.send_replace(true);
        let tasks: Vec<JoinHandle<()>> =
            std::mem::take(&mut *self.tasks.lock().expect("tasks lock"));
        for t in tasks {
            let _ = t.await;
        }
        let b = self.clone();
        tokio::task::spawn_blocking(move || b.close_blocking())
            .await
            .map_err(|e| BrokerError::Storage(format!("shutdown task: {e}")))?
    }

    fn close_blocking(&self) -> Result<(), BrokerError> {
        self.writer.stop();
        let mut failed = false;
        for p in self.partitions.all() {
            if let Err(e) = p.close() {
                tracing::error!(partition = %p.tp(), error = %e, "closing partition failed");
                failed = true;
            }
        }
        self.partitions.write_checkpoints()?;
        if failed {
            return Err(BrokerError::Storage(
                "some partitions did not close cleanly".into(),
            ));
        }
        let marker = self.config.data_dir.join(CLEAN_SHUTDOWN_MARKER);
        std::fs::write(&marker, b"")
            .and_then(|_| sync_dir(&self.config.data_dir))
            .map_err(|e| BrokerError::Storage(format!("writing {}: {e}", marker.display())))?;
        tracing::info!("broker stopped cleanly");
        Ok(())
    }
}

/// Applies every new metadata image to the hosted partitions.
async fn follow_metadata(broker: Arc<Broker>) {
    let mut images = broker.controller.subscribe();
    let mut stop = broker.shutdown.subscribe();
    loop {
        tokio::select! {
            changed = images.changed() => {
                if changed.is_err() { return; }
                let image = images.borrow_and_update().clone();
                let b = broker.clone();
                let _ = tokio::task::spawn_blocking(move || b.apply_image(&image)).await;
            }
            _ = stop.changed() => return,
        }
    }
}

/// Runs `duty` every `interval_ms` until shutdown.
fn every<F, Fut>(mut stop: watch::Receiver<bool>, interval_ms: u64, duty: F) -> JoinHandle<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(interval_ms.max(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => duty().await,
                _ = stop.changed() => return,
            }
        }
    })
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broker_is_cut_off_only_without_controller_and_followers_for_a_session() {
        let contact = AtomicI64::new(10_000);
        // The controller answers: never cut off, however quiet the followers.
        assert!(!cut_off(false, &contact, 60_000, 1_000));
        // No controller answer (an election, or this broker isolated), followers still fetch:
        // keep leading, the data path works without the controller.
        assert!(!cut_off(true, &contact, 10_900, 1_000));
        // Neither for longer than a session: the controller has fenced this broker by now.
        assert!(cut_off(true, &contact, 11_001, 1_000));
    }
}
