//! Behaviour of the group state machine, event by event, with time as a plain number.

use super::*;
use ferrymq_types::Offset;

const LIMITS: GroupLimits = GroupLimits {
    session_timeout_min_ms: 100,
    session_timeout_max_ms: 60_000,
    initial_rebalance_delay_ms: 0,
};

fn protocols(names: &[&str]) -> Vec<Protocol> {
    names
        .iter()
        .map(|n| Protocol {
            name: n.to_string(),
            metadata: Bytes::from(format!("meta-{n}")),
        })
        .collect()
}

fn join_req(member_id: &str, names: &[&str]) -> JoinRequest {
    JoinRequest {
        member_id: member_id.into(),
        instance_id: None,
        client_id: "c".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: 1000,
        rebalance_timeout_ms: 5000,
        protocol_type: "consumer".into(),
        protocols: protocols(names),
        require_known_member_id: false,
    }
}

fn static_req(instance: &str) -> JoinRequest {
    JoinRequest {
        instance_id: Some(instance.into()),
        ..join_req("", &["range"])
    }
}

fn joins(actions: &[Action]) -> Vec<(ReplyId, Result<JoinOutcome, GroupError>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Join { reply, result } => Some((*reply, result.clone())),
            _ => None,
        })
        .collect()
}

fn syncs(actions: &[Action]) -> Vec<(ReplyId, Result<SyncOutcome, GroupError>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Sync { reply, result } => Some((*reply, result.clone())),
            _ => None,
        })
        .collect()
}

fn sync_req(member: &str, generation: i32, assignments: &[(&str, &str)]) -> SyncRequest {
    SyncRequest {
        member_id: member.into(),
        instance_id: None,
        generation: Generation(generation),
        protocol_type: None,
        protocol_name: None,
        assignments: assignments
            .iter()
            .map(|(m, a)| (m.to_string(), Bytes::from(a.to_string())))
            .collect(),
    }
}

/// A stable group of `n` members m0.. built by joins and syncs, m0 leading, each assigned `a<i>`.
fn stable_group(n: usize) -> Group {
    let mut g = Group::new("g", 0);
    g.join(
        0,
        join_req("", &["range"]),
        ReplyId(0),
        "m0".into(),
        &LIMITS,
    );
    g.sync(0, sync_req("m0", 1, &[("m0", "a0")]), ReplyId(1));
    for i in 1..n {
        let r = 10 * i as u64;
        g.join(
            0,
            join_req("", &["range"]),
            ReplyId(r),
            format!("m{i}"),
            &LIMITS,
        );
        for j in 0..i {
            let rejoin = join_req(&format!("m{j}"), &["range"]);
            g.join(0, rejoin, ReplyId(r + 1 + j as u64), String::new(), &LIMITS);
        }
        let gen = g.generation().0;
        let names: Vec<(String, String)> = (0..=i)
            .map(|k| (format!("m{k}"), format!("a{k}")))
            .collect();
        let assignment: Vec<(&str, &str)> = names
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        for k in 1..=i {
            g.sync(
                0,
                sync_req(&format!("m{k}"), gen, &[]),
                ReplyId(1000 + k as u64),
            );
        }
        g.sync(0, sync_req("m0", gen, &assignment), ReplyId(999));
    }
    assert_eq!(g.phase(), Phase::Stable);
    g
}

