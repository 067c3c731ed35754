//! Replica placement: which brokers hold each partition of a new topic.
//!
//! Brokers are ordered so that consecutive ones sit in different racks where racks are set
//! (round robin over racks), then each partition takes `replication_factor` consecutive
//! brokers starting one further along than the previous partition. Replicas of a partition are
//! therefore distinct (and in distinct racks when there are enough), and leaders (first
//! replicas) and replicas spread evenly.

use std::collections::BTreeMap;

use ferrymq_types::NodeId;

use crate::error::{ControllerError, Result};

/// A broker eligible for replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Its id.
    pub id: NodeId,
    /// Its rack, if set.
    pub rack: Option<String>,
}

/// Brokers interleaved by rack: A1 B1 C1 A2 B2 C2 ... (ids ascending within a rack).
fn rack_interleaved(brokers: &[Candidate]) -> Vec<NodeId> {
    let mut by_rack: BTreeMap<Option<&str>, Vec<NodeId>> = BTreeMap::new();
    for b in brokers {
        by_rack.entry(b.rack.as_deref()).or_default().push(b.id);
    }
    for ids in by_rack.values_mut() {
        ids.sort();
        ids.dedup();
    }
    let mut out = Vec::new();
    let longest = by_rack.values().map(Vec::len).max().unwrap_or(0);
    for i in 0..longest {
        for ids in by_rack.values() {
            if let Some(id) = ids.get(i) {
                out.push(*id);
            }
        }
    }
    out
}

/// Assigns `replication_factor` distinct brokers to each of `count` partitions, starting at
/// partition index `first_partition`; `seed` varies the starting broker between topics.
pub fn assign(
    brokers: &[Candidate],
    count: i32,
    first_partition: i32,
    replication_factor: i16,
    seed: usize,
) -> Result<Vec<Vec<NodeId>>> {
    if replication_factor < 1 {
        return Err(ControllerError::InvalidReplicationFactor(format!(
            "replication factor must be at least 1, got {replication_factor}"
        )));
    }
    let order = rack_interleaved(brokers);
    let n = order.len();
    if replication_factor as usize > n {
        return Err(ControllerError::InvalidReplicationFactor(format!(
            "replication factor {replication_factor} larger than the {n} available brokers"
        )));
    }
    Ok((0..count)
        .map(|i| {
            let p = (first_partition + i) as usize + seed;
            (0..replication_factor as usize)
                .map(|r| order[(p + r) % n])
                .collect()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: i32, rack: Option<&str>) -> Candidate {
        Candidate {
            id: NodeId(id),
            rack: rack.map(str::to_string),
        }
    }

    #[test]
    fn replicas_are_distinct_and_leaders_spread_evenly() {
        let brokers = [c(3, None), c(1, None), c(2, None)];
        let a = assign(&brokers, 6, 0, 3, 0).unwrap();
        for r in &a {
            let mut d = r.clone();
            d.sort();
            d.dedup();
            assert_eq!(d.len(), 3);
        }
        for b in 1..=3 {
            assert_eq!(a.iter().filter(|r| r[0] == NodeId(b)).count(), 2);
        }
    }

    #[test]
    fn replicas_land_in_different_racks() {
        let brokers = [
            c(1, Some("a")),
            c(2, Some("a")),
            c(3, Some("b")),
            c(4, Some("b")),
        ];
        let a = assign(&brokers, 8, 0, 2, 0).unwrap();
        let rack = |id: NodeId| if id.0 <= 2 { "a" } else { "b" };
        for r in &a {
            assert_ne!(rack(r[0]), rack(r[1]), "{r:?}");
        }
    }

    #[test]
    fn too_large_a_factor_is_refused() {
        assert!(matches!(
            assign(&[c(1, None)], 1, 0, 2, 0),
            Err(ControllerError::InvalidReplicationFactor(_))
        ));
    }
}
