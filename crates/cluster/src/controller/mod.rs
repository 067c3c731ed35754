//! The controller: the one place metadata changes are decided, replicated by a Raft quorum
//! (openraft) so that no single machine's failure stops the cluster from deciding.
//!
//! Every node runs one `Controller`: voters (`controller.voters`) take part in the quorum,
//! other nodes follow it as Raft learners. An admin change is planned against the image on the
//! active controller (the Raft leader), committed as one Raft entry and answered once applied;
//! a change asked of any other node is forwarded there, and answered once this node has
//! applied it too, so a client sees its own change wherever it asks next.
//!
//! The active controller also runs the duties of `duties.rs` (cluster id, broker liveness,
//! fencing and leader election), and every node's `lifecycle` registers and heartbeats.

mod duties;
mod election_gate;
mod peer;
pub mod plan;
mod probe;
mod stand_in;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferrymq_types::NodeId;
use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::{BasicNode, Config, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;
use uuid::Uuid;

use crate::error::{ControllerError, Result};
use crate::image::MetadataImage;
use crate::lifecycle::{self, BrokerState};
use crate::liveness::Liveness;
use crate::raft::log_store::LogStore;
use crate::raft::network::{Identity, LostPeers, Network};
use crate::raft::rpc::{self, AdminOp, AdminReply, PeerClient, RequestBody, ResponseBody};
use crate::raft::state_machine::StateMachine;
use crate::raft::MetadataRaft;
use crate::records::{MetadataCommand, MetadataRecord, PolicyRecord};
use crate::topic_config::TopicDefaults;
use plan::CreationDefaults;

pub use plan::{ProducerIdBlock, PRODUCER_ID_BLOCK_SIZE};

/// How long an admin change may wait for the quorum before it is reported as failed.
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a committed change may take to reach this node's image.
const APPLY_WAIT: Duration = Duration::from_secs(5);

/// What the controller needs to know about this node and the cluster.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// This node.
    pub node_id: NodeId,
    /// The host clients are told to connect to.
    pub advertised_host: String,
    /// The port clients are told to connect to.
    pub advertised_port: u16,
    /// `broker.rack`.
    pub rack: Option<String>,
    /// `num.partitions`.
    pub default_num_partitions: i32,
    /// `default.replication.factor`.
    pub default_replication_factor: i16,
    /// Topic config defaults (unclean election).
    pub topic_defaults: TopicDefaults,
    /// Where the Raft log and snapshots live.
    pub metadata_dir: PathBuf,
    /// This node's controller-listener address as other nodes reach it ("" on a single node).
    pub controller_addr: String,
    /// Voters of the quorum and their controller addresses; empty for a single node, which is
    /// then its own one-voter quorum.
    pub voters: BTreeMap<NodeId, String>,
    /// `broker.heartbeat.interval.ms`.
    pub heartbeat_interval: Duration,
    /// `broker.session.timeout.ms`.
    pub session_timeout: Duration,
    /// The cluster id recorded in this node's `meta.properties`, if any.
    pub known_cluster_id: Option<String>,
    /// `auto.leader.rebalance.enable`: move leadership back to preferred replicas.
    pub auto_leader_rebalance: bool,
    /// `leader.imbalance.check.interval.seconds`, as a duration.
    pub leader_imbalance_check_interval: Duration,
}

/// A request to create one topic.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CreateTopic {
    /// Name.
    pub name: String,
    /// Partition count; `None` takes `num.partitions`.
    pub num_partitions: Option<i32>,
    /// Replication factor; `None` takes the matching policy's, else the default.
    pub replication_factor: Option<i16>,
    /// Manual replica assignment per partition, instead of count and factor.
    pub assignments: Option<Vec<Vec<NodeId>>>,
    /// Topic configs to set.
    pub configs: Vec<(String, String)>,
}

