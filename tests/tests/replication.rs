//! Replication and failover with real processes and librdkafka: RF 3 with min.insync.replicas
//! 2 keeps every acknowledged message through leader kills, follower pauses and rolling
//! restarts; the classic ways Kafka lost data (HW truncation then election, both replicas
//! crashing with divergent tails, fast successive failovers) lose nothing here; replicas end
//! byte-identical.

use std::time::{Duration, Instant};

use ferrymq_e2e::cluster::{find_topic, summary, Cluster};
use ferrymq_e2e::topic;
use ferrymq_e2e::workload::{check, read_all, ProducerRun};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

const TIMEOUT: Duration = Duration::from_secs(30);

async fn create(c: &Cluster, name: &str, partitions: i32, rf: i32, min_isr: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", c.bootstrap())
        .create()
        .unwrap();
    let opts = AdminOptions::new().operation_timeout(Some(TIMEOUT));
    let t = NewTopic::new(name, partitions, TopicReplication::Fixed(rf))
        .set("min.insync.replicas", min_isr);
    let r = admin.create_topics([&t], &opts).await.unwrap();
    assert!(r[0].is_ok(), "{r:?}");
    c.wait_metadata(1, TIMEOUT, |md| {
        find_topic(md, name).is_some_and(|t| t.partitions.iter().all(|p| p.leader_id.0 > 0))
    })
    .await
    .unwrap();
}

/// Waits until every partition of `name` has its full ISR again.
async fn wait_full_isr(c: &Cluster, name: &str, rf: usize) {
    c.wait_metadata(1, Duration::from_secs(60), |md| {
        find_topic(md, name).is_some_and(|t| {
            t.partitions
                .iter()
                .all(|p| p.isr_nodes.len() == rf && p.leader_id.0 > 0)
        })
    })
    .await
    .unwrap();
}

