//! `ferrymq consume`: reads a topic from its partitions' leaders and prints each record in a
//! chosen format, from the beginning, the end, an offset or a timestamp. With `--group` it
//! starts from the group's committed offsets and commits what it printed (as a standalone
//! consumer: it reads every partition itself, without joining the group's rebalances). It
//! stops after `--max-messages`, or once no new record came for `--idle-timeout-ms`.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Result;
use ferrymq_kafka::client::cluster::leaders;
use ferrymq_kafka::client::groups::GROUP_APIS;
use ferrymq_kafka::client::ops::{EARLIEST, LATEST};
use ferrymq_kafka::client::records::{decode_batches, InRecord};
use ferrymq_kafka::client::ClusterClient;

use super::{failed, Bootstrap};

/// Longest a fetch waits on the broker for new data.
const FETCH_WAIT_MS: i32 = 200;

/// Options of `consume`.
#[derive(Debug, clap::Args)]
pub struct ConsumeArgs {
    /// Topic to read.
    #[arg(long, short = 't')]
    topic: String,
    /// Only these partitions (repeatable; default all).
    #[arg(long = "partition", short = 'p')]
    partitions: Vec<i32>,
    /// Where to start without a committed offset: `beginning`, `end`, an offset, or
    /// `@<ms since epoch>` for the first record at or after that time.
    #[arg(long, default_value = "beginning")]
    from: String,
    /// Read with this group's committed offsets and commit what was printed.
    #[arg(long, short = 'g')]
    group: Option<String>,
    /// Stop after this many records.
    #[arg(long, short = 'n')]
    max_messages: Option<usize>,
    /// Stop once no record arrived for this long; 0 waits forever.
    #[arg(long, default_value_t = 2000)]
    idle_timeout_ms: u64,
    /// Output format: %t topic, %p partition, %o offset, %k key, %v value, %T timestamp (ms),
    /// %h headers (k=v,...), \t tab, \n newline.
    #[arg(long, short = 'f', default_value = "%v")]
    format: String,
    #[command(flatten)]
    bootstrap: Bootstrap,
}

/// Where each partition starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    Earliest,
    Latest,
    Offset(i64),
    Timestamp(i64),
}

fn parse_start(s: &str) -> Result<Start> {
    Ok(match s {
        "beginning" | "earliest" => Start::Earliest,
        "end" | "latest" => Start::Latest,
        t if t.starts_with('@') => Start::Timestamp(
            t[1..]
                .parse()
                .map_err(|_| failed(format!("--from {t}: not @<ms since epoch>")))?,
        ),
        n => Start::Offset(n.parse().map_err(|_| {
            failed(format!(
                "--from {n}: use beginning, end, an offset or @<timestamp ms>"
            ))
        })?),
    })
}

/// Consumes until a stop condition; returns how many records were printed.
pub async fn run(args: ConsumeArgs) -> Result<()> {
    let start = parse_start(&args.from)?;
    let mut c = args.bootstrap.connect().await?;
    let md = c.metadata(Some(std::slice::from_ref(&args.topic))).await?;
    let all =
        leaders(&md, &args.topic).ok_or_else(|| failed(format!("unknown topic {}", args.topic)))?;
    let chosen: Vec<(i32, Option<i32>)> = all
        .into_iter()
        .filter(|(p, _)| args.partitions.is_empty() || args.partitions.contains(p))
        .collect();
    if chosen.is_empty() {
        return Err(failed(format!(
            "{} has none of partitions {:?}",
            args.topic, args.partitions
        )));
    }
    let group = match &args.group {
        Some(g) => {
            c.require(GROUP_APIS, "consuming in a group")?;
            let coordinator = c
                .coordinator(g)
                .await?
                .map_err(|e| failed(format!("finding the coordinator of {g}: {e}")))?;
            let ids = chosen.iter().map(|(p, _)| *p).collect();
            let committed = c
                .committed(coordinator, g, Some((&args.topic, ids)))
                .await?
                .map_err(|e| failed(format!("reading offsets of group {g}: {e}")))?;
            Some((g.clone(), coordinator, committed))
        }
        None => None,
    };
    let mut positions: BTreeMap<i32, (i32, i64)> = BTreeMap::new();
    for (p, leader) in &chosen {
        let leader = leader.ok_or_else(|| failed(format!("{}-{p} has no leader", args.topic)))?;
        let committed = group
            .as_ref()
            .and_then(|(_, _, offsets)| offsets.get(&(args.topic.clone(), *p)).copied());
        let offset = match committed {
            Some(o) => o,
            None => start_offset(&mut c, leader, &args.topic, *p, start).await?,
        };
        positions.insert(*p, (leader, offset));
    }
    let printed = read_loop(&mut c, &args, &mut positions).await?;
    if let Some((g, coordinator, _)) = &group {
        let offsets = positions
            .iter()
            .map(|(p, (_, o))| ((args.topic.clone(), *p), *o))
            .collect();
        c.commit(*coordinator, g, &offsets)
            .await?
            .map_err(|e| failed(format!("committing offsets of group {g}: {e}")))?;
    }
    eprintln!("consumed {printed} messages from {}", args.topic);
    Ok(())
}

