//! `/v1/policies`: replication policies (RabbitMQ's mirrored-queue policies on the Kafka
//! model): list, create or replace (`POST`), delete. Changes are committed by the controller.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use ferrymq_cluster::records::{PolicyRecord, PolicyReplicas, RECORD_VERSION};

use super::Shared;
use crate::auth::check_mutation;
use crate::error::ApiError;
use crate::views::{AllWord, PolicyView, ReplicasView};

/// The view of a stored policy.
pub fn view(p: &PolicyRecord) -> PolicyView {
    PolicyView {
        name: p.name.clone(),
        pattern: p.pattern.clone(),
        replicas: match p.replicas {
            PolicyReplicas::All => ReplicasView::Word(AllWord::All),
            PolicyReplicas::Count(n) => ReplicasView::Count(n),
        },
        min_insync_replicas: p.min_insync_replicas,
        priority: p.priority,
    }
}

/// `GET /v1/policies`.
pub async fn list(axum::extract::State(s): Shared) -> Json<Vec<PolicyView>> {
    Json(s.controller.image().policies.values().map(view).collect())
}

/// `POST /v1/policies`: creates or replaces the named policy; answers 201 with it.
pub async fn create(
    axum::extract::State(s): Shared,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Json<PolicyView>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<PolicyView>), ApiError> {
    check_mutation(&s, peer, &headers)?;
    let Json(p) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let record = PolicyRecord {
        version: RECORD_VERSION,
        name: p.name.clone(),
        pattern: p.pattern.clone(),
        replicas: match p.replicas {
            ReplicasView::Word(AllWord::All) => PolicyReplicas::All,
            ReplicasView::Count(n) => PolicyReplicas::Count(n),
        },
        min_insync_replicas: p.min_insync_replicas,
        priority: p.priority,
    };
    s.controller
        .put_policy(record)
        .await
        .map_err(ApiError::from_controller)?;
    tracing::info!(
        policy = p.name,
        pattern = p.pattern,
        "replication policy set"
    );
    Ok((StatusCode::CREATED, Json(p)))
}

/// `DELETE /v1/policies/{name}`: 204 when removed, 404 when there is no such policy.
pub async fn delete(
    axum::extract::State(s): Shared,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    check_mutation(&s, peer, &headers)?;
    if !s.controller.image().policies.contains_key(&name) {
        return Err(ApiError::NotFound(format!("no policy named {name:?}")));
    }
    s.controller
        .remove_policy(&name)
        .await
        .map_err(ApiError::from_controller)?;
    tracing::info!(policy = name, "replication policy removed");
    Ok(StatusCode::NO_CONTENT)
}
