//! The idempotent producer against the real broker: librdkafka with `enable.idempotence=true`
//! keeps producing while the broker is killed with -9 and restarted, and every acknowledged
//! message is then in the topic exactly once, in send order, at the offset it was acknowledged
//! with; and raw-protocol checks of the broker's answers to a retried batch, a sequence gap and
//! a stale epoch, and of InitProducerId; and in a three-node cluster, a new leader answers the
//! retries of batches its killed predecessor had appended with their original offsets.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferrymq_e2e::cluster::{find_topic, Cluster};
use ferrymq_e2e::workload::{check, read_all, ProducerRun};
use ferrymq_e2e::{topic, BrokerProcess, RawClient};
use ferrymq_log::batch::testing::batch_with_producer;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::produce_response::PartitionProduceResponse;
use kafka_protocol::messages::{
    BrokerId, InitProducerIdRequest, ListOffsetsRequest, ProduceRequest, TopicName, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

const TIMEOUT: Duration = Duration::from_secs(30);
/// What the broker logs once it serves (its port accepts connections a little earlier).
const READY: &str = "FerryMQ broker ready";

async fn create_topic(addr: &str, name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .create()
        .unwrap();
    let opts = AdminOptions::new().operation_timeout(Some(TIMEOUT));
    let new = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let res = admin.create_topics([&new], &opts).await.unwrap();
    assert!(res[0].is_ok(), "{res:?}");
}

/// An idempotent librdkafka producer that rides out broker restarts: it keeps retrying for up
/// to two minutes, reconnecting quickly.
fn idempotent_producer(addr: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "120000")
        .set("retry.backoff.ms", "50")
        .set("retry.backoff.max.ms", "500")
        .set("reconnect.backoff.ms", "20")
        .set("reconnect.backoff.max.ms", "500")
        .create()
        .expect("producer")
}

/// Enqueues a record without waiting, serving librdkafka while its queue is full.
fn enqueue(p: &FutureProducer, mut rec: FutureRecord<'_, (), [u8]>) -> DeliveryFuture {
    loop {
        match p.send_result(rec) {
            Ok(f) => return f,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                rec = back;
                p.poll(Duration::from_millis(10));
            }
            Err((e, _)) => panic!("enqueue failed: {e}"),
        }
    }
}

/// Every message of partition `p` from the beginning to its high watermark: (offset, value).
fn read_partition(addr: &str, topic: &str, p: i32) -> Vec<(i64, u64)> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        // librdkafka wants a group id for assign; nothing is joined or committed.
        .set("group.id", "idempotence-reader")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    let (_, high) = c.fetch_watermarks(topic, p, TIMEOUT).unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, p, Offset::Beginning)
        .unwrap();
    c.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut out = Vec::new();
    while out.last().is_none_or(|&(o, _)| o + 1 < high) {
        assert!(
            Instant::now() < deadline,
            "read {} of partition {p}",
            out.len()
        );
        match c.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let text = std::str::from_utf8(m.payload().unwrap()).unwrap();
                out.push((m.offset(), text.parse().unwrap()));
            }
            Some(Err(e)) => panic!("consume error: {e}"),
            None => {}
        }
    }
    out
}

/// What the producer side saw: each acknowledged message's (partition, offset), and the
/// messages whose delivery failed with the error.
#[derive(Default)]
struct Deliveries {
    acked: HashMap<u64, (i32, i64)>,
    failed: Vec<(u64, String)>,
}