#[test]
fn first_member_joins_leads_and_syncs_to_stable() {
    let mut g = Group::new("g", 0);
    let acts = g.join(
        10,
        join_req("", &["range", "roundrobin"]),
        ReplyId(1),
        "m1".into(),
        &LIMITS,
    );
    let j = joins(&acts);
    assert_eq!(j.len(), 1);
    let out = j[0].1.clone().unwrap();
    assert_eq!(out.generation, Generation(1));
    assert_eq!(out.leader, "m1");
    assert_eq!(out.member_id, "m1");
    assert_eq!(out.protocol_name.as_deref(), Some("range"));
    assert_eq!(out.members.len(), 1);
    assert_eq!(out.members[0].metadata, Bytes::from("meta-range"));
    assert_eq!(g.phase(), Phase::CompletingRebalance);
    let acts = g.sync(11, sync_req("m1", 1, &[("m1", "A")]), ReplyId(2));
    assert_eq!(
        acts[0],
        Action::StoreGroup,
        "stored before anyone is answered"
    );
    assert_eq!(
        syncs(&acts)[0].1.as_ref().unwrap().assignment,
        Bytes::from("A")
    );
    assert_eq!(g.phase(), Phase::Stable);
}

#[test]
fn v4_join_without_member_id_gets_member_id_required_then_joins_with_it() {
    let mut g = Group::new("g", 0);
    let req = JoinRequest {
        require_known_member_id: true,
        ..join_req("", &["range"])
    };
    let acts = g.join(0, req.clone(), ReplyId(1), "fresh".into(), &LIMITS);
    assert_eq!(
        joins(&acts)[0].1,
        Err(GroupError::MemberIdRequired {
            member_id: "fresh".into()
        })
    );
    assert_eq!(g.phase(), Phase::Empty);
    let acts = g.join(
        1,
        JoinRequest {
            member_id: "fresh".into(),
            ..req
        },
        ReplyId(2),
        "other".into(),
        &LIMITS,
    );
    assert_eq!(joins(&acts)[0].1.as_ref().unwrap().member_id, "fresh");
}

#[test]
fn unused_pending_member_id_expires_after_its_session_timeout() {
    let mut g = Group::new("g", 0);
    let req = JoinRequest {
        require_known_member_id: true,
        ..join_req("", &["range"])
    };
    g.join(0, req.clone(), ReplyId(1), "fresh".into(), &LIMITS);
    assert_eq!(g.next_deadline_ms(), Some(1000));
    g.tick(1000, &LIMITS);
    let acts = g.join(
        1001,
        JoinRequest {
            member_id: "fresh".into(),
            ..req
        },
        ReplyId(2),
        "x".into(),
        &LIMITS,
    );
    assert!(matches!(
        joins(&acts)[0].1,
        Err(GroupError::UnknownMemberId { .. })
    ));
}

#[test]
fn second_member_triggers_rebalance_completed_when_all_rejoin() {
    let mut g = stable_group(1);
    let acts = g.join(
        100,
        join_req("", &["range"]),
        ReplyId(5),
        "m1".into(),
        &LIMITS,
    );
    assert!(joins(&acts).is_empty(), "waits for m0 to rejoin");
    assert_eq!(g.phase(), Phase::PreparingRebalance);
    assert_eq!(
        g.heartbeat(101, "m0", &None, Generation(1)),
        Err(GroupError::RebalanceInProgress)
    );
    let acts = g.join(
        102,
        join_req("m0", &["range"]),
        ReplyId(6),
        String::new(),
        &LIMITS,
    );
    let j = joins(&acts);
    assert_eq!(j.len(), 2);
    for (reply, r) in &j {
        let r = r.as_ref().unwrap();
        assert_eq!(r.generation, Generation(2));
        assert_eq!(r.leader, "m0");
        assert_eq!(
            r.members.len(),
            if *reply == ReplyId(6) { 2 } else { 0 },
            "only the leader sees members"
        );
    }
    assert_eq!(g.phase(), Phase::CompletingRebalance);
}

