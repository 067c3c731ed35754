//! Crash safety of the real binary: a `kill -9` in the middle of acks=all traffic loses,
//! duplicates and reorders no acknowledged message, a torn or damaged tail is cut on recovery
//! and offsets continue after it, a deleted index is rebuilt, and only an unclean stop triggers
//! a recovery scan. The ordering half of the kill test also runs alone, without a kill:
//! produce requests pipelined on one connection land in request order.
//!
//! Batches are written with the raw client where the test needs to know every byte, and read
//! back with librdkafka (manual assignment, never a group join or a commit), as a user would.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use bytes::Bytes;
use ferrymq_e2e::{topic, BrokerProcess, RawClient};
use ferrymq_log::batch::testing::batch;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{CreateTopicsRequest, MetadataRequest, ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer, PurgeConfig};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{mpsc, watch};

/// Longest a consumer read, a watermark query or a metadata call may take.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(20);

/// Kill cycles in the acks=all test, and how long each produces before the kill.
const KILL_CYCLES: usize = 3;
const PRODUCE_BEFORE_KILL: Duration = Duration::from_millis(1500);
/// Acknowledgements a cycle must have seen before the kill, so the kill lands mid-stream.
const ACKS_BEFORE_KILL_MIN: u64 = 1000;
/// Longest a cycle may take to reach `ACKS_BEFORE_KILL_MIN`.
const ACKS_WAIT_MAX: Duration = Duration::from_secs(20);
/// Send pacing: `SEND_BURST` values every `SEND_INTERVAL` (5,000 a second), so each cycle
/// acknowledges thousands of values, not millions, and the read-back stays short.
const SEND_BURST: u64 = 5;
const SEND_INTERVAL: Duration = Duration::from_millis(1);
/// Delivery reports awaited at once: bounds what the producer has queued.
const DELIVERIES_INFLIGHT_MAX: usize = 5_000;
/// librdkafka's `message.timeout.ms`: long enough that no message times out while the broker
/// is up, however loaded the machine; after the kill, queued messages are purged instead.
const MESSAGE_TIMEOUT_MS: u64 = 30_000;
/// Longest the delivery reports may take to arrive once the queues are purged.
const REPORTS_WAIT_MAX: Duration = Duration::from_secs(15);

/// The log file of a partition's first segment.
fn first_segment(data_dir: &Path, topic: &str) -> PathBuf {
    data_dir
        .join(format!("{topic}-0"))
        .join("00000000000000000000.log")
}

/// Record timestamps near now: ancient ones would make every batch roll a segment.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

fn value(seq: u64) -> String {
    format!("v-{seq:06}")
}

/// The sequence number in a value written by `value`.
fn seq_of(v: &str) -> u64 {
    v.strip_prefix("v-")
        .and_then(|n| n.split('-').next()?.parse().ok())
        .unwrap_or_else(|| panic!("not a numbered value: {v:?}"))
}

// ---- raw-protocol writes ----

async fn create_topic(addr: &str, topic: &str, configs: &[(&str, &str)]) -> Result<()> {
    let mut client = RawClient::connect(addr).await?;
    let configs = configs
        .iter()
        .map(|(k, v)| {
            CreatableTopicConfig::default()
                .with_name(StrBytes::from_string(k.to_string()))
                .with_value(Some(StrBytes::from_string(v.to_string())))
        })
        .collect();
    let req = CreateTopicsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_num_partitions(1)
            .with_replication_factor(1)
            .with_configs(configs)]);
    let resp = client.call(&req, 7).await?;
    let code = resp.topics.first().context("one result")?.error_code;
    ensure!(code == 0, "CreateTopics {topic}: error {code}");
    wait_for_leader(&mut client, topic).await
}

/// Longest a created topic may take to show a leader in Metadata.
const LEADER_WAIT: Duration = Duration::from_secs(10);

