//! The async layer of the group coordinator: it owns the groups of the `__consumer_offsets`
//! partitions this node leads, feeds requests and clock ticks to their state machines, keeps
//! waiting joins and syncs as channels (no thread is held), writes what must be durable before
//! answering, and replays a partition when it becomes ours.
//!
//! Each group sits behind its own async lock. Records of a group are queued to the log writer
//! under that lock (so they are appended in the order the state changed) and awaited after it
//! is released, so one fsync serves the commits of many groups.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use ferrymq_cluster::{Controller, ControllerError, CreateTopic, MetadataImage};
use ferrymq_types::{NodeId, PartitionId, TopicPartition};
use tokio::sync::{oneshot, watch, Notify};

use super::error::GroupError;
use super::records::{group_key, group_value, offset_key, offset_value};
use super::state::*;
use super::store::{self, LoadedGroup, PendingWrite};
use super::{partition_for, Generation, OFFSETS_TOPIC};
use crate::clock::Clock;
use crate::log_writer::AppendQueue;
use crate::partitions::Partitions;

/// Settings of the coordinator, named after Kafka's broker settings.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// `offsets.topic.num.partitions`.
    pub offsets_topic_partitions: i32,
    /// `offsets.topic.replication.factor`.
    pub offsets_topic_replication_factor: i16,
    /// `offsets.topic.segment.bytes`.
    pub offsets_topic_segment_bytes: i32,
    /// `offsets.retention.minutes`, in milliseconds.
    pub offsets_retention_ms: i64,
    /// `offsets.retention.check.interval.ms`.
    pub offsets_retention_check_interval_ms: u64,
    /// `offset.metadata.max.bytes`.
    pub offset_metadata_max_bytes: usize,
    /// Session and rebalance limits.
    pub limits: GroupLimits,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            offsets_topic_partitions: 10,
            offsets_topic_replication_factor: 3,
            offsets_topic_segment_bytes: 100 << 20,
            offsets_retention_ms: 7 * 24 * 3600 * 1000,
            offsets_retention_check_interval_ms: 600_000,
            offset_metadata_max_bytes: 4096,
            limits: GroupLimits {
                session_timeout_min_ms: 6000,
                session_timeout_max_ms: 1_800_000,
                initial_rebalance_delay_ms: 3000,
            },
        }
    }
}

/// One partition's offset to commit, as a request gives it.
#[derive(Debug, Clone)]
pub struct OffsetToCommit {
    /// The partition.
    pub tp: TopicPartition,
    /// The committed offset.
    pub offset: ferrymq_types::Offset,
    /// The leader epoch of the last consumed record, if known.
    pub leader_epoch: Option<ferrymq_types::LeaderEpoch>,
    /// Client metadata.
    pub metadata: Option<String>,
}

/// An OffsetCommit.
#[derive(Debug, Clone)]
pub struct CommitRequest {
    /// Member id (empty for a standalone consumer).
    pub member_id: String,
    /// Static instance id.
    pub instance_id: Option<String>,
    /// Generation (-1 for a standalone consumer).
    pub generation: Generation,
    /// What to commit.
    pub offsets: Vec<OffsetToCommit>,
}

/// A group in ListGroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    /// Group id.
    pub group_id: String,
    /// Protocol type (empty for a group that only committed offsets).
    pub protocol_type: String,
    /// Phase name.
    pub state: &'static str,
}

/// A group in DescribeGroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    /// Phase name (`Dead` for an unknown group).
    pub state: &'static str,
    /// Protocol type.
    pub protocol_type: String,
    /// Selected protocol.
    pub protocol: String,
    /// Members.
    pub members: Vec<MemberDescription>,
}

/// Whether a request may create the group it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Create {
    IfMissing,
    No,
}

/// The load state of one `__consumer_offsets` partition led here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shard {
    Loading,
    Loaded,
}

type JoinTx = oneshot::Sender<Result<JoinOutcome, GroupError>>;
type SyncTx = oneshot::Sender<Result<SyncOutcome, GroupError>>;

