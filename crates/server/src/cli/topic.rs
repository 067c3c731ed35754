//! `ferrymq topic create|list|describe|delete|alter` over the Kafka protocol (CreateTopics,
//! Metadata, ListOffsets, DescribeConfigs, DeleteTopics, CreatePartitions,
//! IncrementalAlterConfigs), as any Kafka admin client would.

use anyhow::Result;
use ferrymq_kafka::client::cluster::leaders;
use ferrymq_kafka::client::ops::{EARLIEST, LATEST};
use ferrymq_kafka::client::ClusterClient;
use ferrymq_kafka::metrics::error_name;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::{failed, key_value, Bootstrap};

/// Config resource type of a topic.
const RESOURCE_TOPIC: i8 = 2;

/// `topic` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        /// Topic name.
        name: String,
        /// Partitions (default: the broker's num.partitions).
        #[arg(long, short = 'p')]
        partitions: Option<i32>,
        /// Replication factor (default: a matching policy's, else default.replication.factor).
        #[arg(long, short = 'r')]
        replication_factor: Option<i16>,
        /// Topic config NAME=VALUE (repeatable), e.g. retention.ms=86400000.
        #[arg(long = "config", short = 'c', value_parser = key_value)]
        configs: Vec<(String, String)>,
        #[command(flatten)]
        bootstrap: Bootstrap,
    },
    /// List topics with their partition count and replication factor.
    List {
        #[command(flatten)]
        bootstrap: Bootstrap,
    },
    /// A topic's partitions (leader, replicas, ISR, log start, high watermark) and configs.
    Describe {
        /// Topic name.
        name: String,
        #[command(flatten)]
        bootstrap: Bootstrap,
    },
    /// Delete a topic and its data.
    Delete {
        /// Topic name.
        name: String,
        #[command(flatten)]
        bootstrap: Bootstrap,
    },
    /// Grow a topic's partitions or change its configs.
    Alter {
        /// Topic name.
        name: String,
        /// New (larger) partition count.
        #[arg(long, short = 'p')]
        partitions: Option<i32>,
        /// Set a topic config NAME=VALUE (repeatable).
        #[arg(long = "config", short = 'c', value_parser = key_value)]
        configs: Vec<(String, String)>,
        /// Reset a topic config to the broker default (repeatable).
        #[arg(long = "delete-config")]
        delete_configs: Vec<String>,
        #[command(flatten)]
        bootstrap: Bootstrap,
    },
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn refused(what: &str, code: i16, message: Option<&StrBytes>) -> anyhow::Error {
    let detail = message
        .map(|m| format!(": {}", m.as_str()))
        .unwrap_or_default();
    failed(format!("{what} failed with {}{detail}", error_name(code)))
}

/// Runs a `topic` subcommand.
pub async fn run(cmd: TopicCommand) -> Result<()> {
    match cmd {
        TopicCommand::Create {
            name,
            partitions,
            replication_factor,
            configs,
            bootstrap,
        } => {
            create(
                &mut bootstrap.connect().await?,
                &name,
                partitions,
                replication_factor,
                configs,
            )
            .await
        }
        TopicCommand::List { bootstrap } => list(&mut bootstrap.connect().await?).await,
        TopicCommand::Describe { name, bootstrap } => {
            describe(&mut bootstrap.connect().await?, &name).await
        }
        TopicCommand::Delete { name, bootstrap } => {
            let mut c = bootstrap.connect().await?;
            let resp = c
                .any()
                .call(
                    &DeleteTopicsRequest::default()
                        .with_topic_names(vec![TopicName(s(&name))])
                        .with_timeout_ms(30_000),
                    4,
                )
                .await?;
            match resp.responses.first() {
                Some(r) if r.error_code != 0 => Err(refused(
                    &format!("deleting {name}"),
                    r.error_code,
                    r.error_message.as_ref(),
                )),
                _ => {
                    println!("topic {name} deleted");
                    Ok(())
                }
            }
        }
        TopicCommand::Alter {
            name,
            partitions,
            configs,
            delete_configs,
            bootstrap,
        } => {
            alter(
                &mut bootstrap.connect().await?,
                &name,
                partitions,
                configs,
                delete_configs,
            )
            .await
        }
    }
}

async fn create(
    c: &mut ClusterClient,
    name: &str,
    partitions: Option<i32>,
    rf: Option<i16>,
    configs: Vec<(String, String)>,
) -> Result<()> {
    let topic = CreatableTopic::default()
        .with_name(TopicName(s(name)))
        .with_num_partitions(partitions.unwrap_or(-1))
        .with_replication_factor(rf.unwrap_or(-1))
        .with_configs(
            configs
                .iter()
                .map(|(k, v)| {
                    CreatableTopicConfig::default()
                        .with_name(s(k))
                        .with_value(Some(s(v)))
                })
                .collect(),
        );
    let resp = c
        .any()
        .call(
            &CreateTopicsRequest::default()
                .with_topics(vec![topic])
                .with_timeout_ms(30_000),
            5,
        )
        .await?;
    let r = resp
        .topics
        .first()
        .ok_or_else(|| failed("empty CreateTopics answer"))?;
    if r.error_code != 0 {
        return Err(refused(
            &format!("creating {name}"),
            r.error_code,
            r.error_message.as_ref(),
        ));
    }
    println!(
        "topic {name} created: {} partitions, replication factor {}",
        r.num_partitions, r.replication_factor
    );
    Ok(())
}

