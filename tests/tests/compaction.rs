//! Log compaction seen from librdkafka: a compacted topic with many updates per key reads back,
//! once the cleaner has run, as the latest value per key at its original offset, tombstoned
//! keys disappear, and this holds for batches of every codec.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ferrymq_e2e::{topic, BrokerProcess};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

const TIMEOUT: Duration = Duration::from_secs(30);
/// Upper bound on waiting for the cleaner; never an expected duration.
const DEADLINE: Duration = Duration::from_secs(90);
const KEYS: usize = 40;
const UPDATES: usize = 30;
const TOMBSTONED: usize = 10;

/// What a read found: offset → (key, value or None for a tombstone).
type Contents = BTreeMap<i64, (String, Option<String>)>;

fn read_all(addr: &str, t: &str) -> Contents {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("group.id", "compaction-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let (_, high) = c.fetch_watermarks(t, 0, TIMEOUT).unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(t, 0, Offset::Beginning).unwrap();
    c.assign(&tpl).unwrap();
    let mut out = Contents::new();
    let start = Instant::now();
    while out.keys().next_back().is_none_or(|&o| o < high - 1) {
        assert!(
            start.elapsed() < DEADLINE,
            "read stalled at {:?}",
            out.keys().next_back()
        );
        if let Some(m) = c.poll(Duration::from_millis(200)) {
            let m = m.unwrap();
            let s = |b: Option<&[u8]>| b.map(|b| String::from_utf8(b.to_vec()).unwrap());
            out.insert(m.offset(), (s(m.key()).unwrap(), s(m.payload())));
        }
    }
    out
}

async fn produce_updates(addr: &str, t: &str, codec: &str) -> Contents {
    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("compression.type", codec)
        // Many small batches, so that segments roll and each holds several updates of a key.
        .set("batch.num.messages", "20")
        .set("enable.idempotence", "false")
        .create()
        .unwrap();
    let mut sent = Vec::new();
    for u in 0..UPDATES {
        for k in 0..KEYS {
            let (key, value) = (format!("k{k}"), format!("k{k}-v{u}"));
            let f = p.send_result(FutureRecord::to(t).partition(0).key(&key).payload(&value));
            sent.push((f.unwrap(), key, Some(value)));
        }
    }
    for k in 0..TOMBSTONED {
        let key = format!("k{k}");
        let f = p.send_result(FutureRecord::<_, ()>::to(t).partition(0).key(&key));
        sent.push((f.unwrap(), key, None));
    }
    // Fillers with keys of their own push everything above into closed segments.
    for n in 0..300 {
        let (key, value) = (format!("filler-{n}"), "x".repeat(40));
        let f = p.send_result(FutureRecord::to(t).partition(0).key(&key).payload(&value));
        sent.push((f.unwrap(), key, Some(value)));
    }
    let mut out = Contents::new();
    for (f, k, v) in sent {
        let d = f.await.unwrap().expect("acknowledged");
        out.insert(d.offset, (k, v));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacted_topic_reads_back_as_latest_value_per_key_and_tombstones_disappear() {
    let broker = BrokerProcess::start(&["log.cleaner.backoff.ms=200"]).unwrap();
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .create()
        .unwrap();
    let opts = AdminOptions::new().operation_timeout(Some(TIMEOUT));
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let t = topic(&format!("compact-{codec}"));
        let new = NewTopic::new(&t, 1, TopicReplication::Fixed(1))
            .set("cleanup.policy", "compact")
            .set("segment.bytes", "4096")
            .set("min.cleanable.dirty.ratio", "0.01")
            .set("delete.retention.ms", "0");
        let res = admin.create_topics([&new], &opts).await.unwrap();
        assert!(res[0].is_ok(), "{res:?}");
        let produced = produce_updates(&broker.addr, &t, codec).await;
        let start = Instant::now();
        let got = loop {
            let got = read_all(&broker.addr, &t);
            let k0_gone = !got.values().any(|(k, _)| k == "k0");
            let k_last_once = got
                .values()
                .filter(|(k, _)| *k == format!("k{}", KEYS - 1))
                .count()
                == 1;
            if k0_gone && k_last_once {
                break got;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "{codec}: never compacted; {} records",
                got.len()
            );
        };
        // Every record read is the one produced at that offset: offsets are preserved.
        for (o, rec) in &got {
            assert_eq!(produced.get(o), Some(rec), "{codec}: offset {o}");
        }
        let mut latest: BTreeMap<&str, &Option<String>> = BTreeMap::new();
        for (k, v) in got.values() {
            assert!(
                latest.insert(k.as_str(), v).is_none(),
                "{codec}: {k} read twice"
            );
        }
        for k in 0..KEYS {
            let key = format!("k{k}");
            if k < TOMBSTONED {
                assert!(
                    !latest.contains_key(key.as_str()),
                    "{codec}: tombstoned {key} is gone"
                );
            } else {
                let want = Some(format!("k{k}-v{}", UPDATES - 1));
                assert_eq!(
                    latest.get(key.as_str()),
                    Some(&&want),
                    "{codec}: latest {key}"
                );
            }
        }
        assert!(
            got.len() < produced.len() / 2,
            "{codec}: {} of {}",
            got.len(),
            produced.len()
        );
    }
}
