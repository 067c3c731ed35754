//! The leader-epoch cache of one partition: for each leader epoch, the first offset written in
//! it. Followers use it to find where their log diverges from a new leader's (KIP-101): they
//! truncate to the leader's end offset for their last epoch, never to a high watermark.

use ferrymq_types::{LeaderEpoch, Offset};

/// Epoch → start offset entries, both strictly increasing.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EpochCache {
    entries: Vec<(LeaderEpoch, Offset)>,
}

impl EpochCache {
    /// Builds a cache from checkpointed entries, dropping any that break monotonicity (a
    /// damaged file must not stop the partition; the log scan re-adds what it needs).
    pub fn from_entries(entries: Vec<(LeaderEpoch, Offset)>) -> EpochCache {
        let mut cache = EpochCache::default();
        for (e, o) in entries {
            cache.assign(e, o);
        }
        cache
    }

    /// Records that `epoch` starts at `start`. Ignored if `epoch` is not newer than the latest
    /// (every batch of an epoch calls this); an entry whose start is not below `start` is
    /// replaced, because an epoch that wrote nothing has no range.
    pub fn assign(&mut self, epoch: LeaderEpoch, start: Offset) -> bool {
        if epoch.0 < 0 {
            return false;
        }
        if let Some(&(last_epoch, _)) = self.entries.last() {
            if epoch <= last_epoch {
                return false;
            }
        }
        while self.entries.last().is_some_and(|&(_, o)| o >= start) {
            self.entries.pop();
        }
        self.entries.push((epoch, start));
        true
    }

    /// The latest epoch, if any.
    pub fn latest_epoch(&self) -> Option<LeaderEpoch> {
        self.entries.last().map(|&(e, _)| e)
    }

    /// For OffsetForLeaderEpoch: the largest epoch ≤ `epoch` we know and the end offset of that
    /// epoch (the start of the next one, or `log_end` for the latest). `None` if `epoch` is
    /// below every entry (the caller answers `UNDEFINED_EPOCH`/-1).
    pub fn end_offset_for(
        &self,
        epoch: LeaderEpoch,
        log_end: Offset,
    ) -> Option<(LeaderEpoch, Offset)> {
        let i = self.entries.partition_point(|&(e, _)| e <= epoch);
        let (found, _) = *self.entries.get(i.checked_sub(1)?)?;
        let end = self.entries.get(i).map_or(log_end, |&(_, start)| start);
        Some((found, end))
    }

    /// Drops entries starting at or after `end` (the log was truncated to `end`).
    pub fn truncate_from_end(&mut self, end: Offset) {
        while self.entries.last().is_some_and(|&(_, o)| o >= end) {
            self.entries.pop();
        }
    }

    /// Moves entries below `start` up to it (the log start moved to `start`), keeping the
    /// latest epoch that covers `start`.
    pub fn truncate_from_start(&mut self, start: Offset) {
        let covering = self.entries.partition_point(|&(_, o)| o <= start);
        if covering == 0 {
            return;
        }
        self.entries.drain(..covering - 1);
        self.entries[0].1 = self.entries[0].1.max(start);
    }

    /// The entries, oldest first (for the checkpoint file).
    pub fn entries(&self) -> &[(LeaderEpoch, Offset)] {
        &self.entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(v: &[(i32, i64)]) -> EpochCache {
        EpochCache::from_entries(
            v.iter()
                .map(|&(e, o)| (LeaderEpoch(e), Offset(o)))
                .collect(),
        )
    }

    #[test]
    fn end_offset_of_an_epoch_is_the_start_of_the_next() {
        let c = cache(&[(0, 0), (2, 100), (5, 250)]);
        let end = Offset(300);
        assert_eq!(
            c.end_offset_for(LeaderEpoch(0), end),
            Some((LeaderEpoch(0), Offset(100)))
        );
        assert_eq!(
            c.end_offset_for(LeaderEpoch(1), end),
            Some((LeaderEpoch(0), Offset(100)))
        );
        assert_eq!(
            c.end_offset_for(LeaderEpoch(4), end),
            Some((LeaderEpoch(2), Offset(250)))
        );
        assert_eq!(
            c.end_offset_for(LeaderEpoch(9), end),
            Some((LeaderEpoch(5), end))
        );
        assert_eq!(cache(&[(3, 10)]).end_offset_for(LeaderEpoch(1), end), None);
    }

    #[test]
    fn epochs_never_go_backwards() {
        let mut c = cache(&[(2, 100)]);
        assert!(!c.assign(LeaderEpoch(1), Offset(200)));
        assert!(!c.assign(LeaderEpoch(2), Offset(200)));
        assert!(c.assign(LeaderEpoch(3), Offset(200)));
        assert_eq!(c.latest_epoch(), Some(LeaderEpoch(3)));
    }

    #[test]
    fn truncation_from_both_ends() {
        let mut c = cache(&[(0, 0), (2, 100), (5, 250)]);
        c.truncate_from_end(Offset(250));
        assert_eq!(c, cache(&[(0, 0), (2, 100)]));
        c.truncate_from_start(Offset(150));
        assert_eq!(c, cache(&[(2, 150)]));
    }
}
