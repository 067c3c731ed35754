//! Features the admin API serves through a handle that the binary wires in once the feature
//! exists: consumer groups (`GroupsView`, from the group coordinator) and leadership actions
//! (`LeadershipActions`, from replication). While a handle is absent its endpoints answer
//! 501 `not_implemented` with a message saying so; they never make data up.

use std::future::Future;
use std::pin::Pin;

use crate::views::{ElectionRequest, ElectionResult, GroupSummary, GroupView};

/// A boxed future, so the traits stay object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Consumer groups as the group coordinator knows them.
pub trait GroupsView: Send + Sync {
    /// Every group this cluster knows.
    fn list(&self) -> BoxFuture<'_, Result<Vec<GroupSummary>, String>>;
    /// One group with members, committed offsets and lag; `None` if unknown.
    fn describe<'a>(&'a self, group: &'a str) -> BoxFuture<'a, Result<Option<GroupView>, String>>;
}

/// Leadership actions of the controller.
pub trait LeadershipActions: Send + Sync {
    /// Moves leadership back to each partition's preferred replica where it is in the ISR.
    fn elect_preferred(
        &self,
        request: ElectionRequest,
    ) -> BoxFuture<'_, Result<Vec<ElectionResult>, String>>;
}
