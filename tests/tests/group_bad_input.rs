//! The group APIs at the byte level: every refusal is the error code a Kafka coordinator gives
//! (invalid group ids, unknown members, stale generations, fenced static members, commits for
//! unknown topics or with oversized metadata), and the broker keeps serving afterwards.

use bytes::{BufMut, Bytes, BytesMut};
use ferrymq_e2e::{topic, BrokerProcess, RawClient};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};

const BROKER_SETTINGS: &[&str] = &["group.initial.rebalance.delay.ms=0"];

fn s(x: &str) -> StrBytes {
    StrBytes::from_string(x.to_string())
}

fn gid(x: &str) -> GroupId {
    GroupId(s(x))
}

/// A consumer-protocol subscription to `topics` (version 0), as clients put in JoinGroup.
fn subscription(topics: &[&str]) -> Bytes {
    let sub =
        ConsumerProtocolSubscription::default().with_topics(topics.iter().map(|t| s(t)).collect());
    let mut b = BytesMut::new();
    b.put_i16(0);
    sub.encode(&mut b, 0).unwrap();
    b.freeze()
}

fn join(group: &str, member: &str, session_ms: i32, topics: &[&str]) -> JoinGroupRequest {
    let protocols = if topics.is_empty() {
        vec![]
    } else {
        vec![JoinGroupRequestProtocol::default()
            .with_name(s("range"))
            .with_metadata(subscription(topics))]
    };
    JoinGroupRequest::default()
        .with_group_id(gid(group))
        .with_member_id(s(member))
        .with_session_timeout_ms(session_ms)
        .with_rebalance_timeout_ms(10_000)
        .with_protocol_type(s("consumer"))
        .with_protocols(protocols)
}

async fn client(broker: &BrokerProcess) -> RawClient {
    let mut c = RawClient::connect(&broker.addr).await.unwrap();
    // The first FindCoordinator creates __consumer_offsets.
    let r = c
        .call(&FindCoordinatorRequest::default().with_key(s("any")), 1)
        .await
        .unwrap();
    assert_eq!(r.error_code, 0, "{r:?}");
    assert_eq!(r.node_id.0, 1);
    c
}

/// Sends a JoinGroup, asking again while the coordinator answers COORDINATOR_LOAD_IN_PROGRESS
/// (14), as Kafka clients do: right after start the offsets partitions are still loading, and
/// the group's may not be loaded yet when FindCoordinator already names this node.
async fn join_call(c: &mut RawClient, req: &JoinGroupRequest, version: i16) -> JoinGroupResponse {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let r = c.call(req, version).await.unwrap();
        if r.error_code != 14 || std::time::Instant::now() > deadline {
            return r;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

async fn create_topic(c: &mut RawClient, name: &str, partitions: i32) {
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    let req = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(s(name)))
            .with_num_partitions(partitions)
            .with_replication_factor(1)])
        .with_timeout_ms(10_000);
    let r = c.call(&req, 5).await.unwrap();
    assert_eq!(r.topics[0].error_code, 0);
}

/// Joins `group` as its only member (v4: MEMBER_ID_REQUIRED first) and syncs; returns
/// (member id, generation).
async fn join_and_sync(c: &mut RawClient, group: &str, topics: &[&str]) -> (String, i32) {
    let r = join_call(c, &join(group, "", 10_000, topics), 5).await;
    assert_eq!(r.error_code, 79, "MEMBER_ID_REQUIRED first");
    let member = r.member_id.to_string();
    assert!(!member.is_empty());
    let r = join_call(c, &join(group, &member, 10_000, topics), 5).await;
    assert_eq!(r.error_code, 0);
    assert_eq!(r.leader.to_string(), member);
    let sync = SyncGroupRequest::default()
        .with_group_id(gid(group))
        .with_generation_id(r.generation_id)
        .with_member_id(s(&member));
    assert_eq!(c.call(&sync, 3).await.unwrap().error_code, 0);
    (member, r.generation_id)
}

fn commit(
    group: &str,
    member: &str,
    generation: i32,
    t: &str,
    p: i32,
    metadata: &str,
) -> OffsetCommitRequest {
    OffsetCommitRequest::default()
        .with_group_id(gid(group))
        .with_member_id(s(member))
        .with_generation_id_or_member_epoch(generation)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(s(t)))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(p)
                .with_committed_offset(7)
                .with_committed_metadata(Some(s(metadata)))])])
}