/// A group with the channels of its waiting requests.
struct Slot {
    group: Group,
    joins: HashMap<ReplyId, JoinTx>,
    syncs: HashMap<ReplyId, SyncTx>,
    /// Sequence of queued commits, so that a commit applied late never overwrites a newer one.
    commit_seq: u64,
    applied_seq: HashMap<TopicPartition, u64>,
}

struct Entry {
    partition: i32,
    slot: tokio::sync::Mutex<Slot>,
}

/// Answers decided under a group's lock, sent once the group's write (if any) is durable.
#[derive(Default)]
struct Deferred {
    write: Option<PendingWrite>,
    joins: Vec<(JoinTx, Result<JoinOutcome, GroupError>)>,
    syncs: Vec<(SyncTx, Result<SyncOutcome, GroupError>)>,
}

impl Deferred {
    async fn finish(self) {
        let failed = match self.write {
            Some(w) => w.wait().await.err(),
            None => None,
        };
        if let Some(e) = &failed {
            tracing::warn!(error = %e, "storing group metadata failed");
        }
        for (tx, r) in self.joins {
            let _ = tx.send(r);
        }
        for (tx, r) in self.syncs {
            let r = match (&failed, r) {
                (Some(e), Ok(_)) => Err(e.clone()),
                (_, r) => r,
            };
            let _ = tx.send(r);
        }
    }
}

/// The group coordinator of this node.
pub struct GroupCoordinator {
    node_id: NodeId,
    config: GroupConfig,
    clock: Arc<dyn Clock>,
    controller: Arc<Controller>,
    partitions: Arc<Partitions>,
    queue: AppendQueue,
    shards: Mutex<HashMap<i32, Shard>>,
    groups: Mutex<HashMap<String, Arc<Entry>>>,
    /// Next deadline of each group with one, for the timer task.
    deadlines: Mutex<HashMap<String, i64>>,
    timer_wake: Notify,
    loaded: Notify,
    next_reply: AtomicU64,
}

impl std::fmt::Debug for GroupCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCoordinator")
            .field("node_id", &self.node_id)
            .finish()
    }
}

/// An empty group id where the API needs one (JoinGroup, SyncGroup, Heartbeat, LeaveGroup).
fn require_group_id(group_id: &str) -> Result<(), GroupError> {
    if group_id.is_empty() {
        return Err(GroupError::InvalidGroupId);
    }
    Ok(())
}

impl GroupCoordinator {
    /// A coordinator that appends through `queue` to the partitions in `partitions`.
    pub fn new(
        node_id: NodeId,
        config: GroupConfig,
        clock: Arc<dyn Clock>,
        controller: Arc<Controller>,
        partitions: Arc<Partitions>,
        queue: AppendQueue,
    ) -> GroupCoordinator {
        assert!(
            config.offsets_topic_partitions > 0,
            "offsets.topic.num.partitions must be positive"
        );
        GroupCoordinator {
            node_id,
            config,
            clock,
            controller,
            partitions,
            queue,
            shards: Mutex::new(HashMap::new()),
            groups: Mutex::new(HashMap::new()),
            deadlines: Mutex::new(HashMap::new()),
            timer_wake: Notify::new(),
            loaded: Notify::new(),
            next_reply: AtomicU64::new(1),
        }
    }

    /// The coordinator's settings.
    pub fn config(&self) -> &GroupConfig {
        &self.config
    }

    fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    /// FindCoordinator: the node coordinating `group_id`, creating `__consumer_offsets` on
    /// first use. COORDINATOR_NOT_AVAILABLE while the group's partition loads here.
    pub async fn find_coordinator(self: &Arc<Self>, group_id: &str) -> Result<NodeId, GroupError> {
        self.ensure_offsets_topic().await?;
        let image = self.controller.image();
        let topic = image
            .topic(OFFSETS_TOPIC)
            .ok_or(GroupError::CoordinatorNotAvailable)?;
        let p = partition_for(group_id, topic.partitions.len() as i32);
        let leader = topic
            .partitions
            .get(&PartitionId(p))
            .and_then(|info| info.leader)
            .ok_or(GroupError::CoordinatorNotAvailable)?;
        if leader != self.node_id {
            return Ok(leader);
        }
        // A partition just created loads in an instant: wait a little rather than make the
        // client back off and retry.
        let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
        loop {
            let loaded = self.loaded.notified();
            match self.shard(p) {
                Some(Shard::Loaded) => return Ok(leader),
                _ if tokio::time::Instant::now() >= deadline => {
                    return Err(GroupError::CoordinatorNotAvailable)
                }
                _ => {
                    let _ = tokio::time::timeout_at(deadline, loaded).await;
                }
            }
        }
    }

