//! Errors of the admin API, each with its HTTP status and a JSON body
//! `{"error": "<kind>", "message": "..."}` that scripts can match on.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ferrymq_cluster::ControllerError;

use crate::views::ErrorBody;

/// Why an admin request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No such topic, group, policy or route.
    #[error("{0}")]
    NotFound(String),
    /// The request is invalid (bad JSON, bad values).
    #[error("{0}")]
    BadRequest(String),
    /// A mutating request without the configured token.
    #[error("{0}")]
    Unauthorized(String),
    /// A mutating request refused by policy (no token configured, not from loopback).
    #[error("{0}")]
    Forbidden(String),
    /// The change conflicts with the current state (already exists).
    #[error("{0}")]
    Conflict(String),
    /// The feature is not available in this build yet.
    #[error("{0}")]
    NotImplemented(String),
    /// The node is not ready to answer (still starting, stopping).
    #[error("{0}")]
    Unavailable(String),
    /// The controller quorum could not be reached or failed.
    #[error("{0}")]
    Controller(String),
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::NotImplemented(_) => (StatusCode::NOT_IMPLEMENTED, "not_implemented"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Controller(_) => (StatusCode::SERVICE_UNAVAILABLE, "controller_unavailable"),
        }
    }

    /// Maps a refused metadata change.
    pub fn from_controller(e: ControllerError) -> ApiError {
        match e {
            ControllerError::NotController | ControllerError::NoQuorum(_) => {
                ApiError::Controller(e.to_string())
            }
            ControllerError::Storage(_) => ApiError::Controller(e.to_string()),
            ControllerError::UnknownTopic(_) => ApiError::NotFound(e.to_string()),
            ControllerError::TopicAlreadyExists(_) => ApiError::Conflict(e.to_string()),
            ControllerError::InvalidRequest(ref m) if m.contains("no policy named") => {
                ApiError::NotFound(e.to_string())
            }
            _ => ApiError::BadRequest(e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, kind) = self.parts();
        let body = ErrorBody {
            error: kind.to_string(),
            message: self.to_string(),
        };
        (status, Json(body)).into_response()
    }
}
