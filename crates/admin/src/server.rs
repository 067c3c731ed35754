//! The admin HTTP listener: the route table and the serving loop (axum on hyper, HTTP/1.1).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::routing::{delete, get, post};
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::error::ApiError;
use crate::routes::{cluster, groups, health, leadership, policies, topics};
use crate::state::AdminState;

/// Largest request body accepted (policies and election requests are a few hundred bytes).
pub const REQUEST_BODY_BYTES_MAX: usize = 64 * 1024;

/// Every route of the admin API.
pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/metrics", get(health::metrics))
        .route("/v1/cluster", get(cluster::overview))
        .route("/v1/brokers", get(cluster::brokers))
        .route("/v1/topics", get(topics::list))
        .route("/v1/topics/{name}", get(topics::describe))
        .route("/v1/groups", get(groups::list))
        .route("/v1/groups/{id}", get(groups::describe))
        .route("/v1/policies", get(policies::list).post(policies::create))
        .route("/v1/policies/{name}", delete(policies::delete))
        .route(
            "/v1/leadership/preferred-election",
            post(leadership::preferred_election),
        )
        .fallback(|| async { ApiError::NotFound("no such endpoint; see docs/admin-api.md".into()) })
        .layer(axum::extract::DefaultBodyLimit::max(REQUEST_BODY_BYTES_MAX))
        .with_state(state)
}

/// Serves the admin API on `listener` until `stop` turns true.
pub async fn serve(
    state: Arc<AdminState>,
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await
}
