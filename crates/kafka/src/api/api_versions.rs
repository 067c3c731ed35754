//! ApiVersions (18): the APIs and version ranges this broker serves, from the dispatch table.

use std::sync::Arc;

use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse, RequestHeader};

use crate::context::ServerContext;
use crate::dispatch;

/// Answers with every served API's range.
pub async fn handle(
    _ctx: &Arc<ServerContext>,
    _header: &RequestHeader,
    _req: ApiVersionsRequest,
) -> ApiVersionsResponse {
    ApiVersionsResponse::default().with_api_keys(dispatch::api_versions())
}
