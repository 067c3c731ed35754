//! The log writer: one dedicated thread that performs every leader append and fsync, so disk
//! work never runs on the async workers, and that commits in groups.
//!
//! Each round drains whatever appends are queued (up to `ROUND_APPENDS_MAX`), writes them to
//! the page cache, then fsyncs each touched partition once and answers every append that
//! asked for durability. While a round's fsyncs run, new appends queue up and form the next
//! group: one fsync serves every batch that was waiting for it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use ferrymq_log::{AppendInfo, ValidatedBatch};
use tokio::sync::{mpsc, oneshot};

use crate::clock::Clock;
use crate::error::BrokerError;
use crate::partition::Partition;

/// Appends taken into one group-commit round, bounding the latency one round adds.
const ROUND_APPENDS_MAX: usize = 1024;

/// When an append counts as done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Once written to the page cache (acks=0/1 with the default flush policy).
    PageCache,
    /// Once fsynced (acks=all, or `log.flush.interval.messages=1`).
    Fsync,
}

/// Where an append's outcome goes.
type Reply = oneshot::Sender<Result<AppendInfo, BrokerError>>;

struct AppendJob {
    partition: Arc<Partition>,
    batch: ValidatedBatch,
    durability: Durability,
    reply: Reply,
}

enum Msg {
    Append(AppendJob),
    /// fsync every partition with unflushed appends (`log.flush.interval.ms`), then reply.
    FlushDirty(Option<oneshot::Sender<()>>),
    Stop,
}

/// A cloneable handle that queues appends without waiting for them: the group coordinator
/// queues a group's records under that group's lock, so they are appended in the order its
/// state changed, and waits for the fsync after releasing it.
#[derive(Debug, Clone)]
pub struct AppendQueue {
    tx: mpsc::Sender<Msg>,
}

/// An append queued with `AppendQueue::enqueue`, resolving when it is durability-done.
pub type PendingAppend = oneshot::Receiver<Result<AppendInfo, BrokerError>>;

impl AppendQueue {
    /// Queues `batch` for `partition`; waits only for room in the queue.
    pub async fn enqueue(
        &self,
        partition: Arc<Partition>,
        batch: ValidatedBatch,
        durability: Durability,
    ) -> Result<PendingAppend, BrokerError> {
        let (reply, rx) = oneshot::channel();
        let job = AppendJob {
            partition,
            batch,
            durability,
            reply,
        };
        self.tx
            .send(Msg::Append(job))
            .await
            .map_err(|_| BrokerError::ShuttingDown)?;
        Ok(rx)
    }
}

/// Handle to the writer thread.
#[derive(Debug)]
pub struct LogWriter {
    tx: mpsc::Sender<Msg>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Msg::Append(_) => "Append",
            Msg::FlushDirty(_) => "FlushDirty",
            Msg::Stop => "Stop",
        })
    }
}