async fn start_offset(
    c: &mut ClusterClient,
    leader: i32,
    topic: &str,
    p: i32,
    start: Start,
) -> Result<i64> {
    let ts = match start {
        Start::Offset(o) => return Ok(o),
        Start::Earliest => EARLIEST,
        Start::Latest => LATEST,
        Start::Timestamp(t) => t,
    };
    let found = c
        .list_offset(leader, topic, p, ts)
        .await?
        .map_err(|e| failed(format!("looking up the start of {topic}-{p}: {e}")))?;
    if found >= 0 {
        return Ok(found);
    }
    // No record at or after the timestamp: start at the end.
    c.list_offset(leader, topic, p, LATEST)
        .await?
        .map_err(|e| failed(format!("looking up the end of {topic}-{p}: {e}")))
}

async fn read_loop(
    c: &mut ClusterClient,
    args: &ConsumeArgs,
    positions: &mut BTreeMap<i32, (i32, i64)>,
) -> Result<usize> {
    let mut printed = 0usize;
    let mut last_data = Instant::now();
    let idle = Duration::from_millis(args.idle_timeout_ms);
    let mut out = std::io::stdout().lock();
    loop {
        let mut got_any = false;
        for (p, (leader, offset)) in positions.iter_mut() {
            let fetched = c
                .fetch(*leader, &args.topic, *p, *offset, FETCH_WAIT_MS)
                .await?
                .map_err(|e| failed(format!("fetching {}-{p} at {offset}: {e}", args.topic)))?;
            let (records, next) = decode_batches(&fetched.records, *offset)?;
            *offset = next;
            for r in records {
                got_any = true;
                let mut line = format_record(&args.format, &args.topic, *p, &r);
                line.push('\n');
                out.write_all(line.as_bytes())?;
                printed += 1;
                if args.max_messages.is_some_and(|m| printed >= m) {
                    *offset = r.offset + 1;
                    out.flush()?;
                    return Ok(printed);
                }
            }
        }
        out.flush()?;
        if got_any {
            last_data = Instant::now();
        } else if args.idle_timeout_ms > 0 && last_data.elapsed() >= idle {
            return Ok(printed);
        }
    }
}

/// Renders one record with the `--format` placeholders.
fn format_record(format: &str, topic: &str, partition: i32, r: &InRecord) -> String {
    let text = |b: &Option<bytes::Bytes>| {
        b.as_ref()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default()
    };
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(ch) = chars.next() {
        match ch {
            '%' => match chars.next() {
                Some('t') => out.push_str(topic),
                Some('p') => out.push_str(&partition.to_string()),
                Some('o') => out.push_str(&r.offset.to_string()),
                Some('k') => out.push_str(&text(&r.key)),
                Some('v') => out.push_str(&text(&r.value)),
                Some('T') => out.push_str(&r.timestamp_ms.to_string()),
                Some('h') => out.push_str(
                    &r.headers
                        .iter()
                        .map(|(k, v)| format!("{k}={}", text(v)))
                        .collect::<Vec<_>>()
                        .join(","),
                ),
                Some('%') => out.push('%'),
                Some(other) => {
                    out.push('%');
                    out.push(other);
                }
                None => out.push('%'),
            },
            '\\' => match chars.next() {
                Some('t') => out.push('\t'),
                Some('n') => out.push('\n'),
                Some(other) => {
                    out.push('\\');
                    out.push(other);
                }
                None => out.push('\\'),
            },
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn formats_every_placeholder() {
        let r = InRecord {
            offset: 7,
            timestamp_ms: 1234,
            key: Some(Bytes::from_static(b"k")),
            value: Some(Bytes::from_static(b"v")),
            headers: vec![
                ("a".into(), Some(Bytes::from_static(b"1"))),
                ("b".into(), None),
            ],
        };
        assert_eq!(
            format_record("%t/%p@%o %k=%v %T [%h] 100%%\\t.", "t", 3, &r),
            "t/3@7 k=v 1234 [a=1,b=] 100%\t."
        );
    }

    #[test]
    fn start_positions_parse() {
        assert_eq!(parse_start("beginning").unwrap(), Start::Earliest);
        assert_eq!(parse_start("end").unwrap(), Start::Latest);
        assert_eq!(parse_start("42").unwrap(), Start::Offset(42));
        assert_eq!(
            parse_start("@1700000000000").unwrap(),
            Start::Timestamp(1_700_000_000_000)
        );
        assert!(parse_start("yesterday").is_err());
    }
}