#[tokio::test]
async fn join_refuses_empty_group_ids_bad_session_timeouts_and_missing_protocols() {
    let broker = BrokerProcess::start(BROKER_SETTINGS).unwrap();
    let mut c = client(&broker).await;
    let r = join_call(&mut c, &join("", "", 10_000, &["t"]), 5).await;
    assert_eq!(r.error_code, 24, "INVALID_GROUP_ID");
    let r = join_call(&mut c, &join("g", "", 10, &["t"]), 5).await;
    assert_eq!(r.error_code, 26, "INVALID_SESSION_TIMEOUT");
    let r = join_call(&mut c, &join("g", "", 10_000, &[]), 5).await;
    assert_eq!(r.error_code, 23, "INCONSISTENT_GROUP_PROTOCOL");
    // v0 (librdkafka's probe version): no MEMBER_ID_REQUIRED round trip.
    let r = join_call(&mut c, &join("g0", "", 10_000, &["t"]), 0).await;
    assert_eq!(r.error_code, 0);
    assert_eq!(r.generation_id, 1);
    assert_eq!(r.members.len(), 1);
}

#[tokio::test]
async fn heartbeats_and_syncs_of_unknown_members_and_stale_generations_are_refused() {
    let broker = BrokerProcess::start(BROKER_SETTINGS).unwrap();
    let mut c = client(&broker).await;
    let hb = |m: &str, g: i32| {
        HeartbeatRequest::default()
            .with_group_id(gid("hb"))
            .with_member_id(s(m))
            .with_generation_id(g)
    };
    assert_eq!(
        c.call(&hb("ghost", 1), 0).await.unwrap().error_code,
        25,
        "unknown group"
    );
    let (member, generation) = join_and_sync(&mut c, "hb", &["t"]).await;
    assert_eq!(
        c.call(&hb(&member, generation), 0)
            .await
            .unwrap()
            .error_code,
        0
    );
    assert_eq!(
        c.call(&hb("ghost", generation), 3)
            .await
            .unwrap()
            .error_code,
        25,
        "UNKNOWN_MEMBER_ID"
    );
    assert_eq!(
        c.call(&hb(&member, generation + 1), 3)
            .await
            .unwrap()
            .error_code,
        22,
        "ILLEGAL_GENERATION"
    );
    let sync = SyncGroupRequest::default()
        .with_group_id(gid("hb"))
        .with_generation_id(generation)
        .with_member_id(s("ghost"));
    assert_eq!(c.call(&sync, 3).await.unwrap().error_code, 25);
    let empty = HeartbeatRequest::default()
        .with_group_id(gid(""))
        .with_member_id(s(&member));
    assert_eq!(
        c.call(&empty, 0).await.unwrap().error_code,
        24,
        "INVALID_GROUP_ID"
    );
    // LeaveGroup: unknown member (v0), then a batch with one known and one unknown (v3).
    let leave = LeaveGroupRequest::default()
        .with_group_id(gid("hb"))
        .with_member_id(s("ghost"));
    assert_eq!(c.call(&leave, 0).await.unwrap().error_code, 25);
    let leave = LeaveGroupRequest::default()
        .with_group_id(gid("hb"))
        .with_members(vec![
            MemberIdentity::default().with_member_id(s(&member)),
            MemberIdentity::default().with_member_id(s("ghost")),
        ]);
    let r = c.call(&leave, 3).await.unwrap();
    assert_eq!(
        r.members.iter().map(|m| m.error_code).collect::<Vec<_>>(),
        vec![0, 25]
    );
    assert_eq!(
        c.call(&hb(&member, generation), 0)
            .await
            .unwrap()
            .error_code,
        25,
        "left"
    );
}

#[tokio::test]
async fn static_member_replaced_by_a_new_instance_is_fenced() {
    let broker = BrokerProcess::start(BROKER_SETTINGS).unwrap();
    let mut c = client(&broker).await;
    let stat =
        |member: &str| join("st", member, 10_000, &["t"]).with_group_instance_id(Some(s("inst-1")));
    let first = join_call(&mut c, &stat(""), 5).await;
    assert_eq!(
        first.error_code, 0,
        "static members skip MEMBER_ID_REQUIRED"
    );
    let sync = SyncGroupRequest::default()
        .with_group_id(gid("st"))
        .with_generation_id(first.generation_id)
        .with_member_id(first.member_id.clone())
        .with_group_instance_id(Some(s("inst-1")));
    assert_eq!(c.call(&sync, 3).await.unwrap().error_code, 0);
    let second = join_call(&mut c, &stat(""), 5).await;
    assert_eq!(second.error_code, 0);
    assert_ne!(second.member_id, first.member_id);
    assert_eq!(
        second.generation_id, first.generation_id,
        "no rebalance for a static rejoin"
    );
    let hb = HeartbeatRequest::default()
        .with_group_id(gid("st"))
        .with_member_id(first.member_id.clone())
        .with_generation_id(first.generation_id)
        .with_group_instance_id(Some(s("inst-1")));
    assert_eq!(
        c.call(&hb, 3).await.unwrap().error_code,
        82,
        "FENCED_INSTANCE_ID"
    );
}

