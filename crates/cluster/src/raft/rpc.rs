//! The inter-node protocol on the controller listener: Raft RPCs between controller nodes,
//! and broker RPCs (registration, heartbeats, forwarded admin operations) to the active
//! controller.
//!
//! A frame is a big-endian u32 length and a JSON body, at most `PEER_FRAME_BYTES_MAX`. Every
//! request carries the sender's node id and cluster id; a node refuses a request from another
//! cluster. A frame that cannot be read or parsed ends that connection only, logged once, like
//! a malformed client frame on the Kafka listener.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Mutex};
use uuid::Uuid;

use super::TypeConfig;
use crate::controller::{ConfigOp, CreateTopic, TopicCreated};
use crate::error::ControllerError;
use crate::records::PolicyRecord;
use ferrymq_types::NodeId;

/// Largest inter-node frame (snapshots travel in chunks well below this).
pub const PEER_FRAME_BYTES_MAX: usize = 64 * 1024 * 1024;

/// A request between nodes.
#[derive(Debug, Serialize, Deserialize)]
pub struct PeerRequest {
    /// The sender's cluster id; empty while it does not know one yet.
    pub cluster_id: String,
    /// The sender's node id.
    pub from: u64,
    /// What is asked.
    pub body: RequestBody,
}

/// A broker's registration with the active controller.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Registration {
    /// Node id.
    pub node_id: NodeId,
    /// This process start.
    pub incarnation: Uuid,
    /// Advertised Kafka host.
    pub host: String,
    /// Advertised Kafka port.
    pub port: u16,
    /// Rack.
    pub rack: Option<String>,
    /// Controller listener address (for Raft replication to this node).
    pub controller_addr: String,
}

/// A broker's heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Node id.
    pub node_id: NodeId,
    /// Incarnation it registered with.
    pub incarnation: Uuid,
    /// Metadata offset this node has applied.
    pub applied_offset: i64,
    /// The broker is shutting down and wants leadership moved away first.
    pub want_shutdown: bool,
}

/// An admin change forwarded to the active controller.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum AdminOp {
    /// CreateTopics for one topic.
    CreateTopic {
        request: CreateTopic,
        validate_only: bool,
    },
    /// DeleteTopics for one topic.
    DeleteTopic { name: String },
    /// CreatePartitions for one topic.
    CreatePartitions {
        name: String,
        total: i32,
        assignments: Option<Vec<Vec<NodeId>>>,
        validate_only: bool,
    },
    /// Incremental config change of one topic.
    AlterTopicConfigs {
        name: String,
        ops: Vec<ConfigOp>,
        validate_only: bool,
    },
    /// Create or replace a replication policy.
    PutPolicy(PolicyRecord),
    /// Remove a replication policy.
    RemovePolicy { name: String },
    /// A partition leader's ISR change (Kafka's AlterPartition).
    AlterPartition {
        topic_id: Uuid,
        partition: ferrymq_types::PartitionId,
        leader: NodeId,
        leader_epoch: ferrymq_types::LeaderEpoch,
        partition_epoch: i32,
        new_isr: Vec<NodeId>,
    },
    /// Preferred leader election for some partitions (all when `None`).
    ElectPreferred {
        partitions: Option<Vec<(String, ferrymq_types::PartitionId)>>,
    },
    /// Grant the next block of producer ids to a broker.
    AllocateProducerIds { node_id: NodeId },
}

/// The outcome of a committed admin change.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdminReply {
    /// Metadata offset at which it committed (-1 if nothing was written).
    pub committed_offset: i64,
    /// For CreateTopic.
    pub created: Option<TopicCreated>,
    /// For DeleteTopic.
    pub topic_id: Option<Uuid>,
    /// For AllocateProducerIds.
    #[serde(default)]
    pub producer_ids: Option<crate::controller::ProducerIdBlock>,
}

/// What a request asks.
#[derive(Debug, Serialize, Deserialize)]
pub enum RequestBody {
    /// Raft AppendEntries.
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    /// Raft RequestVote.
    Vote(VoteRequest<u64>),
    /// Raft InstallSnapshot (one chunk).
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// Broker registration.
    Register(Registration),
    /// Broker heartbeat.
    Heartbeat(Heartbeat),
    /// Forwarded admin change.
    Admin(AdminOp),
    /// "Have you lost the leader too?", asked by a voter before it may stand for election
    /// (`controller::election_gate`).
    PreVote,
}

/// The answer.
#[derive(Debug, Serialize, Deserialize)]
pub enum ResponseBody {
    /// Raft AppendEntries result.
    AppendEntries(Result<AppendEntriesResponse<u64>, RaftError<u64>>),
    /// Raft RequestVote result.
    Vote(Result<VoteResponse<u64>, RaftError<u64>>),
    /// Raft InstallSnapshot result.
    InstallSnapshot(Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>>),
    /// Registration accepted.
    Registered {
        cluster_id: String,
        broker_epoch: i64,
    },
    /// Heartbeat answer.
    HeartbeatAck { fenced: bool, should_shutdown: bool },
    /// Admin change result.
    Admin(Result<AdminReply, ControllerError>),
    /// This node is not the active controller.
    NotLeader { leader_addr: Option<String> },
    /// The controller does not know this broker incarnation: register again.
    ReRegister,
    /// Another live incarnation holds this node id: retry once its session expires (a node
    /// restarting right after a crash), or never serve (a misconfigured twin).
    DuplicateBroker { reason: String },
    /// Refused for good (other cluster, malformed request).
    Refused { reason: String },
    /// The answer to a PreVote: true when this voter is not the leader and has heard none
    /// within the leader lease.
    PreVote { granted: bool },
}