/// The topic as created.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TopicCreated {
    /// Its id.
    pub id: Uuid,
    /// Partition count.
    pub num_partitions: i32,
    /// Replication factor.
    pub replication_factor: i16,
}

/// One change in an incremental config alteration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfigOp {
    /// Set `key` to `value`.
    Set(String, String),
    /// Reset `key` to its default.
    Delete(String),
}

/// This node's controller.
pub struct Controller {
    config: ControllerConfig,
    identity: Arc<Identity>,
    raft: MetadataRaft,
    sm: StateMachine,
    published: watch::Sender<Arc<MetadataImage>>,
    /// Serialises plan-and-commit on the active controller.
    write_lock: tokio::sync::Mutex<()>,
    liveness: Mutex<Liveness>,
    /// Varies placement between topics.
    topics_created: AtomicUsize,
    peers: Mutex<BTreeMap<String, Arc<PeerClient>>>,
    incarnation: Uuid,
    broker_state: watch::Sender<BrokerState>,
    stop: watch::Receiver<bool>,
    /// When a Raft leader's AppendEntries (or heartbeat) last reached this node.
    leader_contact: Mutex<Option<std::time::Instant>>,
    /// Nodes whose Raft connection broke: probed by the duties while this node is active.
    lost_peers: Arc<LostPeers>,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("node_id", &self.config.node_id)
            .finish()
    }
}

/// Raft's heartbeat interval for a broker heartbeat interval, in milliseconds.
fn raft_heartbeat_ms(heartbeat: Duration) -> u64 {
    (heartbeat.as_millis() as u64 / 4).clamp(25, 200)
}

/// How long a controller without a quorum's acknowledgement may still act: until a follower
/// can have timed out and stood for election (`election_timeout_max`).
fn raft_lease(heartbeat: Duration) -> Duration {
    Duration::from_millis(raft_heartbeat_ms(heartbeat) * 10)
}

fn raft_config(heartbeat: Duration) -> Result<Config> {
    // openraft 0.9 lets a follower vote only after the leader lease (election_timeout_max)
    // and its own random timeout, so a dead controller is replaced after 1-2x the maximum.
    // With the default 250 ms broker heartbeat: Raft heartbeats every 62 ms, elections after
    // 375-625 ms, a new controller about 1-1.25 s after the old one dies; a healthy leader
    // misses 6 heartbeats before anyone stands.
    let hb = raft_heartbeat_ms(heartbeat);
    debug_assert_eq!(Duration::from_millis(hb * 10), raft_lease(heartbeat));
    Config {
        cluster_name: "ferrymq".into(),
        heartbeat_interval: hb,
        election_timeout_min: hb * 6,
        election_timeout_max: hb * 10,
        install_snapshot_timeout: 2000,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(1000),
        max_in_snapshot_log_to_keep: 100,
        ..Default::default()
    }
    .validate()
    .map_err(|e| ControllerError::Storage(format!("raft config: {e}")))
}

