//! The dispatch table: which APIs and versions FerryMQ speaks, how a frame becomes a request
//! for a handler, and how the handler's response becomes a frame. The same table produces the
//! ApiVersions answer, so what is advertised is exactly what is served.

use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion};
use kafka_protocol::ResponseError;

use crate::api;
use crate::api::produce::ProduceOutcome;
use crate::context::ServerContext;
use crate::metrics::{self, ResponseErrors};
use crate::order::OrderGate;

/// One API FerryMQ serves.
#[derive(Debug, Clone, Copy)]
pub struct ApiSpec {
    /// The API.
    pub key: ApiKey,
    /// Lowest version advertised.
    pub advertised_min: i16,
    /// Lowest version served (Produce advertises 0 for librdkafka's compression probe but, as
    /// Kafka 4, serves only 3 and up: KAFKA-18659).
    pub min: i16,
    /// Highest version served.
    pub max: i16,
}

const fn spec(key: ApiKey, min: i16, max: i16) -> ApiSpec {
    ApiSpec {
        key,
        advertised_min: min,
        min,
        max,
    }
}

/// Every API served, with its version range.
pub const APIS: &[ApiSpec] = &[
    ApiSpec {
        key: ApiKey::Produce,
        advertised_min: 0,
        min: 3,
        max: 12,
    },
    spec(ApiKey::Fetch, 4, 16),
    spec(ApiKey::ListOffsets, 1, 8),
    spec(ApiKey::Metadata, 0, 12),
    spec(ApiKey::ApiVersions, 0, 4),
    spec(ApiKey::CreateTopics, 2, 7),
    spec(ApiKey::DeleteTopics, 1, 6),
    spec(ApiKey::DeleteRecords, 0, 2),
    spec(ApiKey::OffsetForLeaderEpoch, 2, 4),
    spec(ApiKey::DescribeConfigs, 1, 4),
    spec(ApiKey::AlterConfigs, 0, 2),
    spec(ApiKey::CreatePartitions, 0, 3),
    spec(ApiKey::IncrementalAlterConfigs, 0, 1),
    spec(ApiKey::DescribeCluster, 0, 2),
    spec(ApiKey::FindCoordinator, 0, 4),
    spec(ApiKey::InitProducerId, 0, 5),
    spec(ApiKey::ElectLeaders, 0, 2),
    // librdkafka's probes need JoinGroup/SyncGroup/Heartbeat/LeaveGroup ∋ 0, OffsetCommit ∩
    // [1, 2] and OffsetFetch ∋ 1 (reference anchors §6.3); v9 of OffsetCommit/OffsetFetch
    // belongs to the KIP-848 protocol, not served.
    spec(ApiKey::OffsetCommit, 2, 8),
    spec(ApiKey::OffsetFetch, 1, 8),
    spec(ApiKey::JoinGroup, 0, 9),
    spec(ApiKey::Heartbeat, 0, 4),
    spec(ApiKey::LeaveGroup, 0, 5),
    spec(ApiKey::SyncGroup, 0, 5),
    spec(ApiKey::DescribeGroups, 0, 5),
    spec(ApiKey::ListGroups, 0, 5),
    spec(ApiKey::DeleteGroups, 0, 2),
    spec(ApiKey::OffsetDelete, 0, 0),
];

// Every advertised range must be one the wire library can decode and encode.
const _: () = {
    let mut i = 0;
    while i < APIS.len() {
        assert!(APIS[i].advertised_min <= APIS[i].min && APIS[i].min <= APIS[i].max);
        i += 1;
    }
};

/// The served range of an API key, if any.
pub fn lookup(key: i16) -> Option<&'static ApiSpec> {
    APIS.iter().find(|s| s.key as i16 == key)
}

