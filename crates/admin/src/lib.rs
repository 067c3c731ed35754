//! FerryMQ's operator front end: an HTTP listener (`--admin-listen`) serving Prometheus metrics
//! (`/metrics`), health checks (`/health/live`, `/health/ready`) and a JSON admin API under
//! `/v1/` (cluster, brokers, topics, consumer groups, replication policies, leadership
//! actions), documented in `docs/admin-api.md`.
//!
//! It reads the broker core and the controller and turns their state into JSON and metrics;
//! changes go through the controller like any admin request. It knows no Kafka wire types and
//! holds no replication or group logic: features are reached through handles (`features`),
//! wired by the binary — consumer groups to the group coordinator (`groups`), preferred leader
//! election to the controller (`leadership`); an unwired handle answers 501.

pub mod auth;
pub mod error;
pub mod features;
pub mod groups;
pub mod leadership;
pub mod metrics;
pub mod process;
pub mod routes;
pub mod server;
pub mod state;
pub mod views;

pub use error::ApiError;
pub use server::serve;
pub use state::AdminState;
