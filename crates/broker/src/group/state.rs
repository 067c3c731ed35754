//! One consumer group of the classic protocol as a pure state machine: events in (join, sync,
//! heartbeat, leave, commit, clock ticks), decisions out (`Action`s: answer a waiting join or
//! sync, store the group). No IO, no clock reads, no randomness: the caller passes `now_ms` and
//! the member id a new member would get, so every path is unit-tested without sockets or time.
//!
//! Phases, as Kafka's `GroupMetadata`:
//! ```text
//! Empty ──join──► PreparingRebalance ──all joined / rebalance timeout──► CompletingRebalance
//!   ▲                  ▲        │                                              │ leader's sync
//!   │                  │        └── nobody left ──► Empty                      ▼
//!   └── last member ───┴──── join with new metadata, leave, session expiry ── Stable
//! ```
//! Member metadata and assignments are opaque bytes: the assignors run in the clients.

use std::collections::BTreeMap;

use bytes::Bytes;
use ferrymq_types::TopicPartition;

use super::error::GroupError;
pub use super::events::*;
use super::Generation;

#[derive(Debug, Clone)]
struct Member {
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout_ms: i32,
    rebalance_timeout_ms: i32,
    protocols: Vec<Protocol>,
    assignment: Bytes,
    join_reply: Option<ReplyId>,
    sync_reply: Option<ReplyId>,
    session_deadline_ms: i64,
}

impl Member {
    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|p| p.name == protocol)
            .map(|p| p.metadata.clone())
            .unwrap_or_default()
    }
}

/// One group. Invariants: every static instance id maps to a present member; the leader, when
/// set, is a member; the generation never goes backwards.
#[derive(Debug, Clone)]
pub struct Group {
    id: String,
    phase: Phase,
    state_since_ms: i64,
    protocol_type: Option<String>,
    protocol: Option<String>,
    generation: Generation,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    static_members: BTreeMap<String, String>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, with the time they expire unused.
    pending_members: BTreeMap<String, i64>,
    join_deadline_ms: i64,
    join_not_before_ms: i64,
    sync_deadline_ms: i64,
    offsets: BTreeMap<TopicPartition, CommittedOffset>,
}

impl Group {
    /// A new, empty group.
    pub fn new(id: impl Into<String>, now_ms: i64) -> Group {
        Group {
            id: id.into(),
            phase: Phase::Empty,
            state_since_ms: now_ms,
            protocol_type: None,
            protocol: None,
            generation: Generation(0),
            leader: None,
            members: BTreeMap::new(),
            static_members: BTreeMap::new(),
            pending_members: BTreeMap::new(),
            join_deadline_ms: 0,
            join_not_before_ms: 0,
            sync_deadline_ms: 0,
            offsets: BTreeMap::new(),
        }
    }

    /// Rebuilds a group from its persisted metadata: with members it is Stable (they go on
    /// heartbeating with their generation), with none Empty. Sessions start at `now_ms`.
    pub fn from_snapshot(id: impl Into<String>, s: GroupSnapshot, now_ms: i64) -> Group {
        let mut g = Group::new(id, s.state_timestamp_ms);
        g.generation = s.generation;
        g.protocol_type = Some(s.protocol_type).filter(|t| !t.is_empty());
        g.protocol = s.protocol;
        for m in s.members {
            if let Some(iid) = &m.instance_id {
                g.static_members.insert(iid.clone(), m.member_id.clone());
            }
            let protocols = g
                .protocol
                .iter()
                .map(|name| Protocol {
                    name: name.clone(),
                    metadata: m.subscription.clone(),
                })
                .collect();
            g.members.insert(
                m.member_id,
                Member {
                    instance_id: m.instance_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                    session_timeout_ms: m.session_timeout_ms,
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    protocols,
                    assignment: m.assignment,
                    join_reply: None,
                    sync_reply: None,
                    session_deadline_ms: now_ms + m.session_timeout_ms as i64,
                },
            );
        }
        g.leader = s.leader.filter(|l| g.members.contains_key(l));
        if !g.members.is_empty() {
            g.phase = Phase::Stable;
            if g.leader.is_none() {
                g.leader = g.members.keys().next().cloned();
            }
        }
        g
    }