#[test]
fn follower_sync_waits_for_leader_and_gets_its_assignment() {
    let mut g = stable_group(1);
    g.join(
        0,
        join_req("", &["range"]),
        ReplyId(5),
        "m1".into(),
        &LIMITS,
    );
    g.join(
        0,
        join_req("m0", &["range"]),
        ReplyId(6),
        String::new(),
        &LIMITS,
    );
    let acts = g.sync(1, sync_req("m1", 2, &[]), ReplyId(7));
    assert!(acts.is_empty(), "the follower waits");
    let acts = g.sync(
        2,
        sync_req("m0", 2, &[("m0", "P0"), ("m1", "P1")]),
        ReplyId(8),
    );
    let s = syncs(&acts);
    assert_eq!(s.len(), 2);
    let of = |r: ReplyId| {
        s.iter()
            .find(|(x, _)| *x == r)
            .unwrap()
            .1
            .clone()
            .unwrap()
            .assignment
    };
    assert_eq!(of(ReplyId(7)), Bytes::from("P1"));
    assert_eq!(of(ReplyId(8)), Bytes::from("P0"));
    assert_eq!(g.heartbeat(3, "m1", &None, Generation(2)), Ok(()));
}

#[test]
fn member_not_rejoining_before_rebalance_timeout_is_removed() {
    let mut g = stable_group(2);
    let gen = g.generation().0;
    // m1 rejoins with new metadata, m0 never does.
    g.join(
        100,
        join_req("m1", &["roundrobin", "range"]),
        ReplyId(9),
        String::new(),
        &LIMITS,
    );
    assert_eq!(g.phase(), Phase::PreparingRebalance);
    assert_eq!(
        g.next_deadline_ms(),
        Some(100),
        "m1 is waiting; m0's deadline at 100 + 5000 soon after"
    );
    let acts = g.tick(5100, &LIMITS);
    let j = joins(&acts);
    assert_eq!(j.len(), 1);
    let out = j[0].1.clone().unwrap();
    assert_eq!(out.generation, Generation(gen + 1));
    assert_eq!(out.leader, "m1", "leadership passes to a remaining member");
    assert_eq!(g.member_ids(), vec!["m1".to_string()]);
}

#[test]
fn silent_member_expires_after_session_timeout_and_group_rebalances() {
    let mut g = stable_group(2);
    assert_eq!(g.heartbeat(500, "m1", &None, g.generation()), Ok(()));
    let acts = g.tick(1000, &LIMITS);
    assert!(joins(&acts).is_empty());
    assert_eq!(
        g.member_ids(),
        vec!["m1".to_string()],
        "m0 last heard at 0 with 1000 ms"
    );
    assert_eq!(g.phase(), Phase::PreparingRebalance);
    assert_eq!(
        g.heartbeat(1001, "m0", &None, g.generation()),
        Err(GroupError::UnknownMemberId {
            member_id: "m0".into()
        })
    );
}

#[test]
fn last_member_leaving_empties_the_group_and_stores_it() {
    let mut g = stable_group(1);
    let (res, acts) = g.leave(
        5,
        &[LeavingMember {
            member_id: "m0".into(),
            instance_id: None,
        }],
        &LIMITS,
    );
    assert_eq!(res, vec![Ok(())]);
    assert!(acts.contains(&Action::StoreGroup));
    assert_eq!(g.phase(), Phase::Empty);
    assert_eq!(g.generation(), Generation(2));
}

#[test]
fn leave_of_unknown_and_batched_members_answers_each() {
    let mut g = stable_group(3);
    let (res, _) = g.leave(
        5,
        &[
            LeavingMember {
                member_id: "m1".into(),
                instance_id: None,
            },
            LeavingMember {
                member_id: "nobody".into(),
                instance_id: None,
            },
            LeavingMember {
                member_id: "m2".into(),
                instance_id: None,
            },
        ],
        &LIMITS,
    );
    assert_eq!(res[0], Ok(()));
    assert!(matches!(res[1], Err(GroupError::UnknownMemberId { .. })));
    assert_eq!(res[2], Ok(()));
    assert_eq!(g.member_ids(), vec!["m0".to_string()]);
}

