//! A cluster of real `ferrymq` processes on loopback for end-to-end tests: N nodes, the first
//! `voters` of them controller voters, each with its own ports and data dir, started together
//! (each waits for the quorum), stopped or killed one by one.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use kafka_protocol::messages::metadata_response::MetadataResponseTopic;
use kafka_protocol::messages::{DescribeClusterRequest, MetadataRequest, MetadataResponse};

use crate::delay_proxy::DelayProxy;
use crate::{free_ports, BrokerProcess, RawClient};

/// Cluster tests run one at a time within a test binary: a few 3-node clusters at once would
/// make the 2-core machine itself the fault under test.
static ONE_CLUSTER_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A running cluster.
pub struct Cluster {
    _slot: std::sync::MutexGuard<'static, ()>,
    /// Node i (1-based) is `nodes[i - 1]`.
    pub nodes: Vec<BrokerProcess>,
    /// The `--controller-voters` value.
    pub voters: String,
    /// The proxies in front of some nodes' controller listeners, by node id.
    proxies: Vec<(usize, DelayProxy)>,
}

impl Cluster {
    /// Starts `n` nodes, the first `voters` of them voters, with `overrides` on every node, and
    /// waits until all serve.
    pub fn start(n: usize, voters: usize, overrides: &[&str]) -> Result<Cluster> {
        Cluster::start_with_proxies(n, voters, overrides, &[])
    }

    /// As `start`, with the controller address of each node in `proxied` (the one every other
    /// node uses for its Raft RPCs) behind a `DelayProxy` (`proxy`), which starts without delay.
    pub fn start_with_proxies(
        n: usize,
        voters: usize,
        overrides: &[&str],
        proxied: &[usize],
    ) -> Result<Cluster> {
        let slot = ONE_CLUSTER_AT_A_TIME
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Kafka and controller ports chosen together: a Kafka port picked later, after these
        // were released, could be one of them (CI once got node 1's Kafka port equal to node
        // 3's controller port, and node 1 failed to bind).
        let ports = free_ports(2 * n);
        let (ctl_ports, kafka_ports) = ports.split_at(n);
        let mut proxies = Vec::new();
        for &id in proxied {
            let target = format!("127.0.0.1:{}", ctl_ports[id - 1]).parse()?;
            proxies.push((id, DelayProxy::start(target)?));
        }
        let voter_list: Vec<String> = (0..voters.min(n))
            .map(|i| match proxies.iter().find(|(id, _)| *id == i + 1) {
                Some((_, p)) => format!("{}@{}", i + 1, p.addr),
                None => format!("{}@127.0.0.1:{}", i + 1, ctl_ports[i]),
            })
            .collect();
        let voters = voter_list.join(",");
        let mut nodes = Vec::new();
        for (i, port) in ctl_ports.iter().enumerate() {
            let args = vec![
                "--node-id".into(),
                (i + 1).to_string(),
                "--controller-listen".into(),
                format!("127.0.0.1:{port}"),
                "--controller-voters".into(),
                voters.clone(),
            ];
            let mut b = BrokerProcess::prepare(overrides, args)?;
            b.addr = format!("127.0.0.1:{}", kafka_ports[i]);
            b.launch()?;
            nodes.push(b);
        }
        for b in &mut nodes {
            b.wait_serving(Duration::from_secs(60))?;
        }
        Ok(Cluster {
            _slot: slot,
            nodes,
            voters,
            proxies,
        })
    }

    /// The proxy in front of node `id`'s controller listener (`start_with_proxies`).
    pub fn proxy(&self, id: usize) -> &DelayProxy {
        &self
            .proxies
            .iter()
            .find(|(n, _)| *n == id)
            .unwrap_or_else(|| panic!("node {id} has no proxy"))
            .1
    }

    /// Node `id` (1-based).
    pub fn node(&mut self, id: usize) -> &mut BrokerProcess {
        &mut self.nodes[id - 1]
    }

    /// Every node's Kafka address, comma-separated.
    pub fn bootstrap(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.addr.clone())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Metadata (all topics) as node `id` answers it.
    pub async fn metadata(&self, id: usize) -> Result<MetadataResponse> {
        let mut c = RawClient::connect(&self.nodes[id - 1].addr).await?;
        c.call(&MetadataRequest::default().with_topics(None), 12)
            .await
    }

    /// The fenced brokers as node `id` knows them (DescribeCluster v2 with fenced brokers;
    /// Metadata lists fenced brokers too, so it cannot tell).
    pub async fn fenced(&self, id: usize) -> Result<Vec<i32>> {
        let mut c = RawClient::connect(&self.nodes[id - 1].addr).await?;
        let r = c
            .call(
                &DescribeClusterRequest::default().with_include_fenced_brokers(true),
                2,
            )
            .await?;
        Ok(r.brokers
            .iter()
            .filter(|b| b.is_fenced)
            .map(|b| b.broker_id.0)
            .collect())
    }

    /// Waits until node `via`'s fenced brokers are `want`, or fails after `timeout`.
    pub async fn wait_fenced(&self, via: usize, want: &[i32], timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let now = self.fenced(via).await.ok();
            if now.as_deref() == Some(want) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("fenced brokers {now:?}, not {want:?}, after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The active controller as node `id` knows it (DescribeCluster for controllers).
    pub async fn active_controller(&self, id: usize) -> Result<i32> {
        let mut c = RawClient::connect(&self.nodes[id - 1].addr).await?;
        let r = c
            .call(&DescribeClusterRequest::default().with_endpoint_type(2), 2)
            .await?;
        Ok(r.controller_id.0)
    }

    /// Waits until `check` holds for the metadata node `via` answers, or fails after `timeout`.
    pub async fn wait_metadata(
        &self,
        via: usize,
        timeout: Duration,
        check: impl Fn(&MetadataResponse) -> bool,
    ) -> Result<MetadataResponse> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(md) = self.metadata(via).await {
                if check(&md) {
                    return Ok(md);
                }
                if Instant::now() > deadline {
                    bail!(
                        "metadata condition not met within {timeout:?}; last: {:?}",
                        summary(&md)
                    );
                }
            } else if Instant::now() > deadline {
                bail!("node {via} did not answer Metadata within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The leader of `topic`-`partition` as node `via` sees it.
    pub async fn leader(&self, via: usize, topic: &str, partition: i32) -> Result<i32> {
        let md = self.metadata(via).await?;
        let t = find_topic(&md, topic).with_context(|| format!("no topic {topic}"))?;
        let p = t
            .partitions
            .iter()
            .find(|p| p.partition_index == partition)
            .context("no such partition")?;
        Ok(p.leader_id.0)
    }
}

/// The topic named `name` in a Metadata response.
pub fn find_topic<'a>(md: &'a MetadataResponse, name: &str) -> Option<&'a MetadataResponseTopic> {
    md.topics
        .iter()
        .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == name))
}

/// Brokers and partition leaders/ISRs, for failure messages.
pub fn summary(md: &MetadataResponse) -> String {
    let brokers: Vec<i32> = md.brokers.iter().map(|b| b.node_id.0).collect();
    let parts: Vec<String> = md
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(move |p| {
                format!(
                    "{}-{} leader {} isr {:?}",
                    t.name.as_ref().map(|n| n.0.as_str()).unwrap_or("?"),
                    p.partition_index,
                    p.leader_id.0,
                    p.isr_nodes.iter().map(|b| b.0).collect::<Vec<_>>()
                )
            })
        })
        .collect();
    format!("brokers {brokers:?}; {}", parts.join("; "))
}
