//! Consumer groups through librdkafka (the `rdkafka` crate) against the real broker: members of
//! a group share a topic's partitions with every assignor, rebalance when members come and go,
//! keep their partitions on an incremental (cooperative) rebalance or a static restart, and the
//! group resumes from its committed offsets after the broker stops cleanly or is killed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use ferrymq_e2e::{topic, BrokerProcess};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

const TIMEOUT: Duration = Duration::from_secs(30);
/// Upper bound on any wait in these tests; never an expected duration.
const DEADLINE: Duration = Duration::from_secs(90);
/// Short sessions so that departures are noticed quickly; the broker allows them.
const SESSION_TIMEOUT_MS: &str = "6000";
const BROKER_SETTINGS: &[&str] = &[
    "group.min.session.timeout.ms=1000",
    "group.initial.rebalance.delay.ms=0",
];

async fn create_topic(addr: &str, name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .create()
        .unwrap();
    let opts = AdminOptions::new().operation_timeout(Some(TIMEOUT));
    let res = admin
        .create_topics(
            [&NewTopic::new(name, partitions, TopicReplication::Fixed(1))],
            &opts,
        )
        .await
        .unwrap();
    assert!(res[0].is_ok(), "{res:?}");
}

fn producer(addr: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("enable.idempotence", "false")
        .create()
        .unwrap()
}

/// Produces `per_partition` messages to each partition; values are `p-<partition>-<n>`.
async fn produce(addr: &str, t: &str, partitions: i32, from: usize, per_partition: usize) {
    let p = producer(addr);
    let mut pending = Vec::new();
    for n in from..from + per_partition {
        for part in 0..partitions {
            let v = format!("p-{part}-{n}");
            pending.push(
                p.send_result(FutureRecord::<(), _>::to(t).partition(part).payload(&v))
                    .unwrap(),
            );
        }
    }
    for f in pending {
        f.await.unwrap().expect("acknowledged");
    }
}

/// A group member: a subscribed consumer and the (partition, offset) pairs it processed.
struct Member {
    consumer: BaseConsumer,
    seen: Vec<(i32, i64)>,
}

fn member(addr: &str, group: &str, t: &str, extra: &[(&str, &str)]) -> Member {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", addr)
        .set("group.id", group)
        .set("session.timeout.ms", SESSION_TIMEOUT_MS)
        .set("heartbeat.interval.ms", "300")
        .set("auto.offset.reset", "earliest")
        // Commits after processing: offsets are stored once a message was handled and
        // committed in the background and on every revocation.
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "100")
        .set("enable.auto.offset.store", "false");
    for (k, v) in extra {
        cfg.set(*k, *v);
    }
    if let Ok(d) = std::env::var("FERRYMQ_TEST_RDKAFKA_DEBUG") {
        cfg.set("debug", d);
    }
    let consumer: BaseConsumer = cfg.create().unwrap();
    consumer.subscribe(&[t]).unwrap();
    Member {
        consumer,
        seen: Vec::new(),
    }
}

impl Member {
    /// Polls briefly, processing (recording and storing the offset of) what arrives.
    fn poll(&mut self) {
        match self.consumer.poll(Duration::from_millis(20)) {
            Some(Ok(m)) => {
                self.seen.push((m.partition(), m.offset()));
                self.consumer.store_offset_from_message(&m).unwrap();
            }
            Some(Err(e)) => eprintln!("consumer error (retried by librdkafka): {e}"),
            None => {}
        }
    }

    fn assigned(&self) -> BTreeSet<i32> {
        self.consumer
            .assignment()
            .unwrap()
            .elements()
            .iter()
            .map(|e| e.partition())
            .collect()
    }
}

/// Polls every member until their assignments are disjoint, each non-empty, and together
/// cover `0..partitions`; returns them and how long it took.
fn wait_balanced(members: &mut [Member], partitions: i32) -> (Vec<BTreeSet<i32>>, Duration) {
    let start = Instant::now();
    loop {
        for m in members.iter_mut() {
            m.poll();
        }
        let sets: Vec<BTreeSet<i32>> = members.iter().map(Member::assigned).collect();
        let total: usize = sets.iter().map(BTreeSet::len).sum();
        let union: BTreeSet<i32> = sets.iter().flatten().copied().collect();
        if sets.iter().all(|s| !s.is_empty())
            && total == partitions as usize
            && union.len() == total
        {
            return (sets, start.elapsed());
        }
        assert!(
            start.elapsed() < DEADLINE,
            "assignments never balanced: {sets:?}"
        );
    }
}

/// Polls until every (partition, n) for n in 0..per_partition was processed by some member.
/// (or is in `earlier`, processed by members that left).
fn wait_all_seen_after(
    members: &mut [Member],
    earlier: &[(i32, i64)],
    partitions: i32,
    per_partition: i64,
) {
    let start = Instant::now();
    loop {
        for m in members.iter_mut() {
            m.poll();
        }
        let seen: BTreeSet<(i32, i64)> = members
            .iter()
            .flat_map(|m| m.seen.iter().copied())
            .chain(earlier.iter().copied())
            .collect();
        let missing = (0..partitions)
            .flat_map(|p| (0..per_partition).map(move |o| (p, o)))
            .filter(|x| !seen.contains(x))
            .count();
        if missing == 0 {
            return;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{missing} messages never processed"
        );
    }
}