#[test]
fn stale_generation_and_unknown_members_are_fenced() {
    let mut g = stable_group(2);
    let gen = g.generation();
    assert_eq!(
        g.heartbeat(1, "m1", &None, Generation(gen.0 - 1)),
        Err(GroupError::IllegalGeneration {
            request: gen.0 - 1,
            current: gen.0
        })
    );
    assert!(matches!(
        g.heartbeat(1, "zz", &None, gen),
        Err(GroupError::UnknownMemberId { .. })
    ));
    let acts = g.sync(1, sync_req("m1", gen.0 + 5, &[]), ReplyId(3));
    assert!(matches!(
        syncs(&acts)[0].1,
        Err(GroupError::IllegalGeneration { .. })
    ));
    assert!(matches!(
        g.check_commit(1, "m1", &None, Generation(gen.0 - 1)),
        Err(GroupError::IllegalGeneration { .. })
    ));
    assert!(matches!(
        g.check_commit(1, "zz", &None, gen),
        Err(GroupError::UnknownMemberId { .. })
    ));
    assert_eq!(g.check_commit(1, "m1", &None, gen), Ok(()));
}

#[test]
fn commits_allowed_while_preparing_but_not_while_completing() {
    let mut g = stable_group(1);
    let gen = g.generation();
    g.join(
        1,
        join_req("", &["range"]),
        ReplyId(5),
        "m1".into(),
        &LIMITS,
    );
    assert_eq!(
        g.check_commit(2, "m0", &None, gen),
        Ok(()),
        "commit before rejoining"
    );
    g.join(
        3,
        join_req("m0", &["range"]),
        ReplyId(6),
        String::new(),
        &LIMITS,
    );
    assert_eq!(g.phase(), Phase::CompletingRebalance);
    assert_eq!(
        g.check_commit(4, "m0", &None, g.generation()),
        Err(GroupError::RebalanceInProgress)
    );
}

#[test]
fn standalone_commits_go_to_empty_groups_only() {
    let mut g = Group::new("g", 0);
    assert_eq!(g.check_commit(0, "", &None, Generation(-1)), Ok(()));
    let mut g = stable_group(1);
    assert!(matches!(
        g.check_commit(0, "", &None, Generation(-1)),
        Err(GroupError::UnknownMemberId { .. })
    ));
}

#[test]
fn inconsistent_protocols_and_bad_session_timeouts_are_refused() {
    let mut g = stable_group(1);
    let acts = g.join(0, join_req("", &["other"]), ReplyId(1), "x".into(), &LIMITS);
    assert_eq!(
        joins(&acts)[0].1,
        Err(GroupError::InconsistentGroupProtocol)
    );
    let acts = g.join(
        0,
        JoinRequest {
            protocol_type: "connect".into(),
            ..join_req("", &["range"])
        },
        ReplyId(2),
        "x".into(),
        &LIMITS,
    );
    assert_eq!(
        joins(&acts)[0].1,
        Err(GroupError::InconsistentGroupProtocol)
    );
    let acts = g.join(
        0,
        JoinRequest {
            session_timeout_ms: 10,
            ..join_req("", &["range"])
        },
        ReplyId(3),
        "x".into(),
        &LIMITS,
    );
    assert!(matches!(
        joins(&acts)[0].1,
        Err(GroupError::InvalidSessionTimeout { timeout_ms: 10, .. })
    ));
    let mut empty = Group::new("e", 0);
    let acts = empty.join(0, join_req("", &[]), ReplyId(4), "x".into(), &LIMITS);
    assert_eq!(
        joins(&acts)[0].1,
        Err(GroupError::InconsistentGroupProtocol)
    );
}

#[test]
fn protocol_chosen_by_votes_among_those_all_support() {
    let mut g = Group::new("g", 0);
    g.join(
        0,
        join_req("", &["roundrobin", "range"]),
        ReplyId(1),
        "a".into(),
        &LIMITS,
    );
    g.sync(0, sync_req("a", 1, &[]), ReplyId(2));
    g.join(
        0,
        join_req("", &["range", "roundrobin"]),
        ReplyId(3),
        "b".into(),
        &LIMITS,
    );
    g.join(
        0,
        join_req("", &["range", "sticky", "roundrobin"]),
        ReplyId(4),
        "c".into(),
        &LIMITS,
    );
    let acts = g.join(
        0,
        join_req("a", &["roundrobin", "range"]),
        ReplyId(5),
        String::new(),
        &LIMITS,
    );
    for (_, r) in joins(&acts) {
        assert_eq!(
            r.unwrap().protocol_name.as_deref(),
            Some("range"),
            "two votes to one"
        );
    }
}

