//! `ferrymq group list|describe|reset-offsets|delete` over the Kafka group APIs (ListGroups,
//! DescribeGroups, OffsetFetch with ListOffsets for lag, OffsetCommit, DeleteGroups). A
//! cluster that does not serve them yet gets exit code 4 and says so.

use std::collections::BTreeMap;

use anyhow::Result;
use ferrymq_kafka::client::cluster::leaders;
use ferrymq_kafka::client::groups::GROUP_APIS;
use ferrymq_kafka::client::ops::{EARLIEST, LATEST};
use ferrymq_kafka::client::ClusterClient;

use super::{failed, Bootstrap};

/// `group` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum GroupCommand {
    /// List consumer groups with their state.
    List {
        #[command(flatten)]
        bootstrap: Bootstrap,
    },
    /// A group's state, members, committed offsets and lag per partition.
    Describe {
        /// Group id.
        group: String,
        #[command(flatten)]
        bootstrap: Bootstrap,
    },
    /// Move a group's committed offsets on a topic (the group must have no active members).
    /// Shows the plan; changes nothing without --execute.
    ResetOffsets {
        /// Group id.
        group: String,
        /// Topic whose offsets move.
        #[arg(long, short = 't')]
        topic: String,
        /// To the log start of each partition.
        #[arg(long, group = "target")]
        to_earliest: bool,
        /// To the high watermark of each partition (skip everything).
        #[arg(long, group = "target")]
        to_latest: bool,
        /// To this offset in every partition.
        #[arg(long, group = "target")]
        to_offset: Option<i64>,
        /// To the first record at or after this time (ms since epoch).
        #[arg(long, group = "target")]
        to_timestamp: Option<i64>,
        /// Commit the new offsets (otherwise only print them).
        #[arg(long)]
        execute: bool,
        #[command(flatten)]
        bootstrap: Bootstrap,
    },
    /// Delete a group and its committed offsets (it must have no active members).
    Delete {
        /// Group id.
        group: String,
        #[command(flatten)]
        bootstrap: Bootstrap,
    },
}

async fn connect(b: &Bootstrap) -> Result<ClusterClient> {
    let c = b.connect().await?;
    c.require(GROUP_APIS, "consumer groups")?;
    Ok(c)
}

async fn coordinator(c: &mut ClusterClient, group: &str) -> Result<i32> {
    c.metadata(None).await?;
    c.coordinator(group)
        .await?
        .map_err(|e| failed(format!("finding the coordinator of {group}: {e}")))
}

/// Runs a `group` subcommand.
pub async fn run(cmd: GroupCommand) -> Result<()> {
    match cmd {
        GroupCommand::List { bootstrap } => {
            let mut c = connect(&bootstrap).await?;
            c.metadata(None).await?;
            let mut groups = Vec::new();
            for id in c.broker_ids() {
                let listed = c
                    .list_groups(id)
                    .await?
                    .map_err(|e| failed(format!("listing groups on broker {id}: {e}")))?;
                groups.extend(listed);
            }
            groups.sort_by(|a, b| a.group_id.cmp(&b.group_id));
            groups.dedup_by(|a, b| a.group_id == b.group_id);
            println!("{:<40} {:<22} {:<10}", "group", "state", "protocol-type");
            for g in groups {
                println!("{:<40} {:<22} {:<10}", g.group_id, g.state, g.protocol_type);
            }
            Ok(())
        }
        GroupCommand::Describe { group, bootstrap } => {
            let mut c = connect(&bootstrap).await?;
            describe(&mut c, &group).await
        }
        GroupCommand::ResetOffsets {
            group,
            topic,
            to_earliest,
            to_latest,
            to_offset,
            to_timestamp,
            execute,
            bootstrap,
        } => {
            let target = match (to_earliest, to_latest, to_offset, to_timestamp) {
                (true, _, _, _) => EARLIEST,
                (_, true, _, _) => LATEST,
                (_, _, Some(o), _) => {
                    return reset(&bootstrap, &group, &topic, None, Some(o), execute).await
                }
                (_, _, _, Some(t)) => t,
                _ => {
                    return Err(failed(
                        "choose one of --to-earliest, --to-latest, --to-offset, --to-timestamp",
                    ))
                }
            };
            reset(&bootstrap, &group, &topic, Some(target), None, execute).await
        }
        GroupCommand::Delete { group, bootstrap } => {
            let mut c = connect(&bootstrap).await?;
            let coord = coordinator(&mut c, &group).await?;
            c.delete_group(coord, &group)
                .await?
                .map_err(|e| failed(format!("deleting group {group}: {e}")))?;
            println!("group {group} deleted");
            Ok(())
        }
    }
}