    /// Creates `__consumer_offsets` (compacted, `offsets.topic.*`) if it does not exist, and
    /// starts loading the partitions led here.
    pub async fn ensure_offsets_topic(self: &Arc<Self>) -> Result<(), GroupError> {
        if self.controller.image().topic(OFFSETS_TOPIC).is_some() {
            return Ok(());
        }
        self.create_offsets_topic().await?;
        let image = self.controller.image();
        let parts = self.partitions.clone();
        let applied = image.clone();
        let _ = tokio::task::spawn_blocking(move || parts.apply_image(&applied)).await;
        self.on_metadata(&image);
        Ok(())
    }

    async fn create_offsets_topic(&self) -> Result<(), GroupError> {
        // Replicated like any partition, on as many brokers as asked and available (so a
        // single node works with the default of 3), so coordination fails over with its data.
        let live = self.controller.image().live_brokers().count().max(1) as i16;
        let req = CreateTopic {
            name: OFFSETS_TOPIC.to_string(),
            num_partitions: Some(self.config.offsets_topic_partitions),
            replication_factor: Some(self.config.offsets_topic_replication_factor.min(live)),
            assignments: None,
            configs: vec![
                ("cleanup.policy".into(), "compact".into()),
                (
                    "segment.bytes".into(),
                    self.config.offsets_topic_segment_bytes.to_string(),
                ),
                ("compression.type".into(), "producer".into()),
            ],
        };
        match self.controller.create_topic(req, false).await {
            Ok(created) => {
                tracing::info!(
                    partitions = created.num_partitions,
                    "created {OFFSETS_TOPIC}"
                );
                Ok(())
            }
            Err(ControllerError::TopicAlreadyExists(_)) => Ok(()),
            Err(e) => {
                tracing::error!(error = %e, "cannot create {OFFSETS_TOPIC}");
                Err(GroupError::CoordinatorNotAvailable)
            }
        }
    }

    fn shard(&self, p: i32) -> Option<Shard> {
        self.shards.lock().expect("shards lock").get(&p).copied()
    }

    /// Follows a new metadata image: partitions of `__consumer_offsets` led here are loaded,
    /// those no longer led here are unloaded (their groups dropped from memory).
    pub fn on_metadata(self: &Arc<Self>, image: &MetadataImage) {
        let led: Vec<i32> = image
            .topic(OFFSETS_TOPIC)
            .map(|t| {
                t.partitions
                    .iter()
                    .filter(|(_, info)| info.leader == Some(self.node_id))
                    .map(|(p, _)| p.0)
                    .collect()
            })
            .unwrap_or_default();
        let mut shards = self.shards.lock().expect("shards lock");
        let gone: Vec<i32> = shards
            .keys()
            .filter(|p| !led.contains(p))
            .copied()
            .collect();
        for p in gone {
            shards.remove(&p);
            self.groups
                .lock()
                .expect("groups lock")
                .retain(|_, e| e.partition != p);
            tracing::info!(partition = p, "unloaded {OFFSETS_TOPIC} partition");
        }
        for p in led {
            if shards.contains_key(&p) {
                continue;
            }
            shards.insert(p, Shard::Loading);
            let me = self.clone();
            tokio::spawn(async move { me.load(p).await });
        }
    }