/// Writes one frame.
pub async fn write_frame<T: Serialize>(stream: &mut TcpStream, value: &T) -> std::io::Result<()> {
    let body = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    if body.len() > PEER_FRAME_BYTES_MAX {
        return Err(std::io::Error::other(format!(
            "frame of {} bytes exceeds the peer limit",
            body.len()
        )));
    }
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    stream.write_all(&frame).await
}

/// Reads one frame; `Ok(None)` at a clean end of stream.
pub async fn read_frame<T: DeserializeOwned>(stream: &mut TcpStream) -> std::io::Result<Option<T>> {
    let mut len = [0u8; 4];
    match stream.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > PEER_FRAME_BYTES_MAX {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("peer frame of {len} bytes is too large"),
        ));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await?;
    serde_json::from_slice(&body).map(Some).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("malformed peer frame: {e}"),
        )
    })
}

/// Connects to `addr`, refusing a TCP self-connection: while a peer's listener is not up yet,
/// a connect from an ephemeral port equal to the target port succeeds against itself and would
/// hold the very port the peer is about to bind.
pub async fn connect(addr: &str) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect(addr).await?;
    if s.local_addr()? == s.peer_addr()? {
        return Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "self-connection to a port nobody listens on",
        ));
    }
    s.set_nodelay(true)?;
    Ok(s)
}

/// A connection to another node's controller listener, reopened after any failure.
#[derive(Debug)]
pub struct PeerClient {
    addr: String,
    conn: Mutex<Option<TcpStream>>,
}

impl PeerClient {
    /// A client for `addr` (no connection is made until the first call).
    pub fn new(addr: impl Into<String>) -> PeerClient {
        PeerClient {
            addr: addr.into(),
            conn: Mutex::new(None),
        }
    }

    /// The peer's address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Sends a request and waits for its answer, at most `timeout`.
    ///
    /// Cancellation-safe: the connection is taken out of the slot for the exchange and put
    /// back only after its answer was read, so a call dropped half-way (a caller's own, shorter
    /// timeout) closes the connection instead of leaving its answer to be read as the next
    /// call's. That happened: heartbeats read the answers of cancelled AlterPartition calls, and
    /// a broker cut off from the controller read a backlog of stale heartbeat answers as fresh
    /// ones and saw its session lost seconds late (chaos harness, isolate-leader).
    pub async fn call(
        &self,
        req: &PeerRequest,
        timeout: Duration,
    ) -> std::io::Result<ResponseBody> {
        let mut slot = self.conn.lock().await;
        let result = tokio::time::timeout(timeout, async {
            let mut stream = match slot.take() {
                Some(s) => s,
                None => connect(&self.addr).await?,
            };
            write_frame(&mut stream, req).await?;
            let answer = read_frame::<ResponseBody>(&mut stream)
                .await?
                .ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "peer closed the connection",
                    )
                })?;
            Ok((stream, answer))
        })
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "peer call timed out",
            ))
        });
        let (stream, answer) = result?;
        *slot = Some(stream);
        Ok(answer)
    }
}

/// Serves inter-node requests.
pub trait PeerHandler: Send + Sync + 'static {
    /// Answers one request.
    fn handle(&self, req: PeerRequest) -> impl Future<Output = ResponseBody> + Send;
}

/// Accepts connections on the controller listener until `stop`; each connection answers its
/// requests in order.
pub async fn serve<H: PeerHandler>(
    listener: TcpListener,
    handler: Arc<H>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => return,
        };
        let Ok((mut stream, peer)) = accepted else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        tokio::spawn(async move {
            loop {
                match read_frame::<PeerRequest>(&mut stream).await {
                    Ok(Some(req)) => {
                        let resp = handler.handle(req).await;
                        if write_frame(&mut stream, &resp).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(e) => {
                        tracing::warn!(%peer, error = %e, "closing controller connection after bad input");
                        return;
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers a heartbeat from node N with `Refused { reason: N }` after N × 10 ms, so every
    /// answer names the request it belongs to and the first is slow.
    struct Echo;

    impl PeerHandler for Echo {
        async fn handle(&self, req: PeerRequest) -> ResponseBody {
            tokio::time::sleep(Duration::from_millis(req.from * 10)).await;
            ResponseBody::Refused {
                reason: req.from.to_string(),
            }
        }
    }

    fn heartbeat_from(node: u64) -> PeerRequest {
        PeerRequest {
            cluster_id: String::new(),
            from: node,
            body: RequestBody::Heartbeat(Heartbeat {
                node_id: ferrymq_types::NodeId(node as i32),
                incarnation: Uuid::nil(),
                applied_offset: 0,
                want_shutdown: false,
            }),
        }
    }

    #[tokio::test]
    async fn a_call_dropped_half_way_never_hands_its_answer_to_the_next_call() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (_stop_tx, stop) = watch::channel(false);
        tokio::spawn(serve(listener, Arc::new(Echo), stop));
        let client = PeerClient::new(addr);
        // Dropped by the caller's own timeout after the request went out, before the answer.
        let slow = tokio::time::timeout(
            Duration::from_millis(100),
            client.call(&heartbeat_from(30), Duration::from_secs(5)),
        )
        .await;
        assert!(slow.is_err(), "the slow call was meant to be cut short");
        tokio::time::sleep(Duration::from_millis(400)).await;
        for node in [1, 2] {
            match client
                .call(&heartbeat_from(node), Duration::from_secs(5))
                .await
            {
                Ok(ResponseBody::Refused { reason }) => assert_eq!(reason, node.to_string()),
                other => panic!("call from {node} answered {other:?}"),
            }
        }
    }
}