#[tokio::test]
async fn commits_to_unknown_topics_with_big_metadata_or_stale_generations_are_refused() {
    let broker = BrokerProcess::start(BROKER_SETTINGS).unwrap();
    let mut c = client(&broker).await;
    let t = topic("commits");
    create_topic(&mut c, &t, 2).await;
    let code = |r: &OffsetCommitResponse| r.topics[0].partitions[0].error_code;
    // A standalone consumer (generation -1) commits to a new group.
    let r = c
        .call(&commit("solo", "", -1, &t, 1, "m"), 2)
        .await
        .unwrap();
    assert_eq!(code(&r), 0);
    let r = c
        .call(&commit("solo", "", -1, "no-such-topic", 0, ""), 2)
        .await
        .unwrap();
    assert_eq!(code(&r), 3, "UNKNOWN_TOPIC_OR_PARTITION");
    let r = c.call(&commit("solo", "", -1, &t, 9, ""), 2).await.unwrap();
    assert_eq!(code(&r), 3, "unknown partition");
    let r = c
        .call(&commit("solo", "", -1, &t, 0, &"x".repeat(4097)), 2)
        .await
        .unwrap();
    assert_eq!(code(&r), 12, "OFFSET_METADATA_TOO_LARGE");
    let r = c
        .call(&commit("nobody", "m", 5, &t, 0, ""), 2)
        .await
        .unwrap();
    assert_eq!(
        code(&r),
        22,
        "ILLEGAL_GENERATION for a group that does not exist"
    );
    let (member, generation) = join_and_sync(&mut c, "grp", &[&t]).await;
    let r = c
        .call(&commit("grp", &member, generation - 1, &t, 0, ""), 8)
        .await
        .unwrap();
    assert_eq!(code(&r), 22);
    let r = c
        .call(&commit("grp", "ghost", generation, &t, 0, ""), 8)
        .await
        .unwrap();
    assert_eq!(code(&r), 25);
    let r = c
        .call(&commit("grp", &member, generation, &t, 0, "ok"), 8)
        .await
        .unwrap();
    assert_eq!(code(&r), 0);
    // What was committed reads back; what was not is -1.
    let fetch = OffsetFetchRequest::default()
        .with_group_id(gid("solo"))
        .with_topics(Some(vec![OffsetFetchRequestTopic::default()
            .with_name(TopicName(s(&t)))
            .with_partition_indexes(vec![0, 1])]));
    let r = c.call(&fetch, 1).await.unwrap();
    let got: Vec<(i64, String)> = r.topics[0]
        .partitions
        .iter()
        .map(|p| {
            (
                p.committed_offset,
                p.metadata
                    .as_ref()
                    .map(|m| m.to_string())
                    .unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(got, vec![(-1, String::new()), (7, "m".to_string())]);
}

#[tokio::test]
async fn delete_groups_and_offset_delete_refuse_groups_in_use() {
    let broker = BrokerProcess::start(BROKER_SETTINGS).unwrap();
    let mut c = client(&broker).await;
    let t = topic("del");
    create_topic(&mut c, &t, 1).await;
    let (member, generation) = join_and_sync(&mut c, "busy", &[&t]).await;
    let r = c
        .call(&commit("busy", &member, generation, &t, 0, ""), 2)
        .await
        .unwrap();
    assert_eq!(r.topics[0].partitions[0].error_code, 0);
    let del = |g: &str| DeleteGroupsRequest::default().with_groups_names(vec![gid(g)]);
    assert_eq!(
        c.call(&del("busy"), 1).await.unwrap().results[0].error_code,
        68,
        "NON_EMPTY_GROUP"
    );
    assert_eq!(
        c.call(&del("never"), 1).await.unwrap().results[0].error_code,
        69,
        "GROUP_ID_NOT_FOUND"
    );
    let od = OffsetDeleteRequest::default()
        .with_group_id(gid("busy"))
        .with_topics(vec![OffsetDeleteRequestTopic::default()
            .with_name(TopicName(s(&t)))
            .with_partitions(vec![
                OffsetDeleteRequestPartition::default().with_partition_index(0)
            ])]);
    let r = c.call(&od, 0).await.unwrap();
    assert_eq!(
        r.topics[0].partitions[0].error_code, 86,
        "GROUP_SUBSCRIBED_TO_TOPIC"
    );
    let describe = DescribeGroupsRequest::default().with_groups(vec![gid("busy"), gid("never")]);
    let r = c.call(&describe, 1).await.unwrap();
    assert_eq!(r.groups[0].group_state.to_string(), "Stable");
    assert_eq!(r.groups[0].members.len(), 1);
    assert_eq!(r.groups[1].group_state.to_string(), "Dead");
    let list = c.call(&ListGroupsRequest::default(), 1).await.unwrap();
    assert!(list.groups.iter().any(|g| g.group_id.to_string() == "busy"));
    // Once the member leaves, both deletions go through.
    let leave = LeaveGroupRequest::default()
        .with_group_id(gid("busy"))
        .with_member_id(s(&member));
    assert_eq!(c.call(&leave, 1).await.unwrap().error_code, 0);
    assert_eq!(
        c.call(&od, 0).await.unwrap().topics[0].partitions[0].error_code,
        0
    );
    assert_eq!(
        c.call(&del("busy"), 1).await.unwrap().results[0].error_code,
        0
    );
    let r = c.call(&describe, 1).await.unwrap();
    assert_eq!(r.groups[0].group_state.to_string(), "Dead");
}

#[tokio::test]
async fn offset_fetch_v8_answers_several_groups_at_once() {
    use kafka_protocol::messages::offset_fetch_request::{
        OffsetFetchRequestGroup, OffsetFetchRequestTopics,
    };
    let broker = BrokerProcess::start(BROKER_SETTINGS).unwrap();
    let mut c = client(&broker).await;
    let t = topic("multi");
    create_topic(&mut c, &t, 1).await;
    for (g, offset) in [("ga", 7), ("gb", 7)] {
        let r = c.call(&commit(g, "", -1, &t, 0, g), 2).await.unwrap();
        assert_eq!(
            r.topics[0].partitions[0].error_code, 0,
            "{g} committed {offset}"
        );
    }
    let group = |g: &str| {
        OffsetFetchRequestGroup::default()
            .with_group_id(gid(g))
            .with_topics(Some(vec![OffsetFetchRequestTopics::default()
                .with_name(TopicName(s(&t)))
                .with_partition_indexes(vec![0])]))
    };
    let req =
        OffsetFetchRequest::default().with_groups(vec![group("ga"), group("gb"), group("gz")]);
    let r = c.call(&req, 8).await.unwrap();
    let got: Vec<(String, i64, String)> = r
        .groups
        .iter()
        .map(|g| {
            let p = &g.topics[0].partitions[0];
            let meta = p
                .metadata
                .as_ref()
                .map(|m| m.to_string())
                .unwrap_or_default();
            (g.group_id.to_string(), p.committed_offset, meta)
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("ga".into(), 7, "ga".into()),
            ("gb".into(), 7, "gb".into()),
            ("gz".into(), -1, String::new())
        ]
    );
    // All of a group's offsets when no topics are named (v2+).
    let all = OffsetFetchRequest::default()
        .with_group_id(gid("ga"))
        .with_topics(None);
    let r = c.call(&all, 7).await.unwrap();
    assert_eq!(r.topics.len(), 1);
    assert_eq!(r.topics[0].partitions[0].committed_offset, 7);
}

#[tokio::test]
async fn clients_cannot_produce_to_the_offsets_topic() {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    let broker = BrokerProcess::start(BROKER_SETTINGS).unwrap();
    let mut c = client(&broker).await;
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(s("__consumer_offsets")))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(ferrymq_log::batch::testing::batch(
                    &[b"x"],
                    0,
                )))])]);
    let r = c.call(&req, 7).await.unwrap();
    assert_eq!(
        r.responses[0].partition_responses[0].error_code, 17,
        "INVALID_TOPIC_EXCEPTION"
    );
}

#[tokio::test]
async fn find_coordinator_answers_batched_keys_and_refuses_transactions() {
    let broker = BrokerProcess::start(BROKER_SETTINGS).unwrap();
    let mut c = client(&broker).await;
    let req = FindCoordinatorRequest::default().with_coordinator_keys(vec![s("a"), s("b")]);
    let r = c.call(&req, 4).await.unwrap();
    assert_eq!(r.coordinators.len(), 2);
    assert!(r
        .coordinators
        .iter()
        .all(|x| x.error_code == 0 && x.node_id.0 == 1));
    let txn = FindCoordinatorRequest::default()
        .with_key(s("tx"))
        .with_key_type(1);
    assert_eq!(
        c.call(&txn, 1).await.unwrap().error_code,
        15,
        "COORDINATOR_NOT_AVAILABLE"
    );
}