    async fn load(self: Arc<Self>, p: i32) {
        let tp = TopicPartition::new(OFFSETS_TOPIC, p);
        let Some(partition) = self.partitions.get(&tp) else {
            self.shards.lock().expect("shards lock").remove(&p);
            return;
        };
        let started = std::time::Instant::now();
        let loaded = tokio::task::spawn_blocking(move || store::load(&partition)).await;
        let groups = match loaded {
            Ok(Ok(g)) => g,
            Ok(Err(e)) => {
                tracing::error!(partition = %tp, error = %e, "loading groups failed; partition stays unavailable");
                return;
            }
            Err(e) => {
                tracing::error!(partition = %tp, error = %e, "group load task failed");
                return;
            }
        };
        let count = groups.len();
        self.install(p, groups);
        tracing::info!(partition = %tp, groups = count, elapsed_ms = started.elapsed().as_millis() as u64, "loaded groups");
    }

    fn install(&self, p: i32, loaded: BTreeMap<String, LoadedGroup>) {
        let now = self.now();
        let mut deadlines = Vec::new();
        {
            let mut groups = self.groups.lock().expect("groups lock");
            for (id, lg) in loaded {
                let mut g = match lg.metadata {
                    Some(s) => Group::from_snapshot(id.clone(), s, now),
                    None => Group::new(id.clone(), now),
                };
                g.apply_offsets(lg.offsets);
                if let Some(d) = g.next_deadline_ms() {
                    deadlines.push((id.clone(), d));
                }
                groups.insert(id, Arc::new(new_entry(p, g)));
            }
        }
        self.deadlines
            .lock()
            .expect("deadlines lock")
            .extend(deadlines);
        let mut shards = self.shards.lock().expect("shards lock");
        if shards.contains_key(&p) {
            shards.insert(p, Shard::Loaded);
        }
        drop(shards);
        self.loaded.notify_waiters();
        self.timer_wake.notify_one();
    }

    /// The group's entry, checking that this node coordinates it and has loaded it.
    fn entry(&self, group_id: &str, create: Create) -> Result<Option<Arc<Entry>>, GroupError> {
        let image = self.controller.image();
        let topic = image
            .topic(OFFSETS_TOPIC)
            .ok_or(GroupError::NotCoordinator)?;
        let p = partition_for(group_id, topic.partitions.len() as i32);
        match self.shard(p) {
            Some(Shard::Loaded) => {}
            Some(Shard::Loading) => return Err(GroupError::CoordinatorLoadInProgress),
            None => return Err(GroupError::NotCoordinator),
        }
        let mut groups = self.groups.lock().expect("groups lock");
        if let Some(e) = groups.get(group_id) {
            return Ok(Some(e.clone()));
        }
        if create == Create::No {
            return Ok(None);
        }
        let e = Arc::new(new_entry(p, Group::new(group_id, self.now())));
        groups.insert(group_id.to_string(), e.clone());
        Ok(Some(e))
    }

    fn offsets_partition(&self, p: i32) -> Result<Arc<crate::Partition>, GroupError> {
        self.partitions
            .get(&TopicPartition::new(OFFSETS_TOPIC, p))
            .ok_or(GroupError::NotCoordinator)
    }

    /// Executes a state machine's actions under the group's lock: answers are taken out of the
    /// slot, the group's metadata is queued for writing. Answers go once the write is durable.
    async fn act(&self, entry: &Entry, slot: &mut Slot, actions: Vec<Action>) -> Deferred {
        let mut d = Deferred::default();
        for a in actions {
            match a {
                Action::Join { reply, result } => {
                    if let Some(tx) = slot.joins.remove(&reply) {
                        d.joins.push((tx, result));
                    }
                }
                Action::Sync { reply, result } => {
                    if let Some(tx) = slot.syncs.remove(&reply) {
                        d.syncs.push((tx, result));
                    }
                }
                Action::StoreGroup => {
                    let record = (
                        group_key(slot.group.id()),
                        Some(group_value(&slot.group.snapshot())),
                    );
                    match self.write(entry.partition, &[record]).await {
                        // A later write of the same group supersedes an earlier one; both are
                        // in the queue in order, so waiting for the last is enough.
                        Ok(w) => d.write = Some(w),
                        Err(e) => {
                            tracing::warn!(group = %slot.group.id(), error = %e, "cannot queue group metadata")
                        }
                    }
                }
            }
        }
        self.note_deadline(&slot.group);
        d
    }