    /// The group's metadata to persist.
    pub fn snapshot(&self) -> GroupSnapshot {
        let protocol = self.protocol.clone().unwrap_or_default();
        GroupSnapshot {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol: self.protocol.clone(),
            leader: self.leader.clone(),
            state_timestamp_ms: self.state_since_ms,
            members: self
                .members
                .iter()
                .map(|(id, m)| MemberSnapshot {
                    member_id: id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    session_timeout_ms: m.session_timeout_ms,
                    subscription: m.metadata_for(&protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }

    /// The group id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The current generation.
    pub fn generation(&self) -> Generation {
        self.generation
    }

    /// The protocol type (`consumer`), once a member joined.
    pub fn protocol_type(&self) -> Option<&str> {
        self.protocol_type.as_deref()
    }

    /// The selected protocol.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// The leader's member id.
    pub fn leader(&self) -> Option<&str> {
        self.leader.as_deref()
    }

    /// Member ids in order.
    pub fn member_ids(&self) -> Vec<String> {
        self.members.keys().cloned().collect()
    }

    /// Members for DescribeGroups.
    pub fn describe_members(&self) -> Vec<MemberDescription> {
        let protocol = self.protocol.clone().unwrap_or_default();
        self.members
            .iter()
            .map(|(id, m)| MemberDescription {
                member_id: id.clone(),
                instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                metadata: m.metadata_for(&protocol),
                assignment: m.assignment.clone(),
            })
            .collect()
    }

    /// Committed offsets.
    pub fn offsets(&self) -> &BTreeMap<TopicPartition, CommittedOffset> {
        &self.offsets
    }

    /// True when the group has neither members nor offsets: nothing to keep.
    pub fn is_removable(&self) -> bool {
        self.phase == Phase::Empty && self.members.is_empty() && self.offsets.is_empty()
    }

    fn is_static_fenced(&self, instance_id: &Option<String>, member_id: &str) -> bool {
        match instance_id {
            Some(iid) => self
                .static_members
                .get(iid)
                .is_some_and(|owner| owner != member_id),
            None => false,
        }
    }

    fn fenced(instance_id: &Option<String>) -> GroupError {
        GroupError::FencedInstanceId {
            instance_id: instance_id.clone().unwrap_or_default(),
        }
    }

    fn unknown(member_id: &str) -> GroupError {
        GroupError::UnknownMemberId {
            member_id: member_id.to_string(),
        }
    }

    /// True if the group can take a member with these protocols.
    fn supports(&self, protocol_type: &str, protocols: &[Protocol]) -> bool {
        if protocol_type.is_empty() || protocols.is_empty() {
            return false;
        }
        if self.members.is_empty() {
            return true;
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && protocols.iter().any(|p| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|q| q.name == p.name))
            })
    }

    /// JoinGroup. The answer comes as an `Action::Join` for `reply`, now or when the rebalance
    /// completes. `fresh_member_id` is the id a new member gets.
    pub fn join(
        &mut self,
        now_ms: i64,
        req: JoinRequest,
        reply: ReplyId,
        fresh_member_id: String,
        limits: &GroupLimits,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        let fail = |e: GroupError| {
            vec![Action::Join {
                reply,
                result: Err(e),
            }]
        };
        if req.session_timeout_ms < limits.session_timeout_min_ms
            || req.session_timeout_ms > limits.session_timeout_max_ms
        {
            return fail(GroupError::InvalidSessionTimeout {
                timeout_ms: req.session_timeout_ms,
                min_ms: limits.session_timeout_min_ms,
                max_ms: limits.session_timeout_max_ms,
            });
        }
        if self.phase == Phase::Dead {
            return fail(GroupError::CoordinatorNotAvailable);
        }
        if !self.supports(&req.protocol_type, &req.protocols) {
            return fail(GroupError::InconsistentGroupProtocol);
        }
        if req.member_id.is_empty() {
            self.join_new_member(now_ms, req, reply, fresh_member_id, limits, &mut out);
        } else {
            self.join_known_member(now_ms, req, reply, limits, &mut out);
        }
        out
    }

    fn join_new_member(
        &mut self,
        now_ms: i64,
        req: JoinRequest,
        reply: ReplyId,
        id: String,
        limits: &GroupLimits,
        out: &mut Vec<Action>,
    ) {
        if let Some(iid) = req.instance_id.clone() {
            if let Some(old_id) = self.static_members.get(&iid).cloned() {
                return self.replace_static_member(now_ms, req, reply, old_id, id, limits, out);
            }
        } else if req.require_known_member_id {
            // KIP-394: the member learns its id first, so a retried join does not leave a
            // ghost member behind; the id expires if it is never used.
            self.pending_members
                .insert(id.clone(), now_ms + req.session_timeout_ms as i64);
            out.push(Action::Join {
                reply,
                result: Err(GroupError::MemberIdRequired { member_id: id }),
            });
            return;
        }
        self.add_member_and_rebalance(now_ms, req, reply, id, limits, out);
    }

    fn join_known_member(
        &mut self,
        now_ms: i64,
        req: JoinRequest,
        reply: ReplyId,
        limits: &GroupLimits,
        out: &mut Vec<Action>,
    ) {
        let id = req.member_id.clone();
        if self.pending_members.remove(&id).is_some() {
            return self.add_member_and_rebalance(now_ms, req, reply, id, limits, out);
        }
        if self.is_static_fenced(&req.instance_id, &id) {
            let e = Self::fenced(&req.instance_id);
            return out.push(Action::Join {
                reply,
                result: Err(e),
            });
        }
        if !self.members.contains_key(&id) {
            return out.push(Action::Join {
                reply,
                result: Err(Self::unknown(&id)),
            });
        }
        match self.phase {
            Phase::PreparingRebalance => {
                self.update_member(&id, &req, reply, out);
                self.maybe_complete_join(now_ms, out);
            }
            Phase::CompletingRebalance | Phase::Stable => {
                let member = &self.members[&id];
                let unchanged = member.protocols == req.protocols;
                let is_leader = self.leader.as_deref() == Some(id.as_str());
                let rejoin_now =
                    unchanged && (self.phase == Phase::CompletingRebalance || !is_leader);
                if rejoin_now {
                    // Nothing changed: answer with the current generation, no rebalance.
                    let result = Ok(self.join_outcome(&id));
                    if let Some(m) = self.members.get_mut(&id) {
                        m.session_deadline_ms = now_ms + m.session_timeout_ms as i64;
                    }
                    out.push(Action::Join { reply, result });
                } else {
                    self.update_member(&id, &req, reply, out);
                    self.prepare_rebalance(now_ms, limits, out);
                }
            }
            Phase::Empty | Phase::Dead => out.push(Action::Join {
                reply,
                result: Err(Self::unknown(&id)),
            }),
        }
    }

    /// A static member rejoining with a new member id: the old id is fenced, the assignment
    /// stays with the instance (KIP-345), and a rebalance happens only if needed.
    #[allow(clippy::too_many_arguments)] // the join's parts, the old and the new identity
    fn replace_static_member(
        &mut self,
        now_ms: i64,
        req: JoinRequest,
        reply: ReplyId,
        old_id: String,
        new_id: String,
        limits: &GroupLimits,
        out: &mut Vec<Action>,
    ) {
        let mut member = self
            .members
            .remove(&old_id)
            .expect("static members are members");
        let iid = req
            .instance_id
            .clone()
            .expect("a static join has an instance id");
        let fenced = GroupError::FencedInstanceId {
            instance_id: iid.clone(),
        };
        if let Some(r) = member.join_reply.take() {
            out.push(Action::Join {
                reply: r,
                result: Err(fenced.clone()),
            });
        }
        if let Some(r) = member.sync_reply.take() {
            out.push(Action::Sync {
                reply: r,
                result: Err(fenced),
            });
        }
        let changed = member.protocols != req.protocols;
        member.protocols = req.protocols;
        member.session_timeout_ms = req.session_timeout_ms;
        member.rebalance_timeout_ms = req.rebalance_timeout_ms;
        member.client_id = req.client_id;
        member.client_host = req.client_host;
        member.session_deadline_ms = now_ms + member.session_timeout_ms as i64;
        let was_leader = self.leader.as_deref() == Some(old_id.as_str());
        if was_leader {
            self.leader = Some(new_id.clone());
        }
        self.static_members.insert(iid, new_id.clone());
        self.members.insert(new_id.clone(), member);
        // As Kafka: an unchanged static member, leader or not, takes its place back without a
        // rebalance; its SyncGroup returns the assignment it had.
        match self.phase {
            Phase::Stable if !changed => {
                let result = Ok(self.join_outcome(&new_id));
                out.push(Action::Join { reply, result });
                // The id changed: persist it so a restart still knows the member.
                out.push(Action::StoreGroup);
            }
            Phase::PreparingRebalance => {
                self.members.get_mut(&new_id).expect("inserted").join_reply = Some(reply);
                self.maybe_complete_join(now_ms, out);
            }
            _ => {
                self.members.get_mut(&new_id).expect("inserted").join_reply = Some(reply);
                self.prepare_rebalance(now_ms, limits, out);
            }
        }
    }

    fn add_member_and_rebalance(
        &mut self,
        now_ms: i64,
        req: JoinRequest,
        reply: ReplyId,
        id: String,
        limits: &GroupLimits,
        out: &mut Vec<Action>,
    ) {
        if self.members.is_empty() {
            self.protocol_type = Some(req.protocol_type.clone());
        }
        if let Some(iid) = &req.instance_id {
            self.static_members.insert(iid.clone(), id.clone());
        }
        self.members.insert(
            id.clone(),
            Member {
                instance_id: req.instance_id,
                client_id: req.client_id,
                client_host: req.client_host,
                session_timeout_ms: req.session_timeout_ms,
                rebalance_timeout_ms: req.rebalance_timeout_ms,
                protocols: req.protocols,
                assignment: Bytes::new(),
                join_reply: Some(reply),
                sync_reply: None,
                session_deadline_ms: now_ms + req.session_timeout_ms as i64,
            },
        );
        if self.leader.is_none() {
            self.leader = Some(id);
        }
        match self.phase {
            Phase::PreparingRebalance => self.maybe_complete_join(now_ms, out),
            _ => self.prepare_rebalance(now_ms, limits, out),
        }
    }

    fn update_member(
        &mut self,
        id: &str,
        req: &JoinRequest,
        reply: ReplyId,
        out: &mut Vec<Action>,
    ) {
        let m = self.members.get_mut(id).expect("caller checked membership");
        if let Some(old) = m.join_reply.replace(reply) {
            out.push(Action::Join {
                reply: old,
                result: Err(GroupError::RebalanceInProgress),
            });
        }
        m.protocols = req.protocols.clone();
        m.session_timeout_ms = req.session_timeout_ms;
        m.rebalance_timeout_ms = req.rebalance_timeout_ms;
    }

    fn prepare_rebalance(&mut self, now_ms: i64, limits: &GroupLimits, out: &mut Vec<Action>) {
        assert!(
            self.phase != Phase::Dead,
            "rebalancing dead group {}",
            self.id
        );
        if self.phase == Phase::CompletingRebalance {
            for m in self.members.values_mut() {
                m.assignment = Bytes::new();
                if let Some(r) = m.sync_reply.take() {
                    out.push(Action::Sync {
                        reply: r,
                        result: Err(GroupError::RebalanceInProgress),
                    });
                }
            }
        }
        let initial = self.phase == Phase::Empty;
        let timeout = self.rebalance_timeout_ms();
        self.phase = Phase::PreparingRebalance;
        self.state_since_ms = now_ms;
        self.join_deadline_ms = now_ms + timeout;
        self.join_not_before_ms = if initial {
            now_ms + (limits.initial_rebalance_delay_ms as i64).min(timeout)
        } else {
            now_ms
        };
        self.maybe_complete_join(now_ms, out);
    }

    fn rebalance_timeout_ms(&self) -> i64 {
        self.members
            .values()
            .map(|m| m.rebalance_timeout_ms.max(0) as i64)
            .max()
            .unwrap_or(0)
    }

    fn maybe_complete_join(&mut self, now_ms: i64, out: &mut Vec<Action>) {
        if self.phase != Phase::PreparingRebalance {
            return;
        }
        let all_joined = self.pending_members.is_empty()
            && self.members.values().all(|m| m.join_reply.is_some());
        if (all_joined && now_ms >= self.join_not_before_ms) || now_ms >= self.join_deadline_ms {
            self.complete_join(now_ms, out);
        }
    }

    fn complete_join(&mut self, now_ms: i64, out: &mut Vec<Action>) {
        let missing: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| m.join_reply.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        for id in missing {
            self.remove_member(&id, out);
        }
        let next = Generation(self.generation.0 + 1);
        assert!(next > self.generation, "generation overflow in {}", self.id);
        self.generation = next;
        self.state_since_ms = now_ms;
        if self.members.is_empty() {
            self.phase = Phase::Empty;
            self.protocol = None;
            self.leader = None;
            out.push(Action::StoreGroup);
            return;
        }
        self.protocol = Some(self.select_protocol());
        self.phase = Phase::CompletingRebalance;
        self.sync_deadline_ms = now_ms + self.rebalance_timeout_ms();
        if !self
            .leader
            .as_ref()
            .is_some_and(|l| self.members.contains_key(l))
        {
            self.leader = self.members.keys().next().cloned();
        }
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let outcome = self.join_outcome(&id);
            let m = self.members.get_mut(&id).expect("listed");
            m.session_deadline_ms = now_ms + m.session_timeout_ms as i64;
            let reply = m.join_reply.take().expect("every remaining member joined");
            out.push(Action::Join {
                reply,
                result: Ok(outcome),
            });
        }
    }

    fn join_outcome(&self, id: &str) -> JoinOutcome {
        let leader = self.leader.clone().unwrap_or_default();
        let protocol = self.protocol.clone().unwrap_or_default();
        let members = if leader == id {
            self.members
                .iter()
                .map(|(mid, m)| JoinedMember {
                    member_id: mid.clone(),
                    instance_id: m.instance_id.clone(),
                    metadata: m.metadata_for(&protocol),
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinOutcome {
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            leader,
            member_id: id.to_string(),
            members,
        }
    }

    /// The protocol every member supports that most members prefer (Kafka's vote); ties go to
    /// the first in the leader's preference order.
    fn select_protocol(&self) -> String {
        let supported_by_all = |name: &str| {
            self.members
                .values()
                .all(|m| m.protocols.iter().any(|p| p.name == name))
        };
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some(p) = m.protocols.iter().find(|p| supported_by_all(&p.name)) {
                *votes.entry(p.name.as_str()).or_default() += 1;
            }
        }
        let order = self
            .leader
            .as_ref()
            .and_then(|l| self.members.get(l))
            .or_else(|| self.members.values().next())
            .expect("a group completing a join has members");
        let best = votes.values().copied().max().unwrap_or(0);
        order
            .protocols
            .iter()
            .find(|p| votes.get(p.name.as_str()) == Some(&best))
            .map(|p| p.name.clone())
            .expect("members share a protocol: joins are checked with supports()")
    }

    /// Removes a member, answering its waiting requests with UNKNOWN_MEMBER_ID.
    fn remove_member(&mut self, id: &str, out: &mut Vec<Action>) {
        let Some(mut m) = self.members.remove(id) else {
            return;
        };
        if let Some(iid) = &m.instance_id {
            if self.static_members.get(iid).map(String::as_str) == Some(id) {
                self.static_members.remove(iid);
            }
        }
        if let Some(r) = m.join_reply.take() {
            out.push(Action::Join {
                reply: r,
                result: Err(Self::unknown(id)),
            });
        }
        if let Some(r) = m.sync_reply.take() {
            out.push(Action::Sync {
                reply: r,
                result: Err(Self::unknown(id)),
            });
        }
        if self.leader.as_deref() == Some(id) {
            self.leader = self.members.keys().next().cloned();
        }
    }

    /// After members left or expired: a rebalance for the rest, or completing the one running.
    fn after_removal(&mut self, now_ms: i64, limits: &GroupLimits, out: &mut Vec<Action>) {
        match self.phase {
            Phase::Stable | Phase::CompletingRebalance => {
                self.prepare_rebalance(now_ms, limits, out)
            }
            Phase::PreparingRebalance => self.maybe_complete_join(now_ms, out),
            Phase::Empty | Phase::Dead => {}
        }
    }

    /// SyncGroup. Followers wait for the leader's assignment; the leader's sync stores the group
    /// and then answers everyone (`StoreGroup` comes before the answers).
    pub fn sync(&mut self, now_ms: i64, req: SyncRequest, reply: ReplyId) -> Vec<Action> {
        let fail = |e: GroupError| {
            vec![Action::Sync {
                reply,
                result: Err(e),
            }]
        };
        if self.phase == Phase::Dead {
            return fail(GroupError::CoordinatorNotAvailable);
        }
        if self.is_static_fenced(&req.instance_id, &req.member_id) {
            return fail(Self::fenced(&req.instance_id));
        }
        if !self.members.contains_key(&req.member_id) {
            return fail(Self::unknown(&req.member_id));
        }
        if req.generation != self.generation {
            return fail(GroupError::IllegalGeneration {
                request: req.generation.0,
                current: self.generation.0,
            });
        }
        let mismatch = |asked: &Option<String>, ours: &Option<String>| {
            asked.as_ref().is_some_and(|a| ours.as_ref() != Some(a))
        };
        if mismatch(&req.protocol_type, &self.protocol_type)
            || mismatch(&req.protocol_name, &self.protocol)
        {
            return fail(GroupError::InconsistentGroupProtocol);
        }
        match self.phase {
            Phase::Empty | Phase::Dead => fail(Self::unknown(&req.member_id)),
            Phase::PreparingRebalance => fail(GroupError::RebalanceInProgress),
            Phase::Stable => {
                let m = self.members.get_mut(&req.member_id).expect("checked");
                m.session_deadline_ms = now_ms + m.session_timeout_ms as i64;
                vec![Action::Sync {
                    reply,
                    result: Ok(self.sync_outcome(&req.member_id)),
                }]
            }
            Phase::CompletingRebalance => {
                let mut out = Vec::new();
                let m = self.members.get_mut(&req.member_id).expect("checked");
                m.session_deadline_ms = now_ms + m.session_timeout_ms as i64;
                if let Some(old) = m.sync_reply.replace(reply) {
                    out.push(Action::Sync {
                        reply: old,
                        result: Err(GroupError::RebalanceInProgress),
                    });
                }
                if self.leader.as_deref() == Some(req.member_id.as_str()) {
                    let mut given: BTreeMap<String, Bytes> = req.assignments.into_iter().collect();
                    for (id, m) in self.members.iter_mut() {
                        m.assignment = given.remove(id).unwrap_or_default();
                    }
                    self.phase = Phase::Stable;
                    self.state_since_ms = now_ms;
                    out.push(Action::StoreGroup);
                    let waiting: Vec<String> = self
                        .members
                        .iter()
                        .filter(|(_, m)| m.sync_reply.is_some())
                        .map(|(id, _)| id.clone())
                        .collect();
                    for id in waiting {
                        let outcome = self.sync_outcome(&id);
                        let r = self.members.get_mut(&id).expect("listed").sync_reply.take();
                        out.push(Action::Sync {
                            reply: r.expect("filtered on it"),
                            result: Ok(outcome),
                        });
                    }
                }
                out
            }
        }
    }

    fn sync_outcome(&self, id: &str) -> SyncOutcome {
        SyncOutcome {
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            assignment: self
                .members
                .get(id)
                .map(|m| m.assignment.clone())
                .unwrap_or_default(),
        }
    }

    /// Heartbeat: keeps the member's session alive and tells it whether to rejoin.
    pub fn heartbeat(
        &mut self,
        now_ms: i64,
        member_id: &str,
        instance_id: &Option<String>,
        generation: Generation,
    ) -> Result<(), GroupError> {
        if self.phase == Phase::Dead {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        if self.is_static_fenced(instance_id, member_id) {
            return Err(Self::fenced(instance_id));
        }
        let current = self.generation;
        let phase = self.phase;
        let m = self
            .members
            .get_mut(member_id)
            .ok_or_else(|| Self::unknown(member_id))?;
        if generation != current {
            return Err(GroupError::IllegalGeneration {
                request: generation.0,
                current: current.0,
            });
        }
        m.session_deadline_ms = now_ms + m.session_timeout_ms as i64;
        match phase {
            Phase::PreparingRebalance => Err(GroupError::RebalanceInProgress),
            Phase::Empty | Phase::Dead => Err(Self::unknown(member_id)),
            Phase::CompletingRebalance | Phase::Stable => Ok(()),
        }
    }

    /// LeaveGroup for each member (one result each, in order), then the rebalance it causes.
    pub fn leave(
        &mut self,
        now_ms: i64,
        leaving: &[LeavingMember],
        limits: &GroupLimits,
    ) -> (Vec<Result<(), GroupError>>, Vec<Action>) {
        let mut out = Vec::new();
        if self.phase == Phase::Dead {
            return (
                leaving
                    .iter()
                    .map(|_| Err(GroupError::CoordinatorNotAvailable))
                    .collect(),
                out,
            );
        }
        let mut results = Vec::with_capacity(leaving.len());
        let mut removed = false;
        for l in leaving {
            let target = match &l.instance_id {
                Some(iid) => match self.static_members.get(iid) {
                    None => Err(Self::unknown(&l.member_id)),
                    Some(owner) if !l.member_id.is_empty() && owner != &l.member_id => {
                        Err(Self::fenced(&l.instance_id))
                    }
                    Some(owner) => Ok(owner.clone()),
                },
                None if self.pending_members.remove(&l.member_id).is_some() => {
                    results.push(Ok(()));
                    continue;
                }
                None if self.members.contains_key(&l.member_id) => Ok(l.member_id.clone()),
                None => Err(Self::unknown(&l.member_id)),
            };
            match target {
                Ok(id) => {
                    self.remove_member(&id, &mut out);
                    removed = true;
                    results.push(Ok(()));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        if removed {
            self.after_removal(now_ms, limits, &mut out);
        } else {
            self.maybe_complete_join(now_ms, &mut out);
        }
        (results, out)
    }

    /// Time passes: unused pending member ids and silent members expire, and rebalances whose
    /// deadlines passed complete (join) or restart (sync).
    pub fn tick(&mut self, now_ms: i64, limits: &GroupLimits) -> Vec<Action> {
        let mut out = Vec::new();
        if self.phase == Phase::Dead {
            return out;
        }
        self.pending_members
            .retain(|_, deadline| *deadline > now_ms);
        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| {
                m.join_reply.is_none() && m.sync_reply.is_none() && m.session_deadline_ms <= now_ms
            })
            .map(|(id, _)| id.clone())
            .collect();
        let any_expired = !expired.is_empty();
        for id in &expired {
            tracing::info!(group = %self.id, member = %id, "member session expired");
            self.remove_member(id, &mut out);
        }
        if self.phase == Phase::CompletingRebalance && now_ms >= self.sync_deadline_ms {
            // The leader's assignment never came: members that did not sync are dropped.
            let silent: Vec<String> = self
                .members
                .iter()
                .filter(|(_, m)| m.sync_reply.is_none())
                .map(|(id, _)| id.clone())
                .collect();
            for id in &silent {
                self.remove_member(id, &mut out);
            }
            self.prepare_rebalance(now_ms, limits, &mut out);
        } else if any_expired {
            self.after_removal(now_ms, limits, &mut out);
        } else {
            self.maybe_complete_join(now_ms, &mut out);
        }
        out
    }

    /// When `tick` next has something to do, if ever.
    pub fn next_deadline_ms(&self) -> Option<i64> {
        let mut d: Option<i64> = self.pending_members.values().copied().min();
        let mut consider = |t: i64| d = Some(d.map_or(t, |x| x.min(t)));
        for m in self.members.values() {
            if m.join_reply.is_none() && m.sync_reply.is_none() {
                consider(m.session_deadline_ms);
            }
        }
        match self.phase {
            Phase::PreparingRebalance => {
                consider(self.join_deadline_ms);
                consider(self.join_not_before_ms);
            }
            Phase::CompletingRebalance => consider(self.sync_deadline_ms),
            _ => {}
        }
        d
    }

    /// Checks that an OffsetCommit may be applied (Kafka's rules: a standalone consumer commits
    /// with generation -1 to an empty group; a member commits in its generation, also while a
    /// rebalance is being prepared, so it can commit what it processed before rejoining).
    pub fn check_commit(
        &mut self,
        now_ms: i64,
        member_id: &str,
        instance_id: &Option<String>,
        generation: Generation,
    ) -> Result<(), GroupError> {
        if self.phase == Phase::Dead {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        if self.is_static_fenced(instance_id, member_id) {
            return Err(Self::fenced(instance_id));
        }
        if generation.0 < 0 && self.phase == Phase::Empty {
            return Ok(());
        }
        if self.phase == Phase::CompletingRebalance {
            return Err(GroupError::RebalanceInProgress);
        }
        let current = self.generation;
        let m = self
            .members
            .get_mut(member_id)
            .ok_or_else(|| Self::unknown(member_id))?;
        if generation != current {
            return Err(GroupError::IllegalGeneration {
                request: generation.0,
                current: current.0,
            });
        }
        m.session_deadline_ms = now_ms + m.session_timeout_ms as i64;
        Ok(())
    }

    /// Records committed offsets (after they were stored).
    pub fn apply_offsets(
        &mut self,
        offsets: impl IntoIterator<Item = (TopicPartition, CommittedOffset)>,
    ) {
        self.offsets.extend(offsets);
    }

    /// Forgets committed offsets (after their tombstones were stored).
    pub fn remove_offsets<'a>(&mut self, tps: impl IntoIterator<Item = &'a TopicPartition>) {
        for tp in tps {
            self.offsets.remove(tp);
        }
    }

    /// Offsets that `offsets.retention.minutes` lets go: only an empty group loses them,
    /// `retention_ms` after the later of their commit and the group becoming empty.
    pub fn expired_offsets(&self, now_ms: i64, retention_ms: i64) -> Vec<TopicPartition> {
        if self.phase != Phase::Empty {
            return Vec::new();
        }
        self.offsets
            .iter()
            .filter(|(_, c)| {
                now_ms - c.commit_timestamp_ms.max(self.state_since_ms) >= retention_ms
            })
            .map(|(tp, _)| tp.clone())
            .collect()
    }

    /// DeleteGroups: only an empty group may go. It becomes Dead; the caller stores tombstones.
    pub fn delete(&mut self) -> Result<(), GroupError> {
        match self.phase {
            Phase::Empty => {
                self.phase = Phase::Dead;
                Ok(())
            }
            Phase::Dead => Err(GroupError::GroupIdNotFound),
            _ => Err(GroupError::NonEmptyGroup),
        }
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
