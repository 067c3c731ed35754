//! Consumer-group calls of the command-line tools, sent to the group's coordinator:
//! FindCoordinator, OffsetFetch, OffsetCommit (as a standalone consumer: generation -1, no
//! member id, as Kafka allows for an empty group), ListGroups, DescribeGroups, DeleteGroups.

use std::collections::BTreeMap;

use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::ops::PartitionError;
use super::{ClientError, ClusterClient};

/// The APIs (and versions) the group commands use.
pub const GROUP_APIS: &[(ApiKey, i16)] = &[
    (ApiKey::FindCoordinator, 3),
    (ApiKey::OffsetFetch, 5),
    (ApiKey::OffsetCommit, 7),
    (ApiKey::ListGroups, 4),
    (ApiKey::DescribeGroups, 5),
    (ApiKey::DeleteGroups, 2),
];

/// A group as ListGroups reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedGroup {
    /// Group id.
    pub group_id: String,
    /// Protocol type (`consumer`).
    pub protocol_type: String,
    /// State.
    pub state: String,
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn err(code: i16) -> Result<(), PartitionError> {
    if code == 0 {
        Ok(())
    } else {
        Err(PartitionError {
            code,
            message: String::new(),
        })
    }
}

impl ClusterClient {
    /// The coordinator of `group`.
    pub async fn coordinator(
        &mut self,
        group: &str,
    ) -> Result<Result<i32, PartitionError>, ClientError> {
        let resp = self
            .any()
            .call(
                &FindCoordinatorRequest::default()
                    .with_key(s(group))
                    .with_key_type(0),
                3,
            )
            .await?;
        Ok(err(resp.error_code).map(|_| resp.node_id.0))
    }

    /// Committed offsets of `group` by (topic, partition): of these partitions of one topic,
    /// or every committed offset when `topic` is `None`.
    pub async fn committed(
        &mut self,
        coordinator: i32,
        group: &str,
        topic: Option<(&str, Vec<i32>)>,
    ) -> Result<Result<BTreeMap<(String, i32), i64>, PartitionError>, ClientError> {
        let topics = topic.map(|(t, partitions)| {
            vec![offset_fetch_request::OffsetFetchRequestTopic::default()
                .with_name(TopicName(s(t)))
                .with_partition_indexes(partitions)]
        });
        let req = OffsetFetchRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_topics(topics);
        let resp = self.node(coordinator).await?.call(&req, 5).await?;
        if let Err(e) = err(resp.error_code) {
            return Ok(Err(e));
        }
        Ok(Ok(resp
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .filter(|p| p.error_code == 0 && p.committed_offset >= 0)
                    .map(move |p| {
                        (
                            (t.name.0.to_string(), p.partition_index),
                            p.committed_offset,
                        )
                    })
            })
            .collect()))
    }

    /// Commits `offsets` for `group` as a standalone consumer.
    pub async fn commit(
        &mut self,
        coordinator: i32,
        group: &str,
        offsets: &BTreeMap<(String, i32), i64>,
    ) -> Result<Result<(), PartitionError>, ClientError> {
        let mut topics: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
        for ((t, p), o) in offsets {
            topics.entry(t).or_default().push(
                OffsetCommitRequestPartition::default()
                    .with_partition_index(*p)
                    .with_committed_offset(*o)
                    .with_committed_leader_epoch(-1)
                    .with_committed_metadata(Some(s(""))),
            );
        }
        let req = OffsetCommitRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_generation_id_or_member_epoch(-1)
            .with_member_id(s(""))
            .with_topics(
                topics
                    .into_iter()
                    .map(|(t, ps)| {
                        OffsetCommitRequestTopic::default()
                            .with_name(TopicName(s(t)))
                            .with_partitions(ps)
                    })
                    .collect(),
            );
        let resp = self.node(coordinator).await?.call(&req, 7).await?;
        let first_error = resp
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
            .find(|c| *c != 0)
            .unwrap_or(0);
        Ok(err(first_error))
    }

    /// Groups known to broker `node` (each broker lists the groups it coordinates).
    pub async fn list_groups(
        &mut self,
        node: i32,
    ) -> Result<Result<Vec<ListedGroup>, PartitionError>, ClientError> {
        let resp = self
            .node(node)
            .await?
            .call(&ListGroupsRequest::default(), 4)
            .await?;
        if let Err(e) = err(resp.error_code) {
            return Ok(Err(e));
        }
        Ok(Ok(resp
            .groups
            .iter()
            .map(|g| ListedGroup {
                group_id: g.group_id.0.to_string(),
                protocol_type: g.protocol_type.to_string(),
                state: g.group_state.to_string(),
            })
            .collect()))
    }

    /// DescribeGroups for one group on its coordinator.
    pub async fn describe_group(
        &mut self,
        coordinator: i32,
        group: &str,
    ) -> Result<Result<describe_groups_response::DescribedGroup, PartitionError>, ClientError> {
        let resp = self
            .node(coordinator)
            .await?
            .call(
                &DescribeGroupsRequest::default().with_groups(vec![GroupId(s(group))]),
                5,
            )
            .await?;
        let g = resp
            .groups
            .into_iter()
            .next()
            .ok_or_else(|| ClientError::Protocol("empty DescribeGroups answer".into()))?;
        Ok(err(g.error_code).map(|_| g))
    }

    /// DeleteGroups for one group on its coordinator.
    pub async fn delete_group(
        &mut self,
        coordinator: i32,
        group: &str,
    ) -> Result<Result<(), PartitionError>, ClientError> {
        let resp = self
            .node(coordinator)
            .await?
            .call(
                &DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s(group))]),
                2,
            )
            .await?;
        Ok(err(resp.results.first().map_or(0, |r| r.error_code)))
    }
}
