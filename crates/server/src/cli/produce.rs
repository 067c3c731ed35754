//! `ferrymq produce`: lines from stdin become records of a topic, optionally split into key and
//! value at a separator, with headers; sent to each partition's leader in batches. Keyed
//! records go where Kafka's default partitioner puts them; keyless ones round-robin.

use std::collections::BTreeMap;
use std::io::BufRead;

use anyhow::Result;
use bytes::Bytes;
use ferrymq_kafka::client::cluster::leaders;
use ferrymq_kafka::client::partitioner::partition_for_key;
use ferrymq_kafka::client::records::{encode_batch, OutRecord};

use super::{failed, key_value, Bootstrap};

/// Records per Produce request and partition.
const BATCH_RECORDS_MAX: usize = 500;

/// Options of `produce`.
#[derive(Debug, clap::Args)]
pub struct ProduceArgs {
    /// Topic to write to (it must exist; see `ferrymq topic create`).
    #[arg(long, short = 't')]
    topic: String,
    /// Write every record to this partition instead of choosing by key.
    #[arg(long, short = 'p')]
    partition: Option<i32>,
    /// Split each line at the first SEP into key and value (a line without it is an error).
    #[arg(long, value_name = "SEP")]
    key_separator: Option<String>,
    /// Header NAME=VALUE added to every record (repeatable).
    #[arg(long = "header", short = 'H', value_parser = key_value)]
    headers: Vec<(String, String)>,
    /// Acknowledgement: `all` (every in-sync replica, fsynced) or `1` (the leader).
    #[arg(long, default_value = "all", value_parser = ["all", "1", "-1"])]
    acks: String,
    #[command(flatten)]
    bootstrap: Bootstrap,
}

/// Reads stdin to the end and produces every line; prints how many were written.
pub async fn run(args: ProduceArgs) -> Result<()> {
    let mut c = args.bootstrap.connect().await?;
    let md = c.metadata(Some(std::slice::from_ref(&args.topic))).await?;
    let partitions = leaders(&md, &args.topic).ok_or_else(|| {
        failed(format!(
            "unknown topic {} (create it with `ferrymq topic create`)",
            args.topic
        ))
    })?;
    let count = partitions.len() as i32;
    if let Some(p) = args.partition.filter(|p| !(0..count).contains(p)) {
        return Err(failed(format!(
            "partition {p} does not exist: {} has {count}",
            args.topic
        )));
    }
    let acks = if args.acks == "1" { 1 } else { -1 };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let headers: Vec<(String, Bytes)> = args
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), Bytes::from(v.clone())))
        .collect();
    let mut pending: BTreeMap<i32, Vec<OutRecord>> = BTreeMap::new();
    let mut produced = 0usize;
    let mut turn = 0i32;
    for (n, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line?;
        let (key, value) = match &args.key_separator {
            Some(sep) => match line.split_once(sep.as_str()) {
                Some((k, v)) => (Some(Bytes::from(k.to_string())), Bytes::from(v.to_string())),
                None => return Err(failed(format!("line {}: no key separator {sep:?}", n + 1))),
            },
            None => (None, Bytes::from(line)),
        };
        let partition = match (args.partition, &key) {
            (Some(p), _) => p,
            (None, Some(k)) => partition_for_key(k, count),
            (None, None) => {
                turn = (turn + 1) % count;
                turn
            }
        };
        let batch = pending.entry(partition).or_default();
        batch.push(OutRecord {
            key,
            value: Some(value),
            headers: headers.clone(),
            timestamp_ms: now,
        });
        if batch.len() >= BATCH_RECORDS_MAX {
            let records = std::mem::take(batch);
            produced += send(&mut c, &args.topic, &partitions, partition, &records, acks).await?;
        }
    }
    for (partition, records) in pending.into_iter().filter(|(_, r)| !r.is_empty()) {
        produced += send(&mut c, &args.topic, &partitions, partition, &records, acks).await?;
    }
    eprintln!("produced {produced} messages to {}", args.topic);
    Ok(())
}

async fn send(
    c: &mut ferrymq_kafka::client::ClusterClient,
    topic: &str,
    partitions: &[(i32, Option<i32>)],
    partition: i32,
    records: &[OutRecord],
    acks: i16,
) -> Result<usize> {
    let leader = partitions
        .iter()
        .find(|(p, _)| *p == partition)
        .and_then(|(_, l)| *l)
        .ok_or_else(|| failed(format!("{topic}-{partition} has no leader")))?;
    let batch = encode_batch(records)?;
    match c.produce(leader, topic, partition, batch, acks).await? {
        Ok(_) => Ok(records.len()),
        Err(e) => Err(failed(format!("producing to {topic}-{partition}: {e}"))),
    }
}
