//! One module per resource of the admin API: `health` and `/metrics`, `cluster` (overview and
//! brokers), `topics`, `groups`, `policies`, `leadership`.

pub mod cluster;
pub mod groups;
pub mod health;
pub mod leadership;
pub mod policies;
pub mod topics;

use std::sync::Arc;

use crate::state::AdminState;

/// The state every handler extracts.
pub type Shared = axum::extract::State<Arc<AdminState>>;