#[test]
fn unchanged_follower_rejoin_in_stable_gets_current_generation_without_rebalance() {
    let mut g = stable_group(2);
    let gen = g.generation();
    let acts = g.join(
        5,
        join_req("m1", &["range"]),
        ReplyId(50),
        String::new(),
        &LIMITS,
    );
    let out = joins(&acts)[0].1.clone().unwrap();
    assert_eq!(out.generation, gen);
    assert!(out.members.is_empty());
    assert_eq!(g.phase(), Phase::Stable);
    // The leader rejoining, or anyone with new metadata, rebalances.
    g.join(
        6,
        join_req("m0", &["range"]),
        ReplyId(51),
        String::new(),
        &LIMITS,
    );
    assert_eq!(g.phase(), Phase::PreparingRebalance);
}

#[test]
fn static_member_restarting_keeps_its_assignment_and_fences_the_old_id() {
    let mut g = Group::new("g", 0);
    g.join(0, static_req("inst-a"), ReplyId(1), "a1".into(), &LIMITS);
    g.sync(0, sync_req("a1", 1, &[("a1", "A")]), ReplyId(2));
    g.join(0, static_req("inst-b"), ReplyId(3), "b1".into(), &LIMITS);
    g.join(
        0,
        JoinRequest {
            member_id: "a1".into(),
            ..static_req("inst-a")
        },
        ReplyId(4),
        String::new(),
        &LIMITS,
    );
    let gen = g.generation().0;
    g.sync(0, sync_req("b1", gen, &[]), ReplyId(5));
    g.sync(
        0,
        sync_req("a1", gen, &[("a1", "A"), ("b1", "B")]),
        ReplyId(6),
    );
    assert_eq!(g.phase(), Phase::Stable);
    // inst-b restarts: joins without a member id, with the same instance id.
    let acts = g.join(10, static_req("inst-b"), ReplyId(7), "b2".into(), &LIMITS);
    let out = joins(&acts)[0].1.clone().unwrap();
    assert_eq!(out.member_id, "b2");
    assert_eq!(out.generation, Generation(gen), "no rebalance");
    assert!(acts.contains(&Action::StoreGroup));
    assert_eq!(g.phase(), Phase::Stable);
    let acts = g.sync(
        11,
        SyncRequest {
            instance_id: Some("inst-b".into()),
            ..sync_req("b2", gen, &[])
        },
        ReplyId(8),
    );
    assert_eq!(
        syncs(&acts)[0].1.as_ref().unwrap().assignment,
        Bytes::from("B")
    );
    // The old incarnation is fenced.
    assert_eq!(
        g.heartbeat(12, "b1", &Some("inst-b".into()), Generation(gen)),
        Err(GroupError::FencedInstanceId {
            instance_id: "inst-b".into()
        })
    );
    assert!(matches!(
        g.check_commit(12, "b1", &Some("inst-b".into()), Generation(gen)),
        Err(GroupError::FencedInstanceId { .. })
    ));
}

#[test]
fn static_leave_by_instance_id_removes_the_member() {
    let mut g = Group::new("g", 0);
    g.join(0, static_req("inst"), ReplyId(1), "s1".into(), &LIMITS);
    g.sync(0, sync_req("s1", 1, &[]), ReplyId(2));
    let (res, _) = g.leave(
        1,
        &[LeavingMember {
            member_id: "other".into(),
            instance_id: Some("inst".into()),
        }],
        &LIMITS,
    );
    assert!(matches!(res[0], Err(GroupError::FencedInstanceId { .. })));
    let (res, _) = g.leave(
        1,
        &[LeavingMember {
            member_id: String::new(),
            instance_id: Some("inst".into()),
        }],
        &LIMITS,
    );
    assert_eq!(res[0], Ok(()));
    assert_eq!(g.phase(), Phase::Empty);
}

