//! The cluster under attack: N `ferrymq` processes (the first three controller voters), each in
//! its own network namespace at 10.77.0.<i>:9092 (controller port 9192) or on loopback ports,
//! with data dirs and logs under the run's directory. One node's data dir may be a small tmpfs
//! (the disk-full fault fills it). It answers the questions the nemesis and the checker ask:
//! who leads what, who is the active controller, is everything healthy again, do the replicas
//! hold the same committed bytes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    DescribeClusterRequest, MetadataRequest, MetadataResponse, ProduceRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::net::{node_ip, node_ns, Network};
use crate::{free_port, BrokerProcess, RawClient};

/// Longest one status call to a node may take (a paused node never answers).
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Header bytes before the CRC-covered part of a record batch (attributes onwards).
const CRC_COVERED_FROM: usize = 21;

/// One partition as a node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionView {
    /// Partition index.
    pub partition: i32,
    /// Leader node id, -1 for none.
    pub leader: i32,
    /// In-sync replicas.
    pub isr: Vec<i32>,
    /// Assigned replicas.
    pub replicas: Vec<i32>,
}

/// The running cluster. Nodes are declared before the network: they are killed before the
/// namespaces they run in are removed.
pub struct ChaosCluster {
    /// Node i (1-based) is `nodes[i - 1]`.
    pub nodes: Vec<BrokerProcess>,
    /// Nodes the nemesis stopped on purpose (not a crash when found not running).
    pub down: Vec<bool>,
    /// Nodes paused with SIGSTOP.
    pub paused: Vec<bool>,
    /// While set, `restart` starts a node without waiting for it to serve and notes it in
    /// `restarted_unready`: a node restarted inside a network fault may be unable to reach the
    /// active controller until the network heals, and it is judged after that.
    pub defer_ready: bool,
    /// Nodes restarted under `defer_ready`, not yet seen serving.
    pub restarted_unready: Vec<usize>,
    /// The node whose data dir is a tmpfs, with its mount point.
    pub tmpfs: Option<(usize, PathBuf)>,
    /// How the nodes are connected.
    pub net: Network,
}