impl Controller {
    /// Opens the metadata log, starts the Raft node (initialising the quorum on first start of
    /// a voter), the controller listener, the active-controller duties and this node's
    /// registration. Runs until `stop` turns true.
    pub async fn start(
        config: ControllerConfig,
        listener: Option<TcpListener>,
        stop: watch::Receiver<bool>,
    ) -> Result<Arc<Controller>> {
        let storage = |e: std::io::Error| {
            ControllerError::Storage(format!("{}: {e}", config.metadata_dir.display()))
        };
        let log = LogStore::open(&config.metadata_dir).map_err(storage)?;
        let sm = StateMachine::open(&config.metadata_dir).map_err(storage)?;
        let identity = Arc::new(Identity {
            node_id: config.node_id.0 as u64,
            cluster_id: std::sync::RwLock::new(config.known_cluster_id.clone().unwrap_or_default()),
        });
        let lost_peers = Arc::new(LostPeers::default());
        let raft = MetadataRaft::new(
            identity.node_id,
            Arc::new(raft_config(config.heartbeat_interval)?),
            Network {
                identity: identity.clone(),
                lost: lost_peers.clone(),
            },
            log,
            sm.clone(),
        )
        .await
        .map_err(|e| ControllerError::Storage(format!("starting raft: {e}")))?;
        let voters = effective_voters(&config);
        if voters.contains_key(&config.node_id) {
            let initialized = raft
                .is_initialized()
                .await
                .map_err(|e| ControllerError::Storage(e.to_string()))?;
            if !initialized {
                let members: BTreeMap<u64, BasicNode> = voters
                    .iter()
                    .map(|(id, addr)| (id.0 as u64, BasicNode { addr: addr.clone() }))
                    .collect();
                if let Err(e) = raft.initialize(members).await {
                    tracing::debug!(error = %e, "quorum already initialised");
                }
            }
            if voters.len() > 1 {
                // Until the election gate has asked the others (`election_gate.rs`).
                raft.runtime_config().elect(false);
            }
        }
        let (published, _) = watch::channel(sm.image());
        let (broker_state, _) = watch::channel(BrokerState::default());
        let ctrl = Arc::new(Controller {
            liveness: Mutex::new(Liveness::new(config.session_timeout)),
            config,
            identity,
            raft,
            sm,
            published,
            write_lock: tokio::sync::Mutex::new(()),
            topics_created: AtomicUsize::new(0),
            peers: Mutex::new(BTreeMap::new()),
            incarnation: Uuid::new_v4(),
            broker_state,
            stop: stop.clone(),
            leader_contact: Mutex::new(None),
            lost_peers,
        });
        ctrl.topics_created
            .store(ctrl.sm.image().topics.len(), Ordering::Relaxed);
        tokio::spawn(publish_images(ctrl.clone()));
        if let Some(listener) = listener {
            tokio::spawn(rpc::serve(listener, ctrl.clone(), stop.clone()));
        }
        tokio::spawn(duties::run(ctrl.clone()));
        tokio::spawn(stand_in::run(ctrl.clone()));
        tokio::spawn(election_gate::run(ctrl.clone()));
        tokio::spawn(lifecycle::run(ctrl.clone()));
        Ok(ctrl)
    }

    /// The latest image (with the current controller leader filled in).
    pub fn image(&self) -> Arc<MetadataImage> {
        self.published.borrow().clone()
    }

    /// A receiver that sees every new image.
    pub fn subscribe(&self) -> watch::Receiver<Arc<MetadataImage>> {
        self.published.subscribe()
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.config.node_id
    }

    /// This node's registration state (registered, fenced, refused).
    pub fn broker_state(&self) -> watch::Receiver<BrokerState> {
        self.broker_state.subscribe()
    }

    /// This process's incarnation id.
    pub fn incarnation(&self) -> Uuid {
        self.incarnation
    }

    /// The settings this controller runs with.
    pub fn config(&self) -> &ControllerConfig {
        &self.config
    }

    /// True while this node leads the quorum and a majority has acknowledged it within the
    /// leader lease (the longest election timeout). A Raft leader cut off from the voters keeps
    /// believing it leads until it hears a higher term; acting on that belief would answer its
    /// own broker's heartbeats and keep that broker's leaderships alive after the rest of the
    /// cluster has moved them. Past the lease a new controller may exist, so this one stops.
    pub fn is_active(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.current_leader == Some(self.identity.node_id)
            && m.millis_since_quorum_ack.is_some_and(|ms| {
                ms <= raft_lease(self.config.heartbeat_interval).as_millis() as u64
            })
    }

    /// True when this node is not the Raft leader and has heard no leader within the lease:
    /// its answer to a PreVote (`election_gate.rs`). A voter that has never heard one since it
    /// started has lost it too, so a quorum starting together can elect.
    pub(crate) fn lost_leader(&self) -> bool {
        let leads = self.raft.metrics().borrow().state == openraft::ServerState::Leader;
        let lease = raft_lease(self.config.heartbeat_interval);
        let heard = *self.leader_contact.lock().expect("leader contact lock");
        !leads && heard.is_none_or(|at| at.elapsed() >= lease)
    }