/// Sends `messages` numbered messages round robin over `partitions` from a blocking thread, and
/// awaits their delivery reports in another task, counting acknowledgements in `acked_count`.
fn produce_numbered(
    producer: FutureProducer,
    topic: String,
    messages: u64,
    partitions: i32,
    acked_count: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<Deliveries> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    // Dropping the last handle purges librdkafka's queues: the collector keeps one.
    let keep_alive = producer.clone();
    tokio::task::spawn_blocking(move || {
        for i in 0..messages {
            let value = i.to_string();
            let partition = (i % partitions as u64) as i32;
            let record = FutureRecord::to(&topic)
                .partition(partition)
                .payload(value.as_bytes());
            let delivery = enqueue(&producer, record);
            tx.send((i, partition, delivery)).expect("collector alive");
        }
    });
    tokio::spawn(async move {
        let mut out = Deliveries::default();
        while let Some((i, partition, delivery)) = rx.recv().await {
            match delivery.await.expect("delivery report") {
                Ok(d) => {
                    assert_eq!(d.partition, partition);
                    out.acked.insert(i, (d.partition, d.offset));
                }
                Err((e, _)) => out.failed.push((i, e.to_string())),
            }
            acked_count.fetch_add(1, Ordering::Relaxed);
        }
        drop(keep_alive);
        out
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_idempotent_production_leaves_every_acked_message_once_in_order() {
    const MESSAGES: u64 = 200_000;
    const PARTITIONS: i32 = 4;
    const KILLS: u64 = 4;
    let started = Instant::now();
    let mut broker = BrokerProcess::start(&[]).unwrap();
    let addr = broker.addr.clone();
    let t = topic("idem-kill9");
    create_topic(&addr, &t, PARTITIONS).await;
    let answered = Arc::new(AtomicU64::new(0));
    let producing = produce_numbered(
        idempotent_producer(&addr),
        t.clone(),
        MESSAGES,
        PARTITIONS,
        answered.clone(),
    );
    // Crash the broker, once it serves again, each time another fifth of the messages has been
    // answered, while the rest are queued or in flight: some appended and not yet answered,
    // some not appended.
    let killer = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        for k in 1..=KILLS {
            while broker.log().matches(READY).count() < k as usize
                || answered.load(Ordering::Relaxed) < k * MESSAGES / (KILLS + 1)
            {
                assert!(
                    Instant::now() < deadline,
                    "production stalled before kill {k}"
                );
                std::thread::sleep(Duration::from_millis(2));
            }
            broker.kill9();
            broker.restart().unwrap();
        }
        broker
    });
    let deliveries = producing.await.unwrap();
    let broker = killer.join().unwrap();
    assert!(
        deliveries.failed.is_empty(),
        "{} deliveries failed, first: {:?}",
        deliveries.failed.len(),
        deliveries.failed.first()
    );
    for p in 0..PARTITIONS {
        let stored = read_partition(&addr, &t, p);
        let sent: Vec<u64> = (0..MESSAGES)
            .filter(|i| (i % PARTITIONS as u64) as i32 == p)
            .collect();
        // Exactly once and in send order: each partition holds precisely what was sent to it.
        let values: Vec<u64> = stored.iter().map(|&(_, v)| v).collect();
        assert_eq!(values.len(), sent.len(), "partition {p}: count");
        if let Some(at) = values.iter().zip(&sent).position(|(a, b)| a != b) {
            panic!(
                "partition {p}: at index {at} stored {} where {} was sent",
                values[at], sent[at]
            );
        }
        // And each at the offset its acknowledgement gave, retries included.
        for &(offset, value) in &stored {
            assert_eq!(
                deliveries.acked.get(&value),
                Some(&(p, offset)),
                "message {value} stored at {p}/{offset}"
            );
        }
    }
    let restarts = broker.log().matches(READY).count();
    assert_eq!(
        restarts as u64,
        KILLS + 1,
        "the broker was killed {KILLS} times"
    );
    assert!(
        started.elapsed() < Duration::from_secs(90),
        "took {:?}",
        started.elapsed()
    );
}

fn produce_request(topic: &str, records: Bytes) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.into())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(records))])])
}

async fn produce(raw: &mut RawClient, topic: &str, records: Bytes) -> PartitionProduceResponse {
    let resp = raw.call(&produce_request(topic, records), 9).await.unwrap();
    resp.responses[0].partition_responses[0].clone()
}

async fn high_watermark(raw: &mut RawClient, topic: &str) -> i64 {
    let req = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.into())))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_timestamp(-1)])]);
    let resp = raw.call(&req, 5).await.unwrap();
    resp.topics[0].partitions[0].offset
}