/// Waits until the replicas of `name`-`partition` on `nodes` hold the same bytes.
async fn replicas_identical(c: &Cluster, name: &str, partition: i32, nodes: &[usize]) {
    let dir = format!("{name}-{partition}");
    let contents = |n: &ferrymq_e2e::BrokerProcess| -> Vec<u8> {
        let mut files: Vec<_> = std::fs::read_dir(n.data_dir.join(&dir))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        files.retain(|p: &std::path::PathBuf| p.extension().is_some_and(|e| e == "log"));
        files.sort();
        files
            .iter()
            .flat_map(|f| std::fs::read(f).unwrap_or_default())
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let all: Vec<Vec<u8>> = nodes.iter().map(|n| contents(&c.nodes[n - 1])).collect();
        if all.windows(2).all(|w| w[0] == w[1]) {
            assert!(!all[0].is_empty(), "{dir} holds data");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "replicas of {dir} differ: sizes {:?}",
            all.iter().map(Vec::len).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rf3_keeps_every_acknowledged_message_through_leader_kill_and_rolling_restart() {
    let mut c = Cluster::start(3, 3, &[]).unwrap();
    let t = topic("rf3");
    create(&c, &t, 3, 3, "2").await;
    let run = ProducerRun::start(&c.bootstrap(), &t, 3, &[]);
    assert!(run.wait_acked(2_000, TIMEOUT).await, "producing");
    // Kill -9 the leader of partition 0, then bring it back.
    let leader = c.leader(2, &t, 0).await.unwrap() as usize;
    c.node(leader).kill9();
    let before = run.acked_count();
    assert!(
        run.wait_acked(before + 2_000, TIMEOUT).await,
        "production resumes on the new leaders"
    );
    c.node(leader).restart().unwrap();
    wait_full_isr(&c, &t, 3).await;
    // Rolling restart: each node stopped cleanly (leadership moves first) and started again.
    for id in 1..=3 {
        assert_eq!(c.node(id).stop().unwrap(), 0);
        let before = run.acked_count();
        assert!(
            run.wait_acked(before + 500, TIMEOUT).await,
            "production continues while node {id} is down"
        );
        c.node(id).restart().unwrap();
        wait_full_isr(&c, &t, 3).await;
    }
    let (attempted, acked, failed) = run.finish().await;
    let read = read_all(&c.bootstrap(), &t, 3);
    let summary = check(&acked, &read, false);
    eprintln!("{attempted} attempted, {} failed; {summary}", failed.len());
    for p in 0..3 {
        replicas_identical(&c, &t, p, &[1, 2, 3]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_follower_leaves_the_isr_and_acks_all_continues() {
    // A long session keeps the paused broker registered: only the lag rule removes it.
    let mut c = Cluster::start(
        3,
        3,
        &[
            "broker.session.timeout.ms=60000",
            "replica.lag.time.max.ms=1500",
        ],
    )
    .unwrap();
    let t = topic("lag");
    create(&c, &t, 1, 3, "2").await;
    let leader = c.leader(1, &t, 0).await.unwrap() as usize;
    let follower = (1..=3).find(|n| *n != leader).unwrap();
    c.node(follower).signal("STOP");
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", c.bootstrap())
        .set("acks", "all")
        .create()
        .unwrap();
    let started = Instant::now();
    producer
        .send(
            FutureRecord::<(), _>::to(&t)
                .partition(0)
                .payload("while paused"),
            TIMEOUT,
        )
        .await
        .unwrap();
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(10),
        "acks=all answered after {waited:?}"
    );
    let md = c
        .wait_metadata(leader, TIMEOUT, |md| {
            find_topic(md, &t).is_some_and(|t| t.partitions[0].isr_nodes.len() == 2)
        })
        .await
        .unwrap();
    assert!(
        find_topic(&md, &t).unwrap().partitions[0]
            .isr_nodes
            .iter()
            .all(|r| r.0 as usize != follower),
        "{}",
        summary(&md)
    );
    c.node(follower).signal("CONT");
    wait_full_isr(&c, &t, 3).await;
    replicas_identical(&c, &t, 0, &[1, 2, 3]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_all_below_min_insync_is_not_enough_replicas() {
    let mut c = Cluster::start(
        3,
        3,
        &[
            "broker.session.timeout.ms=60000",
            "replica.lag.time.max.ms=1000",
        ],
    )
    .unwrap();
    let t = topic("minisr");
    create(&c, &t, 1, 3, "3").await;
    let leader = c.leader(1, &t, 0).await.unwrap() as usize;
    let follower = (1..=3).find(|n| *n != leader).unwrap();
    c.node(follower).signal("STOP");
    c.wait_metadata(leader, TIMEOUT, |md| {
        find_topic(md, &t).is_some_and(|t| t.partitions[0].isr_nodes.len() == 2)
    })
    .await
    .unwrap();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", c.bootstrap())
        .set("acks", "all")
        .set("message.send.max.retries", "0")
        .create()
        .unwrap();
    let err = producer
        .send(
            FutureRecord::<(), _>::to(&t).partition(0).payload("x"),
            TIMEOUT,
        )
        .await
        .unwrap_err()
        .0;
    assert!(
        err.to_string().contains("NotEnoughReplicas") || err.to_string().contains("not enough"),
        "{err}"
    );
    c.node(follower).signal("CONT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_restarted_then_elected_keeps_what_was_acknowledged() {
    // KIP-101 scenario 1: a follower that truncated to its (lagging) HW on restart and then
    // became leader lost acknowledged writes. Here a restart never truncates to the HW.
    let mut c = Cluster::start(3, 3, &[]).unwrap();
    let t = topic("kip101a");
    create(&c, &t, 1, 2, "2").await;
    let md = c.metadata(1).await.unwrap();
    let p = &find_topic(&md, &t).unwrap().partitions[0];
    let leader = p.leader_id.0 as usize;
    let follower = p
        .replica_nodes
        .iter()
        .map(|r| r.0 as usize)
        .find(|r| *r != leader)
        .unwrap();
    let run = ProducerRun::start(&c.bootstrap(), &t, 1, &[]);
    assert!(run.wait_acked(3_000, TIMEOUT).await);
    c.node(follower).kill9();
    c.node(follower).restart().unwrap();
    c.node(leader).kill9();
    let (_, acked, _) = run.finish().await;
    c.node(leader).restart().unwrap();
    wait_full_isr(&c, &t, 2).await;
    let read = read_all(&c.bootstrap(), &t, 1);
    eprintln!("{}", check(&acked, &read, false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_replicas_crashing_recover_to_identical_logs_with_nothing_lost() {
    // KIP-101 scenario 2: both replicas crash with divergent tails; they must converge on the
    // new leader's log without losing anything acknowledged.
    let mut c = Cluster::start(3, 3, &[]).unwrap();
    let t = topic("kip101b");
    create(&c, &t, 1, 2, "2").await;
    let md = c.metadata(1).await.unwrap();
    let replicas: Vec<usize> = find_topic(&md, &t).unwrap().partitions[0]
        .replica_nodes
        .iter()
        .map(|r| r.0 as usize)
        .collect();
    let run = ProducerRun::start(&c.bootstrap(), &t, 1, &[]);
    assert!(run.wait_acked(3_000, TIMEOUT).await);
    for r in &replicas {
        c.node(*r).kill9();
    }
    let (_, acked, _) = run.finish().await;
    for r in replicas.iter().rev() {
        c.node(*r).restart().unwrap();
    }
    wait_full_isr(&c, &t, 2).await;
    let read = read_all(&c.bootstrap(), &t, 1);
    eprintln!("{}", check(&acked, &read, false));
    replicas_identical(&c, &t, 0, &replicas).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_successive_failovers_lose_nothing() {
    let mut c = Cluster::start(3, 3, &[]).unwrap();
    let t = topic("fast-failover");
    create(&c, &t, 1, 3, "2").await;
    let run = ProducerRun::start(&c.bootstrap(), &t, 1, &[]);
    assert!(run.wait_acked(2_000, TIMEOUT).await);
    let first = c.leader(1, &t, 0).await.unwrap() as usize;
    c.node(first).kill9();
    let via = (1..=3).find(|n| *n != first).unwrap();
    c.wait_metadata(via, TIMEOUT, |md| {
        find_topic(md, &t).is_some_and(|t| {
            t.partitions[0].leader_id.0 > 0 && t.partitions[0].leader_id.0 as usize != first
        })
    })
    .await
    .unwrap();
    let second = c.leader(via, &t, 0).await.unwrap() as usize;
    c.node(first).restart().unwrap();
    c.node(second).kill9();
    let before = run.acked_count();
    assert!(
        run.wait_acked(before + 500, TIMEOUT).await,
        "production resumes after two failovers"
    );
    c.node(second).restart().unwrap();
    wait_full_isr(&c, &t, 3).await;
    let (_, acked, _) = run.finish().await;
    let read = read_all(&c.bootstrap(), &t, 1);
    eprintln!("{}", check(&acked, &read, false));
    replicas_identical(&c, &t, 0, &[1, 2, 3]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controlled_shutdown_moves_leadership_and_elect_leaders_brings_it_back() {
    use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
    use kafka_protocol::messages::{ElectLeadersRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;
    let mut c = Cluster::start(3, 3, &["auto.leader.rebalance.enable=false"]).unwrap();
    let t = topic("preferred");
    create(&c, &t, 1, 3, "2").await;
    let md = c.metadata(1).await.unwrap();
    let preferred = find_topic(&md, &t).unwrap().partitions[0].replica_nodes[0].0 as usize;
    assert_eq!(c.leader(1, &t, 0).await.unwrap() as usize, preferred);
    let run = ProducerRun::start(&c.bootstrap(), &t, 1, &[]);
    assert!(run.wait_acked(1_000, TIMEOUT).await);
    // SIGTERM: leadership moves before the process goes.
    assert_eq!(c.node(preferred).stop().unwrap(), 0);
    assert!(
        c.node(preferred)
            .log()
            .contains("controlled shutdown: leadership moved away moved=true"),
        "{}",
        c.node(preferred).log()
    );
    let via = (1..=3).find(|n| *n != preferred).unwrap();
    let other = c.leader(via, &t, 0).await.unwrap() as usize;
    assert!(other != preferred && other > 0);
    let before = run.acked_count();
    assert!(
        run.wait_acked(before + 1_000, TIMEOUT).await,
        "production continues on the new leader"
    );
    c.node(preferred).restart().unwrap();
    wait_full_isr(&c, &t, 3).await;
    assert_eq!(
        c.leader(via, &t, 0).await.unwrap() as usize,
        other,
        "no automatic move back when disabled"
    );
    // ElectLeaders on demand.
    let mut raw = ferrymq_e2e::RawClient::connect(&c.nodes[via - 1].addr)
        .await
        .unwrap();
    let req = ElectLeadersRequest::default()
        .with_election_type(0)
        .with_timeout_ms(10_000)
        .with_topic_partitions(Some(vec![TopicPartitions::default()
            .with_topic(TopicName(StrBytes::from_string(t.clone())))
            .with_partitions(vec![0])]));
    let resp = raw.call(&req, 2).await.unwrap();
    assert_eq!(
        resp.replica_election_results[0].partition_result[0].error_code, 0,
        "{resp:?}"
    );
    c.wait_metadata(via, TIMEOUT, |md| {
        find_topic(md, &t).is_some_and(|t| t.partitions[0].leader_id.0 as usize == preferred)
    })
    .await
    .unwrap();
    let again = raw.call(&req, 2).await.unwrap();
    assert_eq!(
        again.replica_election_results[0].partition_result[0].error_code, 84,
        "ELECTION_NOT_NEEDED the second time"
    );
    let (_, acked, _) = run.finish().await;
    let read = read_all(&c.bootstrap(), &t, 1);
    eprintln!("{}", check(&acked, &read, false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_preferred_leader_returns_by_itself_once_back_in_sync() {
    let mut c = Cluster::start(3, 3, &["leader.imbalance.check.interval.seconds=1"]).unwrap();
    let t = topic("auto-preferred");
    create(&c, &t, 1, 3, "2").await;
    let preferred = c.leader(1, &t, 0).await.unwrap() as usize;
    c.node(preferred).kill9();
    let via = (1..=3).find(|n| *n != preferred).unwrap();
    c.wait_metadata(via, TIMEOUT, |md| {
        find_topic(md, &t).is_some_and(|t| {
            t.partitions[0].leader_id.0 > 0 && t.partitions[0].leader_id.0 as usize != preferred
        })
    })
    .await
    .unwrap();
    c.node(preferred).restart().unwrap();
    c.wait_metadata(via, TIMEOUT, |md| {
        find_topic(md, &t).is_some_and(|t| t.partitions[0].leader_id.0 as usize == preferred)
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_behind_the_leaders_log_start_restarts_from_it() {
    use kafka_protocol::messages::delete_records_request::{
        DeleteRecordsPartition, DeleteRecordsTopic,
    };
    use kafka_protocol::messages::{DeleteRecordsRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;
    let mut c = Cluster::start(3, 3, &[]).unwrap();
    let t = topic("behind");
    create(&c, &t, 1, 2, "1").await;
    let md = c.metadata(1).await.unwrap();
    let p = &find_topic(&md, &t).unwrap().partitions[0];
    let leader = p.leader_id.0 as usize;
    let follower = p
        .replica_nodes
        .iter()
        .map(|r| r.0 as usize)
        .find(|r| *r != leader)
        .unwrap();
    c.node(follower).stop().unwrap();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", c.bootstrap())
        .set("acks", "all")
        .set("linger.ms", "0")
        .create()
        .unwrap();
    for i in 0..200 {
        let v = format!("m{i}");
        producer
            .send(
                FutureRecord::<(), _>::to(&t).partition(0).payload(&v),
                TIMEOUT,
            )
            .await
            .unwrap();
    }
    // Everything below 150 goes on the leader while the follower is away.
    let mut raw = ferrymq_e2e::RawClient::connect(&c.nodes[leader - 1].addr)
        .await
        .unwrap();
    let req = DeleteRecordsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![DeleteRecordsTopic::default()
            .with_name(TopicName(StrBytes::from_string(t.clone())))
            .with_partitions(vec![DeleteRecordsPartition::default()
                .with_partition_index(0)
                .with_offset(150)])]);
    let resp = raw.call(&req, 2).await.unwrap();
    assert_eq!(resp.topics[0].partitions[0].low_watermark, 150, "{resp:?}");
    c.node(follower).restart().unwrap();
    wait_full_isr(&c, &t, 2).await;
    let read = read_all(&c.bootstrap(), &t, 1);
    assert_eq!(
        read[&0].first().map(|(o, v)| (*o, v.clone())),
        Some((150, "m150".to_string()))
    );
    assert!(
        c.node(follower).log().contains("restarting from it"),
        "the follower restarted from the leader's log start"
    );
    // The follower's log starts at the leader's log start and holds what follows it.
    let dir = c.nodes[follower - 1].data_dir.join(format!("{t}-0"));
    let segments: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".log"))
        .collect();
    assert_eq!(segments, vec![format!("{:020}.log", 150)], "{segments:?}");
}
