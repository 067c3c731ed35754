//! Leaders whose process looks gone from this broker: its follower fetcher's connection to them
//! broke or was refused. A kill -9 closes the dead process's connections at once, well before
//! the controller has fenced it and moved its partitions, and clients ask for new leaders at
//! that moment. Metadata answers name no leader for those partitions (LEADER_NOT_AVAILABLE)
//! until the controller moves them or the leader answers a fetch again, so clients keep asking
//! (librdkafka's fast leader query backs off from 100 ms) instead of being told the dead
//! broker still leads and waiting for their next one-second scan.
//!
//! A mark is a hint for clients only: nothing is fenced, elected or refused on it. It is tied
//! to the leader's incarnation, so a restarted process is never taken for the dead one.

use std::collections::HashMap;
use std::sync::Mutex;

use ferrymq_cluster::MetadataImage;
use ferrymq_types::NodeId;
use uuid::Uuid;

/// The marks, by leader.
#[derive(Debug, Default)]
pub struct GoneLeaders {
    by_node: Mutex<HashMap<NodeId, Uuid>>,
}

impl GoneLeaders {
    /// Marks incarnation `incarnation` of `node` as gone; true if it was not marked yet.
    pub fn mark(&self, node: NodeId, incarnation: Uuid) -> bool {
        self.by_node
            .lock()
            .expect("gone leaders lock")
            .insert(node, incarnation)
            != Some(incarnation)
    }

    /// Removes the mark of `node`, if any: it answered, or is no longer followed here.
    pub fn clear(&self, node: NodeId) -> bool {
        self.by_node
            .lock()
            .expect("gone leaders lock")
            .remove(&node)
            .is_some()
    }

    /// The marked nodes that `image` still has as live, registered with the marked
    /// incarnation.
    pub fn in_image(&self, image: &MetadataImage) -> Vec<NodeId> {
        let marks = self.by_node.lock().expect("gone leaders lock");
        if marks.is_empty() {
            return Vec::new();
        }
        marks
            .iter()
            .filter(|(node, inc)| {
                image
                    .brokers
                    .get(node)
                    .is_some_and(|b| !b.fenced && b.incarnation == **inc)
            })
            .map(|(node, _)| *node)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrymq_cluster::records::{BrokerFenceRecord, MetadataRecord, RegisterBrokerRecord};

    fn register(img: &mut MetadataImage, offset: i64, id: i32, inc: Uuid) {
        img.apply_command(
            offset,
            &[
                MetadataRecord::RegisterBroker(RegisterBrokerRecord {
                    version: 1,
                    id: NodeId(id),
                    incarnation: inc,
                    host: "h".into(),
                    port: 1,
                    rack: None,
                    controller_addr: String::new(),
                }),
                MetadataRecord::BrokerFence(BrokerFenceRecord {
                    version: 1,
                    id: NodeId(id),
                    incarnation: inc,
                    fenced: false,
                }),
            ],
        )
        .unwrap();
    }

    #[test]
    fn a_mark_holds_for_the_marked_incarnation_only_and_until_cleared() {
        let mut img = MetadataImage::new("c");
        let (first, second) = (Uuid::from_u128(1), Uuid::from_u128(2));
        register(&mut img, 0, 2, first);
        let gone = GoneLeaders::default();
        assert!(gone.in_image(&img).is_empty());
        assert!(gone.mark(NodeId(2), first));
        assert!(!gone.mark(NodeId(2), first), "marked once");
        assert_eq!(gone.in_image(&img), vec![NodeId(2)]);
        // The node restarted and registered again: the new process is not the gone one.
        register(&mut img, 1, 2, second);
        assert!(gone.in_image(&img).is_empty());
        assert!(gone.mark(NodeId(2), second));
        assert_eq!(gone.in_image(&img), vec![NodeId(2)]);
        assert!(gone.clear(NodeId(2)));
        assert!(gone.in_image(&img).is_empty());
    }
}