async fn init_producer_id(raw: &mut RawClient, version: i16) -> (i64, i16) {
    // The wire library's default transactional id is "", not null as clients send.
    let req = InitProducerIdRequest::default().with_transactional_id(None);
    let resp = raw.call(&req, version).await.unwrap();
    assert_eq!(resp.error_code, 0, "InitProducerId v{version}");
    (resp.producer_id.0, resp.producer_epoch)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_idempotent_batch_sent_twice_is_stored_once_and_answered_with_its_offset() {
    let broker = BrokerProcess::start(&[]).unwrap();
    let t = topic("idem-raw");
    create_topic(&broker.addr, &t, 1).await;
    let mut raw = RawClient::connect(&broker.addr).await.unwrap();
    let (pid, epoch) = init_producer_id(&mut raw, 4).await;
    assert_eq!(epoch, 0);
    let now = 1_700_000_000_000;
    let first = batch_with_producer(&[b"a", b"b", b"c"], now, pid, 0, 0);
    let answer = produce(&mut raw, &t, first.clone()).await;
    assert_eq!((answer.error_code, answer.base_offset), (0, 0));
    let next = batch_with_producer(&[b"d"], now, pid, 0, 3);
    assert_eq!(produce(&mut raw, &t, next).await.base_offset, 3);
    let retry = produce(&mut raw, &t, first).await;
    assert_eq!(
        (retry.error_code, retry.base_offset),
        (0, 0),
        "a retry is answered with the original offset"
    );
    assert_eq!(high_watermark(&mut raw, &t).await, 4, "stored once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sequence_gap_and_a_stale_epoch_get_kafkas_error_codes() {
    let broker = BrokerProcess::start(&[]).unwrap();
    let t = topic("idem-errors");
    create_topic(&broker.addr, &t, 1).await;
    let mut raw = RawClient::connect(&broker.addr).await.unwrap();
    let (pid, _) = init_producer_id(&mut raw, 0).await;
    let now = 1_700_000_000_000;
    let send = |epoch, seq| batch_with_producer(&[b"x"], now, pid, epoch, seq);
    assert_eq!(produce(&mut raw, &t, send(0, 0)).await.error_code, 0);
    let gap = produce(&mut raw, &t, send(0, 2)).await;
    assert_eq!(gap.error_code, 45, "OUT_OF_ORDER_SEQUENCE_NUMBER");
    assert_eq!(gap.base_offset, -1);
    // The producer bumps its own epoch (KIP-360): the new epoch starts at sequence 0.
    assert_eq!(produce(&mut raw, &t, send(1, 1)).await.error_code, 45);
    assert_eq!(produce(&mut raw, &t, send(1, 0)).await.error_code, 0);
    let stale = produce(&mut raw, &t, send(0, 1)).await;
    assert_eq!(stale.error_code, 47, "INVALID_PRODUCER_EPOCH");
    assert_eq!(high_watermark(&mut raw, &t).await, 2);
    // A batch with a producer id but no sequence is INVALID_RECORD, as in Kafka.
    let bad = produce(&mut raw, &t, batch_with_producer(&[b"x"], now, pid, 1, -1)).await;
    assert_eq!(bad.error_code, 87);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_producer_id_hands_out_ids_never_reused_after_a_kill9() {
    let mut broker = BrokerProcess::start(&[]).unwrap();
    let mut raw = RawClient::connect(&broker.addr).await.unwrap();
    let mut ids = Vec::new();
    for version in 0..=5 {
        ids.push(init_producer_id(&mut raw, version).await.0);
    }
    broker.kill9();
    broker.restart().unwrap();
    let mut raw = RawClient::connect(&broker.addr).await.unwrap();
    ids.push(init_producer_id(&mut raw, 4).await.0);
    let mut distinct = ids.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), ids.len(), "{ids:?}");
    assert!(ids.last() > ids[..ids.len() - 1].iter().max(), "{ids:?}");
    // A transactional id needs a transaction coordinator, which does not exist yet.
    let txn = InitProducerIdRequest::default()
        .with_transactional_id(Some(TransactionalId(StrBytes::from_static_str("tx-1"))))
        .with_transaction_timeout_ms(60_000);
    let resp = raw.call(&txn, 4).await.unwrap();
    assert_eq!(resp.error_code, 15, "COORDINATOR_NOT_AVAILABLE");
    assert_eq!((resp.producer_id.0, resp.producer_epoch), (-1, -1));
}

/// Creates `name` with RF 3 and min.insync.replicas 2, its partitions' replicas as given (the
/// first of each is the preferred leader), and waits until every partition has a leader.
async fn create_replicated(c: &Cluster, name: &str, assignment: &[&[i32]]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", c.bootstrap())
        .create()
        .unwrap();
    let opts = AdminOptions::new().operation_timeout(Some(TIMEOUT));
    let new = NewTopic::new(
        name,
        assignment.len() as i32,
        TopicReplication::Variable(assignment),
    )
    .set("min.insync.replicas", "2");
    let res = admin.create_topics([&new], &opts).await.unwrap();
    assert!(res[0].is_ok(), "{res:?}");
    c.wait_metadata(1, TIMEOUT, |md| {
        find_topic(md, name).is_some_and(|t| t.partitions.iter().all(|p| p.leader_id.0 > 0))
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_deduplicates_retries_after_the_old_leader_is_killed() {
    let mut c = Cluster::start(3, 3, &[]).unwrap();
    // Node 1 leads every partition; nodes 2 and 3 follow.
    let t = topic("idem-failover");
    create_replicated(&c, &t, &[&[1, 2, 3], &[1, 3, 2], &[1, 2, 3]]).await;
    let raw_topic = topic("idem-failover-raw");
    create_replicated(&c, &raw_topic, &[&[1, 2, 3]]).await;
    // Two idempotent batches acknowledged by node 1 (acks=all: the followers have them).
    let mut raw = RawClient::connect(&c.nodes[0].addr).await.unwrap();
    let (pid, _) = init_producer_id(&mut raw, 4).await;
    let now = 1_700_000_000_000;
    let first = batch_with_producer(&[b"a", b"b"], now, pid, 0, 0);
    let second = batch_with_producer(&[b"c"], now, pid, 0, 2);
    assert_eq!(
        produce(&mut raw, &raw_topic, first.clone())
            .await
            .base_offset,
        0
    );
    assert_eq!(
        produce(&mut raw, &raw_topic, second.clone())
            .await
            .base_offset,
        2
    );
    // librdkafka produces throughout, with batches in flight when node 1 dies.
    let run = ProducerRun::start(&c.bootstrap(), &t, 3, &[("enable.idempotence", "true")]);
    assert!(run.wait_acked(2_000, TIMEOUT).await, "producing");
    c.node(1).kill9();
    c.wait_metadata(2, TIMEOUT, |md| {
        find_topic(md, &raw_topic).is_some_and(|t| t.partitions.iter().all(|p| p.leader_id.0 > 1))
    })
    .await
    .unwrap();
    // The new leader learned the producer's state from the batches it replicated: resending
    // both (as a producer whose answers were lost would) gets their original offsets.
    let new_leader = c.leader(2, &raw_topic, 0).await.unwrap() as usize;
    let mut raw = RawClient::connect(&c.nodes[new_leader - 1].addr)
        .await
        .unwrap();
    for (batch, offset) in [(first, 0), (second, 2)] {
        let again = produce(&mut raw, &raw_topic, batch).await;
        assert_eq!(
            (again.error_code, again.base_offset),
            (0, offset),
            "retry at node {new_leader}"
        );
    }
    let next = batch_with_producer(&[b"d"], now, pid, 0, 3);
    assert_eq!(produce(&mut raw, &raw_topic, next).await.base_offset, 3);
    assert_eq!(
        high_watermark(&mut raw, &raw_topic).await,
        4,
        "nothing stored twice"
    );
    let before = run.acked_count();
    assert!(
        run.wait_acked(before + 2_000, TIMEOUT).await,
        "production resumes on the new leaders"
    );
    c.node(1).restart().unwrap();
    let (attempted, acked, failed) = run.finish().await;
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        failed.first()
    );
    let read = read_all(&c.bootstrap(), &t, 3);
    let summary = check(&acked, &read, true);
    for (p, msgs) in &read {
        let sent_order = msgs.windows(2).all(|w| w[0].1 < w[1].1);
        assert!(sent_order, "partition {p}: values out of send order");
    }
    eprintln!("{attempted} attempted; {summary}");
}
