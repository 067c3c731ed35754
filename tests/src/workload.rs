//! Workloads for fault tests: a producer writing unique numbered values and recording what
//! was acknowledged (partition, offset, value), a reader that reads every partition back, and
//! the check that every acknowledged value sits at its acknowledged offset.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

/// An acknowledged write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acked {
    /// Partition.
    pub partition: i32,
    /// Offset the broker gave it.
    pub offset: i64,
    /// The unique value.
    pub value: String,
}

/// A producer running in the background until stopped.
pub struct ProducerRun {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<Acked>>>,
    failed: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<u64>,
}

impl ProducerRun {
    /// Starts producing values `v-<n>` round-robin over `partitions` partitions of `topic`,
    /// acks=all, with librdkafka's own retries; `extra` client settings override.
    pub fn start(
        bootstrap: &str,
        topic: &str,
        partitions: i32,
        extra: &[(&str, &str)],
    ) -> ProducerRun {
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", bootstrap)
            .set("acks", "all")
            .set("linger.ms", "2")
            .set("message.timeout.ms", "60000")
            .set("retry.backoff.ms", "50")
            .set("enable.idempotence", "false");
        for (k, v) in extra {
            cfg.set(*k, *v);
        }
        let producer: FutureProducer = cfg.create().expect("producer");
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let failed = Arc::new(Mutex::new(Vec::new()));
        let (s, a, f, t) = (
            stop.clone(),
            acked.clone(),
            failed.clone(),
            topic.to_string(),
        );
        let task = tokio::spawn(async move {
            let mut n: u64 = 0;
            let mut pending = Vec::new();
            while !s.load(Ordering::Relaxed) {
                let value = format!("v-{n:08}");
                let partition = (n % partitions as u64) as i32;
                let rec = FutureRecord::<(), _>::to(&t)
                    .partition(partition)
                    .payload(&value);
                match producer.send_result(rec) {
                    Ok(fut) => pending.push((value, fut)),
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    }
                    Err((e, _)) => f.lock().unwrap().push(e.to_string()),
                }
                n += 1;
                if pending.len() >= 200 {
                    drain(&mut pending, &a, &f).await;
                }
                if n.is_multiple_of(50) {
                    tokio::task::yield_now().await;
                }
            }
            let _ = producer.flush(Duration::from_secs(60));
            drain(&mut pending, &a, &f).await;
            n
        });
        ProducerRun {
            stop,
            acked,
            failed,
            task,
        }
    }

    /// Values acknowledged so far.
    pub fn acked_count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Waits until at least `n` values are acknowledged (or `timeout`).
    pub async fn wait_acked(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.acked_count() < n {
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// Stops sending, waits for outstanding deliveries, returns (attempted, acked, failures).
    pub async fn finish(self) -> (u64, Vec<Acked>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let attempted = self.task.await.expect("producer task");
        let acked = self.acked.lock().unwrap().clone();
        let failed = self.failed.lock().unwrap().clone();
        (attempted, acked, failed)
    }
}

type Pending = Vec<(String, rdkafka::producer::DeliveryFuture)>;

async fn drain(pending: &mut Pending, acked: &Mutex<Vec<Acked>>, failed: &Mutex<Vec<String>>) {
    for (value, fut) in pending.drain(..) {
        match fut.await {
            Ok(Ok(d)) => acked.lock().unwrap().push(Acked {
                partition: d.partition,
                offset: d.offset,
                value,
            }),
            Ok(Err((e, _))) => failed.lock().unwrap().push(e.to_string()),
            Err(_) => failed
                .lock()
                .unwrap()
                .push("delivery future cancelled".into()),
        }
    }
}

/// Reads partitions `0..partitions` of `topic` from the start up to their high watermarks:
/// partition → [(offset, value)].
pub fn read_all(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
) -> BTreeMap<i32, Vec<(i64, String)>> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "fault-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut ends = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        let (_, high) = c
            .fetch_watermarks(topic, p, Duration::from_secs(30))
            .expect("watermarks");
        ends.insert(p, high);
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut out: BTreeMap<i32, Vec<(i64, String)>> =
        (0..partitions).map(|p| (p, Vec::new())).collect();
    let done = |out: &BTreeMap<i32, Vec<(i64, String)>>| {
        ends.iter()
            .all(|(p, end)| *end == 0 || out[p].last().is_some_and(|(o, _)| *o + 1 >= *end))
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    while !done(&out) {
        assert!(
            Instant::now() < deadline,
            "reading back stalled at {:?} of {ends:?}",
            out.iter().map(|(p, v)| (*p, v.len())).collect::<Vec<_>>()
        );
        if let Some(m) = c.poll(Duration::from_millis(200)) {
            let m = m.expect("consume");
            let v = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
            out.get_mut(&m.partition())
                .expect("asked partition")
                .push((m.offset(), v));
        }
    }
    out
}

/// Checks the history: every acknowledged value is at its acknowledged offset (nothing lost,
/// nothing moved), offsets increase without gaps, and — when `exactly_once` — no value
/// appears twice. Returns a summary line; panics with details on a violation.
pub fn check(
    acked: &[Acked],
    read: &BTreeMap<i32, Vec<(i64, String)>>,
    exactly_once: bool,
) -> String {
    let mut lost = Vec::new();
    for a in acked {
        let at = read.get(&a.partition).and_then(|v| {
            v.binary_search_by_key(&a.offset, |(o, _)| *o)
                .ok()
                .map(|i| &v[i].1)
        });
        if at != Some(&a.value) {
            lost.push(format!("{a:?} found {at:?}"));
        }
    }
    assert!(
        lost.is_empty(),
        "{} acknowledged values lost or moved, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    let mut dups = 0;
    for (p, msgs) in read {
        for w in msgs.windows(2) {
            assert_eq!(
                w[1].0,
                w[0].0 + 1,
                "partition {p}: offsets skip from {} to {}",
                w[0].0,
                w[1].0
            );
        }
        let mut seen = std::collections::HashSet::new();
        for (_, v) in msgs {
            if !seen.insert(v) {
                dups += 1;
            }
        }
    }
    if exactly_once {
        assert_eq!(dups, 0, "values read twice");
    }
    let total: usize = read.values().map(Vec::len).sum();
    format!(
        "{} acknowledged, {total} read, {dups} duplicates of retried sends",
        acked.len()
    )
}