fn wait_all_seen(members: &mut [Member], partitions: i32, per_partition: i64) {
    wait_all_seen_after(members, &[], partitions, per_partition)
}

/// Closes every member: all unsubscribe and are polled until none holds a partition, then
/// they are dropped. Dropping members one by one instead can leave the last one closing in
/// the middle of the rebalance the others' departures started: librdkafka then waits for the
/// application to serve that rebalance, which a consumer being dropped never does, until
/// `max.poll.interval.ms` (5 minutes) evicts it.
fn close_all(mut members: Vec<Member>) {
    for m in &members {
        m.consumer.unsubscribe();
    }
    let start = Instant::now();
    while members.iter().any(|m| !m.assigned().is_empty()) {
        for m in members.iter_mut() {
            m.poll();
        }
        assert!(
            start.elapsed() < DEADLINE,
            "members never released their partitions"
        );
    }
}

/// Leaves the group cleanly (its partitions are revoked and their offsets committed).
fn leave(mut m: Member, others: &mut [Member]) -> Vec<(i32, i64)> {
    m.consumer.unsubscribe();
    let start = Instant::now();
    while !m.assigned().is_empty() {
        m.poll();
        for o in others.iter_mut() {
            o.poll();
        }
        assert!(
            start.elapsed() < DEADLINE,
            "member never released its partitions"
        );
    }
    std::mem::take(&mut m.seen)
}

