//! openraft's network: Raft RPCs to other controller nodes over the peer protocol (`rpc.rs`).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RaftNetwork, RaftNetworkFactory};

use super::rpc::{PeerClient, PeerRequest, RequestBody, ResponseBody};
use super::TypeConfig;

/// Who we are on the wire: filled into every request.
#[derive(Debug)]
pub struct Identity {
    /// This node's id.
    pub node_id: u64,
    /// The cluster id, once known.
    pub cluster_id: std::sync::RwLock<String>,
}

impl Identity {
    /// A request from this node.
    pub fn request(&self, body: RequestBody) -> PeerRequest {
        PeerRequest {
            cluster_id: self.cluster_id.read().expect("identity lock").clone(),
            from: self.node_id,
            body,
        }
    }
}

/// Nodes whose Raft connection broke or was refused since the controller last looked. A
/// leader sends every node a heartbeat each Raft heartbeat interval, so a node killed with
/// kill -9 shows up here within one: a hint the active controller checks with its own probe
/// (`controller::duties`) instead of waiting for the node to miss a broker heartbeat. Nothing
/// is decided on the hint itself.
#[derive(Debug, Default)]
pub struct LostPeers {
    nodes: Mutex<BTreeSet<u64>>,
    wake: tokio::sync::Notify,
}

impl LostPeers {
    /// Records that the connection to `node` broke or was refused.
    pub fn report(&self, node: u64) {
        self.nodes.lock().expect("lost peers lock").insert(node);
        self.wake.notify_one();
    }

    /// The nodes reported since the last call.
    pub fn take(&self) -> BTreeSet<u64> {
        std::mem::take(&mut *self.nodes.lock().expect("lost peers lock"))
    }

    /// Returns once a node has been reported (at once if one was since the last wait).
    pub async fn reported(&self) {
        self.wake.notified().await
    }
}

/// True for the errors of a connection whose other end is gone (closed, reset, refused), as
/// opposed to one that is slow or unreachable (a timeout says nothing about the process).
pub fn connection_lost(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionReset | ConnectionAborted | UnexpectedEof | BrokenPipe
    )
}

/// Creates a connection per target node.
#[derive(Debug, Clone)]
pub struct Network {
    /// This node.
    pub identity: Arc<Identity>,
    /// Where broken connections are reported.
    pub lost: Arc<LostPeers>,
}

/// Raft RPCs to one node.
#[derive(Debug)]
pub struct Connection {
    identity: Arc<Identity>,
    target: u64,
    client: PeerClient,
    lost: Arc<LostPeers>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Connection {
        Connection {
            identity: self.identity.clone(),
            target,
            client: PeerClient::new(node.addr.clone()),
            lost: self.lost.clone(),
        }
    }
}

type RpcErr<E = openraft::error::Infallible> = RPCError<u64, BasicNode, RaftError<u64, E>>;

impl Connection {
    async fn send<E: std::error::Error>(
        &self,
        body: RequestBody,
        option: &RPCOption,
    ) -> Result<ResponseBody, RPCError<u64, BasicNode, E>> {
        let req = self.identity.request(body);
        let answer = self
            .client
            .call(&req, super::runtime::rpc_time_limit(option.hard_ttl()))
            .await;
        if let Err(e) = &answer {
            if connection_lost(e) {
                self.lost.report(self.target);
            }
        }
        match answer {
            Ok(ResponseBody::Refused { reason }) => Err(RPCError::Unreachable(Unreachable::new(
                &std::io::Error::other(reason),
            ))),
            Ok(resp) => Ok(resp),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                Err(RPCError::Unreachable(Unreachable::new(&e)))
            }
            Err(e) => Err(RPCError::Network(NetworkError::new(&e))),
        }
    }

    fn unexpected<E: std::error::Error>(&self, got: &ResponseBody) -> RPCError<u64, BasicNode, E> {
        let e = std::io::Error::other(format!(
            "unexpected answer from node {}: {got:?}",
            self.target
        ));
        RPCError::Network(NetworkError::new(&e))
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RpcErr> {
        match self.send(RequestBody::AppendEntries(rpc), &option).await? {
            ResponseBody::AppendEntries(r) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            other => Err(self.unexpected(&other)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, RpcErr<InstallSnapshotError>> {
        match self
            .send(RequestBody::InstallSnapshot(rpc), &option)
            .await?
        {
            ResponseBody::InstallSnapshot(r) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            other => Err(self.unexpected(&other)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RpcErr> {
        match self.send(RequestBody::Vote(rpc), &option).await? {
            ResponseBody::Vote(r) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            other => Err(self.unexpected(&other)),
        }
    }
}
