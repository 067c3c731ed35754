//! Request metrics of the Kafka front end: requests and their latency per API, and every error
//! code a response carries (per partition, topic, resource or group: one count each), so an
//! operator sees `NOT_LEADER_OR_FOLLOWER` storms or `KAFKA_STORAGE_ERROR`s without a client's
//! help. Recorded by `dispatch` through the `metrics` facade.
//!
//! Each response type says where its error codes are (`ResponseErrors`). A new API's handler
//! does not compile in the dispatch table until its response type implements it, so no API is
//! silently left out; the consumer-group and producer-id responses are implemented already.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use kafka_protocol::messages::*;
use kafka_protocol::ResponseError;
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};

/// Requests handled, per API.
pub const REQUESTS: &str = "ferrymq_requests_total";
/// Error codes in responses, per API and error.
pub const REQUEST_ERRORS: &str = "ferrymq_request_errors_total";
/// Time from a request's decoding to its encoded response, per API.
pub const REQUEST_SECONDS: &str = "ferrymq_request_duration_seconds";
/// Open client connections.
pub const CONNECTIONS_ACTIVE: &str = "ferrymq_connections_active";
/// Client connections accepted since start.
pub const CONNECTIONS_ACCEPTED: &str = "ferrymq_connections_accepted_total";
/// Connections closed by the broker for a protocol violation or a bad request.
pub const CONNECTIONS_CLOSED_BAD_INPUT: &str = "ferrymq_connections_closed_bad_input_total";

/// Request latency buckets, seconds: sub-millisecond metadata up to long polls and acks=all.
pub const REQUEST_BUCKETS_SECONDS: &[f64] = &[
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// Registers help text for the front end's metrics.
pub fn describe() {
    describe_counter!(REQUESTS, "Kafka requests handled, per API.");
    describe_counter!(
        REQUEST_ERRORS,
        "Error codes in Kafka responses (one per partition, topic, resource or group that failed), per API and error."
    );
    describe_histogram!(
        REQUEST_SECONDS,
        "Time to handle a Kafka request, per API (long polls and acks=all waits included)."
    );
    describe_gauge!(CONNECTIONS_ACTIVE, "Open Kafka client connections.");
    describe_counter!(CONNECTIONS_ACCEPTED, "Kafka client connections accepted.");
    describe_counter!(
        CONNECTIONS_CLOSED_BAD_INPUT,
        "Connections closed by the broker because of a malformed or unsupported request."
    );
}

/// Records one handled request.
pub fn request(api: ApiKey, took: Duration, codes: &[i16]) {
    let name = api_name(api);
    counter!(REQUESTS, "api" => name).increment(1);
    histogram!(REQUEST_SECONDS, "api" => name).record(took.as_secs_f64());
    for &code in codes.iter().filter(|c| **c != 0) {
        counter!(REQUEST_ERRORS, "api" => name, "error" => error_name(code)).increment(1);
    }
}

// Kept here and copied to its gauge by `sample`: gauges are all set at scrape time, so the
// exporter may drop idle ones without losing an incremented-and-decremented count.
static CONNECTIONS: AtomicI64 = AtomicI64::new(0);

/// A connection was accepted (`+1`) or ended (`-1`).
pub fn connection_open(delta: i64) {
    if delta > 0 {
        counter!(CONNECTIONS_ACCEPTED).increment(1);
    }
    CONNECTIONS.fetch_add(delta, Ordering::Relaxed);
}

/// Sets the front end's gauges (call before rendering metrics).
pub fn sample() {
    gauge!(CONNECTIONS_ACTIVE).set(CONNECTIONS.load(Ordering::Relaxed) as f64);
}

/// The broker closed a connection for a bad request.
pub fn closed_for_bad_input() {
    counter!(CONNECTIONS_CLOSED_BAD_INPUT).increment(1);
}

/// The API's name as a label, e.g. `Produce`, `Metadata`.
pub fn api_name(api: ApiKey) -> &'static str {
    // `ApiKey`'s Debug form is its Kafka name; leak-free because there is a fixed set.
    macro_rules! names {
        ($($k:ident),* $(,)?) => {
            match api { $(ApiKey::$k => stringify!($k),)* _ => "Other" }
        };
    }
    names!(
        Produce,
        Fetch,
        ListOffsets,
        Metadata,
        OffsetCommit,
        OffsetFetch,
        FindCoordinator,
        JoinGroup,
        Heartbeat,
        LeaveGroup,
        SyncGroup,
        DescribeGroups,
        ListGroups,
        ApiVersions,
        CreateTopics,
        DeleteTopics,
        DeleteRecords,
        InitProducerId,
        OffsetForLeaderEpoch,
        DescribeConfigs,
        AlterConfigs,
        CreatePartitions,
        DeleteGroups,
        IncrementalAlterConfigs,
        OffsetDelete,
        DescribeCluster,
        ElectLeaders,
        DescribeProducers,
        AddPartitionsToTxn,
        AddOffsetsToTxn,
        EndTxn,
        TxnOffsetCommit,
        ConsumerGroupHeartbeat,
        ConsumerGroupDescribe,
        ListPartitionReassignments,
        AlterPartitionReassignments,
        DescribeLogDirs,
        DescribeAcls,
        SaslHandshake,
        SaslAuthenticate,
    )
}

