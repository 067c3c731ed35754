//! Consumer groups for the admin API and metrics, from this node's group coordinator: the
//! groups whose `__consumer_offsets` partition this node leads. Lag is the high watermark minus
//! the committed offset where this node leads the partition (its HW is authoritative); for
//! partitions led elsewhere the committed offset is given and the lag left out (`ferrymq group
//! describe` asks each leader, and Prometheus can join `ferrymq_high_watermark` with
//! `ferrymq_consumer_group_committed_offset`).

use std::sync::Arc;

use ferrymq_broker::group::{GroupError, OFFSETS_TOPIC};
use ferrymq_broker::{Broker, Role};
use ferrymq_types::TopicPartition;

use crate::features::{BoxFuture, GroupsView};
use crate::views::{GroupOffsetView, GroupSummary, GroupView, MemberView};

/// Groups sampled for metrics at one scrape, at most.
pub const GROUPS_SAMPLED_MAX: usize = 1000;

/// `GroupsView` over the broker's group coordinator.
#[derive(Debug)]
pub struct CoordinatorGroups(pub Arc<Broker>);

fn text(e: GroupError) -> String {
    match e {
        GroupError::NotCoordinator => {
            "this node does not coordinate that group: ask the admin API of the leader of its __consumer_offsets partition, or run `ferrymq group describe`".into()
        }
        other => other.to_string(),
    }
}

impl CoordinatorGroups {
    /// The high watermark of `tp` if this node leads it.
    fn local_hw(&self, tp: &TopicPartition) -> Option<i64> {
        let p = self.0.partition(tp).ok()?;
        let snap = p.snapshot();
        (snap.role == Role::Leader).then_some(snap.high_watermark.0)
    }

    async fn offsets(&self, group: &str) -> Result<Vec<GroupOffsetView>, String> {
        let committed = self
            .0
            .groups()
            .fetch_offsets(group, None)
            .await
            .map_err(text)?;
        Ok(committed
            .into_iter()
            .filter_map(|(tp, c)| c.map(|c| (tp, c.offset.0)))
            .map(|(tp, committed_offset)| {
                let high_watermark = self.local_hw(&tp);
                GroupOffsetView {
                    topic: tp.topic.clone(),
                    partition: tp.partition.0,
                    committed_offset,
                    high_watermark,
                    lag: high_watermark.map(|h| (h - committed_offset).max(0)),
                }
            })
            .collect())
    }
}

impl GroupsView for CoordinatorGroups {
    fn list(&self) -> BoxFuture<'_, Result<Vec<GroupSummary>, String>> {
        Box::pin(async move {
            let listed = self.0.groups().list_groups().await.map_err(text)?;
            let mut out = Vec::with_capacity(listed.len());
            for g in listed {
                let members = match self.0.groups().describe(&g.group_id).await {
                    Ok(d) => d.members.len(),
                    Err(_) => 0,
                };
                out.push(GroupSummary {
                    group_id: g.group_id,
                    state: g.state.to_string(),
                    protocol_type: g.protocol_type,
                    members,
                });
            }
            out.sort_by(|a, b| a.group_id.cmp(&b.group_id));
            Ok(out)
        })
    }

    fn describe<'a>(&'a self, group: &'a str) -> BoxFuture<'a, Result<Option<GroupView>, String>> {
        Box::pin(async move {
            if self.0.metadata().topic(OFFSETS_TOPIC).is_none() {
                // No group has ever committed or joined: there is no coordinator to ask.
                return Ok(None);
            }
            let d = self.0.groups().describe(group).await.map_err(text)?;
            let offsets = self.offsets(group).await?;
            if d.state == "Dead" && offsets.is_empty() {
                return Ok(None);
            }
            Ok(Some(GroupView {
                group_id: group.to_string(),
                state: d.state.to_string(),
                protocol: d.protocol,
                members: d
                    .members
                    .into_iter()
                    .map(|m| MemberView {
                        member_id: m.member_id,
                        client_id: m.client_id,
                        client_host: m.client_host,
                    })
                    .collect(),
                total_lag: offsets.iter().filter_map(|o| o.lag).sum(),
                offsets,
            }))
        })
    }
}

/// Sets the group gauges (committed offsets, and lag where known) of every group `view`
/// lists; errors (no coordinator here, loading) leave them unset for this scrape.
pub async fn sample(view: &dyn GroupsView) {
    let Ok(groups) = view.list().await else {
        return;
    };
    for g in groups.iter().take(GROUPS_SAMPLED_MAX) {
        let Ok(Some(detail)) = view.describe(&g.group_id).await else {
            continue;
        };
        for o in &detail.offsets {
            let tp = TopicPartition::new(&o.topic, o.partition);
            ferrymq_broker::metrics::group_committed(&g.group_id, &tp, o.committed_offset);
            if let Some(lag) = o.lag {
                ferrymq_broker::metrics::group_lag(&g.group_id, &tp, lag);
            }
        }
    }
}