#[test]
fn initial_rebalance_delay_gathers_members_into_one_generation() {
    let limits = GroupLimits {
        initial_rebalance_delay_ms: 300,
        ..LIMITS
    };
    let mut g = Group::new("g", 0);
    assert!(
        joins(&g.join(0, join_req("", &["range"]), ReplyId(1), "a".into(), &limits)).is_empty()
    );
    assert!(joins(&g.join(
        100,
        join_req("", &["range"]),
        ReplyId(2),
        "b".into(),
        &limits
    ))
    .is_empty());
    assert!(g.tick(299, &limits).is_empty());
    let acts = g.tick(300, &limits);
    assert_eq!(joins(&acts).len(), 2);
    assert_eq!(g.generation(), Generation(1));
}

#[test]
fn sync_timeout_drops_members_that_never_synced() {
    let mut g = stable_group(1);
    g.join(
        0,
        join_req("", &["range"]),
        ReplyId(5),
        "m1".into(),
        &LIMITS,
    );
    g.join(
        0,
        join_req("m0", &["range"]),
        ReplyId(6),
        String::new(),
        &LIMITS,
    );
    g.sync(1, sync_req("m1", 2, &[]), ReplyId(7));
    // The leader m0 never syncs: after the rebalance timeout m1 is told to rejoin.
    let acts = g.tick(5000, &LIMITS);
    assert!(syncs(&acts)
        .iter()
        .any(|(r, res)| *r == ReplyId(7) && *res == Err(GroupError::RebalanceInProgress)));
    assert_eq!(g.member_ids(), vec!["m1".to_string()]);
}

#[test]
fn snapshot_round_trips_into_a_stable_group() {
    let g = stable_group(2);
    let restored = Group::from_snapshot("g", g.snapshot(), 10_000);
    assert_eq!(restored.phase(), Phase::Stable);
    assert_eq!(restored.generation(), g.generation());
    assert_eq!(restored.leader(), Some("m0"));
    assert_eq!(restored.describe_members(), g.describe_members());
    let mut restored = restored;
    assert_eq!(
        restored.heartbeat(10_500, "m1", &None, g.generation()),
        Ok(())
    );
    let empty = Group::from_snapshot("e", Group::new("e", 0).snapshot(), 0);
    assert_eq!(empty.phase(), Phase::Empty);
}

#[test]
fn offsets_of_an_empty_group_expire_after_retention() {
    let mut g = Group::new("g", 0);
    let tp = TopicPartition::new("t", 0);
    g.apply_offsets([(
        tp.clone(),
        CommittedOffset {
            offset: Offset(5),
            leader_epoch: None,
            metadata: String::new(),
            commit_timestamp_ms: 100,
        },
    )]);
    assert!(g.expired_offsets(1099, 1000).is_empty());
    assert_eq!(g.expired_offsets(1100, 1000), vec![tp.clone()]);
    g.remove_offsets([&tp]);
    assert!(g.is_removable());
    let g = stable_group(1);
    assert!(
        g.expired_offsets(i64::MAX / 2, 1).is_empty(),
        "a group with members keeps its offsets"
    );
}

#[test]
fn only_empty_groups_can_be_deleted() {
    let mut g = stable_group(1);
    assert_eq!(g.delete(), Err(GroupError::NonEmptyGroup));
    let mut e = Group::new("e", 0);
    assert_eq!(e.delete(), Ok(()));
    assert_eq!(e.phase(), Phase::Dead);
    assert_eq!(
        e.heartbeat(0, "m", &None, Generation(0)),
        Err(GroupError::CoordinatorNotAvailable)
    );
}
