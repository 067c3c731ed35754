//! Operator subcommands of the `ferrymq` binary that talk to a running cluster: over the Kafka
//! protocol (`topic`, `group`, `produce`, `consume`, `cluster`) or the admin HTTP API
//! (`policy`), plus `dev` to run a local cluster.
//!
//! Exit codes scripts can rely on (also in `docs/operations.md`):
//! 0 done; 1 the cluster refused or the operation failed (unknown topic, already exists...);
//! 2 bad usage (from clap), or for `cluster status` an unhealthy cluster; 3 the cluster could
//! not be reached; 4 the cluster does not serve this yet (e.g. consumer groups).

pub mod cluster;
pub mod consume;
pub mod dev;
pub mod group;
pub mod http;
pub mod policy;
pub mod produce;
pub mod topic;

use std::time::Duration;

use ferrymq_kafka::client::{ClientError, ClusterClient};

/// Success.
pub const EXIT_OK: i32 = 0;
/// The operation failed or was refused.
pub const EXIT_FAILED: i32 = 1;
/// The cluster could not be reached.
pub const EXIT_UNREACHABLE: i32 = 3;
/// The cluster does not serve what the command needs.
pub const EXIT_UNSUPPORTED: i32 = 4;

/// How long one request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A failure with its exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    /// Exit code.
    pub code: i32,
    /// What went wrong, for people.
    pub message: String,
}

/// An operation failed or was refused (exit 1).
pub fn failed(message: impl Into<String>) -> anyhow::Error {
    Failure {
        code: EXIT_FAILED,
        message: message.into(),
    }
    .into()
}

/// The exit code for an error.
pub fn exit_code(e: &anyhow::Error) -> i32 {
    for cause in e.chain() {
        if let Some(f) = cause.downcast_ref::<Failure>() {
            return f.code;
        }
        if let Some(c) = cause.downcast_ref::<ClientError>() {
            if c.is_unreachable() {
                return EXIT_UNREACHABLE;
            }
            if matches!(c, ClientError::Unsupported(_)) {
                return EXIT_UNSUPPORTED;
            }
        }
    }
    EXIT_FAILED
}

/// Where the cluster is.
#[derive(Debug, Clone, clap::Args)]
pub struct Bootstrap {
    /// Kafka address of any broker (or several, comma-separated).
    #[arg(
        long,
        short = 'b',
        default_value = "127.0.0.1:9092",
        env = "FERRYMQ_BOOTSTRAP",
        value_name = "HOST:PORT,..."
    )]
    pub bootstrap: String,
}

impl Bootstrap {
    /// Connects to the cluster.
    pub async fn connect(&self) -> anyhow::Result<ClusterClient> {
        Ok(ClusterClient::connect(&self.bootstrap, REQUEST_TIMEOUT).await?)
    }
}

/// Parses `NAME=VALUE`.
pub fn key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?} is not NAME=VALUE"))
}