/// Waits until Metadata lists `topic` with a leader for partition 0, as a Kafka client does
/// after CreateTopics: the controller answers once the topic is committed, and a broker may
/// learn of it a moment later.
async fn wait_for_leader(client: &mut RawClient, topic: &str) -> Result<()> {
    let req = MetadataRequest::default()
        .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(
            TopicName(StrBytes::from_string(topic.to_string())),
        ))]))
        .with_allow_auto_topic_creation(false);
    let deadline = Instant::now() + LEADER_WAIT;
    loop {
        let meta = client.call(&req, 12).await?;
        let ready = meta.topics.first().is_some_and(|t| {
            t.error_code == 0
                && t.partitions
                    .first()
                    .is_some_and(|p| p.error_code == 0 && p.leader_id.0 >= 0)
        });
        if ready {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "{topic} has no leader after {LEADER_WAIT:?}: {meta:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Produces one batch to partition 0 and returns its base offset.
async fn produce(client: &mut RawClient, topic: &str, records: Bytes, acks: i16) -> Result<i64> {
    let req = ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(records))])]);
    let resp = client.call(&req, 9).await?;
    let part = resp
        .responses
        .into_iter()
        .flat_map(|t| t.partition_responses)
        .next()
        .context("partition answer")?;
    ensure!(
        part.error_code == 0,
        "produce to {topic}: error {} {:?}",
        part.error_code,
        part.error_message
    );
    Ok(part.base_offset)
}

/// Produces `values`, one batch of `per_batch` records at a time (acks=all), checking that
/// offsets follow on from `first_offset`.
async fn produce_values(
    addr: &str,
    topic: &str,
    values: &[String],
    per_batch: usize,
    first_offset: i64,
) -> Result<()> {
    let mut client = RawClient::connect(addr).await?;
    let mut next = first_offset;
    for chunk in values.chunks(per_batch) {
        let refs: Vec<&[u8]> = chunk.iter().map(|v| v.as_bytes()).collect();
        let base = produce(&mut client, topic, batch(&refs, now_ms()), -1).await?;
        ensure!(base == next, "batch landed at {base}, expected {next}");
        next += chunk.len() as i64;
    }
    Ok(())
}

// ---- librdkafka reads ----

fn consumer(addr: &str) -> Result<BaseConsumer> {
    ClientConfig::new()
        .set("bootstrap.servers", addr)
        // Required by librdkafka for `assign`; never used to join, subscribe or commit.
        .set("group.id", "ferrymq-e2e-crash-safety")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "error")
        .set("enable.partition.eof", "false")
        .create()
        .context("creating the consumer")
}

/// Reads `count` records of partition 0 from `start` as (offset, value).
fn read_from(addr: &str, topic: &str, start: i64, count: usize) -> Result<Vec<(i64, String)>> {
    let consumer = consumer(addr)?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(start))?;
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        ensure!(
            Instant::now() < deadline,
            "read {} of {count} records from {start} within {CLIENT_TIMEOUT:?}",
            out.len()
        );
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => out.push((
                m.offset(),
                String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
            )),
            Some(Err(e)) => bail!(
                "consumer error after {} records from {start}: {e}",
                out.len()
            ),
            None => {}
        }
    }
    Ok(out)
}

/// The partition's (log start, high watermark).
fn watermarks(addr: &str, topic: &str) -> Result<(i64, i64)> {
    Ok(consumer(addr)?.fetch_watermarks(topic, 0, CLIENT_TIMEOUT)?)
}

/// Every record of partition 0 as (offset, value).
async fn read_all(addr: &str, topic: &str) -> Result<Vec<(i64, String)>> {
    let (addr, topic) = (addr.to_string(), topic.to_string());
    tokio::task::spawn_blocking(move || {
        let (low, high) = watermarks(&addr, &topic)?;
        ensure!(low == 0, "log start {low}: nothing was deleted");
        read_from(&addr, &topic, low, (high - low) as usize)
    })
    .await?
}

/// The broker's log written since `from` bytes.
fn log_since(broker: &BrokerProcess, from: usize) -> String {
    broker.log().get(from..).unwrap_or_default().to_string()
}

/// Longest a restart (recovery included) may take to report ready.
const READY_WAIT_MAX: Duration = Duration::from_secs(30);

