//! `/health/live` (the process answers), `/health/ready` (registered, caught up with metadata,
//! serving; 503 with the reason otherwise) and `/metrics` (Prometheus text format).

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::Shared;
use crate::error::ApiError;
use crate::views::Health;

/// `GET /health/live`.
pub async fn live(axum::extract::State(s): Shared) -> Json<Health> {
    Json(Health {
        status: "live".into(),
        reason: None,
        node_id: s.controller.node_id().0,
        metadata_offset: s.controller.image().applied_offset,
    })
}

/// `GET /health/ready`.
pub async fn ready(axum::extract::State(s): Shared) -> Response {
    let reason = s.not_ready_reason();
    let status = if reason.is_some() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let body = Health {
        status: if reason.is_some() {
            "not_ready"
        } else {
            "ready"
        }
        .into(),
        reason,
        node_id: s.controller.node_id().0,
        metadata_offset: s.controller.image().applied_offset,
    };
    (status, Json(body)).into_response()
}

/// `GET /metrics`.
pub async fn metrics(axum::extract::State(s): Shared) -> Response {
    // Group offsets come from the coordinator's async API; the rest is read under partition
    // locks and from /proc, off the async workers.
    if let Some(groups) = s.groups() {
        crate::groups::sample(groups.as_ref()).await;
    }
    let state = s.clone();
    match tokio::task::spawn_blocking(move || crate::metrics::render(&state)).await {
        Ok(Some(text)) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Ok(None) => {
            ApiError::NotImplemented("no metrics recorder in this process".into()).into_response()
        }
        Err(e) => ApiError::Unavailable(format!("sampling metrics failed: {e}")).into_response(),
    }
}
