//! The classic group protocol: JoinGroup (11), SyncGroup (14), Heartbeat (12), LeaveGroup (13),
//! ListGroups (16), DescribeGroups (15) and DeleteGroups (42), translated into calls on the
//! broker's group coordinator. Member metadata and assignments pass through as opaque bytes.

use std::sync::Arc;

use ferrymq_broker::group::state::{JoinRequest, LeavingMember, Protocol, SyncRequest};
use ferrymq_broker::group::{Generation, GroupError};
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::str_bytes;
use crate::context::ServerContext;
use crate::errors;

fn text(s: &Option<StrBytes>) -> Option<String> {
    s.as_ref().map(|s| s.to_string())
}

fn client_id(header: &RequestHeader) -> String {
    text(&header.client_id).unwrap_or_default()
}

/// JoinGroup: waits until the rebalance completes.
pub async fn join_group(
    ctx: &Arc<ServerContext>,
    header: &RequestHeader,
    req: JoinGroupRequest,
) -> JoinGroupResponse {
    let version = header.request_api_version;
    let join = JoinRequest {
        member_id: req.member_id.to_string(),
        instance_id: text(&req.group_instance_id),
        client_id: client_id(header),
        client_host: String::new(),
        session_timeout_ms: req.session_timeout_ms,
        // v0 has no rebalance timeout: Kafka uses the session timeout.
        rebalance_timeout_ms: if version >= 1 {
            req.rebalance_timeout_ms
        } else {
            req.session_timeout_ms
        },
        protocol_type: req.protocol_type.to_string(),
        protocols: req
            .protocols
            .iter()
            .map(|p| Protocol {
                name: p.name.to_string(),
                metadata: p.metadata.clone(),
            })
            .collect(),
        require_known_member_id: version >= 4,
    };
    // Before v7 the protocol name is a non-null string.
    let name = |n: Option<String>| match n {
        Some(n) => Some(str_bytes(n)),
        None if version < 7 => Some(StrBytes::default()),
        None => None,
    };
    match ctx.broker.groups().join(&req.group_id, join).await {
        Ok(out) => JoinGroupResponse::default()
            .with_generation_id(out.generation.0)
            .with_protocol_type(out.protocol_type.map(str_bytes))
            .with_protocol_name(name(out.protocol_name))
            .with_leader(str_bytes(out.leader))
            .with_member_id(str_bytes(out.member_id))
            .with_members(
                out.members
                    .into_iter()
                    .map(|m| {
                        JoinGroupResponseMember::default()
                            .with_member_id(str_bytes(m.member_id))
                            .with_group_instance_id(m.instance_id.map(str_bytes))
                            .with_metadata(m.metadata)
                    })
                    .collect(),
            ),
        Err(e) => {
            let member_id = match &e {
                GroupError::MemberIdRequired { member_id } => member_id.clone(),
                _ => req.member_id.to_string(),
            };
            JoinGroupResponse::default()
                .with_error_code(errors::group(&e).code())
                .with_generation_id(-1)
                .with_protocol_name(name(None))
                .with_member_id(str_bytes(member_id))
        }
    }
}

/// SyncGroup: followers wait for the leader's assignment.
pub async fn sync_group(
    ctx: &Arc<ServerContext>,
    _header: &RequestHeader,
    req: SyncGroupRequest,
) -> SyncGroupResponse {
    let sync = SyncRequest {
        member_id: req.member_id.to_string(),
        instance_id: text(&req.group_instance_id),
        generation: Generation(req.generation_id),
        protocol_type: text(&req.protocol_type),
        protocol_name: text(&req.protocol_name),
        assignments: req
            .assignments
            .into_iter()
            .map(|a| (a.member_id.to_string(), a.assignment))
            .collect(),
    };
    match ctx.broker.groups().sync(&req.group_id, sync).await {
        Ok(out) => SyncGroupResponse::default()
            .with_protocol_type(out.protocol_type.map(str_bytes))
            .with_protocol_name(out.protocol_name.map(str_bytes))
            .with_assignment(out.assignment),
        Err(e) => SyncGroupResponse::default().with_error_code(errors::group(&e).code()),
    }
}

/// Heartbeat.
pub async fn heartbeat(
    ctx: &Arc<ServerContext>,
    _header: &RequestHeader,
    req: HeartbeatRequest,
) -> HeartbeatResponse {
    let r = ctx
        .broker
        .groups()
        .heartbeat(
            &req.group_id,
            &req.member_id,
            &text(&req.group_instance_id),
            Generation(req.generation_id),
        )
        .await;
    HeartbeatResponse::default().with_error_code(errors::code(r.err().map(|e| errors::group(&e))))
}

