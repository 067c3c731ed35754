//! What every admin handler shares: the controller (there from the start), the broker core
//! (set once the node serves), the metrics render handle, the token, and the handles of
//! features that are wired later.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use ferrymq_broker::Broker;
use ferrymq_cluster::Controller;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::error::ApiError;
use crate::features::{GroupsView, LeadershipActions};

/// Shared state of the admin listener.
pub struct AdminState {
    /// This node's controller (quorum member or learner).
    pub controller: Arc<Controller>,
    /// The broker core, set when the node starts serving clients.
    broker: OnceLock<Arc<Broker>>,
    /// Renders the Prometheus text; `None` where no recorder was installed.
    pub metrics: Option<PrometheusHandle>,
    /// `admin.token`: mutating requests must carry it once set.
    pub token: Option<String>,
    /// Consumer groups, wired once the broker (and its group coordinator) serves.
    groups: OnceLock<Arc<dyn GroupsView>>,
    /// Leadership actions, once replication is wired.
    pub leadership: Option<Arc<dyn LeadershipActions>>,
    /// Set when the node begins a clean stop: it is no longer ready.
    stopping: AtomicBool,
}

impl std::fmt::Debug for AdminState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminState")
            .field("node_id", &self.controller.node_id())
            .field("serving", &self.broker.get().is_some())
            .finish()
    }
}

impl AdminState {
    /// State for a node whose broker is not serving yet.
    pub fn new(
        controller: Arc<Controller>,
        metrics: Option<PrometheusHandle>,
        token: Option<String>,
    ) -> AdminState {
        AdminState {
            controller,
            broker: OnceLock::new(),
            metrics,
            token: token.filter(|t| !t.is_empty()),
            groups: OnceLock::new(),
            leadership: None,
            stopping: AtomicBool::new(false),
        }
    }

    /// Wires leadership actions.
    pub fn with_leadership(mut self, actions: Arc<dyn LeadershipActions>) -> AdminState {
        self.leadership = Some(actions);
        self
    }

    /// Wires consumer groups (once).
    pub fn set_groups(&self, groups: Arc<dyn GroupsView>) {
        assert!(self.groups.set(groups).is_ok(), "groups are wired once");
    }

    /// The consumer-group handle, if wired.
    pub fn groups(&self) -> Option<&Arc<dyn GroupsView>> {
        self.groups.get()
    }

    /// The node serves clients from now on.
    pub fn set_serving(&self, broker: Arc<Broker>) {
        assert!(
            self.broker.set(broker).is_ok(),
            "the broker is set once per process"
        );
    }

    /// The node is stopping: readiness turns false.
    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    /// The broker core, or 503 while the node is not serving yet.
    pub fn broker(&self) -> Result<&Arc<Broker>, ApiError> {
        self.broker
            .get()
            .ok_or_else(|| ApiError::Unavailable("the broker is not serving yet".into()))
    }

    /// Why the node is not ready, or `None` when it is: registered, unfenced (the controller
    /// unfences a broker once it has caught up with metadata), serving, not stopping.
    pub fn not_ready_reason(&self) -> Option<String> {
        if self.stopping.load(Ordering::Acquire) {
            return Some("stopping".into());
        }
        let state = self.controller.broker_state().borrow().clone();
        if let Some(reason) = state.refused {
            return Some(format!("refused by the controller: {reason}"));
        }
        if !state.registered {
            return Some("not registered with the controller".into());
        }
        if state.fenced {
            return Some("fenced: not caught up with metadata or missing heartbeats".into());
        }
        if self.broker.get().is_none() {
            return Some("the Kafka listener is not serving yet".into());
        }
        None
    }
}