/// Kafka's name of an error code, e.g. `NOT_LEADER_OR_FOLLOWER`; `UNKNOWN_<code>` otherwise.
pub fn error_name(code: i16) -> String {
    match ResponseError::try_from_code(code) {
        Some(e) if !format!("{e:?}").contains('(') => {
            let camel = format!("{e:?}");
            let mut out = String::with_capacity(camel.len() + 8);
            for (i, ch) in camel.chars().enumerate() {
                if ch.is_ascii_uppercase() && i > 0 {
                    out.push('_');
                }
                out.push(ch.to_ascii_uppercase());
            }
            out
        }
        _ => format!("UNKNOWN_{code}"),
    }
}

/// Where a response type carries its error codes.
pub trait ResponseErrors {
    /// Appends every error code in the response (zeros included; they are skipped later).
    fn error_codes(&self, out: &mut Vec<i16>);
}

macro_rules! errors_impl {
    ($ty:ty, |$r:ident, $out:ident| $body:expr) => {
        impl ResponseErrors for $ty {
            fn error_codes(&self, $out: &mut Vec<i16>) {
                let $r = self;
                $body
            }
        }
    };
}

errors_impl!(ProduceResponse, |r, out| out.extend(
    r.responses
        .iter()
        .flat_map(|t| t.partition_responses.iter().map(|p| p.error_code))
));
errors_impl!(FetchResponse, |r, out| {
    out.push(r.error_code);
    out.extend(
        r.responses
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.error_code)),
    );
});
errors_impl!(ListOffsetsResponse, |r, out| out.extend(
    r.topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
));
errors_impl!(MetadataResponse, |r, out| {
    out.push(r.error_code);
    for t in &r.topics {
        out.push(t.error_code);
        out.extend(t.partitions.iter().map(|p| p.error_code));
    }
});
errors_impl!(ApiVersionsResponse, |r, out| out.push(r.error_code));
errors_impl!(CreateTopicsResponse, |r, out| out
    .extend(r.topics.iter().map(|t| t.error_code)));
errors_impl!(DeleteTopicsResponse, |r, out| out
    .extend(r.responses.iter().map(|t| t.error_code)));
errors_impl!(DeleteRecordsResponse, |r, out| out.extend(
    r.topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
));
errors_impl!(OffsetForLeaderEpochResponse, |r, out| out.extend(
    r.topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
));
errors_impl!(DescribeConfigsResponse, |r, out| out
    .extend(r.results.iter().map(|x| x.error_code)));
errors_impl!(AlterConfigsResponse, |r, out| out
    .extend(r.responses.iter().map(|x| x.error_code)));
errors_impl!(CreatePartitionsResponse, |r, out| out
    .extend(r.results.iter().map(|x| x.error_code)));
errors_impl!(IncrementalAlterConfigsResponse, |r, out| out
    .extend(r.responses.iter().map(|x| x.error_code)));
errors_impl!(DescribeClusterResponse, |r, out| out.push(r.error_code));
errors_impl!(FindCoordinatorResponse, |r, out| {
    out.push(r.error_code);
    out.extend(r.coordinators.iter().map(|c| c.error_code));
});
errors_impl!(JoinGroupResponse, |r, out| out.push(r.error_code));
errors_impl!(SyncGroupResponse, |r, out| out.push(r.error_code));
errors_impl!(HeartbeatResponse, |r, out| out.push(r.error_code));
errors_impl!(LeaveGroupResponse, |r, out| {
    out.push(r.error_code);
    out.extend(r.members.iter().map(|m| m.error_code));
});
errors_impl!(OffsetCommitResponse, |r, out| out.extend(
    r.topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
));
errors_impl!(OffsetFetchResponse, |r, out| {
    out.push(r.error_code);
    out.extend(
        r.topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.error_code)),
    );
    for g in &r.groups {
        out.push(g.error_code);
        out.extend(
            g.topics
                .iter()
                .flat_map(|t| t.partitions.iter().map(|p| p.error_code)),
        );
    }
});
errors_impl!(ListGroupsResponse, |r, out| out.push(r.error_code));
errors_impl!(DescribeGroupsResponse, |r, out| out
    .extend(r.groups.iter().map(|g| g.error_code)));
errors_impl!(DeleteGroupsResponse, |r, out| out
    .extend(r.results.iter().map(|g| g.error_code)));
errors_impl!(OffsetDeleteResponse, |r, out| {
    out.push(r.error_code);
    out.extend(
        r.topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.error_code)),
    );
});
errors_impl!(InitProducerIdResponse, |r, out| out.push(r.error_code));
errors_impl!(ElectLeadersResponse, |r, out| {
    out.push(r.error_code);
    out.extend(
        r.replica_election_results
            .iter()
            .flat_map(|t| t.partition_result.iter().map(|p| p.error_code)),
    );
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_names_are_kafkas() {
        assert_eq!(error_name(6), "NOT_LEADER_OR_FOLLOWER");
        assert_eq!(error_name(56), "KAFKA_STORAGE_ERROR");
        assert_eq!(error_name(3), "UNKNOWN_TOPIC_OR_PARTITION");
        assert_eq!(error_name(-32000), "UNKNOWN_-32000");
    }

    #[test]
    fn every_served_api_has_a_name() {
        for spec in crate::dispatch::APIS {
            assert_ne!(api_name(spec.key), "Other", "{:?}", spec.key);
        }
    }

    #[test]
    fn produce_errors_are_collected_per_partition() {
        use kafka_protocol::messages::produce_response::*;
        let resp = ProduceResponse::default().with_responses(vec![TopicProduceResponse::default()
            .with_partition_responses(vec![
                PartitionProduceResponse::default().with_error_code(6),
                PartitionProduceResponse::default(),
            ])]);
        let mut codes = Vec::new();
        resp.error_codes(&mut codes);
        assert_eq!(codes, vec![6, 0]);
    }
}