    /// The active controller's node id and controller address, as this node knows it.
    pub fn leader(&self) -> Option<(u64, String)> {
        let m = self.raft.metrics().borrow().clone();
        let id = m.current_leader?;
        let addr = m
            .membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone())
            .unwrap_or_default();
        Some((id, addr))
    }

    fn creation_defaults(&self) -> CreationDefaults {
        CreationDefaults {
            num_partitions: self.config.default_num_partitions,
            replication_factor: self.config.default_replication_factor,
        }
    }

    /// CreateTopics for one topic; with `validate_only` nothing is committed.
    pub async fn create_topic(
        &self,
        request: CreateTopic,
        validate_only: bool,
    ) -> Result<TopicCreated> {
        let reply = self
            .submit(AdminOp::CreateTopic {
                request,
                validate_only,
            })
            .await?;
        reply.created.ok_or_else(|| {
            ControllerError::InvalidRequest("controller answered without a topic".into())
        })
    }

    /// DeleteTopics for one topic.
    pub async fn delete_topic(&self, name: &str) -> Result<Uuid> {
        let reply = self
            .submit(AdminOp::DeleteTopic {
                name: name.to_string(),
            })
            .await?;
        reply.topic_id.ok_or_else(|| {
            ControllerError::InvalidRequest("controller answered without a topic id".into())
        })
    }

    /// CreatePartitions: grows `name` to `total` partitions.
    pub async fn create_partitions(
        &self,
        name: &str,
        total: i32,
        assignments: Option<Vec<Vec<NodeId>>>,
        validate_only: bool,
    ) -> Result<()> {
        self.submit(AdminOp::CreatePartitions {
            name: name.to_string(),
            total,
            assignments,
            validate_only,
        })
        .await
        .map(|_| ())
    }

    /// Incremental config alteration of a topic.
    pub async fn alter_topic_configs(
        &self,
        name: &str,
        ops: Vec<ConfigOp>,
        validate_only: bool,
    ) -> Result<()> {
        self.submit(AdminOp::AlterTopicConfigs {
            name: name.to_string(),
            ops,
            validate_only,
        })
        .await
        .map(|_| ())
    }

    /// Creates or replaces a replication policy.
    pub async fn put_policy(&self, policy: PolicyRecord) -> Result<()> {
        self.submit(AdminOp::PutPolicy(policy)).await.map(|_| ())
    }

    /// Removes a replication policy.
    pub async fn remove_policy(&self, name: &str) -> Result<()> {
        self.submit(AdminOp::RemovePolicy {
            name: name.to_string(),
        })
        .await
        .map(|_| ())
    }

    /// AlterPartition: a leader's ISR change, committed only if the leader and partition
    /// epochs are still current.
    pub async fn alter_partition(
        &self,
        topic_id: Uuid,
        partition: ferrymq_types::PartitionId,
        leader_epoch: ferrymq_types::LeaderEpoch,
        partition_epoch: i32,
        new_isr: Vec<NodeId>,
    ) -> Result<()> {
        let op = AdminOp::AlterPartition {
            topic_id,
            partition,
            leader: self.config.node_id,
            leader_epoch,
            partition_epoch,
            new_isr,
        };
        self.submit(op).await.map(|_| ())
    }

    /// ElectLeaders (preferred): moves leadership of `partitions` (all when `None`) back to
    /// their first replica where it is live and in sync.
    pub async fn elect_preferred(
        &self,
        partitions: Option<Vec<(String, ferrymq_types::PartitionId)>>,
    ) -> Result<()> {
        self.submit(AdminOp::ElectPreferred { partitions })
            .await
            .map(|_| ())
    }

    /// Grants `node_id` the next block of producer ids. The grant is committed to the metadata
    /// log (through the quorum) before this returns, so the ids are never granted again,
    /// whatever restarts or controller failovers follow.
    pub async fn allocate_producer_ids(&self, node_id: NodeId) -> Result<ProducerIdBlock> {
        let reply = self
            .submit(AdminOp::AllocateProducerIds { node_id })
            .await?;
        reply.producer_ids.ok_or_else(|| {
            ControllerError::InvalidRequest("controller answered without producer ids".into())
        })
    }

    /// Asks the active controller, through the heartbeats, to move leadership away from this
    /// broker before it stops; waits until it says so (or `timeout` passes).
    pub async fn controlled_shutdown(&self, timeout: Duration) -> bool {
        self.set_broker_state(|s| s.want_shutdown = true);
        let mut state = self.broker_state();
        let done = tokio::time::timeout(timeout, state.wait_for(|s| s.may_shut_down))
            .await
            .is_ok();
        done
    }

    /// Runs an admin change on the active controller, here or forwarded, and waits until this
    /// node has applied it.
    async fn submit(&self, op: AdminOp) -> Result<AdminReply> {
        let deadline = tokio::time::Instant::now() + ADMIN_TIMEOUT;
        loop {
            let outcome = match self.leader() {
                Some((id, _)) if id == self.identity.node_id => {
                    match self.execute(op.clone()).await {
                        Err(ControllerError::NotController) => None,
                        other => Some(other),
                    }
                }
                Some((_, addr)) if !addr.is_empty() => {
                    match self
                        .call_peer(
                            &addr,
                            RequestBody::Admin(op.clone()),
                            Duration::from_secs(12),
                        )
                        .await
                    {
                        Ok(ResponseBody::Admin(Err(ControllerError::NotController))) => None,
                        Ok(ResponseBody::Admin(r)) => Some(r),
                        Ok(ResponseBody::Refused { reason }) => {
                            Some(Err(ControllerError::InvalidRequest(reason)))
                        }
                        _ => None,
                    }
                }
                _ => None,
            };
            if let Some(result) = outcome {
                let reply = result?;
                self.wait_applied(reply.committed_offset).await;
                return Ok(reply);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ControllerError::NoQuorum(
                    "no active controller reachable: the metadata quorum has no majority".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_applied(&self, offset: i64) {
        if offset < 0 {
            return;
        }
        let mut images = self.subscribe();
        let _ = tokio::time::timeout(
            APPLY_WAIT,
            images.wait_for(|img| img.applied_offset >= offset),
        )
        .await;
    }

    /// Plans and commits an admin change. Only on the active controller.
    pub(crate) async fn execute(&self, op: AdminOp) -> Result<AdminReply> {
        let _serial = self.write_lock.lock().await;
        if !self.is_active() {
            return Err(ControllerError::NotController);
        }
        let image = self.leader_image().await?;
        let seed = self.topics_created.load(Ordering::Relaxed);
        let mut reply = AdminReply {
            committed_offset: -1,
            created: None,
            topic_id: None,
            producer_ids: None,
        };
        let (records, validate_only) = match &op {
            AdminOp::CreateTopic {
                request,
                validate_only,
            } => {
                let (records, created) =
                    plan::create_topic(&image, request, self.creation_defaults(), seed)?;
                reply.created = Some(created);
                (records, *validate_only)
            }
            AdminOp::DeleteTopic { name } => {
                let (records, id) = plan::delete_topic(&image, name)?;
                reply.topic_id = Some(id);
                (records, false)
            }
            AdminOp::CreatePartitions {
                name,
                total,
                assignments,
                validate_only,
            } => (
                plan::create_partitions(&image, name, *total, assignments.clone(), seed)?,
                *validate_only,
            ),
            AdminOp::AlterTopicConfigs {
                name,
                ops,
                validate_only,
            } => (
                plan::alter_topic_configs(&image, name, ops)?,
                *validate_only,
            ),
            AdminOp::PutPolicy(p) => (plan::put_policy(p)?, false),
            AdminOp::AllocateProducerIds { node_id } => {
                let (records, block) = plan::allocate_producer_ids(&image, *node_id)?;
                reply.producer_ids = Some(block);
                (records, false)
            }
            AdminOp::RemovePolicy { name } => (plan::remove_policy(&image, name)?, false),
            AdminOp::AlterPartition {
                topic_id,
                partition,
                leader,
                leader_epoch,
                partition_epoch,
                new_isr,
            } => {
                use crate::election::IsrRefusal;
                let record = crate::election::alter_isr(
                    &image,
                    *topic_id,
                    *partition,
                    *leader,
                    *leader_epoch,
                    *partition_epoch,
                    new_isr,
                )
                .map_err(|r| match r {
                    IsrRefusal::UnknownPartition => {
                        ControllerError::UnknownTopic(format!("{topic_id}-{partition}"))
                    }
                    IsrRefusal::FencedLeaderEpoch => {
                        ControllerError::FencedLeaderEpoch(format!("{topic_id}-{partition}"))
                    }
                    IsrRefusal::InvalidUpdateVersion => {
                        ControllerError::InvalidUpdateVersion(format!("{topic_id}-{partition}"))
                    }
                    IsrRefusal::InvalidIsr => {
                        ControllerError::InvalidRequest(format!("invalid ISR {new_isr:?}"))
                    }
                    IsrRefusal::NoChange => ControllerError::IneligibleReplica(format!(
                        "{new_isr:?} adds only fenced brokers"
                    )),
                })?;
                (vec![record], false)
            }
            AdminOp::ElectPreferred { partitions } => {
                let only: Option<Vec<(Uuid, ferrymq_types::PartitionId)>> =
                    partitions.as_ref().map(|ps| {
                        ps.iter()
                            .filter_map(|(t, p)| image.topic(t).map(|t| (t.id, *p)))
                            .collect()
                    });
                let records = crate::election::preferred(&image, only.as_deref());
                if records.is_empty() {
                    return Err(ControllerError::ElectionNotNeeded(
                        "every partition is led by its preferred replica or it is not eligible"
                            .into(),
                    ));
                }
                (records, false)
            }
        };
        if validate_only || records.is_empty() {
            return Ok(reply);
        }
        reply.committed_offset = self.commit(records).await?;
        if matches!(op, AdminOp::CreateTopic { .. }) {
            self.topics_created.fetch_add(1, Ordering::Relaxed);
        }
        Ok(reply)
    }

    /// The image to plan changes against on the active controller: only once every entry
    /// committed by earlier leaders is applied here (a new leader's state machine can lag its
    /// log), so a plan never builds on stale partition epochs.
    pub(crate) async fn leader_image(&self) -> Result<Arc<MetadataImage>> {
        match tokio::time::timeout(ADMIN_TIMEOUT, self.raft.ensure_linearizable()).await {
            Ok(Ok(_)) => Ok(self.sm.image()),
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(_)))) => {
                Err(ControllerError::NotController)
            }
            Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(e)))) => {
                Err(ControllerError::NoQuorum(format!(
                    "no majority of controller voters confirms this leader: {e}"
                )))
            }
            Ok(Err(e)) => Err(ControllerError::NoQuorum(e.to_string())),
            Err(_) => Err(ControllerError::NoQuorum(format!(
                "leadership not confirmed within {} s: no majority of controller voters",
                ADMIN_TIMEOUT.as_secs()
            ))),
        }
    }

    /// Commits records as one Raft entry; returns its metadata offset once applied here.
    pub(crate) async fn commit(&self, records: Vec<MetadataRecord>) -> Result<i64> {
        let write = self.raft.client_write(MetadataCommand { records });
        match tokio::time::timeout(ADMIN_TIMEOUT, write).await {
            Err(_) => Err(ControllerError::NoQuorum(format!(
                "metadata change not committed within {} s: no majority of controller voters",
                ADMIN_TIMEOUT.as_secs()
            ))),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {
                Err(ControllerError::NotController)
            }
            Ok(Err(e)) => Err(ControllerError::NoQuorum(e.to_string())),
            Ok(Ok(resp)) => match resp.data {
                Ok(()) => Ok(resp.log_id.index as i64),
                Err(why) => Err(refusal(&why)),
            },
        }
    }

    /// Calls another node's controller listener (reusing one connection per address).
    pub(crate) async fn call_peer(
        &self,
        addr: &str,
        body: RequestBody,
        timeout: Duration,
    ) -> std::io::Result<ResponseBody> {
        let client = {
            let mut peers = self.peers.lock().expect("peer clients lock");
            peers
                .entry(addr.to_string())
                .or_insert_with(|| Arc::new(PeerClient::new(addr)))
                .clone()
        };
        client.call(&self.identity.request(body), timeout).await
    }

    /// Calls the controller at `addr`, or this node's own handler when `node` is this node.
    pub(crate) async fn call_controller(
        &self,
        node: Option<u64>,
        addr: &str,
        body: RequestBody,
    ) -> std::io::Result<ResponseBody> {
        if node == Some(self.identity.node_id) || addr.is_empty() {
            use crate::raft::rpc::PeerHandler;
            return Ok(self.handle(self.identity.request(body)).await);
        }
        self.call_peer(
            addr,
            body,
            self.config.session_timeout.max(Duration::from_millis(500)),
        )
        .await
    }

    /// The voters' controller addresses (to find the active controller when the leader is not
    /// known yet, and for operators).
    pub fn voter_addrs(&self) -> Vec<(u64, String)> {
        effective_voters(&self.config)
            .into_iter()
            .map(|(id, a)| (id.0 as u64, a))
            .collect()
    }

    pub(crate) fn set_broker_state(&self, f: impl FnOnce(&mut BrokerState)) {
        self.broker_state.send_modify(f);
    }

    pub(crate) fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Stops the Raft node (clean shutdown).
    pub async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
    }
}