async fn list(c: &mut ClusterClient) -> Result<()> {
    let md = c.metadata(None).await?;
    let mut rows: Vec<(String, usize, usize)> = md
        .topics
        .iter()
        .map(|t| {
            (
                t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default(),
                t.partitions.len(),
                t.partitions.first().map_or(0, |p| p.replica_nodes.len()),
            )
        })
        .collect();
    rows.sort();
    println!(
        "{:<40} {:>10} {:>18}",
        "topic", "partitions", "replication-factor"
    );
    for (name, parts, rf) in rows {
        println!("{name:<40} {parts:>10} {rf:>18}");
    }
    Ok(())
}

async fn describe(c: &mut ClusterClient, name: &str) -> Result<()> {
    let md = c.metadata(Some(&[name.to_string()])).await?;
    let topic = md
        .topics
        .iter()
        .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == name));
    let Some(topic) = topic.filter(|t| t.error_code == 0) else {
        return Err(failed(format!("unknown topic {name}")));
    };
    println!(
        "topic {name}  id {}  partitions {}",
        topic.topic_id,
        topic.partitions.len()
    );
    let ids = |v: &[BrokerId]| {
        if v.is_empty() {
            return "-".to_string();
        }
        v.iter()
            .map(|b| b.0.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    println!(
        "{:>9} {:>7} {:>6} {:<12} {:<12} {:<10} {:>12} {:>14}",
        "partition", "leader", "epoch", "replicas", "isr", "offline", "log-start", "high-watermark"
    );
    let by_partition = leaders(&md, name).unwrap_or_default();
    let mut parts: Vec<_> = topic.partitions.iter().collect();
    parts.sort_by_key(|p| p.partition_index);
    for p in parts {
        let leader = by_partition
            .iter()
            .find(|(i, _)| *i == p.partition_index)
            .and_then(|(_, l)| *l);
        let (start, hw) = match leader {
            Some(l) => (
                offset_text(c.list_offset(l, name, p.partition_index, EARLIEST).await?),
                offset_text(c.list_offset(l, name, p.partition_index, LATEST).await?),
            ),
            None => ("-".to_string(), "-".to_string()),
        };
        println!(
            "{:>9} {:>7} {:>6} {:<12} {:<12} {:<10} {:>12} {:>14}",
            p.partition_index,
            leader.map_or("none".to_string(), |l| l.to_string()),
            p.leader_epoch,
            ids(&p.replica_nodes),
            ids(&p.isr_nodes),
            ids(&p.offline_replicas),
            start,
            hw
        );
    }
    let cfg = c
        .any()
        .call(
            &DescribeConfigsRequest::default().with_resources(vec![
                DescribeConfigsResource::default()
                    .with_resource_type(RESOURCE_TOPIC)
                    .with_resource_name(s(name))
                    .with_configuration_keys(None),
            ]),
            4,
        )
        .await?;
    let overrides: Vec<String> = cfg
        .results
        .iter()
        .flat_map(|r| r.configs.iter())
        // Source 1: set on the topic (DYNAMIC_TOPIC_CONFIG).
        .filter(|e| e.config_source == 1)
        .map(|e| {
            format!(
                "{}={}",
                e.name.as_str(),
                e.value.as_ref().map(|v| v.as_str()).unwrap_or("")
            )
        })
        .collect();
    println!(
        "configs: {}",
        if overrides.is_empty() {
            "(all defaults)".to_string()
        } else {
            overrides.join(" ")
        }
    );
    Ok(())
}

fn offset_text(r: Result<i64, ferrymq_kafka::client::ops::PartitionError>) -> String {
    match r {
        Ok(o) => o.to_string(),
        Err(e) => error_name(e.code),
    }
}

async fn alter(
    c: &mut ClusterClient,
    name: &str,
    partitions: Option<i32>,
    configs: Vec<(String, String)>,
    delete_configs: Vec<String>,
) -> Result<()> {
    if partitions.is_none() && configs.is_empty() && delete_configs.is_empty() {
        return Err(failed(
            "nothing to change: give --partitions, --config or --delete-config",
        ));
    }
    if let Some(count) = partitions {
        let resp = c
            .any()
            .call(
                &CreatePartitionsRequest::default()
                    .with_topics(vec![CreatePartitionsTopic::default()
                        .with_name(TopicName(s(name)))
                        .with_count(count)
                        .with_assignments(None)])
                    .with_timeout_ms(30_000),
                1,
            )
            .await?;
        if let Some(r) = resp.results.first().filter(|r| r.error_code != 0) {
            return Err(refused(
                &format!("growing {name}"),
                r.error_code,
                r.error_message.as_ref(),
            ));
        }
        println!("topic {name} now has {count} partitions");
    }
    if !configs.is_empty() || !delete_configs.is_empty() {
        let mut ops: Vec<AlterableConfig> = configs
            .iter()
            .map(|(k, v)| {
                AlterableConfig::default()
                    .with_name(s(k))
                    .with_config_operation(0)
                    .with_value(Some(s(v)))
            })
            .collect();
        ops.extend(delete_configs.iter().map(|k| {
            AlterableConfig::default()
                .with_name(s(k))
                .with_config_operation(1)
        }));
        let resp = c
            .any()
            .call(
                &IncrementalAlterConfigsRequest::default().with_resources(vec![
                    AlterConfigsResource::default()
                        .with_resource_type(RESOURCE_TOPIC)
                        .with_resource_name(s(name))
                        .with_configs(ops),
                ]),
                0,
            )
            .await?;
        if let Some(r) = resp.responses.first().filter(|r| r.error_code != 0) {
            return Err(refused(
                &format!("changing configs of {name}"),
                r.error_code,
                r.error_message.as_ref(),
            ));
        }
        println!("topic {name} configs changed");
    }
    Ok(())
}
