//! Broker liveness as the active controller sees it: the time of each broker's last heartbeat,
//! and which live brokers have gone silent for longer than `broker.session.timeout.ms`.
//! Pure bookkeeping; the controller passes the time in.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ferrymq_types::NodeId;

use crate::image::MetadataImage;

/// Last heartbeat per broker.
#[derive(Debug)]
pub struct Liveness {
    session_timeout: Duration,
    last_seen: HashMap<NodeId, Instant>,
}

impl Liveness {
    /// Empty bookkeeping for a session timeout.
    pub fn new(session_timeout: Duration) -> Liveness {
        Liveness {
            session_timeout,
            last_seen: HashMap::new(),
        }
    }

    /// On becoming the active controller: heartbeats sent to the previous controller were not
    /// seen here, so every registered broker gets `grace` from now to heartbeat here (a live
    /// broker learns of the new controller from the metadata log within a Raft heartbeat and
    /// heartbeats again within its interval). A grace shorter than the session fences a broker
    /// that died with the old controller sooner.
    pub fn reset(&mut self, image: &MetadataImage, now: Instant, grace: Duration) {
        let credited = now
            .checked_sub(self.session_timeout.saturating_sub(grace))
            .unwrap_or(now);
        self.last_seen = image.brokers.keys().map(|id| (*id, credited)).collect();
    }

    /// A heartbeat (or registration) from `id`.
    pub fn heartbeat(&mut self, id: NodeId, now: Instant) {
        self.last_seen.insert(id, now);
    }

    /// True if `id` heartbeated within its session.
    pub fn is_alive(&self, id: NodeId, now: Instant) -> bool {
        self.last_seen
            .get(&id)
            .is_some_and(|t| now.saturating_duration_since(*t) <= self.session_timeout)
    }

    /// Live (unfenced) brokers silent for longer than `after` whose session has not expired
    /// yet: worth a look before the session runs out (`duties::probe_overdue`).
    pub fn overdue(&self, image: &MetadataImage, now: Instant, after: Duration) -> Vec<NodeId> {
        image
            .live_brokers()
            .map(|b| b.id)
            .filter(|id| {
                self.last_seen.get(id).is_some_and(|t| {
                    let silent = now.saturating_duration_since(*t);
                    silent > after && silent <= self.session_timeout
                })
            })
            .collect()
    }

    /// Live (unfenced) brokers whose session expired: to be fenced.
    pub fn expired(&self, image: &MetadataImage, now: Instant) -> Vec<NodeId> {
        image
            .live_brokers()
            .map(|b| b.id)
            .filter(|id| !self.is_alive(*id, now))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::*;
    use uuid::Uuid;

    #[test]
    fn a_silent_live_broker_expires_after_its_session() {
        let mut img = MetadataImage::new("c");
        let inc = Uuid::from_u128(9);
        img.apply_command(
            0,
            &[
                MetadataRecord::RegisterBroker(RegisterBrokerRecord {
                    version: 1,
                    id: NodeId(1),
                    incarnation: inc,
                    host: "h".into(),
                    port: 1,
                    rack: None,
                    controller_addr: String::new(),
                }),
                MetadataRecord::BrokerFence(BrokerFenceRecord {
                    version: 1,
                    id: NodeId(1),
                    incarnation: inc,
                    fenced: false,
                }),
            ],
        )
        .unwrap();
        let t0 = Instant::now();
        let mut l = Liveness::new(Duration::from_millis(1000));
        l.reset(&img, t0, Duration::from_millis(1000));
        assert!(l.expired(&img, t0 + Duration::from_millis(900)).is_empty());
        l.heartbeat(NodeId(1), t0 + Duration::from_millis(900));
        assert!(l.expired(&img, t0 + Duration::from_millis(1800)).is_empty());
        let probe_after = Duration::from_millis(375);
        assert!(l
            .overdue(&img, t0 + Duration::from_millis(1275), probe_after)
            .is_empty());
        assert_eq!(
            l.overdue(&img, t0 + Duration::from_millis(1276), probe_after),
            vec![NodeId(1)]
        );
        assert!(l
            .overdue(&img, t0 + Duration::from_millis(1901), probe_after)
            .is_empty());
        assert_eq!(
            l.expired(&img, t0 + Duration::from_millis(1901)),
            vec![NodeId(1)]
        );
    }
}