/// What to do with a request frame.
#[derive(Debug)]
pub enum Outcome {
    /// Send this response frame (size prefix included).
    Respond(Bytes),
    /// Send nothing (acks=0 produce).
    Silent,
    /// Close the connection, as Kafka does for requests it cannot parse.
    Close(String),
}

/// The ApiVersions entries for every served API.
pub fn api_versions() -> Vec<ApiVersion> {
    APIS.iter()
        .map(|s| {
            ApiVersion::default()
                .with_api_key(s.key as i16)
                .with_min_version(s.advertised_min)
                .with_max_version(s.max)
        })
        .collect()
}

/// Handles one request frame. `produce_order` is the connection's gate and, for a Produce
/// frame, the ticket taken when it was read.
pub async fn handle(
    ctx: &Arc<ServerContext>,
    frame: Bytes,
    produce_order: (&OrderGate, Option<u64>),
) -> Outcome {
    // The frame reader guarantees at least `REQUEST_BYTES_MIN` bytes.
    let mut peek = &frame[..8];
    let api_key = peek.get_i16();
    let version = peek.get_i16();
    let correlation_id = peek.get_i32();
    let Ok(key) = ApiKey::try_from(api_key) else {
        return Outcome::Close(format!("unknown API key {api_key}"));
    };
    let Some(spec) = lookup(api_key) else {
        return Outcome::Close(format!("unsupported API {key:?}"));
    };
    if key == ApiKey::ApiVersions && version > spec.max {
        // KIP-511: answer an unknown ApiVersions version with v0 and our ranges, so the
        // client can retry with a version we speak.
        let resp = ApiVersionsResponse::default()
            .with_error_code(ResponseError::UnsupportedVersion.code())
            .with_api_keys(api_versions());
        return encode_response(correlation_id, key, 0, &resp);
    }
    if version < spec.min || version > spec.max {
        return Outcome::Close(format!(
            "{key:?} version {version} not in {}..={}",
            spec.min, spec.max
        ));
    }
    // Decoding slices `body`: record batches stay views of the frame, never copied.
    let mut body = frame;
    let header = match RequestHeader::decode(&mut body, key.request_header_version(version)) {
        Ok(h) => h,
        Err(e) => return Outcome::Close(format!("malformed {key:?} request header: {e}")),
    };
    let started = std::time::Instant::now();
    let record = |codes: &[i16]| {
        // One line per request at trace level (`RUST_LOG=ferrymq_kafka::dispatch=trace`): what
        // a client asked and what it was told, for debugging a client that stalls.
        tracing::trace!(
            api = ?key,
            version,
            correlation_id,
            client = header.client_id.as_ref().map(|c| c.as_str()),
            errors = ?codes,
            elapsed_us = started.elapsed().as_micros() as u64,
            "request"
        );
        metrics::request(key, started.elapsed(), codes)
    };
    macro_rules! call {
        ($req:ty, $handler:path) => {{
            match <$req>::decode(&mut body, version) {
                Ok(req) => {
                    let resp = $handler(ctx, &header, req).await;
                    let mut codes = Vec::new();
                    resp.error_codes(&mut codes);
                    record(&codes);
                    encode_response(correlation_id, key, version, &resp)
                }
                Err(e) => Outcome::Close(format!("malformed {key:?} v{version} request: {e}")),
            }
        }};
    }
    match key {
        ApiKey::Produce => {
            let (gate, Some(ticket)) = produce_order else {
                return Outcome::Close("produce frame without an order ticket".into());
            };
            // Decode under the turn too: a malformed request must still pass its turn on.
            let req = match ProduceRequest::decode(&mut body, version) {
                Ok(req) => req,
                Err(e) => {
                    drop(gate.turn(ticket).await);
                    return Outcome::Close(format!("malformed Produce v{version} request: {e}"));
                }
            };
            match api::produce::handle(ctx, &header, req, (gate, ticket)).await {
                ProduceOutcome::Respond(resp) => {
                    let mut codes = Vec::new();
                    resp.error_codes(&mut codes);
                    record(&codes);
                    encode_response(correlation_id, key, version, &resp)
                }
                ProduceOutcome::Silent => {
                    record(&[]);
                    Outcome::Silent
                }
                ProduceOutcome::Close(reason) => {
                    record(&[]);
                    Outcome::Close(reason)
                }
            }
        }
        ApiKey::Fetch => call!(FetchRequest, api::fetch::handle),
        ApiKey::ListOffsets => call!(ListOffsetsRequest, api::list_offsets::handle),
        ApiKey::Metadata => call!(MetadataRequest, api::metadata::handle),
        ApiKey::ApiVersions => call!(ApiVersionsRequest, api::api_versions::handle),
        ApiKey::CreateTopics => call!(CreateTopicsRequest, api::topics::create_topics),
        ApiKey::DeleteTopics => call!(DeleteTopicsRequest, api::topics::delete_topics),
        ApiKey::CreatePartitions => call!(CreatePartitionsRequest, api::topics::create_partitions),
        ApiKey::DeleteRecords => call!(DeleteRecordsRequest, api::delete_records::handle),
        ApiKey::OffsetForLeaderEpoch => call!(
            OffsetForLeaderEpochRequest,
            api::offset_for_leader_epoch::handle
        ),
        ApiKey::DescribeConfigs => call!(DescribeConfigsRequest, api::configs::describe),
        ApiKey::AlterConfigs => call!(AlterConfigsRequest, api::configs::alter),
        ApiKey::IncrementalAlterConfigs => call!(
            IncrementalAlterConfigsRequest,
            api::configs::incremental_alter
        ),
        ApiKey::DescribeCluster => call!(DescribeClusterRequest, api::describe_cluster::handle),
        ApiKey::FindCoordinator => call!(FindCoordinatorRequest, api::find_coordinator::handle),
        ApiKey::InitProducerId => call!(InitProducerIdRequest, api::init_producer_id::handle),
        ApiKey::ElectLeaders => call!(ElectLeadersRequest, api::elect_leaders::handle),
        ApiKey::JoinGroup => call!(JoinGroupRequest, api::groups::join_group),
        ApiKey::SyncGroup => call!(SyncGroupRequest, api::groups::sync_group),
        ApiKey::Heartbeat => call!(HeartbeatRequest, api::groups::heartbeat),
        ApiKey::LeaveGroup => call!(LeaveGroupRequest, api::groups::leave_group),
        ApiKey::ListGroups => call!(ListGroupsRequest, api::groups::list_groups),
        ApiKey::DescribeGroups => call!(DescribeGroupsRequest, api::groups::describe_groups),
        ApiKey::DeleteGroups => call!(DeleteGroupsRequest, api::groups::delete_groups),
        ApiKey::OffsetCommit => call!(OffsetCommitRequest, api::offsets::offset_commit),
        ApiKey::OffsetFetch => call!(OffsetFetchRequest, api::offsets::offset_fetch),
        ApiKey::OffsetDelete => call!(OffsetDeleteRequest, api::offsets::offset_delete),
        other => Outcome::Close(format!("no handler for {other:?}")),
    }
}

/// Encodes a response with its header into a size-prefixed frame.
fn encode_response<R: Encodable + HeaderVersion>(
    correlation_id: i32,
    key: ApiKey,
    version: i16,
    resp: &R,
) -> Outcome {
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let header_version = key.response_header_version(version);
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    if let Err(e) = header
        .encode(&mut buf, header_version)
        .and_then(|_| resp.encode(&mut buf, version))
    {
        // A response we cannot encode is our bug; the client gets a closed connection.
        tracing::error!(api = ?key, version, error = %e, "cannot encode response");
        return Outcome::Close(format!("cannot encode {key:?} v{version} response: {e}"));
    }
    let size = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&size.to_be_bytes());
    Outcome::Respond(buf.freeze())
}