/// LeaveGroup: one member before v3, a batch of members (static ones by instance id) from v3.
pub async fn leave_group(
    ctx: &Arc<ServerContext>,
    header: &RequestHeader,
    req: LeaveGroupRequest,
) -> LeaveGroupResponse {
    let batched = header.request_api_version >= 3;
    let leaving: Vec<LeavingMember> = if batched {
        req.members
            .iter()
            .map(|m| LeavingMember {
                member_id: m.member_id.to_string(),
                instance_id: text(&m.group_instance_id),
            })
            .collect()
    } else {
        vec![LeavingMember {
            member_id: req.member_id.to_string(),
            instance_id: None,
        }]
    };
    match ctx.broker.groups().leave(&req.group_id, &leaving).await {
        Err(e) => LeaveGroupResponse::default().with_error_code(errors::group(&e).code()),
        Ok(results) if !batched => LeaveGroupResponse::default()
            .with_error_code(errors::code(results[0].as_ref().err().map(errors::group))),
        Ok(results) => LeaveGroupResponse::default().with_members(
            leaving
                .into_iter()
                .zip(results)
                .map(|(l, r)| {
                    MemberResponse::default()
                        .with_member_id(str_bytes(l.member_id))
                        .with_group_instance_id(l.instance_id.map(str_bytes))
                        .with_error_code(errors::code(r.err().map(|e| errors::group(&e))))
                })
                .collect(),
        ),
    }
}

/// ListGroups, with the states filter of v4 and the types filter of v5.
pub async fn list_groups(
    ctx: &Arc<ServerContext>,
    _header: &RequestHeader,
    req: ListGroupsRequest,
) -> ListGroupsResponse {
    match ctx.broker.groups().list_groups().await {
        Err(e) => ListGroupsResponse::default().with_error_code(errors::group(&e).code()),
        Ok(groups) => {
            let wanted_state = |s: &str| {
                req.states_filter.is_empty()
                    || req.states_filter.iter().any(|f| f.eq_ignore_ascii_case(s))
            };
            let wanted_type = |_: &str| {
                // Every group here is a classic group.
                req.types_filter.is_empty()
                    || req
                        .types_filter
                        .iter()
                        .any(|f| f.eq_ignore_ascii_case("classic"))
            };
            ListGroupsResponse::default().with_groups(
                groups
                    .into_iter()
                    .filter(|g| wanted_state(g.state) && wanted_type(&g.protocol_type))
                    .map(|g| {
                        ListedGroup::default()
                            .with_group_id(GroupId(str_bytes(g.group_id)))
                            .with_protocol_type(str_bytes(g.protocol_type))
                            .with_group_state(str_bytes(g.state))
                            .with_group_type(str_bytes("classic"))
                    })
                    .collect(),
            )
        }
    }
}

/// Every group operation is allowed (no authorizer): READ 3, DELETE 6, DESCRIBE 8.
const GROUP_OPERATIONS: i32 = (1 << 3) | (1 << 6) | (1 << 8);

/// DescribeGroups.
pub async fn describe_groups(
    ctx: &Arc<ServerContext>,
    header: &RequestHeader,
    req: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let mut out = Vec::with_capacity(req.groups.len());
    for id in req.groups {
        let base = DescribedGroup::default().with_group_id(id.clone());
        let base = if header.request_api_version >= 3 && req.include_authorized_operations {
            base.with_authorized_operations(GROUP_OPERATIONS)
        } else {
            base
        };
        out.push(match ctx.broker.groups().describe(&id).await {
            Err(e) => base.with_error_code(errors::group(&e).code()),
            Ok(d) => base
                .with_group_state(str_bytes(d.state))
                .with_protocol_type(str_bytes(d.protocol_type))
                .with_protocol_data(str_bytes(d.protocol))
                .with_members(
                    d.members
                        .into_iter()
                        .map(|m| {
                            DescribedGroupMember::default()
                                .with_member_id(str_bytes(m.member_id))
                                .with_group_instance_id(m.instance_id.map(str_bytes))
                                .with_client_id(str_bytes(m.client_id))
                                .with_client_host(str_bytes(m.client_host))
                                .with_member_metadata(m.metadata)
                                .with_member_assignment(m.assignment)
                        })
                        .collect(),
                ),
        });
    }
    DescribeGroupsResponse::default().with_groups(out)
}

/// DeleteGroups: each group independently.
pub async fn delete_groups(
    ctx: &Arc<ServerContext>,
    _header: &RequestHeader,
    req: DeleteGroupsRequest,
) -> DeleteGroupsResponse {
    let mut results = Vec::with_capacity(req.groups_names.len());
    for id in req.groups_names {
        let r = ctx.broker.groups().delete_group(&id).await;
        results.push(
            DeletableGroupResult::default()
                .with_group_id(id)
                .with_error_code(errors::code(r.err().map(|e| errors::group(&e)))),
        );
    }
    DeleteGroupsResponse::default().with_results(results)
}
