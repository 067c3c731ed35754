//! `ferrymq cluster status`: brokers (live or fenced), the active controller and every
//! partition's leader, replicas and ISR, asked of any broker over the Kafka protocol
//! (DescribeCluster for brokers and controllers, Metadata for partitions).

use std::time::Duration;

use anyhow::{bail, Result};
use ferrymq_kafka::client::Client;
use kafka_protocol::messages::{DescribeClusterRequest, MetadataRequest};

/// Connects to the first reachable address of a comma-separated list.
async fn connect_any(bootstrap: &str) -> Result<Client> {
    let mut last = None;
    for addr in bootstrap
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
    {
        match Client::connect(addr, Duration::from_secs(10)).await {
            Ok(c) => return Ok(c),
            Err(e) => last = Some(anyhow::Error::new(e).context(format!("cannot reach {addr}"))),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no bootstrap address given")))
}

/// Prints the cluster's status as seen from `bootstrap`. Exit status: 0 when every broker is
/// live and every partition has a leader, 2 otherwise (so scripts can wait for health).
pub async fn status(bootstrap: &str) -> Result<i32> {
    let mut c = connect_any(bootstrap).await?;
    let brokers = c
        .call(
            &DescribeClusterRequest::default()
                .with_endpoint_type(1)
                .with_include_fenced_brokers(true),
            2,
        )
        .await?;
    if brokers.error_code != 0 {
        bail!("DescribeCluster failed with error {}", brokers.error_code);
    }
    let controllers = c
        .call(&DescribeClusterRequest::default().with_endpoint_type(2), 2)
        .await?;
    let md = c
        .call(&MetadataRequest::default().with_topics(None), 12)
        .await?;
    println!("cluster {}", brokers.cluster_id.as_str());
    let active = controllers.controller_id.0;
    let voters: Vec<String> = controllers
        .brokers
        .iter()
        .map(|v| {
            format!(
                "{}@{}:{}{}",
                v.broker_id.0,
                v.host.as_str(),
                v.port,
                if v.broker_id.0 == active {
                    " (active)"
                } else {
                    ""
                }
            )
        })
        .collect();
    println!("controller quorum: {}", voters.join(", "));
    println!("\nbrokers:");
    let mut healthy = true;
    for b in &brokers.brokers {
        let state = if b.is_fenced { "fenced" } else { "live" };
        healthy &= !b.is_fenced;
        let rack = b
            .rack
            .as_ref()
            .map(|r| format!(" rack={}", r.as_str()))
            .unwrap_or_default();
        let ctl = if b.broker_id.0 == active {
            " controller"
        } else {
            ""
        };
        println!(
            "  {:>4}  {}:{}  {state}{ctl}{rack}",
            b.broker_id.0,
            b.host.as_str(),
            b.port
        );
    }
    println!(
        "\n{:<32} {:>9} {:>7} {:<16} {:<16}",
        "topic", "partition", "leader", "replicas", "isr"
    );
    let mut topics: Vec<_> = md.topics.iter().collect();
    topics.sort_by(|a, b| {
        a.name
            .as_ref()
            .map(|n| n.0.as_str())
            .cmp(&b.name.as_ref().map(|n| n.0.as_str()))
    });
    for t in topics {
        let name = t.name.as_ref().map(|n| n.0.as_str()).unwrap_or("?");
        let mut parts: Vec<_> = t.partitions.iter().collect();
        parts.sort_by_key(|p| p.partition_index);
        for p in parts {
            let join = |v: &[kafka_protocol::messages::BrokerId]| {
                v.iter()
                    .map(|b| b.0.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let leader = if p.leader_id.0 < 0 {
                healthy = false;
                "none".to_string()
            } else {
                p.leader_id.0.to_string()
            };
            println!(
                "{:<32} {:>9} {:>7} {:<16} {:<16}",
                name,
                p.partition_index,
                leader,
                join(&p.replica_nodes),
                join(&p.isr_nodes)
            );
        }
    }
    Ok(if healthy { 0 } else { 2 })
}