    async fn write(
        &self,
        p: i32,
        records: &[(Bytes, Option<Bytes>)],
    ) -> Result<PendingWrite, GroupError> {
        let partition = self.offsets_partition(p)?;
        store::enqueue(&self.queue, partition, records, self.now()).await
    }

    fn note_deadline(&self, g: &Group) {
        let mut deadlines = self.deadlines.lock().expect("deadlines lock");
        match g.next_deadline_ms() {
            Some(d) => {
                let earlier = deadlines.get(g.id()).is_none_or(|&old| d < old);
                deadlines.insert(g.id().to_string(), d);
                if earlier {
                    self.timer_wake.notify_one();
                }
            }
            None => {
                deadlines.remove(g.id());
            }
        }
    }

    fn reply_id(&self) -> ReplyId {
        ReplyId(self.next_reply.fetch_add(1, Ordering::Relaxed))
    }

    /// JoinGroup: resolves when the rebalance completes (or at once, for errors and rejoins
    /// that change nothing).
    pub async fn join(&self, group_id: &str, req: JoinRequest) -> Result<JoinOutcome, GroupError> {
        require_group_id(group_id)?;
        let entry = self.entry(group_id, Create::IfMissing)?.expect("created");
        let (tx, rx) = oneshot::channel();
        let reply = self.reply_id();
        let prefix = if req.client_id.is_empty() {
            "member"
        } else {
            req.client_id.as_str()
        };
        let fresh = format!("{prefix}-{}", uuid::Uuid::new_v4());
        let deferred = {
            let mut slot = entry.slot.lock().await;
            slot.joins.insert(reply, tx);
            let actions = slot
                .group
                .join(self.now(), req, reply, fresh, &self.config.limits);
            self.act(&entry, &mut slot, actions).await
        };
        deferred.finish().await;
        rx.await.unwrap_or(Err(GroupError::CoordinatorNotAvailable))
    }

    /// SyncGroup: followers resolve when the leader's assignment is stored.
    pub async fn sync(&self, group_id: &str, req: SyncRequest) -> Result<SyncOutcome, GroupError> {
        require_group_id(group_id)?;
        let entry =
            self.entry(group_id, Create::No)?
                .ok_or_else(|| GroupError::UnknownMemberId {
                    member_id: req.member_id.clone(),
                })?;
        let (tx, rx) = oneshot::channel();
        let reply = self.reply_id();
        let deferred = {
            let mut slot = entry.slot.lock().await;
            slot.syncs.insert(reply, tx);
            let actions = slot.group.sync(self.now(), req, reply);
            self.act(&entry, &mut slot, actions).await
        };
        deferred.finish().await;
        rx.await.unwrap_or(Err(GroupError::CoordinatorNotAvailable))
    }

    /// Heartbeat.
    pub async fn heartbeat(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: &Option<String>,
        generation: Generation,
    ) -> Result<(), GroupError> {
        require_group_id(group_id)?;
        let entry =
            self.entry(group_id, Create::No)?
                .ok_or_else(|| GroupError::UnknownMemberId {
                    member_id: member_id.to_string(),
                })?;
        let mut slot = entry.slot.lock().await;
        let r = slot
            .group
            .heartbeat(self.now(), member_id, instance_id, generation);
        self.note_deadline(&slot.group);
        r
    }

    /// LeaveGroup: one result per member, in order.
    pub async fn leave(
        &self,
        group_id: &str,
        leaving: &[LeavingMember],
    ) -> Result<Vec<Result<(), GroupError>>, GroupError> {
        require_group_id(group_id)?;
        let Some(entry) = self.entry(group_id, Create::No)? else {
            return Ok(leaving
                .iter()
                .map(|l| {
                    Err(GroupError::UnknownMemberId {
                        member_id: l.member_id.clone(),
                    })
                })
                .collect());
        };
        let (results, deferred) = {
            let mut slot = entry.slot.lock().await;
            let (results, actions) = slot.group.leave(self.now(), leaving, &self.config.limits);
            (results, self.act(&entry, &mut slot, actions).await)
        };
        deferred.finish().await;
        Ok(results)
    }

