//! openraft's network: Raft RPCs to other controller nodes over the peer protocol (`rpc.rs`).

use std::sync::Arc;

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

/// Creates a connection per target node.
#[derive(Debug, Clone)]
pub struct Network {
    /// This node.
    pub identity: Arc<Identity>,
}

/// Raft RPCs to one node.
#[derive(Debug)]
pub struct Connection {
    identity: Arc<Identity>,
    target: u64,
    client: PeerClient,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Connection {
        Connection {
            identity: self.identity.clone(),
            target,
            client: PeerClient::new(node.addr.clone()),
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
        match self.client.call(&req, option.hard_ttl()).await {
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
