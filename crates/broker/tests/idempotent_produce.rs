//! Idempotent produce through the broker core — the real controller, log writer thread and
//! partition logs in a temporary data dir: retries answered with the original offsets after the
//! same durability wait, refusals that leave the partition serving, producer ids that no restart
//! hands out twice, and producer state that a restart (clean or not) keeps.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ferrymq_broker::{Acks, Broker, BrokerConfig, BrokerError, Clock, ReadBound, SystemClock};
use ferrymq_cluster::{Controller, ControllerConfig, CreateTopic, PRODUCER_ID_BLOCK_SIZE};
use ferrymq_log::batch::testing::batch_with_producer;
use ferrymq_log::batch::validate_produce_records;
use ferrymq_log::{ProducerError, ValidatedBatch};
use ferrymq_types::{NodeId, Offset, ProducerEpoch, ProducerId, TopicPartition};

const TIMEOUT: Duration = Duration::from_secs(10);

fn open(dir: &Path) -> Arc<Broker> {
    let controller = Controller::open(
        &dir.join("__cluster_metadata"),
        "test-cluster".into(),
        ControllerConfig {
            node_id: NodeId(1),
            advertised_host: "127.0.0.1".into(),
            advertised_port: 9092,
            rack: None,
            default_num_partitions: 1,
            default_replication_factor: 1,
        },
    )
    .unwrap();
    Broker::open(
        BrokerConfig::with_data_dir(dir),
        Arc::new(controller),
        Arc::new(SystemClock),
    )
    .unwrap()
}

async fn with_topic(dir: &Path) -> (Arc<Broker>, TopicPartition) {
    let broker = open(dir);
    let create = CreateTopic {
        name: "t".into(),
        num_partitions: Some(1),
        ..Default::default()
    };
    broker
        .controller()
        .create_topic(create, false)
        .await
        .unwrap();
    broker.sync_metadata();
    (broker, TopicPartition::new("t", 0))
}

/// A batch stamped now: an old timestamp would make every append roll a segment by age.
fn idem(pid: ProducerId, epoch: i16, seq: i32, values: &[&[u8]]) -> ValidatedBatch {
    let now = SystemClock.now_ms();
    validate_produce_records(batch_with_producer(values, now, pid.0, epoch, seq)).unwrap()
}

/// How many records the partition holds (all in one segment here).
fn stored_records(broker: &Broker, tp: &TopicPartition) -> usize {
    let p = broker.partition(tp).unwrap();
    let read = p
        .read(Offset(0), 1 << 20, ReadBound::HighWatermark, true, None)
        .unwrap();
    let mut bytes = read.records.unwrap_or_default();
    let mut count = 0;
    while !bytes.is_empty() {
        let h = ferrymq_log::BatchHeader::parse(&bytes).unwrap();
        count += h.record_count as usize;
        let _ = bytes.split_to(h.total_bytes());
    }
    count
}

#[tokio::test]
async fn a_retried_produce_gets_the_first_offset_and_the_records_are_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, tp) = with_topic(dir.path()).await;
    let (pid, epoch) = broker.init_producer_id().await.unwrap();
    assert_eq!(epoch, ProducerEpoch(0));
    let first = idem(pid, 0, 0, &[b"a", b"b"]);
    let done = broker
        .produce(&tp, first.clone(), Acks::All, TIMEOUT)
        .await
        .unwrap();
    assert!(!done.duplicate);
    broker
        .produce(&tp, idem(pid, 0, 2, &[b"c"]), Acks::All, TIMEOUT)
        .await
        .unwrap();
    let again = broker
        .produce(&tp, first, Acks::All, TIMEOUT)
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.append.base_offset, Offset(0));
    assert_eq!(again.append.last_offset, Offset(1));
    assert_eq!(stored_records(&broker, &tp), 3);
    assert_eq!(broker.partition(&tp).unwrap().high_watermark(), Offset(3));
}

#[tokio::test]
async fn a_gap_and_a_stale_epoch_are_refused_and_the_partition_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, tp) = with_topic(dir.path()).await;
    let (pid, _) = broker.init_producer_id().await.unwrap();
    let produce = |b| broker.produce(&tp, b, Acks::Leader, TIMEOUT);
    produce(idem(pid, 1, 0, &[b"a"])).await.unwrap();
    let gap = produce(idem(pid, 1, 5, &[b"b"])).await.unwrap_err();
    assert!(
        matches!(
            gap,
            BrokerError::Producer(ProducerError::OutOfOrderSequence { .. })
        ),
        "{gap}"
    );
    let stale = produce(idem(pid, 0, 1, &[b"b"])).await.unwrap_err();
    assert!(
        matches!(
            stale,
            BrokerError::Producer(ProducerError::InvalidProducerEpoch { .. })
        ),
        "{stale}"
    );
    let next = produce(idem(pid, 1, 1, &[b"b"])).await.unwrap();
    assert_eq!(next.append.base_offset, Offset(1));
}

#[tokio::test]
async fn producer_ids_are_never_handed_out_twice_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path());
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(broker.init_producer_id().await.unwrap().0);
    }
    broker.shutdown().await.unwrap();
    drop(broker);
    let broker = open(dir.path());
    seen.push(broker.init_producer_id().await.unwrap().0);
    drop(broker); // and a crash
    let broker = open(dir.path());
    seen.push(broker.init_producer_id().await.unwrap().0);
    assert_eq!(
        seen,
        [
            ProducerId(0),
            ProducerId(1),
            ProducerId(2),
            ProducerId(PRODUCER_ID_BLOCK_SIZE),
            ProducerId(2 * PRODUCER_ID_BLOCK_SIZE),
        ],
        "the rest of a block is never used after a restart"
    );
}

#[tokio::test]
async fn a_retry_after_a_restart_is_still_recognised() {
    for clean in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let (broker, tp) = with_topic(dir.path()).await;
        let (pid, _) = broker.init_producer_id().await.unwrap();
        let sent: Vec<ValidatedBatch> = (0..5).map(|i| idem(pid, 0, i, &[b"x"])).collect();
        for b in &sent {
            broker
                .produce(&tp, b.clone(), Acks::All, TIMEOUT)
                .await
                .unwrap();
        }
        if clean {
            broker.shutdown().await.unwrap();
        }
        drop(broker);
        let broker = open(dir.path());
        for (i, b) in sent.into_iter().enumerate() {
            let again = broker.produce(&tp, b, Acks::All, TIMEOUT).await.unwrap();
            assert!(again.duplicate, "clean={clean} batch {i}");
            assert_eq!(again.append.base_offset, Offset(i as i64));
        }
        assert_eq!(stored_records(&broker, &tp), 5, "clean={clean}");
    }
}