async fn describe(c: &mut ClusterClient, group: &str) -> Result<()> {
    let coord = coordinator(c, group).await?;
    let g = c
        .describe_group(coord, group)
        .await?
        .map_err(|e| failed(format!("describing group {group}: {e}")))?;
    println!(
        "group {group}  state {}  protocol {}  coordinator {coord}  members {}",
        g.group_state.as_str(),
        g.protocol_data.as_str(),
        g.members.len()
    );
    for m in &g.members {
        println!(
            "  member {}  client {}  host {}",
            m.member_id.as_str(),
            m.client_id.as_str(),
            m.client_host.as_str()
        );
    }
    let committed = c
        .committed(coord, group, None)
        .await?
        .map_err(|e| failed(format!("reading offsets of {group}: {e}")))?;
    let topics: Vec<String> = committed.keys().map(|(t, _)| t.clone()).collect();
    let md = c.metadata(Some(&topics)).await?;
    println!(
        "{:<32} {:>9} {:>16} {:>14} {:>10}",
        "topic", "partition", "committed-offset", "high-watermark", "lag"
    );
    let mut total = 0i64;
    for ((topic, p), offset) in &committed {
        let leader =
            leaders(&md, topic).and_then(|l| l.iter().find(|(i, _)| i == p).and_then(|(_, l)| *l));
        let hw = match leader {
            Some(l) => c.list_offset(l, topic, *p, LATEST).await?.ok(),
            None => None,
        };
        let lag = hw.map(|h| (h - offset).max(0));
        total += lag.unwrap_or(0);
        println!(
            "{topic:<32} {p:>9} {offset:>16} {:>14} {:>10}",
            hw.map_or("-".into(), |h| h.to_string()),
            lag.map_or("-".into(), |l| l.to_string())
        );
    }
    println!("total lag {total}");
    Ok(())
}

async fn reset(
    bootstrap: &Bootstrap,
    group: &str,
    topic: &str,
    lookup: Option<i64>,
    fixed: Option<i64>,
    execute: bool,
) -> Result<()> {
    let mut c = connect(bootstrap).await?;
    let coord = coordinator(&mut c, group).await?;
    let md = c.metadata(Some(&[topic.to_string()])).await?;
    let parts = leaders(&md, topic).ok_or_else(|| failed(format!("unknown topic {topic}")))?;
    let mut plan = BTreeMap::new();
    for (p, leader) in parts {
        let offset = match (fixed, lookup, leader) {
            (Some(o), _, _) => o,
            (None, Some(ts), Some(l)) => {
                let found = c
                    .list_offset(l, topic, p, ts)
                    .await?
                    .map_err(|e| failed(format!("{topic}-{p}: {e}")))?;
                if found >= 0 {
                    found
                } else {
                    c.list_offset(l, topic, p, LATEST)
                        .await?
                        .map_err(|e| failed(format!("{topic}-{p}: {e}")))?
                }
            }
            _ => return Err(failed(format!("{topic}-{p} has no leader"))),
        };
        plan.insert((topic.to_string(), p), offset);
    }
    println!("{:<32} {:>9} {:>12}", "topic", "partition", "new-offset");
    for ((t, p), o) in &plan {
        println!("{t:<32} {p:>9} {o:>12}");
    }
    if !execute {
        println!("dry run: add --execute to commit these offsets");
        return Ok(());
    }
    c.commit(coord, group, &plan)
        .await?
        .map_err(|e| failed(format!("committing offsets of {group}: {e}")))?;
    println!("offsets of group {group} on {topic} reset");
    Ok(())
}
