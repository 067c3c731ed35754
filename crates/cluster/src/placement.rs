//! Replica placement: which brokers hold each partition of a new topic.

use ferrymq_types::NodeId;

use crate::error::{ControllerError, Result};

/// Assigns `replication_factor` distinct brokers to each of `count` partitions, starting at
/// partition index `first_partition`. Replica lists rotate over the sorted brokers so that
/// leaders (first replicas) and replicas spread evenly; `seed` varies the starting broker
/// between topics so that small topics do not all land on the same node.
pub fn assign(
    brokers: &[NodeId],
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
    let mut sorted = brokers.to_vec();
    sorted.sort();
    sorted.dedup();
    let n = sorted.len();
    if replication_factor as usize > n {
        return Err(ControllerError::InvalidReplicationFactor(format!(
            "replication factor {replication_factor} larger than the {n} available brokers"
        )));
    }
    Ok((0..count)
        .map(|i| {
            let p = (first_partition + i) as usize + seed;
            (0..replication_factor as usize)
                .map(|r| sorted[(p + r) % n])
                .collect()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_are_distinct_and_leaders_spread_evenly() {
        let brokers = [NodeId(3), NodeId(1), NodeId(2)];
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
    fn too_large_a_factor_is_refused() {
        assert!(matches!(
            assign(&[NodeId(1)], 1, 0, 2, 0),
            Err(ControllerError::InvalidReplicationFactor(_))
        ));
    }
}
