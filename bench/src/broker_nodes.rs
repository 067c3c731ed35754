//! The `ferrymq serve` processes of the cluster benchmark: a single node, or a cluster of N
//! nodes that are all controller voters, each on free loopback ports with its own data
//! directory and log. A node is ready once its log says "FerryMQ broker ready" (it has
//! registered with the controller and caught up), as in `tests/src/cluster.rs`. Nodes are
//! killed by the PID of the child this process started, never by name, and all of them when
//! dropped.

use std::fmt;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::child_process::free_loopback_addr;

/// The line a node logs once it serves clients.
const READY_LINE: &str = "FerryMQ broker ready";

/// What this tool writes into a node's log before each start, so that a restart waits for
/// its own ready line and not an earlier start's.
const LAUNCH_MARKER: &str = "=== ferrymq-bench: starting";

/// How long a node may take to log that it is ready, at start and after a restart (a
/// restarted node replays its log and catches up first).
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How often a starting node's log is read.
const READY_POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Lines of a node's log shown in an error.
const LOG_TAIL_LINES: usize = 20;

/// A node's id, as in `--node-id` and in Metadata (Kafka's broker id).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub i32);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One `ferrymq serve` process, which can be killed and started again on the same data.
pub struct BrokerNode {
    /// Its node id.
    id: NodeId,
    /// The broker binary.
    bin: PathBuf,
    /// Arguments after `serve`; the same at every start.
    args: Vec<String>,
    /// Kafka listener.
    addr: SocketAddr,
    /// Standard output and error of every start, appended.
    log_path: PathBuf,
    /// The running process, if any.
    child: Option<Child>,
}

impl BrokerNode {
    /// Starts the process and waits until it logs that it is ready.
    pub async fn start(&mut self) -> anyhow::Result<()> {
        self.launch()?;
        self.wait_ready().await
    }

    /// Starts the process without waiting.
    fn launch(&mut self) -> anyhow::Result<()> {
        assert!(self.child.is_none(), "node {} is already running", self.id);
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .with_context(|| format!("opening {}", self.log_path.display()))?;
        writeln!(log, "{LAUNCH_MARKER} node {}", self.id)?;
        let child = Command::new(&self.bin)
            .arg("serve")
            // Several nodes on one machine: each takes a free admin port, not the default.
            .args(["--admin-listen", "127.0.0.1:0"])
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting node {}: {} serve", self.id, self.bin.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// Waits until the current launch has logged its ready line: the log is appended to
    /// across restarts, so only what follows the last launch marker counts.
    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if since_last_launch(&self.log()).contains(READY_LINE) {
                return Ok(());
            }
            self.check_running()?;
            if Instant::now() >= deadline {
                bail!(
                    "node {} did not log {READY_LINE:?} within {READY_TIMEOUT:?}; its log \
                     ends:\n{}",
                    self.id,
                    self.log_tail()
                );
            }
            tokio::time::sleep(READY_POLL_INTERVAL).await;
        }
    }

    /// Sends SIGKILL to this node's process (by the PID of the child started here), reaps it,
    /// and returns the moment the signal had been sent.
    pub fn kill(&mut self) -> anyhow::Result<Instant> {
        let mut child = self
            .child
            .take()
            .with_context(|| format!("node {} is not running", self.id))?;
        child
            .kill()
            .with_context(|| format!("killing node {} (pid {})", self.id, child.id()))?;
        let killed_at = Instant::now();
        child.wait().context("reaping the killed node")?;
        Ok(killed_at)
    }

    /// Its node id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Its Kafka listener.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// An error with the end of the log if the process has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        let Some(child) = self.child.as_mut() else {
            bail!("node {} is not running", self.id);
        };
        if let Some(status) = child.try_wait()? {
            self.child = None;
            bail!(
                "node {} exited ({status}); its log ends:\n{}",
                self.id,
                self.log_tail()
            );
        }
        Ok(())
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let text = self.log();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }
}

/// The part of a log written since the last launch marker (all of it if there is none).
fn since_last_launch(log: &str) -> &str {
    log.rfind(LAUNCH_MARKER).map_or(log, |at| &log[at..])
}