    /// OffsetCommit: one result per partition. Offsets are applied once durable.
    pub async fn commit_offsets(
        &self,
        group_id: &str,
        req: CommitRequest,
    ) -> Result<Vec<(TopicPartition, Result<(), GroupError>)>, GroupError> {
        let existing = self.entry(group_id, Create::No)?;
        if existing.is_none() && req.generation.0 >= 0 {
            // Only a standalone consumer (generation -1) may create a group by committing.
            let e = GroupError::IllegalGeneration {
                request: req.generation.0,
                current: -1,
            };
            return Ok(req
                .offsets
                .into_iter()
                .map(|o| (o.tp, Err(e.clone())))
                .collect());
        }
        let entry = match existing {
            Some(e) => e,
            None => self.entry(group_id, Create::IfMissing)?.expect("created"),
        };
        let image = self.controller.image();
        let now = self.now();
        let max = self.config.offset_metadata_max_bytes;
        let mut results = Vec::with_capacity(req.offsets.len());
        let mut accepted = Vec::new();
        for o in req.offsets {
            let metadata = o.metadata.unwrap_or_default();
            let exists = image
                .topic(&o.tp.topic)
                .is_some_and(|t| t.partitions.contains_key(&o.tp.partition));
            if !exists {
                results.push((o.tp, Err(GroupError::UnknownTopicOrPartition)));
            } else if metadata.len() > max {
                let e = GroupError::OffsetMetadataTooLarge {
                    bytes: metadata.len(),
                    max,
                };
                results.push((o.tp, Err(e)));
            } else {
                let c = CommittedOffset {
                    offset: o.offset,
                    leader_epoch: o.leader_epoch,
                    metadata,
                    commit_timestamp_ms: now,
                };
                accepted.push((o.tp, c));
            }
        }
        if accepted.is_empty() {
            return Ok(results);
        }
        let (write, seq) = {
            let mut slot = entry.slot.lock().await;
            let checked =
                slot.group
                    .check_commit(now, &req.member_id, &req.instance_id, req.generation);
            self.note_deadline(&slot.group);
            if let Err(e) = checked {
                results.extend(accepted.into_iter().map(|(tp, _)| (tp, Err(e.clone()))));
                return Ok(results);
            }
            let records: Vec<(Bytes, Option<Bytes>)> = accepted
                .iter()
                .map(|(tp, c)| (offset_key(group_id, tp), Some(offset_value(c))))
                .collect();
            slot.commit_seq += 1;
            (self.write(entry.partition, &records).await, slot.commit_seq)
        };
        let stored = match write {
            Ok(w) => w.wait().await,
            Err(e) => Err(e),
        };
        if stored.is_ok() {
            let mut slot = entry.slot.lock().await;
            let newer: Vec<(TopicPartition, CommittedOffset)> = accepted
                .iter()
                .filter(|(tp, _)| slot.applied_seq.get(tp).is_none_or(|&s| s < seq))
                .cloned()
                .collect();
            for (tp, _) in &newer {
                slot.applied_seq.insert(tp.clone(), seq);
            }
            slot.group.apply_offsets(newer);
        }
        results.extend(accepted.into_iter().map(|(tp, _)| (tp, stored.clone())));
        Ok(results)
    }

    /// OffsetFetch: the committed offset of each asked partition (`None` where nothing is
    /// committed), or of every committed partition when `partitions` is `None`.
    pub async fn fetch_offsets(
        &self,
        group_id: &str,
        partitions: Option<Vec<TopicPartition>>,
    ) -> Result<Vec<(TopicPartition, Option<CommittedOffset>)>, GroupError> {
        let Some(entry) = self.entry(group_id, Create::No)? else {
            return Ok(partitions
                .unwrap_or_default()
                .into_iter()
                .map(|tp| (tp, None))
                .collect());
        };
        let slot = entry.slot.lock().await;
        let offsets = slot.group.offsets();
        Ok(match partitions {
            Some(tps) => tps
                .into_iter()
                .map(|tp| {
                    let c = offsets.get(&tp).cloned();
                    (tp, c)
                })
                .collect(),
            None => offsets
                .iter()
                .map(|(tp, c)| (tp.clone(), Some(c.clone())))
                .collect(),
        })
    }