impl LogWriter {
    /// Starts the writer thread. `flush_interval_messages` is `log.flush.interval.messages`;
    /// `queue_max` bounds the appends waiting for the thread.
    pub fn start(
        clock: Arc<dyn Clock>,
        flush_interval_messages: u64,
        queue_max: usize,
    ) -> LogWriter {
        let (tx, rx) = mpsc::channel(queue_max.max(1));
        let thread = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || run(rx, clock, flush_interval_messages))
            .expect("spawning the log writer thread");
        LogWriter {
            tx,
            thread: Mutex::new(Some(thread)),
        }
    }

    /// Appends `batch` to `partition` as leader; resolves when the append is `durability`-done.
    pub async fn append(
        &self,
        partition: Arc<Partition>,
        batch: ValidatedBatch,
        durability: Durability,
    ) -> Result<AppendInfo, BrokerError> {
        self.submit(partition, batch, durability).await?.await
    }

    /// Queues an append and returns once it is queued: appends are written in the order they
    /// were submitted, so a caller that submits in request order gets offsets in that order.
    /// The returned future resolves when the append is `durability`-done.
    pub async fn submit(
        &self,
        partition: Arc<Partition>,
        batch: ValidatedBatch,
        durability: Durability,
    ) -> Result<impl std::future::Future<Output = Result<AppendInfo, BrokerError>>, BrokerError>
    {
        let (reply, rx) = oneshot::channel();
        let job = AppendJob {
            partition,
            batch,
            durability,
            reply,
        };
        self.tx
            .send(Msg::Append(job))
            .await
            .map_err(|_| BrokerError::ShuttingDown)?;
        Ok(async move { rx.await.map_err(|_| BrokerError::ShuttingDown)? })
    }

    /// A handle for queuing appends from elsewhere (the group coordinator).
    pub fn queue(&self) -> AppendQueue {
        AppendQueue {
            tx: self.tx.clone(),
        }
    }

    /// fsyncs every partition with unflushed data; resolves when done.
    pub async fn flush_dirty(&self) {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Msg::FlushDirty(Some(reply))).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Flushes everything, stops the thread and waits for it.
    pub fn stop(&self) {
        let _ = self.tx.blocking_send(Msg::FlushDirty(None));
        let _ = self.tx.blocking_send(Msg::Stop);
        if let Some(t) = self.thread.lock().expect("writer handle lock").take() {
            let _ = t.join();
        }
    }
}

fn key(p: &Arc<Partition>) -> usize {
    Arc::as_ptr(p) as usize
}

fn run(mut rx: mpsc::Receiver<Msg>, clock: Arc<dyn Clock>, flush_interval_messages: u64) {
    // Partitions with appends not yet fsynced.
    let mut dirty: HashMap<usize, Arc<Partition>> = HashMap::new();
    while let Some(first) = rx.blocking_recv() {
        let mut msgs = vec![first];
        while msgs.len() < ROUND_APPENDS_MAX {
            match rx.try_recv() {
                Ok(m) => msgs.push(m),
                Err(_) => break,
            }
        }
        let mut waiting: Vec<(usize, AppendInfo, Reply)> = Vec::new();
        let mut flush_now: Vec<usize> = Vec::new();
        let mut flushed_replies = Vec::new();
        let mut stop = false;
        for msg in msgs {
            match msg {
                Msg::Append(job) => {
                    let now = clock.now_ms();
                    match job.partition.append_as_leader(&job.batch, now) {
                        Ok(info) => {
                            let k = key(&job.partition);
                            let over_policy =
                                job.partition.unflushed_messages() >= flush_interval_messages;
                            dirty.entry(k).or_insert_with(|| job.partition.clone());
                            if job.durability == Durability::Fsync || over_policy {
                                flush_now.push(k);
                            }
                            if job.durability == Durability::Fsync {
                                waiting.push((k, info, job.reply));
                            } else {
                                let _ = job.reply.send(Ok(info));
                            }
                        }
                        Err(e) => {
                            let _ = job.reply.send(Err(e));
                        }
                    }
                }
                Msg::FlushDirty(reply) => {
                    flush_now.extend(dirty.keys().copied());
                    flushed_replies.extend(reply);
                }
                Msg::Stop => stop = true,
            }
        }
        flush_now.sort_unstable();
        flush_now.dedup();
        let mut results: HashMap<usize, Result<ferrymq_types::Offset, BrokerError>> =
            HashMap::new();
        for k in flush_now {
            let Some(p) = dirty.remove(&k) else { continue };
            let job = p.flush_job();
            results.insert(k, p.run_flush(job));
        }
        for (k, info, reply) in waiting {
            let outcome = match results.get(&k) {
                Some(Ok(upto)) => {
                    assert!(
                        *upto >= info.log_end_offset,
                        "flushed to {upto} before append end {}",
                        info.log_end_offset
                    );
                    Ok(info)
                }
                Some(Err(e)) => Err(e.clone()),
                None => unreachable!("every durable append's partition is flushed in its round"),
            };
            let _ = reply.send(outcome);
        }
        for r in flushed_replies {
            let _ = r.send(());
        }
        if stop {
            break;
        }
    }
}