/// The voters, or this node alone when none are configured.
fn effective_voters(config: &ControllerConfig) -> BTreeMap<NodeId, String> {
    if config.voters.is_empty() {
        BTreeMap::from([(config.node_id, config.controller_addr.clone())])
    } else {
        config.voters.clone()
    }
}

/// Maps the image's refusal of a racing command back to the error a client expects.
fn refusal(why: &str) -> ControllerError {
    if why.contains("already exists") {
        ControllerError::TopicAlreadyExists(why.to_string())
    } else if why.contains("unknown topic") {
        ControllerError::UnknownTopic(why.to_string())
    } else {
        ControllerError::InvalidRequest(why.to_string())
    }
}

/// Publishes the state machine's images with the current controller leader filled in, and
/// keeps the identity's cluster id in step.
async fn publish_images(ctrl: Arc<Controller>) {
    let mut images = ctrl.sm.subscribe();
    let mut metrics = ctrl.raft.metrics();
    let mut stop = ctrl.stop.clone();
    loop {
        let leader = metrics.borrow().current_leader;
        let mut image = (*images.borrow_and_update().clone()).clone();
        image.controller_id = leader.map(|l| NodeId(l as i32));
        if !image.cluster_id.is_empty() {
            let mut id = ctrl.identity.cluster_id.write().expect("identity lock");
            if *id != image.cluster_id {
                *id = image.cluster_id.clone();
            }
        }
        ctrl.published.send_replace(Arc::new(image));
        tokio::select! {
            r = images.changed() => if r.is_err() { return },
            r = metrics.changed() => if r.is_err() { return },
            _ = stop.changed() => return,
        }
    }
}
