//! The broker core as front ends see it: produce, fetch, offsets, and the metadata it follows.
//! It wires the partitions, the log writer and the controller, runs the background duties
//! (applying metadata, retention, checkpoints, periodic flush) and stops cleanly.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ferrymq_cluster::{Controller, MetadataImage};
use ferrymq_log::{AppendInfo, ValidatedBatch};
use ferrymq_types::{LeaderEpoch, Offset, TopicPartition};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::config::BrokerConfig;
use crate::error::BrokerError;
use crate::fetch::{self, FetchParams};
use crate::log_writer::{Durability, LogWriter};
use crate::metrics;
use crate::partition::{ListedOffset, OffsetSpec, Partition, ReadBound, ReadOutcome};
use crate::partitions::{read_startup_state, Partitions};

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
    /// Where the batch landed.
    pub append: AppendInfo,
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
    writer: LogWriter,
    shutdown: watch::Sender<bool>,
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

impl Broker {
    /// Opens every hosted partition (recovering after an unclean stop) and removes the
    /// clean-shutdown marker, so a crash from now on is recognised as one.
    pub fn open(
        config: BrokerConfig,
        controller: Arc<Controller>,
        clock: Arc<dyn Clock>,
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
        ));
        partitions.apply_image(&controller.image());
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
        let (shutdown, _) = watch::channel(false);
        Ok(Arc::new(Broker {
            config,
            clock,
            controller,
            partitions,
            writer,
            shutdown,
            tasks: std::sync::Mutex::new(Vec::new()),
        }))
    }

    /// Starts the background duties on the current tokio runtime.
    pub fn start(self: &Arc<Self>) {
        let mut tasks = self.tasks.lock().expect("tasks lock");
        tasks.push(tokio::spawn(follow_metadata(self.clone())));
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

    /// The latest metadata image.
    pub fn metadata(&self) -> Arc<MetadataImage> {
        self.controller.image()
    }

    /// The controller admin requests go to.
    pub fn controller(&self) -> &Arc<Controller> {
        &self.controller
    }

    /// The broker's settings.
    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// Applies the controller's latest image now (after an admin change, so the partitions a
    /// client was just told about exist when it uses them).
    pub fn sync_metadata(&self) {
        self.partitions.apply_image(&self.controller.image());
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

    /// Appends a producer's batch and waits as `acks` requires, at most `timeout` for acks=all.
    pub async fn produce(
        &self,
        tp: &TopicPartition,
        batch: ValidatedBatch,
        acks: Acks,
        timeout: Duration,
    ) -> Result<Produced, BrokerError> {
        let partition = self.partition(tp)?;
        partition.check_produce(batch.len(), acks == Acks::All)?;
        let durability = if acks == Acks::All || self.config.flush_interval_messages <= 1 {
            Durability::Fsync
        } else {
            Durability::PageCache
        };
        let mut hw = partition.subscribe_hw();
        let (bytes, messages) = (batch.len(), batch.header().record_count.max(0) as u64);
        let append = self
            .writer
            .append(partition.clone(), batch, durability)
            .await?;
        metrics::produced(&tp.topic, bytes, messages);
        if acks == Acks::All {
            let _waiting = metrics::Waiting::enter(metrics::Purgatory::Produce);
            let target = append.log_end_offset;
            let wait = hw.wait_for(|h| *h >= target);
            match tokio::time::timeout(timeout, wait).await {
                Ok(Ok(_)) => {}
                Ok(Err(_)) => return Err(BrokerError::NotLeaderOrFollower),
                Err(_) => return Err(BrokerError::RequestTimedOut),
            }
        }
        let (_, _, log_start_offset) = partition.checkpoint_offsets();
        Ok(Produced {
            append,
            log_start_offset,
        })
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
                let parts = broker.partitions.clone();
                let _ = tokio::task::spawn_blocking(move || parts.apply_image(&image)).await;
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
