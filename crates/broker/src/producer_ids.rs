//! The producer ids this broker hands to idempotent producers (InitProducerId): taken in order
//! from a block the controller granted, a new block asked for when it runs out. A pure pool;
//! `Broker::init_producer_id` does the asking.
//!
//! Ids are unique for the life of the cluster because every block is committed to the metadata
//! log before its first id is handed out, and a block is never granted twice. What is left of
//! a block when the broker stops is never used: a restart starts with an empty pool and asks
//! for a new block, so an id handed out before a crash cannot be handed out again.

use ferrymq_cluster::ProducerIdBlock;
use ferrymq_types::ProducerId;

/// The rest of this broker's current block: ids `next..end`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ProducerIdPool {
    next: i64,
    end: i64,
}

impl ProducerIdPool {
    /// An empty pool: the first `take` needs a block.
    pub fn new() -> ProducerIdPool {
        ProducerIdPool::default()
    }

    /// The next id, or `None` when the block is used up.
    pub fn take(&mut self) -> Option<ProducerId> {
        if self.next >= self.end {
            return None;
        }
        let id = ProducerId(self.next);
        self.next += 1;
        Some(id)
    }

    /// Installs a newly granted block. Blocks are granted in increasing order, so the new one
    /// lies wholly past everything this pool handed out: ids never go backwards.
    pub fn refill(&mut self, block: ProducerIdBlock) {
        assert!(block.size > 0, "empty producer id block {block:?}");
        assert!(
            block.first.0 >= self.end,
            "producer id block {block:?} overlaps ids already handed out (up to {})",
            self.end
        );
        self.next = block.first.0;
        self.end = block.end().0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_out_a_block_in_order_then_asks_for_more() {
        let mut pool = ProducerIdPool::new();
        assert_eq!(pool.take(), None, "an empty pool needs a block");
        pool.refill(ProducerIdBlock {
            first: ProducerId(1000),
            size: 3,
        });
        let ids: Vec<_> = std::iter::from_fn(|| pool.take()).collect();
        assert_eq!(ids, [ProducerId(1000), ProducerId(1001), ProducerId(1002)]);
        assert_eq!(pool.take(), None);
        pool.refill(ProducerIdBlock {
            first: ProducerId(5000),
            size: 2,
        });
        assert_eq!(pool.take(), Some(ProducerId(5000)));
    }

    #[test]
    #[should_panic(expected = "overlaps")]
    fn a_block_below_the_ids_handed_out_is_a_bug() {
        let mut pool = ProducerIdPool::new();
        pool.refill(ProducerIdBlock {
            first: ProducerId(1000),
            size: 10,
        });
        pool.refill(ProducerIdBlock {
            first: ProducerId(1005),
            size: 10,
        });
    }
}
