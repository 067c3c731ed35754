//! The set of partition replicas this broker hosts, kept in step with the metadata image:
//! a partition assigned to this node is opened (or created), one whose topic is gone is
//! removed with its data, and every hosted partition learns its new leader, epoch and ISR.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use ferrymq_cluster::{MetadataImage, TopicDefaults, TopicSettings};
use ferrymq_log::{checkpoint, OpenOptions};
use ferrymq_types::{NodeId, Offset, TopicPartition};

use crate::clock::Clock;
use crate::error::BrokerError;
use crate::partition::Partition;

/// Data-dir checkpoint of recovery points (offsets known fsynced).
pub const RECOVERY_POINT_CHECKPOINT: &str = "recovery-point-offset-checkpoint";
/// Data-dir checkpoint of high watermarks.
pub const HW_CHECKPOINT: &str = "replication-offset-checkpoint";
/// Data-dir checkpoint of log start offsets (DeleteRecords).
pub const LOG_START_CHECKPOINT: &str = "log-start-offset-checkpoint";

/// What was checkpointed at the last stop, read once at startup.
#[derive(Debug, Default)]
pub struct StartupState {
    /// The previous stop was clean (marker present).
    pub clean_shutdown: bool,
    /// Per-partition recovery points.
    pub recovery_points: BTreeMap<TopicPartition, Offset>,
    /// Per-partition high watermarks.
    pub high_watermarks: BTreeMap<TopicPartition, Offset>,
    /// Per-partition log start offsets.
    pub log_starts: BTreeMap<TopicPartition, Offset>,
}

/// What image application remembers between calls.
#[derive(Debug)]
struct Applying {
    /// Checkpoints read at startup, consumed by the first application.
    startup: Option<StartupState>,
    /// Metadata offset of the last image applied.
    offset: i64,
}

/// The partitions hosted here.
#[derive(Debug)]
pub struct Partitions {
    node_id: NodeId,
    data_dir: PathBuf,
    topic_defaults: TopicDefaults,
    map: RwLock<HashMap<TopicPartition, Arc<Partition>>>,
    /// Serialises image application (opening logs is not idempotent under races).
    applying: Mutex<Applying>,
    clock: Arc<dyn Clock>,
}

impl Partitions {
    /// An empty set; `startup` is consumed by the first image application.
    pub fn new(
        node_id: NodeId,
        data_dir: PathBuf,
        topic_defaults: TopicDefaults,
        startup: StartupState,
        clock: Arc<dyn Clock>,
    ) -> Partitions {
        Partitions {
            node_id,
            data_dir,
            topic_defaults,
            map: RwLock::new(HashMap::new()),
            applying: Mutex::new(Applying {
                startup: Some(startup),
                offset: -1,
            }),
            clock,
        }
    }

    /// The hosted replica of `tp`, if any.
    pub fn get(&self, tp: &TopicPartition) -> Option<Arc<Partition>> {
        self.map.read().expect("partitions lock").get(tp).cloned()
    }

    /// Every hosted replica.
    pub fn all(&self) -> Vec<Arc<Partition>> {
        self.map
            .read()
            .expect("partitions lock")
            .values()
            .cloned()
            .collect()
    }

