//! `POST /v1/leadership/preferred-election`: move leadership back to preferred replicas,
//! through `LeadershipActions`. Until replication wires one, it answers 501 `not_implemented`.

use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use axum::http::HeaderMap;
use axum::Json;

use super::Shared;
use crate::auth::check_mutation;
use crate::error::ApiError;
use crate::views::{ElectionRequest, ElectionResult};

/// `POST /v1/leadership/preferred-election` (body optional: `{"topics": [...]}`).
pub async fn preferred_election(
    axum::extract::State(s): Shared,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Option<Json<ElectionRequest>>,
) -> Result<Json<Vec<ElectionResult>>, ApiError> {
    check_mutation(&s, peer, &headers)?;
    let actions = s.leadership.as_deref().ok_or_else(|| {
        ApiError::NotImplemented(
            "preferred leader election is not available in this build yet (it arrives with replication)"
                .into(),
        )
    })?;
    actions
        .elect_preferred(body.map(|Json(b)| b).unwrap_or_default())
        .await
        .map(Json)
        .map_err(ApiError::Unavailable)
}
