//! Idempotent produce through the broker core — the real controller, log writer thread and
//! partition logs in a temporary data dir: retries answered with the original offsets after the
//! same durability wait, refusals that leave the partition serving, producer ids that no restart
//! hands out twice, and producer state that a restart (clean or not) keeps.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ferrymq_broker::replication::transport::{
    BoxFuture, Endpoint, ReplicaFetchRequest, ReplicaFetchResult, ReplicaTransport, TransportError,
};
use ferrymq_broker::{Acks, Broker, BrokerConfig, BrokerError, Clock, ReadBound, SystemClock};
use ferrymq_cluster::{Controller, ControllerConfig, CreateTopic, PRODUCER_ID_BLOCK_SIZE};
use ferrymq_log::batch::testing::batch_with_producer;
use ferrymq_log::batch::validate_produce_records;
use ferrymq_log::{ProducerError, ValidatedBatch};
use ferrymq_types::{NodeId, Offset, ProducerEpoch, ProducerId, TopicPartition};
use tokio::sync::watch;

const TIMEOUT: Duration = Duration::from_secs(10);

/// A single node never follows anyone, so its fetchers never call a transport: this one only
/// says so if they did.
#[derive(Debug)]
struct SingleNode;

impl ReplicaTransport for SingleNode {
    fn fetch<'a>(
        &'a self,
        _to: &'a Endpoint,
        _req: ReplicaFetchRequest,
    ) -> BoxFuture<'a, Result<Vec<ReplicaFetchResult>, TransportError>> {
        Box::pin(async {
            Err(TransportError::Failed(
                "a single node has no leader to fetch from".to_string(),
            ))
        })
    }
}

/// One single-node controller and broker on `dir`; `stop` ends the controller's tasks.
struct Node {
    broker: Arc<Broker>,
    controller: Arc<Controller>,
    stop: watch::Sender<bool>,
}

impl Node {
    /// Starts the controller (its own one-voter quorum), waits until it has registered and
    /// unfenced this node, then opens the broker, as `ferrymq serve` does.
    async fn open(dir: &Path) -> Node {
        let (stop, stop_rx) = watch::channel(false);
        let config = ControllerConfig {
            node_id: NodeId(1),
            advertised_host: "127.0.0.1".into(),
            advertised_port: 9092,
            rack: None,
            default_num_partitions: 1,
            default_replication_factor: 1,
            topic_defaults: Default::default(),
            metadata_dir: dir.join("__cluster_metadata"),
            controller_addr: String::new(),
            voters: BTreeMap::new(),
            heartbeat_interval: Duration::from_millis(100),
            session_timeout: Duration::from_secs(3),
            known_cluster_id: None,
            auto_leader_rebalance: false,
            leader_imbalance_check_interval: Duration::from_secs(300),
        };
        let controller = Controller::start(config, None, stop_rx).await.unwrap();
        let mut state = controller.broker_state();
        tokio::time::timeout(
            Duration::from_secs(30),
            state.wait_for(|s| s.registered && !s.fenced),
        )
        .await
        .expect("registered within 30 s")
        .unwrap();
        let broker = Broker::open(
            BrokerConfig::with_data_dir(dir),
            controller.clone(),
            Arc::new(SystemClock),
            Arc::new(SingleNode),
        )
        .unwrap();
        Node {
            broker,
            controller,
            stop,
        }
    }

    /// Stops the controller; with `clean`, the broker first closes its logs (snapshots,
    /// checkpoints, marker), otherwise it is dropped as a crash would leave it.
    async fn stop(self, clean: bool) {
        if clean {
            self.broker.shutdown().await.unwrap();
        }
        drop(self.broker);
        self.stop.send_replace(true);
        self.controller.shutdown().await;
    }
}

async fn with_topic(dir: &Path) -> (Node, TopicPartition) {
    let node = Node::open(dir).await;
    let create = CreateTopic {
        name: "t".into(),
        num_partitions: Some(1),
        ..Default::default()
    };
    node.broker
        .controller()
        .create_topic(create, false)
        .await
        .unwrap();
    node.broker.sync_metadata();
    (node, TopicPartition::new("t", 0))
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_produce_gets_the_first_offset_and_the_records_are_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let (node, tp) = with_topic(dir.path()).await;
    let broker = &node.broker;
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
    assert_eq!(stored_records(broker, &tp), 3);
    assert_eq!(broker.partition(&tp).unwrap().high_watermark(), Offset(3));
    node.stop(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_and_a_stale_epoch_are_refused_and_the_partition_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let (node, tp) = with_topic(dir.path()).await;
    let broker = &node.broker;
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
    node.stop(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_ids_are_never_handed_out_twice_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut seen = Vec::new();
    let node = Node::open(dir.path()).await;
    for _ in 0..3 {
        seen.push(node.broker.init_producer_id().await.unwrap().0);
    }
    node.stop(true).await;
    let node = Node::open(dir.path()).await;
    seen.push(node.broker.init_producer_id().await.unwrap().0);
    node.stop(false).await; // the broker as a crash leaves it
    let node = Node::open(dir.path()).await;
    seen.push(node.broker.init_producer_id().await.unwrap().0);
    node.stop(true).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_a_restart_is_still_recognised() {
    for clean in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let (node, tp) = with_topic(dir.path()).await;
        let (pid, _) = node.broker.init_producer_id().await.unwrap();
        let sent: Vec<ValidatedBatch> = (0..5).map(|i| idem(pid, 0, i, &[b"x"])).collect();
        for b in &sent {
            node.broker
                .produce(&tp, b.clone(), Acks::All, TIMEOUT)
                .await
                .unwrap();
        }
        node.stop(clean).await;
        let node = Node::open(dir.path()).await;
        node.broker.sync_metadata();
        for (i, b) in sent.into_iter().enumerate() {
            let again = node
                .broker
                .produce(&tp, b, Acks::All, TIMEOUT)
                .await
                .unwrap();
            assert!(again.duplicate, "clean={clean} batch {i}");
            assert_eq!(again.append.base_offset, Offset(i as i64));
        }
        assert_eq!(stored_records(&node.broker, &tp), 5, "clean={clean}");
        node.stop(true).await;
    }
}
