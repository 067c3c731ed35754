//! The replica fetchers' transport over the Kafka protocol: a follower's fetch is a Fetch
//! request (v15) carrying its replica id and broker epoch in `ReplicaState` and its last fetched
//! epoch per partition, sent to the leader's Kafka listener like any client's.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ferrymq_broker::replication::transport::{
    BoxFuture, Endpoint, ReplicaFetchError, ReplicaFetchRequest, ReplicaFetchResult,
    ReplicaTransport, TransportError,
};
use ferrymq_types::{LeaderEpoch, Offset, TopicPartition};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ReplicaState};
use kafka_protocol::messages::{BrokerId, FetchRequest};
use kafka_protocol::ResponseError;
use tokio::sync::Mutex;

use crate::client::{Client, ClientError, ConnWatch};

/// Fetch version followers use: topic ids (v13), replica state with broker epoch (v15).
const REPLICA_FETCH_VERSION: i16 = 15;

/// A leader's connection, opened on first use and dropped after a failure.
type Slot = Arc<Mutex<Option<Client>>>;

/// One connection per leader, reused across fetches.
#[derive(Debug, Default)]
pub struct KafkaReplicaTransport {
    conns: Mutex<HashMap<(String, u16), Slot>>,
    /// A watch on each open connection, kept and dropped with it (under its slot's lock), so
    /// `closed_by_peer` can look while a fetch holds the connection.
    watches: std::sync::Mutex<HashMap<(String, u16), ConnWatch>>,
}

impl KafkaReplicaTransport {
    /// A transport with no connections yet.
    pub fn new() -> KafkaReplicaTransport {
        KafkaReplicaTransport::default()
    }

    async fn conn(&self, to: &Endpoint) -> Slot {
        self.conns
            .lock()
            .await
            .entry((to.host.clone(), to.port))
            .or_default()
            .clone()
    }
}

fn to_request(req: &ReplicaFetchRequest) -> FetchRequest {
    let mut topics: Vec<FetchTopic> = Vec::new();
    for p in &req.partitions {
        let part = FetchPartition::default()
            .with_partition(p.tp.partition.0)
            .with_current_leader_epoch(p.current_leader_epoch.0)
            .with_fetch_offset(p.fetch_offset.0)
            .with_last_fetched_epoch(p.last_fetched_epoch.map_or(-1, |e| e.0))
            .with_log_start_offset(p.log_start_offset.0)
            .with_partition_max_bytes(p.partition_max_bytes.min(i32::MAX as usize) as i32);
        match topics.iter_mut().find(|t| t.topic_id == p.topic_id) {
            Some(t) => t.partitions.push(part),
            None => topics.push(
                FetchTopic::default()
                    .with_topic_id(p.topic_id)
                    .with_partitions(vec![part]),
            ),
        }
    }
    FetchRequest::default()
        .with_replica_state(
            ReplicaState::default()
                .with_replica_id(BrokerId(req.replica.0))
                .with_replica_epoch(req.broker_epoch),
        )
        .with_max_wait_ms(req.max_wait_ms.min(i32::MAX as u64) as i32)
        .with_min_bytes(1)
        .with_max_bytes(req.max_bytes.min(i32::MAX as usize) as i32)
        .with_topics(topics)
}

fn error(code: i16) -> Option<ReplicaFetchError> {
    match ResponseError::try_from_code(code)? {
        ResponseError::NotLeaderOrFollower | ResponseError::LeaderNotAvailable => {
            Some(ReplicaFetchError::NotLeader)
        }
        ResponseError::FencedLeaderEpoch => Some(ReplicaFetchError::FencedLeaderEpoch),
        ResponseError::UnknownLeaderEpoch => Some(ReplicaFetchError::UnknownLeaderEpoch),
        ResponseError::OffsetOutOfRange => Some(ReplicaFetchError::OffsetOutOfRange),
        ResponseError::UnknownTopicOrPartition | ResponseError::UnknownTopicId => {
            Some(ReplicaFetchError::UnknownTopicOrPartition)
        }
        other => Some(ReplicaFetchError::Other(other.code())),
    }
}

/// Sorts a failed call by what it says about the leader's process (`TransportError`), with
/// the controller's rule for a connection whose other end is gone.
fn transport_error(context: &str, e: ClientError) -> TransportError {
    let message = format!("{context}{e}");
    match &e {
        ClientError::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            TransportError::Refused(message)
        }
        ClientError::Io(io) if ferrymq_cluster::connection_lost(io) => {
            TransportError::Broken(message)
        }
        _ => TransportError::Failed(message),
    }
}

impl ReplicaTransport for KafkaReplicaTransport {
    fn fetch<'a>(
        &'a self,
        to: &'a Endpoint,
        req: ReplicaFetchRequest,
    ) -> BoxFuture<'a, Result<Vec<ReplicaFetchResult>, TransportError>> {
        Box::pin(async move {
            let conn = self.conn(to).await;
            let mut guard = conn.lock().await;
            // Long poll at the leader plus time for the data itself.
            let timeout = Duration::from_millis(req.max_wait_ms) + Duration::from_secs(10);
            let key = || (to.host.clone(), to.port);
            if guard.is_none() {
                let addr = format!("{}:{}", to.host, to.port);
                let client = Client::connect(&addr, Duration::from_secs(5))
                    .await
                    .map_err(|e| transport_error(&format!("connecting to {addr}: "), e))?;
                let mut watches = self.watches.lock().expect("watches lock");
                match client.watch() {
                    Ok(w) => watches.insert(key(), w),
                    Err(_) => watches.remove(&key()),
                };
                *guard = Some(client);
            }
            let client = guard.as_mut().expect("connected above");
            client.set_timeout(timeout);
            let resp = match client.call(&to_request(&req), REPLICA_FETCH_VERSION).await {
                Ok(r) => r,
                Err(e) => {
                    self.watches.lock().expect("watches lock").remove(&key());
                    *guard = None;
                    return Err(transport_error("", e));
                }
            };
            if resp.error_code != 0 {
                return Err(TransportError::Failed(format!(
                    "fetch refused with error {}",
                    resp.error_code
                )));
            }
            let mut out = Vec::new();
            for t in resp.responses {
                for p in t.partitions {
                    let Some(asked) = req.partitions.iter().find(|x| {
                        x.topic_id == t.topic_id && x.tp.partition.0 == p.partition_index
                    }) else {
                        continue;
                    };
                    let diverging = (p.diverging_epoch.epoch >= 0
                        || p.diverging_epoch.end_offset >= 0)
                        .then_some((
                            LeaderEpoch(p.diverging_epoch.epoch),
                            Offset(p.diverging_epoch.end_offset),
                        ));
                    out.push(ReplicaFetchResult {
                        tp: TopicPartition {
                            topic: asked.tp.topic.clone(),
                            partition: asked.tp.partition,
                        },
                        error: error(p.error_code),
                        high_watermark: Offset(p.high_watermark),
                        log_start_offset: Offset(p.log_start_offset),
                        diverging,
                        records: p.records.unwrap_or_default(),
                    });
                }
            }
            Ok(out)
        })
    }

    fn closed_by_peer(&self, to: &Endpoint) -> bool {
        self.watches
            .lock()
            .expect("watches lock")
            .get(&(to.host.clone(), to.port))
            .is_some_and(ConnWatch::closed_by_peer)
    }
}