/// Restarts the broker and waits for its "ready" line; returns where this start's log begins.
/// `restart` returns once the port accepts connections, but the listener is bound before
/// partitions are opened and recovered, so callers read the log only after a request that
/// needed the partition.
async fn restart_ready(broker: &mut BrokerProcess) -> Result<usize> {
    let mark = broker.log().len();
    broker.restart()?;
    let deadline = Instant::now() + READY_WAIT_MAX;
    loop {
        let since = log_since(broker, mark);
        if since.contains("FerryMQ broker ready") {
            return Ok(mark);
        }
        ensure!(
            broker.is_running(),
            "broker exited during restart:\n{since}"
        );
        ensure!(
            Instant::now() < deadline,
            "not ready within {READY_WAIT_MAX:?}:\n{since}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---- kill -9 under acks=all ----

/// One producer run: sends numbered values until stopped, recording each acknowledgement.
struct ProduceRun {
    producer: Arc<FutureProducer>,
    stop: watch::Sender<bool>,
    acked: Arc<AtomicU64>,
    sender: tokio::task::JoinHandle<Result<u64>>,
    collector: tokio::task::JoinHandle<(Vec<(i64, String)>, u64)>,
}

impl ProduceRun {
    /// Starts sending `value(first_seq)`, `value(first_seq + 1)`... to partition 0.
    fn start(addr: &str, topic: &str, first_seq: u64) -> Result<ProduceRun> {
        let producer: Arc<FutureProducer> = ClientConfig::new()
            .set("bootstrap.servers", addr)
            .set("acks", "all")
            // A request lost with the broker is never resent, so nothing is duplicated.
            .set("message.send.max.retries", "0")
            .set("enable.idempotence", "false")
            .set("linger.ms", "2")
            .set("message.timeout.ms", MESSAGE_TIMEOUT_MS.to_string())
            .set(
                "queue.buffering.max.messages",
                (DELIVERIES_INFLIGHT_MAX * 2).to_string(),
            )
            .create()
            .map(Arc::new)
            .context("creating the producer")?;
        let (stop, mut stopped) = watch::channel(false);
        let (tx, mut rx) = mpsc::channel(DELIVERIES_INFLIGHT_MAX);
        let topic = topic.to_string();
        let sending = producer.clone();
        let sender = tokio::spawn(async move {
            let producer = sending;
            let mut seq = first_seq;
            let mut pace = tokio::time::interval(SEND_INTERVAL);
            while !*stopped.borrow_and_update() {
                pace.tick().await;
                for _ in 0..SEND_BURST {
                    let v = value(seq);
                    let record = FutureRecord::<(), _>::to(&topic).partition(0).payload(&v);
                    let delivery = producer
                        .send_result(record)
                        .map_err(|(e, _)| anyhow::anyhow!("enqueue {v}: {e}"))?;
                    if tx.send((v, delivery)).await.is_err() {
                        bail!("delivery collector stopped early");
                    }
                    seq += 1;
                }
            }
            Ok(seq)
        });
        let acked = Arc::new(AtomicU64::new(0));
        let counter = acked.clone();
        let collector = tokio::spawn(async move {
            let (mut acks, mut failed) = (Vec::new(), 0u64);
            while let Some((v, delivery)) = rx.recv().await {
                match delivery.await {
                    Ok(Ok(d)) => {
                        assert_eq!(d.partition, 0, "{v} delivered to partition {}", d.partition);
                        acks.push((d.offset, v));
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Err(_)) | Err(_) => failed += 1,
                }
            }
            (acks, failed)
        });
        Ok(ProduceRun {
            producer,
            stop,
            acked,
            sender,
            collector,
        })
    }

    /// Waits until the run has produced for `PRODUCE_BEFORE_KILL` and seen enough acks.
    async fn wait_mid_stream(&self) -> Result<()> {
        let started = Instant::now();
        loop {
            let acked = self.acked.load(Ordering::Relaxed);
            if started.elapsed() >= PRODUCE_BEFORE_KILL && acked >= ACKS_BEFORE_KILL_MIN {
                return Ok(());
            }
            ensure!(
                started.elapsed() < ACKS_WAIT_MAX,
                "only {acked} acks after {ACKS_WAIT_MAX:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops sending, fails whatever the dead broker never answered and waits for every
    /// delivery report: (next sequence number, acks, failures).
    async fn finish(self) -> Result<(u64, Vec<(i64, String)>, u64)> {
        let _ = self.stop.send(true);
        let purge = || {
            self.producer
                .purge(PurgeConfig::default().queue().inflight())
        };
        // The sender may be waiting for room among the pending reports: purging frees it.
        purge();
        let next_seq = tokio::time::timeout(REPORTS_WAIT_MAX, self.sender)
            .await
            .context("sender did not stop")???;
        // Values the sender enqueued after the first purge.
        purge();
        let (acks, failed) = tokio::time::timeout(REPORTS_WAIT_MAX, self.collector)
            .await
            .context("delivery reports did not all arrive")??;
        Ok((next_seq, acks, failed))
    }
}

/// Produces from librdkafka with acks=all and kills the broker mid-stream `KILL_CYCLES` times,
/// then checks that every acknowledged value is in the log exactly once at its acknowledged
/// offset, and that the log holds values in the order they were sent.
async fn assert_kill9_loses_no_acknowledged_message(overrides: &[&str]) -> Result<()> {
    let mut broker = BrokerProcess::start(overrides)?;
    let topic = topic("kill9");
    create_topic(&broker.addr, &topic, &[]).await?;
    let mut acked: Vec<(i64, String)> = Vec::new();
    let mut seq = 0;
    for cycle in 0..KILL_CYCLES {
        let run = ProduceRun::start(&broker.addr, &topic, seq)?;
        run.wait_mid_stream()
            .await
            .with_context(|| format!("cycle {cycle}"))?;
        broker.kill9();
        let (next_seq, acks, failed) = run.finish().await?;
        eprintln!(
            "cycle {cycle}: sent {} values, {} acknowledged, {failed} failed",
            next_seq - seq,
            acks.len()
        );
        seq = next_seq;
        acked.extend(acks);
        restart_ready(&mut broker).await?;
    }
    let reading = Instant::now();
    let log = read_all(&broker.addr, &topic).await?;
    eprintln!("read {} records back in {:?}", log.len(), reading.elapsed());
    let by_offset: HashMap<i64, &str> = log.iter().map(|(o, v)| (*o, v.as_str())).collect();
    for (offset, v) in &acked {
        assert_eq!(
            by_offset.get(offset).copied(),
            Some(v.as_str()),
            "acknowledged {v} at offset {offset}"
        );
    }
    // Nothing stored twice or invented, and offsets dense.
    let mut stored = HashSet::new();
    for (offset, v) in &log {
        assert!(
            stored.insert(v.as_str()),
            "{v} stored twice (again at offset {offset})"
        );
        assert!(seq_of(v) < seq, "{v} at offset {offset} was never sent");
    }
    for pair in log.windows(2) {
        assert_eq!(
            pair[0].0 + 1,
            pair[1].0,
            "no offset gap in an uncompacted log"
        );
    }
    // Every stored value in the order sent, acknowledged or not: no request is retried, none
    // outlives message.timeout.ms while the broker is up, and those purged at the kill never
    // reach a broker, so only the broker could reorder them.
    let acked_values: HashSet<&str> = acked.iter().map(|(_, v)| v.as_str()).collect();
    let status = |v: &str| {
        if acked_values.contains(v) {
            "acknowledged"
        } else {
            "unacknowledged"
        }
    };
    for pair in log.windows(2) {
        let ((o0, v0), (o1, v1)) = (&pair[0], &pair[1]);
        assert!(
            seq_of(v0) < seq_of(v1),
            "out of send order: offset {o0} holds {v0} ({}), offset {o1} holds {v1} ({})",
            status(v0),
            status(v1)
        );
    }
    eprintln!(
        "{} unacknowledged values survived the kills",
        log.len() - acked.len()
    );
    eprintln!(
        "{} acknowledged values all found among {} records",
        acked.len(),
        log.len()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_acks_all_produce_loses_no_acknowledged_message() -> Result<()> {
    assert_kill9_loses_no_acknowledged_message(&[]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_acks_all_produce_with_rolling_segments_loses_no_acknowledged_message(
) -> Result<()> {
    // Segments of 16 KiB roll every few hundred values, so kills land around rolls too and
    // recovery crosses closed segments, their indexes and the recovery point.
    assert_kill9_loses_no_acknowledged_message(&[
        "log.segment.bytes=16384",
        "log.index.interval.bytes=1024",
    ])
    .await
}

/// Produce requests written back to back on one connection by the pipelining test.
const PIPELINED_PRODUCES: usize = 500;

#[tokio::test]
async fn pipelined_produces_on_one_connection_are_appended_in_request_order() -> Result<()> {
    // The ordering half of the kill -9 test without the kill: librdkafka keeps many produce
    // requests in flight on one connection, and a Kafka broker handles a connection's requests
    // one at a time, so the log holds them in the order they were sent.
    let broker = BrokerProcess::start(&[])?;
    let topic = topic("pipelined");
    create_topic(&broker.addr, &topic, &[]).await?;
    let mut client = RawClient::connect(&broker.addr).await?;
    let values: Vec<String> = (0..PIPELINED_PRODUCES as u64).map(value).collect();
    let mut pipelined = Vec::new();
    for v in &values {
        let req = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(10_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.clone())))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(batch(&[v.as_bytes()], now_ms())))])]);
        pipelined.extend_from_slice(&client.frame(&req, 9)?);
    }
    client.send_raw(&pipelined).await?;
    let mut answered = Vec::with_capacity(PIPELINED_PRODUCES);
    for _ in 0..PIPELINED_PRODUCES {
        let (_, resp) = client.read_response::<ProduceRequest>(9).await?;
        let part = &resp.responses[0].partition_responses[0];
        ensure!(part.error_code == 0, "produce error {}", part.error_code);
        answered.push(part.base_offset);
    }
    let misplaced: Vec<(usize, i64)> = answered
        .iter()
        .enumerate()
        .filter(|(i, o)| **o != *i as i64)
        .map(|(i, o)| (i, *o))
        .take(10)
        .collect();
    assert!(
        misplaced.is_empty(),
        "request i must land at offset i; first misplaced (request, offset): {misplaced:?}"
    );
    let log = read_all(&broker.addr, &topic).await?;
    let expected: Vec<(i64, String)> = values
        .into_iter()
        .enumerate()
        .map(|(i, v)| (i as i64, v))
        .collect();
    assert_eq!(log, expected, "the log holds the values in request order");
    Ok(())
}

// ---- damaged tails ----

/// Produces `n` values, kills the broker, appends `garbage(n)` to the active segment and
/// restarts: the garbage must be cut, every value read back, and offsets continue at `n`.
async fn assert_tail_cut_on_recovery(garbage: impl FnOnce(i64) -> Vec<u8>) -> Result<()> {
    const N: usize = 50;
    let mut broker = BrokerProcess::start(&[])?;
    let topic = topic("tail");
    create_topic(&broker.addr, &topic, &[]).await?;
    let values: Vec<String> = (0..N as u64).map(value).collect();
    produce_values(&broker.addr, &topic, &values, 5, 0).await?;
    broker.kill9();
    let segment = first_segment(&broker.data_dir, &topic);
    let size_before = std::fs::metadata(&segment)?.len();
    let mut bytes = std::fs::read(&segment)?;
    bytes.extend_from_slice(&garbage(N as i64));
    std::fs::write(&segment, &bytes)?;
    let mark = restart_ready(&mut broker).await?;

    let log = read_all(&broker.addr, &topic).await?;
    let expected: Vec<(i64, String)> = values
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, v)| (i as i64, v))
        .collect();
    assert_eq!(
        log, expected,
        "every value produced before the crash, at its offset"
    );
    assert_eq!(
        std::fs::metadata(&segment)?.len(),
        size_before,
        "the damaged tail was cut"
    );
    let since = log_since(&broker, mark);
    assert!(
        since.contains("segment recovered: invalid tail truncated"),
        "recovery line missing:\n{since}"
    );
    assert!(
        since.contains("partition log recovered"),
        "recovery summary missing:\n{since}"
    );
    let mut client = RawClient::connect(&broker.addr).await?;
    let next = produce(&mut client, &topic, batch(&[b"after"], now_ms()), -1).await?;
    assert_eq!(
        next, N as i64,
        "offsets continue right after the last intact batch"
    );
    Ok(())
}

#[tokio::test]
async fn torn_batch_at_tail_is_truncated_on_recovery() -> Result<()> {
    // The first 40 bytes of a batch: a write cut off by the crash.
    assert_tail_cut_on_recovery(|next| {
        let mut torn = batch(&[b"torn-0", b"torn-1"], now_ms()).to_vec();
        torn[..8].copy_from_slice(&next.to_be_bytes());
        torn.truncate(40);
        torn
    })
    .await
}

#[tokio::test]
async fn corrupt_batch_at_tail_is_truncated_on_recovery() -> Result<()> {
    // A complete batch at the right offset whose payload no longer matches its CRC.
    assert_tail_cut_on_recovery(|next| {
        let mut bad = batch(&[b"flipped-0", b"flipped-1"], now_ms()).to_vec();
        bad[..8].copy_from_slice(&next.to_be_bytes());
        let last = bad.len() - 3;
        bad[last] ^= 0x10;
        bad
    })
    .await
}

// ---- indexes ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_index_file_is_rebuilt_on_restart() -> Result<()> {
    const N: usize = 300;
    // Small segments, and index entries every few batches so lookups depend on the index.
    let mut broker =
        BrokerProcess::start(&["log.segment.bytes=4096", "log.index.interval.bytes=256"])?;
    let topic = topic("index");
    create_topic(&broker.addr, &topic, &[]).await?;
    let values: Vec<String> = (0..N as u64)
        .map(|i| format!("{}-{}", value(i), "p".repeat(80)))
        .collect();
    produce_values(&broker.addr, &topic, &values, 1, 0).await?;
    assert_eq!(
        broker.stop()?,
        0,
        "a clean stop exits 0; log:\n{}",
        broker.log()
    );
    assert!(
        broker.data_dir.join(".clean-shutdown").exists(),
        "a clean stop leaves the marker"
    );

    let dir = broker.data_dir.join(format!("{topic}-0"));
    let mut bases: Vec<i64> = std::fs::read_dir(&dir)?
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .to_str()?
                .strip_suffix(".log")?
                .parse()
                .ok()
        })
        .collect();
    bases.sort();
    ensure!(bases.len() >= 4, "expected several segments, got {bases:?}");
    // A closed segment in the middle, not the first nor the active one.
    let (base, next_base) = (bases[1], bases[2]);
    let index = dir.join(format!("{base:020}.index"));
    ensure!(
        std::fs::metadata(&index)?.len() > 0,
        "{} holds entries before the test removes it",
        index.display()
    );
    std::fs::remove_file(&index)?;
    let mark = restart_ready(&mut broker).await?;

    let probes = [
        base,
        base + 1,
        (base + next_base) / 2,
        next_base - 1,
        next_base,
    ];
    let check = |broker: &BrokerProcess| -> Result<()> {
        for &offset in &probes {
            let got = read_from(&broker.addr, &topic, offset, 1)?;
            assert_eq!(
                got,
                vec![(offset, values[offset as usize].clone())],
                "record at offset {offset}"
            );
        }
        Ok(())
    };
    tokio::task::block_in_place(|| check(&broker))?;
    let since = log_since(&broker, mark);
    assert!(since.contains("clean_shutdown=true"), "{since}");
    assert!(
        since.contains("index missing or implausible; rebuilding"),
        "rebuild line missing:\n{since}"
    );

    assert_eq!(broker.stop()?, 0, "log:\n{}", broker.log());
    assert!(
        index.exists(),
        "{} is written again at the clean stop",
        index.display()
    );
    ensure!(
        std::fs::metadata(&index)?.len() > 0,
        "the rebuilt index holds entries"
    );
    // And the rewritten file serves lookups after a restart that trusts it.
    let mark = restart_ready(&mut broker).await?;
    tokio::task::block_in_place(|| check(&broker))?;
    let since = log_since(&broker, mark);
    assert!(
        !since.contains("index missing or implausible"),
        "the rewritten index is trusted:\n{since}"
    );
    Ok(())
}

