//! What every connection and handler shares: the broker core and the front end's limits.

use std::sync::Arc;

use ferrymq_broker::Broker;

/// Limits of the Kafka front end (STYLE.md §3: everything has a named maximum).
#[derive(Debug, Clone)]
pub struct Limits {
    /// `socket.request.max.bytes`: largest request frame accepted.
    pub request_bytes_max: usize,
    /// `max.connections`: connections accepted at once; more are closed on accept.
    pub connections_max: usize,
    /// `max.inflight.requests.per.connection`: requests read ahead of their responses.
    pub inflight_requests_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            request_bytes_max: 100 * 1024 * 1024,
            connections_max: 10_000,
            inflight_requests_max: 100,
        }
    }
}

/// Settings of the front end that change answers.
#[derive(Debug, Clone)]
pub struct FrontEndConfig {
    /// Limits.
    pub limits: Limits,
    /// `auto.create.topics.enable`: Metadata for an unknown topic creates it.
    pub auto_create_topics: bool,
    /// The broker's effective settings, for DescribeConfigs on the broker resource.
    pub broker_settings: Vec<(String, String)>,
}

/// Shared by every connection.
#[derive(Debug)]
pub struct ServerContext {
    /// The broker core.
    pub broker: Arc<Broker>,
    /// Front-end settings.
    pub config: FrontEndConfig,
}