    /// Brings the hosted set in line with `image`. Storage errors take only the affected
    /// partition out (it stays absent and is logged); the rest proceed. Returns the partitions
    /// this node follows, with their leaders, for the replica fetchers.
    pub fn apply_image(&self, image: &MetadataImage) -> Option<Vec<(TopicPartition, NodeId)>> {
        let mut follow = Vec::new();
        let mut applying = self.applying.lock().expect("apply lock");
        // Images are applied from several tasks (metadata follower, admin requests): never go
        // back to an older one, whatever order they arrive in.
        if image.applied_offset < applying.offset {
            return None;
        }
        applying.offset = image.applied_offset;
        let startup = applying.startup.take();
        let mut wanted: HashMap<TopicPartition, ()> = HashMap::new();
        for topic in image.topics.values() {
            let settings = TopicSettings::resolve(&topic.configs, &self.topic_defaults);
            for (pid, info) in &topic.partitions {
                if !info.replicas.contains(&self.node_id) {
                    continue;
                }
                let tp = TopicPartition {
                    topic: topic.name.clone(),
                    partition: *pid,
                };
                wanted.insert(tp.clone(), ());
                if let Some(leader) = info.leader.filter(|l| *l != self.node_id) {
                    follow.push((tp.clone(), leader));
                }
                if let Some(existing) = self.get(&tp) {
                    if existing.topic_id() == topic.id {
                        existing.apply_metadata(info, settings.clone());
                        continue;
                    }
                    self.remove(&tp);
                }
                let opts = OpenOptions {
                    clean_shutdown: startup.as_ref().is_some_and(|s| s.clean_shutdown),
                    recovery_point: lookup(startup.as_ref().map(|s| &s.recovery_points), &tp),
                    log_start_offset: lookup(startup.as_ref().map(|s| &s.log_starts), &tp),
                };
                let hw = lookup(startup.as_ref().map(|s| &s.high_watermarks), &tp);
                match Partition::open(
                    &self.data_dir,
                    tp.clone(),
                    topic.id,
                    self.node_id,
                    info,
                    settings.clone(),
                    opts,
                    hw,
                    self.clock.clone(),
                ) {
                    Ok(p) => {
                        tracing::info!(partition = %tp, leader_epoch = info.leader_epoch.0, leader = ?info.leader.map(|l| l.0), "partition opened");
                        self.map
                            .write()
                            .expect("partitions lock")
                            .insert(tp, Arc::new(p));
                    }
                    Err(e) => {
                        tracing::error!(partition = %tp, error = %e, "cannot open partition; it stays offline")
                    }
                }
            }
        }
        let gone: Vec<TopicPartition> = self
            .map
            .read()
            .expect("partitions lock")
            .keys()
            .filter(|tp| !wanted.contains_key(*tp))
            .cloned()
            .collect();
        for tp in gone {
            self.remove(&tp);
        }
        if startup.is_some() {
            self.remove_orphan_dirs(&wanted);
        }
        Some(follow)
    }

    fn remove(&self, tp: &TopicPartition) {
        let Some(p) = self.map.write().expect("partitions lock").remove(tp) else {
            return;
        };
        match p.remove() {
            Ok(()) => tracing::info!(partition = %tp, "partition deleted"),
            Err(e) => {
                tracing::error!(partition = %tp, error = %e, "deleting partition data failed")
            }
        }
    }

    /// Deletes partition directories (and `-delete` leftovers) that no topic owns any more:
    /// topics deleted while this node was down.
    fn remove_orphan_dirs(&self, wanted: &HashMap<TopicPartition, ()>) {
        let Ok(entries) = std::fs::read_dir(&self.data_dir) else {
            return;
        };
        let wanted_dirs: std::collections::HashSet<String> =
            wanted.keys().map(|tp| tp.dir_name()).collect();
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let is_partition_dir =
                e.path().join("partition.metadata").exists() || name.ends_with("-delete");
            if e.path().is_dir() && is_partition_dir && !wanted_dirs.contains(&name) {
                tracing::info!(dir = %name, "removing data of a deleted topic");
                if let Err(err) = std::fs::remove_dir_all(e.path()) {
                    tracing::error!(dir = %name, error = %err, "cannot remove orphan partition directory");
                }
            }
        }
    }

    /// Writes the three data-dir checkpoints from every hosted partition.
    pub fn write_checkpoints(&self) -> Result<(), BrokerError> {
        let mut rp = BTreeMap::new();
        let mut hw = BTreeMap::new();
        let mut ls = BTreeMap::new();
        for p in self.all() {
            let (r, h, l) = p.checkpoint_offsets();
            rp.insert(p.tp().clone(), r);
            hw.insert(p.tp().clone(), h);
            ls.insert(p.tp().clone(), l);
        }
        let storage = |e: ferrymq_log::Error| BrokerError::Storage(e.to_string());
        checkpoint::write_offsets(&self.data_dir.join(RECOVERY_POINT_CHECKPOINT), &rp)
            .map_err(storage)?;
        checkpoint::write_offsets(&self.data_dir.join(HW_CHECKPOINT), &hw).map_err(storage)?;
        checkpoint::write_offsets(&self.data_dir.join(LOG_START_CHECKPOINT), &ls).map_err(storage)
    }
}

fn lookup(map: Option<&BTreeMap<TopicPartition, Offset>>, tp: &TopicPartition) -> Offset {
    map.and_then(|m| m.get(tp)).copied().unwrap_or(Offset(0))
}

/// Reads the checkpoints and the clean-shutdown marker at startup.
pub fn read_startup_state(
    data_dir: &std::path::Path,
    clean_shutdown: bool,
) -> Result<StartupState, BrokerError> {
    let read = |name: &str| {
        checkpoint::read_offsets(&data_dir.join(name))
            .map_err(|e| BrokerError::Storage(e.to_string()))
    };
    Ok(StartupState {
        clean_shutdown,
        recovery_points: read(RECOVERY_POINT_CHECKPOINT)?,
        high_watermarks: read(HW_CHECKPOINT)?,
        log_starts: read(LOG_START_CHECKPOINT)?,
    })
}