async fn group_shares_partitions_and_rebalances_without_skipping(strategy: &str) {
    let broker = BrokerProcess::start(BROKER_SETTINGS).unwrap();
    let t = topic(strategy);
    let group = format!("{t}-group");
    create_topic(&broker.addr, &t, 6).await;
    let extra = [("partition.assignment.strategy", strategy)];
    let mut members: Vec<Member> = (0..3)
        .map(|_| member(&broker.addr, &group, &t, &extra))
        .collect();
    let (sets, took) = wait_balanced(&mut members, 6);
    assert!(
        sets.iter().all(|s| s.len() == 2),
        "{strategy}: 6 partitions over 3 members: {sets:?}"
    );
    eprintln!("{strategy}: 3 members balanced in {took:?}");
    produce(&broker.addr, &t, 6, 0, 50).await;
    // A fourth member joins.
    members.push(member(&broker.addr, &group, &t, &extra));
    let (sets, took) = wait_balanced(&mut members, 6);
    assert!(
        took < Duration::from_secs(20),
        "{strategy}: rebalance on join took {took:?}"
    );
    assert_eq!(sets.iter().map(BTreeSet::len).max(), Some(2), "{sets:?}");
    produce(&broker.addr, &t, 6, 50, 50).await;
    // One leaves: the others take over its partitions from its committed offsets.
    let gone = members.remove(1);
    let mut processed = leave(gone, &mut members);
    let (_, took) = wait_balanced(&mut members, 6);
    assert!(
        took < Duration::from_secs(20),
        "{strategy}: rebalance on leave took {took:?}"
    );
    produce(&broker.addr, &t, 6, 100, 50).await;
    wait_all_seen_after(&mut members, &processed, 6, 150);
    processed.extend(members.iter().flat_map(|m| m.seen.iter().copied()));
    let distinct: BTreeSet<(i32, i64)> = processed.iter().copied().collect();
    assert_eq!(distinct.len(), 900, "every message processed, none skipped");
    close_all(members);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_group_shares_six_partitions_and_rebalances_on_join_and_leave_without_skipping() {
    group_shares_partitions_and_rebalances_without_skipping("range").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roundrobin_group_shares_six_partitions_and_rebalances_on_join_and_leave_without_skipping()
{
    group_shares_partitions_and_rebalances_without_skipping("roundrobin").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooperative_sticky_members_keep_their_partitions_when_one_joins() {
    let broker = BrokerProcess::start(BROKER_SETTINGS).unwrap();
    let t = topic("coop");
    let group = format!("{t}-group");
    create_topic(&broker.addr, &t, 6).await;
    let extra = [("partition.assignment.strategy", "cooperative-sticky")];
    let mut members: Vec<Member> = (0..2)
        .map(|_| member(&broker.addr, &group, &t, &extra))
        .collect();
    let (before, _) = wait_balanced(&mut members, 6);
    assert!(matches!(
        members[0].consumer.rebalance_protocol(),
        rdkafka::consumer::RebalanceProtocol::Cooperative
    ));
    members.push(member(&broker.addr, &group, &t, &extra));
    let start = Instant::now();
    loop {
        for m in members.iter_mut() {
            m.poll();
        }
        // Incremental: an existing member only ever gives partitions away, never all of them.
        for (i, old) in before.iter().enumerate() {
            let now = members[i].assigned();
            assert!(now.is_subset(old), "member {i} got {now:?}, had {old:?}");
            assert!(
                !now.is_empty(),
                "member {i} lost every partition: not incremental"
            );
        }
        let sets: Vec<BTreeSet<i32>> = members.iter().map(Member::assigned).collect();
        if sets.iter().all(|s| s.len() == 2) {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "no incremental rebalance: {sets:?}"
        );
    }
    close_all(members);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_member_restarting_within_its_session_keeps_its_partitions() {
    let broker = BrokerProcess::start(BROKER_SETTINGS).unwrap();
    let t = topic("static");
    let group = format!("{t}-group");
    create_topic(&broker.addr, &t, 4).await;
    let as_instance =
        |id: &'static str| [("group.instance.id", id), ("session.timeout.ms", "20000")];
    let mut members = vec![
        member(&broker.addr, &group, &t, &as_instance("a")),
        member(&broker.addr, &group, &t, &as_instance("b")),
    ];
    let (before, _) = wait_balanced(&mut members, 4);
    // b restarts: a static member sends no LeaveGroup, so the group does not rebalance.
    let old_b = members.pop().unwrap();
    drop(old_b);
    members.push(member(&broker.addr, &group, &t, &as_instance("b")));
    let (after, _) = wait_balanced(&mut members, 4);
    assert_eq!(
        after, before,
        "the restarted static member got its partitions back"
    );
    close_all(members);
}

/// Committed offsets of `group` for partitions `0..partitions`, as the broker reports them.
fn committed(addr: &str, group: &str, t: &str, partitions: i32) -> BTreeMap<i32, i64> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(t, p);
    }
    let got = c.committed_offsets(tpl, TIMEOUT).unwrap();
    got.elements()
        .iter()
        .map(|e| {
            let o = match e.offset() {
                Offset::Offset(o) => o,
                _ => -1,
            };
            (e.partition(), o)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_resumes_from_committed_offsets_after_clean_stop_and_kill9() {
    let mut broker = BrokerProcess::start(BROKER_SETTINGS).unwrap();
    let t = topic("resume");
    let group = format!("{t}-group");
    create_topic(&broker.addr, &t, 3).await;
    produce(&broker.addr, &t, 3, 0, 40).await;
    // A consumer processes and commits, synchronously, the first 40 of each partition.
    let mut m = member(&broker.addr, &group, &t, &[("enable.auto.commit", "false")]);
    wait_all_seen(std::slice::from_mut(&mut m), 3, 40);
    m.consumer.commit_consumer_state(CommitMode::Sync).unwrap();
    drop(m);
    let want: BTreeMap<i32, i64> = (0..3).map(|p| (p, 40)).collect();
    assert_eq!(committed(&broker.addr, &group, &t, 3), want);
    for crash in [false, true] {
        if crash {
            broker.kill9();
        } else {
            assert_eq!(broker.stop().unwrap(), 0);
        }
        broker.restart().unwrap();
        assert_eq!(
            committed(&broker.addr, &group, &t, 3),
            want,
            "crash={crash}"
        );
    }
    // A member of the group starts exactly at the committed offsets.
    produce(&broker.addr, &t, 3, 40, 10).await;
    let mut m = member(&broker.addr, &group, &t, &[]);
    let start = Instant::now();
    while m.seen.len() < 30 {
        m.poll();
        assert!(
            start.elapsed() < DEADLINE,
            "resumed consumer read {:?}",
            m.seen
        );
    }
    let first: BTreeMap<i32, i64> = (0..3)
        .map(|p| {
            (
                p,
                m.seen
                    .iter()
                    .filter(|s| s.0 == p)
                    .map(|s| s.1)
                    .min()
                    .unwrap(),
            )
        })
        .collect();
    assert_eq!(first, want, "resumed exactly from the committed offsets");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_group_survives_broker_restarts_without_losing_committed_progress() {
    let mut broker = BrokerProcess::start(BROKER_SETTINGS).unwrap();
    let t = topic("survive");
    let group = format!("{t}-group");
    create_topic(&broker.addr, &t, 3).await;
    produce(&broker.addr, &t, 3, 0, 30).await;
    let mut m = member(&broker.addr, &group, &t, &[]);
    wait_all_seen(std::slice::from_mut(&mut m), 3, 30);
    let mut total = 30;
    for crash in [false, true] {
        // Wait for the background commit of everything processed so far.
        let start = Instant::now();
        while committed(&broker.addr, &group, &t, 3)
            .values()
            .any(|&o| o < total)
        {
            m.poll();
            assert!(start.elapsed() < DEADLINE, "commits never reached {total}");
        }
        if crash {
            broker.kill9();
        } else {
            assert_eq!(broker.stop().unwrap(), 0);
        }
        broker.restart().unwrap();
        let after = committed(&broker.addr, &group, &t, 3);
        assert!(
            after.values().all(|&o| o >= total),
            "crash={crash}: committed {after:?} < {total}"
        );
        produce(&broker.addr, &t, 3, total as usize, 10).await;
        total += 10;
        // The same consumer, never restarted, carries on from where it was.
        wait_all_seen(std::slice::from_mut(&mut m), 3, total);
    }
}