// ---- clean versus unclean stop ----

#[tokio::test]
async fn clean_shutdown_skips_recovery_and_crash_triggers_it() -> Result<()> {
    let mut broker = BrokerProcess::start(&[])?;
    let topic = topic("clean");
    create_topic(&broker.addr, &topic, &[]).await?;
    let values: Vec<String> = (0..20).map(value).collect();
    produce_values(&broker.addr, &topic, &values[..10], 5, 0).await?;

    assert_eq!(broker.stop()?, 0, "log:\n{}", broker.log());
    let mark = restart_ready(&mut broker).await?;
    assert!(
        !broker.data_dir.join(".clean-shutdown").exists(),
        "the marker is consumed at start, so a crash is recognised"
    );
    produce_values(&broker.addr, &topic, &values[10..], 5, 10).await?;
    let after_clean = log_since(&broker, mark);
    assert!(
        after_clean.contains("opening partitions clean_shutdown=true"),
        "{after_clean}"
    );
    assert!(
        !after_clean.contains("partition log recovered"),
        "no scan after a clean stop:\n{after_clean}"
    );

    broker.kill9();
    let mark = restart_ready(&mut broker).await?;
    let log = read_all(&broker.addr, &topic).await?;
    let after_crash = log_since(&broker, mark);
    assert!(
        after_crash.contains("opening partitions clean_shutdown=false"),
        "{after_crash}"
    );
    assert!(
        after_crash.contains("partition log recovered"),
        "a crash triggers the scan:\n{after_crash}"
    );
    assert!(
        !after_crash.contains("invalid tail truncated"),
        "nothing to cut after acks=all writes:\n{after_crash}"
    );
    let expected: Vec<(i64, String)> = values
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, v)| (i as i64, v))
        .collect();
    assert_eq!(log, expected, "both restarts kept every record");
    Ok(())
}