    /// ListGroups: every group this node coordinates.
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>, GroupError> {
        if self
            .shards
            .lock()
            .expect("shards lock")
            .values()
            .any(|s| *s == Shard::Loading)
        {
            return Err(GroupError::CoordinatorLoadInProgress);
        }
        let entries: Vec<Arc<Entry>> = self
            .groups
            .lock()
            .expect("groups lock")
            .values()
            .cloned()
            .collect();
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            let slot = e.slot.lock().await;
            let g = &slot.group;
            if g.phase() == Phase::Dead {
                continue;
            }
            out.push(GroupListing {
                group_id: g.id().to_string(),
                protocol_type: g.protocol_type().unwrap_or_default().to_string(),
                state: g.phase().name(),
            });
        }
        out.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        Ok(out)
    }

    /// DescribeGroups for one group; an unknown group is described as `Dead`, as Kafka.
    pub async fn describe(&self, group_id: &str) -> Result<GroupDescription, GroupError> {
        let Some(entry) = self.entry(group_id, Create::No)? else {
            return Ok(GroupDescription {
                state: Phase::Dead.name(),
                protocol_type: String::new(),
                protocol: String::new(),
                members: Vec::new(),
            });
        };
        let slot = entry.slot.lock().await;
        let g = &slot.group;
        Ok(GroupDescription {
            state: g.phase().name(),
            protocol_type: g.protocol_type().unwrap_or_default().to_string(),
            protocol: g.protocol().unwrap_or_default().to_string(),
            members: g.describe_members(),
        })
    }

    /// DeleteGroups for one group: only an empty group goes, with its offsets (tombstones).
    pub async fn delete_group(&self, group_id: &str) -> Result<(), GroupError> {
        let entry = self
            .entry(group_id, Create::No)?
            .ok_or(GroupError::GroupIdNotFound)?;
        let write = {
            let mut slot = entry.slot.lock().await;
            slot.group.delete()?;
            let mut records: Vec<(Bytes, Option<Bytes>)> = slot
                .group
                .offsets()
                .keys()
                .map(|tp| (offset_key(group_id, tp), None))
                .collect();
            records.push((group_key(group_id), None));
            self.write(entry.partition, &records).await
        };
        self.remove_entry(group_id, &entry);
        write?.wait().await
    }

    fn remove_entry(&self, group_id: &str, entry: &Arc<Entry>) {
        let mut groups = self.groups.lock().expect("groups lock");
        if groups.get(group_id).is_some_and(|e| Arc::ptr_eq(e, entry)) {
            groups.remove(group_id);
        }
        self.deadlines
            .lock()
            .expect("deadlines lock")
            .remove(group_id);
    }

    /// OffsetDelete: forgets committed offsets, refusing topics the group's members still
    /// subscribe to (`subscribed` reads the members' opaque metadata for that).
    pub async fn delete_offsets(
        &self,
        group_id: &str,
        tps: Vec<TopicPartition>,
        subscribed: impl Fn(&[Bytes], &str) -> bool,
    ) -> Result<Vec<(TopicPartition, Result<(), GroupError>)>, GroupError> {
        let entry = self
            .entry(group_id, Create::No)?
            .ok_or(GroupError::GroupIdNotFound)?;
        let mut slot = entry.slot.lock().await;
        let g = &slot.group;
        let consuming = g.phase() != Phase::Empty && g.protocol_type() == Some("consumer");
        let metadata: Vec<Bytes> = g
            .describe_members()
            .into_iter()
            .map(|m| m.metadata)
            .collect();
        let mut results = Vec::with_capacity(tps.len());
        let mut doomed = Vec::new();
        for tp in tps {
            if consuming && subscribed(&metadata, &tp.topic) {
                results.push((tp, Err(GroupError::GroupSubscribedToTopic)));
            } else {
                if g.offsets().contains_key(&tp) {
                    doomed.push(tp.clone());
                }
                results.push((tp, Ok(())));
            }
        }
        if doomed.is_empty() {
            return Ok(results);
        }
        let records: Vec<(Bytes, Option<Bytes>)> = doomed
            .iter()
            .map(|tp| (offset_key(group_id, tp), None))
            .collect();
        let write = self.write(entry.partition, &records).await?;
        drop(slot);
        write.wait().await?;
        slot = entry.slot.lock().await;
        slot.group.remove_offsets(doomed.iter());
        Ok(results)
    }

    /// Runs the timers (session expiry, rebalance deadlines) and offset retention until `stop`.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let retention_every =
            Duration::from_millis(self.config.offsets_retention_check_interval_ms.max(1));
        let mut retention = tokio::time::interval(retention_every);
        retention.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        retention.tick().await;
        loop {
            let next = self
                .deadlines
                .lock()
                .expect("deadlines lock")
                .values()
                .copied()
                .min();
            let wait = next.map_or(Duration::from_secs(3600), |d| {
                Duration::from_millis((d - self.now()).clamp(0, 3_600_000) as u64)
            });
            tokio::select! {
                _ = tokio::time::sleep(wait) => self.expire_due().await,
                _ = self.timer_wake.notified() => {}
                _ = retention.tick() => self.expire_offsets().await,
                _ = stop.changed() => return,
            }
        }
    }

    async fn expire_due(&self) {
        let now = self.now();
        let due: Vec<String> = self
            .deadlines
            .lock()
            .expect("deadlines lock")
            .iter()
            .filter(|(_, &d)| d <= now)
            .map(|(g, _)| g.clone())
            .collect();
        for id in due {
            let entry = self.groups.lock().expect("groups lock").get(&id).cloned();
            let Some(entry) = entry else {
                self.deadlines.lock().expect("deadlines lock").remove(&id);
                continue;
            };
            let deferred = {
                let mut slot = entry.slot.lock().await;
                let actions = slot.group.tick(self.now(), &self.config.limits);
                self.act(&entry, &mut slot, actions).await
            };
            deferred.finish().await;
        }
    }

    /// `offsets.retention.minutes`: offsets of empty groups expire (tombstones), and a group
    /// left with nothing is removed.
    async fn expire_offsets(&self) {
        let entries: Vec<(String, Arc<Entry>)> = self
            .groups
            .lock()
            .expect("groups lock")
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (id, entry) in entries {
            let mut slot = entry.slot.lock().await;
            let expired = slot
                .group
                .expired_offsets(self.now(), self.config.offsets_retention_ms);
            if expired.is_empty() {
                continue;
            }
            let mut records: Vec<(Bytes, Option<Bytes>)> = expired
                .iter()
                .map(|tp| (offset_key(&id, tp), None))
                .collect();
            let empties =
                expired.len() == slot.group.offsets().len() && slot.group.member_ids().is_empty();
            if empties {
                records.push((group_key(&id), None));
            }
            let Ok(write) = self.write(entry.partition, &records).await else {
                continue;
            };
            slot.group.remove_offsets(expired.iter());
            if slot.group.is_removable() {
                let _ = slot.group.delete();
                drop(slot);
                self.remove_entry(&id, &entry);
            } else {
                drop(slot);
            }
            match write.wait().await {
                Ok(()) => {
                    tracing::info!(group = %id, partitions = expired.len(), "expired committed offsets")
                }
                Err(e) => tracing::warn!(group = %id, error = %e, "writing offset expiry failed"),
            }
        }
    }
}

fn new_entry(partition: i32, group: Group) -> Entry {
    Entry {
        partition,
        slot: tokio::sync::Mutex::new(Slot {
            group,
            joins: HashMap::new(),
            syncs: HashMap::new(),
            commit_seq: 0,
            applied_seq: HashMap::new(),
        }),
    }
}