impl ChaosCluster {
    /// Starts `n` nodes under `dir` with `overrides` on each; node `tmpfs_node` (if any, and if
    /// running as root) keeps its data on a tmpfs of `tmpfs_mib` MiB.
    pub fn start(
        dir: &Path,
        n: usize,
        overrides: &[String],
        tmpfs: Option<(usize, u64)>,
    ) -> Result<ChaosCluster> {
        let net = Network::create(n);
        let in_ns = net.faults_available();
        let addrs: Vec<(String, String)> = (1..=n)
            .map(|i| {
                if in_ns {
                    (
                        format!("{}:9092", node_ip(i)),
                        format!("{}:9192", node_ip(i)),
                    )
                } else {
                    (
                        format!("127.0.0.1:{}", free_port()),
                        format!("127.0.0.1:{}", free_port()),
                    )
                }
            })
            .collect();
        let voters: Vec<String> = (1..=n.min(3))
            .map(|i| format!("{i}@{}", addrs[i - 1].1))
            .collect();
        let voters = voters.join(",");
        let mut nodes = Vec::new();
        for (i, (kafka, ctl)) in addrs.iter().enumerate() {
            let id = i + 1;
            let args = vec![
                "--node-id".into(),
                id.to_string(),
                "--advertised-listener".into(),
                kafka.clone(),
                "--controller-listen".into(),
                ctl.clone(),
                "--controller-voters".into(),
                voters.clone(),
            ];
            let ns = in_ns.then(|| node_ns(id));
            let node_dir = dir.join(format!("node-{id}"));
            nodes.push(BrokerProcess::prepare_in(
                &node_dir,
                kafka.clone(),
                ns,
                overrides,
                args,
            )?);
        }
        let mut c = ChaosCluster {
            down: vec![false; n],
            paused: vec![false; n],
            defer_ready: false,
            restarted_unready: Vec::new(),
            tmpfs: None,
            nodes,
            net,
        };
        if let Some((node, mib)) = tmpfs.filter(|_| running_as_root()) {
            let mount_point = c.nodes[node - 1].data_dir.clone();
            std::fs::create_dir_all(&mount_point)?;
            let size = format!("size={mib}m");
            let ok = Command::new("mount")
                .args(["-t", "tmpfs", "-o", &size, "tmpfs"])
                .arg(&mount_point)
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                c.tmpfs = Some((node, mount_point));
            }
        }
        for b in &mut c.nodes {
            b.launch()?;
        }
        for b in &mut c.nodes {
            b.wait_serving(Duration::from_secs(90))?;
        }
        Ok(c)
    }

    /// The namespaces, when the nodes run in them.
    pub fn namespaces(&self) -> Option<&super::net::Namespaces> {
        match &self.net {
            Network::Namespaces(ns) => Some(ns),
            Network::Loopback { .. } => None,
        }
    }

    /// Number of nodes.
    pub fn size(&self) -> usize {
        self.nodes.len()
    }

    /// Every node's Kafka address, comma-separated.
    pub fn bootstrap(&self) -> String {
        let a: Vec<&str> = self.nodes.iter().map(|n| n.addr.as_str()).collect();
        a.join(",")
    }

    /// Metadata (all topics) as node `id` answers it.
    pub async fn metadata(&self, id: usize) -> Result<MetadataResponse> {
        let addr = self.nodes[id - 1].addr.clone();
        tokio::time::timeout(CALL_TIMEOUT, async move {
            let mut c = RawClient::connect(&addr).await?;
            c.call(&MetadataRequest::default().with_topics(None), 12)
                .await
        })
        .await
        .context("metadata timed out")?
    }

    /// The first answer of a running, unpaused node, trying `prefer` first.
    pub async fn any_metadata(&self, prefer: Option<usize>) -> Result<MetadataResponse> {
        let mut order: Vec<usize> = prefer.into_iter().collect();
        order.extend(1..=self.size());
        for id in order {
            if self.down[id - 1] || self.paused[id - 1] {
                continue;
            }
            if let Ok(md) = self.metadata(id).await {
                return Ok(md);
            }
        }
        bail!("no node answered Metadata")
    }

    /// Partitions of `topic` as node `id` (or any node) sees them.
    pub async fn partitions(&self, topic: &str, via: Option<usize>) -> Result<Vec<PartitionView>> {
        let md = match via {
            Some(id) => self.metadata(id).await?,
            None => self.any_metadata(None).await?,
        };
        Ok(views(&md, topic))
    }

    /// The active controller as any node knows it.
    pub async fn active_controller(&self) -> Result<usize> {
        for id in 1..=self.size() {
            if self.down[id - 1] || self.paused[id - 1] {
                continue;
            }
            let addr = self.nodes[id - 1].addr.clone();
            let r = tokio::time::timeout(CALL_TIMEOUT, async move {
                let mut c = RawClient::connect(&addr).await?;
                c.call(&DescribeClusterRequest::default().with_endpoint_type(2), 2)
                    .await
            })
            .await;
            if let Ok(Ok(r)) = r {
                if r.controller_id.0 > 0 {
                    return Ok(r.controller_id.0 as usize);
                }
            }
        }
        bail!("no node knows an active controller")
    }

    /// Why the cluster is not healthy yet (`None` when it is): every node runs and answers,
    /// and every node sees every partition of `topics` led with a full ISR of `rf`.
    pub async fn unhealthy(&mut self, topics: &[&str], rf: usize) -> Option<String> {
        for id in 1..=self.size() {
            if !self.nodes[id - 1].is_running() {
                return Some(format!("node {id} is not running"));
            }
            let md = match self.metadata(id).await {
                Ok(md) => md,
                Err(e) => return Some(format!("node {id} does not answer: {e:#}")),
            };
            for t in topics {
                let v = views(&md, t);
                if v.is_empty() {
                    return Some(format!("node {id} does not know {t}"));
                }
                if let Some(p) = v.iter().find(|p| p.leader <= 0 || p.isr.len() < rf) {
                    return Some(format!("node {id} sees {t}-{} as {p:?}", p.partition));
                }
            }
        }
        None
    }

    /// Waits until `unhealthy` says nothing, or fails with its last reason after `timeout`.
    pub async fn wait_healthy(
        &mut self,
        topics: &[&str],
        rf: usize,
        timeout: Duration,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let Some(why) = self.unhealthy(topics, rf).await else {
                return Ok(());
            };
            if Instant::now() > deadline {
                bail!("not healthy after {timeout:?}: {why}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// SIGKILL node `id` (marked down).
    pub fn kill(&mut self, id: usize) {
        self.down[id - 1] = true;
        self.paused[id - 1] = false;
        self.nodes[id - 1].kill9();
    }

    /// SIGTERM node `id` and wait for it to exit (marked down); its exit code.
    pub fn stop(&mut self, id: usize) -> Result<i32> {
        self.down[id - 1] = true;
        self.nodes[id - 1].stop()
    }

    /// Starts node `id` again and waits until it serves.
    pub fn restart(&mut self, id: usize) -> Result<()> {
        let node = &mut self.nodes[id - 1];
        if node.is_running() {
            node.kill9();
        }
        node.launch()?;
        self.down[id - 1] = false;
        if self.defer_ready {
            self.restarted_unready.push(id);
            return Ok(());
        }
        self.nodes[id - 1].wait_serving(Duration::from_secs(90))
    }

    /// Waits until every node restarted under `defer_ready` serves; the ones that did not.
    pub fn wait_restarted(&mut self) -> Vec<(usize, anyhow::Error)> {
        let mut failed = Vec::new();
        for id in std::mem::take(&mut self.restarted_unready) {
            if let Err(e) = self.nodes[id - 1].wait_serving(Duration::from_secs(90)) {
                failed.push((id, e));
            }
        }
        failed
    }

    /// SIGSTOP / SIGCONT node `id`.
    pub fn pause(&mut self, id: usize, paused: bool) {
        self.nodes[id - 1].signal(if paused { "STOP" } else { "CONT" });
        self.paused[id - 1] = paused;
    }

    /// Nodes that are not running although the nemesis did not stop them, and nodes whose log
    /// shows a panic.
    pub fn crashed(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        for id in 1..=self.size() {
            let node = &mut self.nodes[id - 1];
            if !self.down[id - 1] && !node.is_running() {
                out.push(format!(
                    "node {id} exited on its own; log {}",
                    node.log_path().display()
                ));
            }
            let log = node.log();
            if let Some(line) = log.lines().find(|l| l.contains("panicked")) {
                out.push(format!("node {id} panicked: {line}"));
            }
        }
        out
    }

    /// Fills node `id`'s tmpfs data dir to the last byte with a filler file.
    pub fn fill_disk(&self) -> Result<PathBuf> {
        use std::io::Write;
        let (_, mount) = self.tmpfs.as_ref().context("no tmpfs node")?;
        let path = mount.join("chaos-filler");
        let mut f = std::fs::File::create(&path)?;
        let chunk = vec![0u8; 1 << 20];
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                // A short write took the last bytes; the next one fails with ENOSPC.
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(28) => break,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(path)
    }

    /// Frees what `fill_disk` took.
    pub fn free_disk(&self) -> Result<()> {
        if let Some((_, mount)) = &self.tmpfs {
            let _ = std::fs::remove_file(mount.join("chaos-filler"));
        }
        Ok(())
    }

    /// Sends one acks=all produce of `value` straight to node `id` for `topic`-`partition`;
    /// the partition's error code.
    pub async fn produce_probe(
        &self,
        id: usize,
        topic: &str,
        partition: i32,
        value: &[u8],
    ) -> Result<i16> {
        let addr = self.nodes[id - 1].addr.clone();
        let records = ferrymq_log::batch::testing::batch(&[value], now_ms());
        let req = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(3_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(partition)
                    .with_records(Some(records))])]);
        let resp = tokio::time::timeout(Duration::from_secs(6), async move {
            let mut c = RawClient::connect(&addr).await?;
            c.call(&req, 9).await
        })
        .await
        .context("produce probe timed out")??;
        resp.responses
            .into_iter()
            .flat_map(|t| t.partition_responses)
            .next()
            .map(|p| p.error_code)
            .context("no partition in the produce answer")
    }

    /// Flips one byte inside the CRC-covered part of a batch in the middle of a closed
    /// (not the last) segment of `topic`-`partition` on node `id`, which must be stopped.
    /// Picks among closed segments with `pick`. Returns what was done, or `None` if the replica
    /// has no closed segment yet.
    pub fn corrupt_closed_segment(
        &self,
        id: usize,
        topic: &str,
        partition: i32,
        pick: u64,
    ) -> Result<Option<String>> {
        let dir = self.nodes[id - 1]
            .data_dir
            .join(format!("{topic}-{partition}"));
        let mut logs = segment_files(&dir)?;
        logs.pop(); // the active segment
        if logs.is_empty() {
            return Ok(None);
        }
        let seg = &logs[(pick % logs.len() as u64) as usize];
        let bytes = std::fs::read(seg)?;
        let batches = batch_spans(&bytes);
        if batches.is_empty() {
            return Ok(None);
        }
        let (pos, len, base) = batches[batches.len() / 2];
        let at = pos + CRC_COVERED_FROM + (len - CRC_COVERED_FROM) / 2;
        let mut changed = bytes;
        changed[at] ^= 0x5a;
        std::fs::write(seg, &changed)?;
        Ok(Some(format!(
            "node {id}: flipped byte {at} of {} (batch at offset {base}, bytes {pos}..{})",
            seg.display(),
            pos + len
        )))
    }
}

