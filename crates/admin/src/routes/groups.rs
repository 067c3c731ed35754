//! `/v1/groups` and `/v1/groups/{id}`: consumer groups with members, committed offsets and lag,
//! from the group coordinator through `GroupsView` (503 until the node serves; 501 in a build
//! that does not wire one).

use axum::extract::Path;
use axum::Json;

use super::Shared;
use crate::error::ApiError;
use crate::features::GroupsView;
use crate::state::AdminState;
use crate::views::{GroupSummary, GroupView};

fn groups(s: &AdminState) -> Result<&dyn GroupsView, ApiError> {
    s.broker()?;
    s.groups().map(|g| g.as_ref()).ok_or_else(|| {
        ApiError::NotImplemented(
            "consumer groups are not available in this build yet (the group coordinator is not wired)"
                .into(),
        )
    })
}

/// `GET /v1/groups`.
pub async fn list(axum::extract::State(s): Shared) -> Result<Json<Vec<GroupSummary>>, ApiError> {
    groups(&s)?
        .list()
        .await
        .map(Json)
        .map_err(ApiError::Unavailable)
}

/// `GET /v1/groups/{id}`.
pub async fn describe(
    axum::extract::State(s): Shared,
    Path(id): Path<String>,
) -> Result<Json<GroupView>, ApiError> {
    groups(&s)?
        .describe(&id)
        .await
        .map_err(ApiError::Unavailable)?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("unknown group {id:?}")))
}
