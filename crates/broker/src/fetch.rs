//! Fetch with long polling: read what each partition has; if that is less than `min_bytes`,
//! wait (without a thread) until one of the partitions' high watermarks moves or `max_wait`
//! passes, then read again.

use std::sync::Arc;
use std::time::Duration;

use ferrymq_types::{LeaderEpoch, NodeId, Offset, TopicPartition};
use futures_util::future::select_all;
use tokio::sync::watch;

use crate::error::BrokerError;
use crate::partition::{Partition, ReadBound, ReadOutcome};
use crate::replication::replica::ReplicaRead;

/// Longest a fetch may wait, whatever the client asks (`fetch.wait.ms.max`).
pub const FETCH_WAIT_MS_MAX: u64 = 30_000;

/// One partition of a fetch.
#[derive(Debug, Clone)]
pub struct FetchPartition {
    /// Which partition.
    pub tp: TopicPartition,
    /// First offset wanted.
    pub fetch_offset: Offset,
    /// Most bytes wanted from this partition.
    pub partition_max_bytes: usize,
    /// The leader epoch the client believes current, for fencing.
    pub current_leader_epoch: Option<LeaderEpoch>,
}

/// A whole fetch.
#[derive(Debug, Clone)]
pub struct FetchParams {
    /// Longest wait for `min_bytes`.
    pub max_wait: Duration,
    /// Answer as soon as this many bytes are available.
    pub min_bytes: usize,
    /// Most bytes in the whole response.
    pub max_bytes: usize,
    /// Consumer (HW) or replica (LEO) reads.
    pub bound: ReadBound,
    /// The partitions, in request order.
    pub partitions: Vec<FetchPartition>,
}

/// Runs a fetch to completion over the looked-up partitions (`hosted[i]` for
/// `params.partitions[i]`); one result per requested partition, in order.
pub async fn fetch(
    hosted: &[Result<Arc<Partition>, BrokerError>],
    params: &FetchParams,
) -> Vec<Result<ReadOutcome, BrokerError>> {
    let mut watchers: Vec<watch::Receiver<Offset>> =
        hosted.iter().flatten().map(|p| p.subscribe_hw()).collect();
    let max_wait = params
        .max_wait
        .min(Duration::from_millis(FETCH_WAIT_MS_MAX));
    let deadline = tokio::time::Instant::now() + max_wait;
    loop {
        for w in &mut watchers {
            w.borrow_and_update();
        }
        let results = read_all(hosted, params);
        let bytes: usize = results
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .filter_map(|o| o.records.as_ref().map(|b| b.len()))
            .sum();
        let any_error = results.iter().any(|r| r.is_err());
        if bytes >= params.min_bytes.max(1)
            || any_error
            || watchers.is_empty()
            || tokio::time::Instant::now() >= deadline
        {
            return results;
        }
        let _waiting = crate::metrics::Waiting::enter(crate::metrics::Purgatory::Fetch);
        let changed = select_all(watchers.iter_mut().map(|w| Box::pin(w.changed())));
        if tokio::time::timeout_at(deadline, changed).await.is_err() {
            return read_all(hosted, params);
        }
    }
}

fn read_all(
    hosted: &[Result<Arc<Partition>, BrokerError>],
    params: &FetchParams,
) -> Vec<Result<ReadOutcome, BrokerError>> {
    let mut budget = params.max_bytes;
    let mut first_data = true;
    hosted
        .iter()
        .zip(&params.partitions)
        .map(|(p, req)| {
            let p = p.as_ref().map_err(Clone::clone)?;
            let max = req.partition_max_bytes.min(budget);
            // KIP-74: the first partition with data returns at least one whole batch, so a
            // batch larger than the limits never stalls a consumer.
            let out = p.read(
                req.fetch_offset,
                max,
                params.bound,
                first_data,
                req.current_leader_epoch,
            )?;
            if let Some(r) = &out.records {
                first_data = false;
                budget = budget.saturating_sub(r.len());
            }
            Ok(out)
        })
        .collect()
}

/// One partition of a follower's fetch.
#[derive(Debug, Clone)]
pub struct ReplicaFetchPartitionParams {
    /// Which partition.
    pub tp: TopicPartition,
    /// The follower's log end offset.
    pub fetch_offset: Offset,
    /// The epoch of the follower's last batch.
    pub last_fetched_epoch: Option<LeaderEpoch>,
    /// The leader epoch the follower follows.
    pub current_leader_epoch: Option<LeaderEpoch>,
    /// Most bytes wanted from this partition.
    pub partition_max_bytes: usize,
}

/// A follower's whole fetch.
#[derive(Debug, Clone)]
pub struct ReplicaFetchParams {
    /// Longest wait for new data.
    pub max_wait: Duration,
    /// Most bytes in the response.
    pub max_bytes: usize,
    /// The partitions, in request order.
    pub partitions: Vec<ReplicaFetchPartitionParams>,
}

/// Serves a follower's fetch: answers at once if any partition has data for it, diverges or
/// fails; otherwise waits until one of the leaders' logs grows or `max_wait` passes. The fetch
/// offsets are recorded as the follower's progress on every pass (they move the HW).
pub async fn replica_fetch(
    hosted: &[Result<Arc<Partition>, BrokerError>],
    replica: NodeId,
    params: &ReplicaFetchParams,
) -> Vec<Result<ReplicaRead, BrokerError>> {
    let mut watchers: Vec<watch::Receiver<Offset>> = hosted
        .iter()
        .flatten()
        .map(|p| p.leo_tx.subscribe())
        .collect();
    let deadline = tokio::time::Instant::now()
        + params
            .max_wait
            .min(Duration::from_millis(FETCH_WAIT_MS_MAX));
    loop {
        for w in &mut watchers {
            w.borrow_and_update();
        }
        let results = read_all_replica(hosted, replica, params);
        let ready = results.iter().any(|r| match r {
            Ok(ReplicaRead::Data(o)) => o.records.as_ref().is_some_and(|b| !b.is_empty()),
            Ok(ReplicaRead::Diverging { .. }) | Err(_) => true,
        });
        if ready || watchers.is_empty() || tokio::time::Instant::now() >= deadline {
            return results;
        }
        let changed = select_all(watchers.iter_mut().map(|w| Box::pin(w.changed())));
        if tokio::time::timeout_at(deadline, changed).await.is_err() {
            return read_all_replica(hosted, replica, params);
        }
    }
}

fn read_all_replica(
    hosted: &[Result<Arc<Partition>, BrokerError>],
    replica: NodeId,
    params: &ReplicaFetchParams,
) -> Vec<Result<ReplicaRead, BrokerError>> {
    let mut budget = params.max_bytes;
    let mut first_data = true;
    hosted
        .iter()
        .zip(&params.partitions)
        .map(|(p, req)| {
            let p = p.as_ref().map_err(Clone::clone)?;
            let max = req.partition_max_bytes.min(budget);
            let out = p.read_for_replica(
                replica,
                req.fetch_offset,
                req.last_fetched_epoch,
                req.current_leader_epoch,
                max,
                first_data,
            )?;
            if let ReplicaRead::Data(ReadOutcome {
                records: Some(r), ..
            }) = &out
            {
                first_data = false;
                budget = budget.saturating_sub(r.len());
            }
            Ok(out)
        })
        .collect()
}