impl Drop for ChaosCluster {
    fn drop(&mut self) {
        for (i, n) in self.nodes.iter_mut().enumerate() {
            if self.paused[i] {
                n.signal("CONT");
            }
            n.kill9();
        }
        if let Some((_, mount)) = &self.tmpfs {
            let _ = Command::new("umount").arg(mount).status();
        }
    }
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

/// The partitions of `topic` in a Metadata response.
pub fn views(md: &MetadataResponse, topic: &str) -> Vec<PartitionView> {
    let Some(t) = md
        .topics
        .iter()
        .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == topic))
    else {
        return Vec::new();
    };
    let mut v: Vec<PartitionView> = t
        .partitions
        .iter()
        .map(|p| PartitionView {
            partition: p.partition_index,
            leader: p.leader_id.0,
            isr: p.isr_nodes.iter().map(|b| b.0).collect(),
            replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
        })
        .collect();
    v.sort_by_key(|p| p.partition);
    v
}

/// The `.log` files of a partition directory, by base offset.
fn segment_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    Ok(logs)
}

/// Whole batches at the front of a segment's bytes: (position, length, base offset).
fn batch_spans(bytes: &[u8]) -> Vec<(usize, usize, i64)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 12 <= bytes.len() {
        let base = i64::from_be_bytes(bytes[pos..pos + 8].try_into().expect("8 bytes"));
        let len = i32::from_be_bytes(bytes[pos + 8..pos + 12].try_into().expect("4 bytes"));
        let total = 12 + len.max(0) as usize;
        if len <= 0 || pos + total > bytes.len() || total <= CRC_COVERED_FROM {
            break;
        }
        out.push((pos, total, base));
        pos += total;
    }
    out
}