/// Leader epoch of partition 0 of `topic` once it has a leader.
async fn leader_epoch(addr: &str, topic: &str) -> Result<i32> {
    let mut client = RawClient::connect(addr).await?;
    wait_for_leader(&mut client, topic).await?;
    let req = MetadataRequest::default()
        .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(
            TopicName(StrBytes::from_string(topic.to_string())),
        ))]))
        .with_allow_auto_topic_creation(false);
    let meta = client.call(&req, 12).await?;
    Ok(meta.topics[0].partitions[0].leader_epoch)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_restart_starts_a_new_leader_epoch() -> Result<()> {
    // After kill -9 the node registers a new incarnation while the old one is still unfenced
    // (a single node is its own controller, so nobody waited out its session). Recovery may
    // have cut its log, so the old incarnation's leaderships end and the restarted node leads
    // again at a new epoch, as KRaft does for an unclean restart; followers and idempotent
    // producers then see the change. Found by the chaos harness (a voter restarting as its
    // own active controller kept its leaderships at the old epochs).
    let mut broker = BrokerProcess::start(&[])?;
    let topic = topic("reincarnate");
    create_topic(&broker.addr, &topic, &[]).await?;
    let before = leader_epoch(&broker.addr, &topic).await?;
    broker.kill9();
    broker.restart()?;
    let deadline = Instant::now() + LEADER_WAIT;
    loop {
        let after = leader_epoch(&broker.addr, &topic).await?;
        if after > before {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "leader epoch still {after} (was {before}) after an unclean restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_answered_during_a_controlled_shutdown_still_names_this_broker() -> Result<()> {
    // In the last moments of a controlled shutdown the node is fenced but still answers on
    // open connections. A Metadata answer listing no broker then made librdkafka forget every
    // broker it knew, bootstrap ones included, and a consumer stayed disconnected after the
    // restart until its rebootstrap timer (5 minutes). Clients hammer Metadata through the
    // SIGTERM; every answer must name a broker.
    let mut broker = BrokerProcess::start(&[])?;
    let topic = topic("shutdown-md");
    create_topic(&broker.addr, &topic, &[]).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut askers = Vec::new();
    for _ in 0..4 {
        let addr = broker.addr.clone();
        let stop = stop_rx.clone();
        askers.push(tokio::spawn(async move {
            let mut client = RawClient::connect(&addr).await?;
            let (mut answers, mut without_brokers) = (0u64, 0u64);
            while !*stop.borrow() {
                let Ok(md) = client
                    .call(&MetadataRequest::default().with_topics(None), 12)
                    .await
                else {
                    break; // the connection closed: the broker is gone
                };
                answers += 1;
                without_brokers += md.brokers.is_empty() as u64;
            }
            anyhow::Ok((answers, without_brokers))
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let code = tokio::task::block_in_place(|| broker.stop())?;
    ensure!(code == 0, "clean stop exit code {code}");
    stop_tx.send(true)?;
    for a in askers {
        let (answers, without_brokers) = a.await??;
        ensure!(answers > 0, "no Metadata answered");
        ensure!(
            without_brokers == 0,
            "{without_brokers} of {answers} Metadata answers named no broker"
        );
    }
    Ok(())
}