impl Drop for BrokerNode {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGKILL to this child's PID only; its data goes with the work directory.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Where and how to start nodes.
#[derive(Clone, Debug)]
pub struct NodesSpec {
    /// The `ferrymq` binary.
    pub bin: PathBuf,
    /// Holds each node's data directory (`node-<id>`) and log (`node-<id>.log`).
    pub dir: PathBuf,
    /// Settings passed to every node as `--override KEY=VALUE`.
    pub overrides: Vec<String>,
}

/// The nodes of one measurement phase, all killed when dropped.
pub struct Nodes {
    /// Node i (1-based) is `nodes[i - 1]`.
    nodes: Vec<BrokerNode>,
}

impl Nodes {
    /// One node as `ferrymq serve` runs by default: no controller settings, so its own
    /// single-voter quorum.
    pub async fn start_single(spec: &NodesSpec) -> anyhow::Result<Nodes> {
        let mut node = prepare(spec, NodeId(1), Vec::new())?;
        node.start().await?;
        Ok(Nodes { nodes: vec![node] })
    }

    /// `count` nodes, every one a controller voter, started together (each waits for the
    /// quorum) and then waited for one by one.
    pub async fn start_cluster(spec: &NodesSpec, count: i32) -> anyhow::Result<Nodes> {
        assert!(count >= 1, "count={count}");
        let controller_addrs = (0..count)
            .map(|_| free_loopback_addr())
            .collect::<anyhow::Result<Vec<_>>>()?;
        let voters = controller_addrs
            .iter()
            .enumerate()
            .map(|(i, addr)| format!("{}@{addr}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes = Vec::new();
        for (i, controller_addr) in (1..=count).zip(&controller_addrs) {
            let args = vec![
                "--node-id".to_string(),
                i.to_string(),
                "--controller-listen".to_string(),
                controller_addr.to_string(),
                "--controller-voters".to_string(),
                voters.clone(),
            ];
            let mut node = prepare(spec, NodeId(i), args)?;
            node.launch()?;
            nodes.push(node);
        }
        for node in &mut nodes {
            node.wait_ready().await?;
        }
        Ok(Nodes { nodes })
    }

    /// Node `id`.
    pub fn node_mut(&mut self, id: NodeId) -> anyhow::Result<&mut BrokerNode> {
        let index = usize::try_from(id.0 - 1).ok();
        index
            .and_then(|i| self.nodes.get_mut(i))
            .with_context(|| format!("no node {id}"))
    }

    /// The first node's Kafka listener.
    pub fn first_addr(&self) -> SocketAddr {
        self.nodes[0].addr()
    }

    /// Every node's Kafka listener, comma-separated, for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.addr().to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The ids and Kafka listeners of the running nodes.
    pub fn addrs(&self) -> Vec<(NodeId, SocketAddr)> {
        self.nodes
            .iter()
            .filter(|n| n.pid().is_some())
            .map(|n| (n.id(), n.addr()))
            .collect()
    }

    /// The process ids of the running nodes.
    pub fn pids(&self) -> Vec<u32> {
        self.nodes.iter().filter_map(BrokerNode::pid).collect()
    }

    /// An error if any node has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        self.nodes
            .iter_mut()
            .try_for_each(BrokerNode::check_running)
    }
}

/// A node on a free loopback port with its data and log under `spec.dir`, not started.
fn prepare(spec: &NodesSpec, id: NodeId, mut args: Vec<String>) -> anyhow::Result<BrokerNode> {
    let addr = free_loopback_addr()?;
    let data_dir = spec.dir.join(format!("node-{id}"));
    args.extend(["--listen".to_string(), addr.to_string()]);
    args.extend(["--data-dir".to_string(), path_arg(&data_dir)?]);
    for setting in &spec.overrides {
        args.extend(["--override".to_string(), setting.clone()]);
    }
    Ok(BrokerNode {
        id,
        bin: spec.bin.clone(),
        args,
        addr,
        log_path: spec.dir.join(format!("node-{id}.log")),
        child: None,
    })
}

fn path_arg(path: &Path) -> anyhow::Result<String> {
    path.to_str()
        .map(str::to_string)
        .with_context(|| format!("{} is not UTF-8", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_last_launch_counts_as_ready() {
        let log = format!(
            "{LAUNCH_MARKER} node 1\n... {READY_LINE} ...\n{LAUNCH_MARKER} node 1\nreplaying\n"
        );
        assert!(!since_last_launch(&log).contains(READY_LINE));
        let log = format!("{log}... {READY_LINE} ...\n");
        assert!(since_last_launch(&log).contains(READY_LINE));
    }
}