/// One stored batch, as compared between replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StoredBatch {
    base: i64,
    last: i64,
    bytes_hash: u64,
}

/// The batches of one replica's partition directory, wholly below `below`.
fn replica_batches(dir: &Path, below: i64) -> Result<Vec<StoredBatch>> {
    use std::hash::{Hash, Hasher};
    let mut out = Vec::new();
    for seg in segment_files(dir)? {
        let bytes = std::fs::read(&seg)?;
        for (pos, len, base) in batch_spans(&bytes) {
            let delta = i32::from_be_bytes(bytes[pos + 23..pos + 27].try_into().expect("4 bytes"));
            let last = base + delta as i64;
            if last >= below {
                return Ok(out);
            }
            let mut h = std::collections::hash_map::DefaultHasher::new();
            bytes[pos..pos + len].hash(&mut h);
            out.push(StoredBatch {
                base,
                last,
                bytes_hash: h.finish(),
            });
        }
    }
    Ok(out)
}

/// Compares every replica of every partition of `topic` below the leader's high watermark
/// `hws[p]`: each must hold exactly the same batches, byte for byte, covering `[0, hw)`.
pub fn compare_replicas(
    c: &ChaosCluster,
    topic: &str,
    views: &[PartitionView],
    hws: &BTreeMap<i32, i64>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for p in views {
        let Some(&hw) = hws.get(&p.partition) else {
            problems.push(format!("{topic}-{}: no high watermark", p.partition));
            continue;
        };
        let mut first: Option<(i32, Vec<StoredBatch>)> = None;
        for r in &p.replicas {
            let dir = c.nodes[*r as usize - 1]
                .data_dir
                .join(format!("{topic}-{}", p.partition));
            let batches = match replica_batches(&dir, hw) {
                Ok(b) => b,
                Err(e) => {
                    problems.push(format!("{topic}-{} on node {r}: {e:#}", p.partition));
                    continue;
                }
            };
            let covered = batches.last().map_or(0, |b| b.last + 1);
            let dense = batches.windows(2).all(|w| w[1].base == w[0].last + 1)
                && batches.first().is_none_or(|b| b.base == 0);
            if covered != hw || !dense {
                problems.push(format!(
                    "{topic}-{} on node {r}: committed prefix covers [0, {covered}) (dense: {dense}), high watermark {hw}",
                    p.partition
                ));
            }
            match &first {
                None => first = Some((*r, batches)),
                Some((r0, b0)) => {
                    if let Some(i) =
                        (0..b0.len().min(batches.len())).find(|i| b0[*i] != batches[*i])
                    {
                        problems.push(format!(
                            "{topic}-{}: nodes {r0} and {r} differ at the batch of offset {} ({:?} vs {:?})",
                            p.partition, b0[i].base, b0[i], batches[i]
                        ));
                    }
                }
            }
        }
    }
    problems
}
