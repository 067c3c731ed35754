//! Bad input against the real binary: every malformed frame, batch or admin request gets the
//! answer a Kafka broker gives (or its connection is closed where Kafka closes it), and a
//! well-behaved client connected beforehand keeps being served, with its log neither corrupted
//! nor shifted by what was refused.
//!
//! Each test starts its own broker, opens the well-behaved [`Witness`] before the bad input,
//! and checks afterwards that the witness still gets exact answers, that a new connection is
//! accepted, that the process still runs and, where Kafka would log the refusal, that the broker
//! wrote a WARN line naming it.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use bytes::{BufMut, Bytes, BytesMut};
use ferrymq_e2e::{topic, BrokerProcess, RawClient};
use ferrymq_log::batch::testing::batch;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::produce_response::PartitionProduceResponse;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};
use kafka_protocol::records::RecordBatchDecoder;
use kafka_protocol::ResponseError;

/// How long a refusal may take to reach the broker's log.
const LOG_WAIT: Duration = Duration::from_secs(5);

/// The limit the oversized-frame test runs the broker with.
const REQUEST_BYTES_MAX: usize = 1024 * 1024;

/// Byte positions in a magic-2 record batch header (see `crates/log/src/batch.rs`).
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;
const RECORD_COUNT_AT: usize = 57;

/// Request header fields a hand-made frame starts with: api key, version, correlation id.
const HEADER_PREFIX_BYTES: usize = 8;

/// Record timestamps near now: ancient ones would make every batch roll a segment (segment.ms
/// counts from the first batch's timestamp, as in Kafka).
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn code_name(code: i16) -> String {
    match ResponseError::try_from_code(code) {
        Some(e) => format!("{code} ({e:?})"),
        None => format!("{code} (none)"),
    }
}

/// Asserts an error code, naming both sides in the failure.
fn assert_code(what: &str, got: i16, want: ResponseError) {
    assert_eq!(
        got,
        want.code(),
        "{what}: got error {}, want {}",
        code_name(got),
        code_name(want.code())
    );
}

/// Asserts no error.
fn assert_ok(what: &str, got: i16) {
    assert_eq!(got, 0, "{what}: got error {}", code_name(got));
}

// ---- CRC-32C, to re-seal batches whose covered bytes a test changes on purpose ----

fn crc32c(bytes: &[u8]) -> u32 {
    // Castagnoli polynomial, reflected; bitwise is fast enough for test batches.
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Rewrites the CRC of a batch after its covered bytes were edited.
fn reseal(raw: &mut [u8]) {
    let crc = crc32c(&raw[ATTRIBUTES_AT..]);
    raw[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
}

// ---- requests ----

async fn create_topic(
    client: &mut RawClient,
    topic: &str,
    partitions: i32,
    replication_factor: i16,
    configs: &[(&str, &str)],
) -> Result<CreatableTopicResult> {
    let configs = configs
        .iter()
        .map(|(k, v)| {
            CreatableTopicConfig::default()
                .with_name(StrBytes::from_string(k.to_string()))
                .with_value(Some(StrBytes::from_string(v.to_string())))
        })
        .collect();
    let req = CreateTopicsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(name(topic))
            .with_num_partitions(partitions)
            .with_replication_factor(replication_factor)
            .with_configs(configs)]);
    let resp = client.call(&req, 7).await?;
    ensure!(resp.topics.len() == 1, "one result per topic: {resp:?}");
    Ok(resp.topics.into_iter().next().expect("checked above"))
}

fn produce_request(topic: &str, partition: i32, records: Bytes, acks: i16) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(records))])])
}

async fn produce(
    client: &mut RawClient,
    topic: &str,
    partition: i32,
    records: Bytes,
    acks: i16,
) -> Result<PartitionProduceResponse> {
    let resp = client
        .call(&produce_request(topic, partition, records, acks), 9)
        .await?;
    let part = resp
        .responses
        .into_iter()
        .flat_map(|t| t.partition_responses)
        .next()
        .context("a produce response names the partition")?;
    ensure!(
        part.index == partition,
        "answer for partition {} instead of {partition}",
        part.index
    );
    Ok(part)
}

async fn fetch(
    client: &mut RawClient,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Result<PartitionData> {
    let req = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_max_bytes(4 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(name(topic))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20)])]);
    let resp = client.call(&req, 12).await?;
    ensure!(
        resp.error_code == 0,
        "fetch: top-level error {}",
        code_name(resp.error_code)
    );
    resp.responses
        .into_iter()
        .flat_map(|t| t.partitions)
        .next()
        .context("a fetch response names the partition")
}

/// Every record in a fetch answer as (offset, value).
fn records(part: &PartitionData) -> Result<Vec<(i64, Vec<u8>)>> {
    let mut bytes = part.records.clone().unwrap_or_default();
    let sets = RecordBatchDecoder::decode_all(&mut bytes)
        .map_err(|e| anyhow::anyhow!("decoding fetched batches: {e}"))?;
    Ok(sets
        .into_iter()
        .flat_map(|s| s.records)
        .map(|r| (r.offset, r.value.map(|v| v.to_vec()).unwrap_or_default()))
        .collect())
}

/// Reads a partition from offset 0 as a consumer does, fetch after fetch (one fetch reads
/// from one segment at most), until the high watermark, which must be `hw`.
async fn read_partition(
    client: &mut RawClient,
    topic: &str,
    hw: i64,
) -> Result<Vec<(i64, Vec<u8>)>> {
    let mut out: Vec<(i64, Vec<u8>)> = Vec::new();
    let mut next = 0;
    // Every fetch below returns at least one record or fails, so this many rounds suffice.
    for _ in 0..=hw {
        let part = fetch(client, topic, 0, next).await?;
        assert_ok(&format!("fetch at {next}"), part.error_code);
        assert_eq!(part.high_watermark, hw, "high watermark");
        if next == hw {
            return Ok(out);
        }
        let got = records(&part)?;
        ensure!(
            !got.is_empty(),
            "fetch at {next} below the high watermark {hw} returned nothing"
        );
        out.extend(got.into_iter().filter(|(o, _)| *o >= next));
        next = out.last().map_or(next, |(o, _)| o + 1);
    }
    anyhow::bail!("no end after {} fetches: {out:?}", hw + 1)
}

async fn metadata(client: &mut RawClient, topics: Option<&[&str]>) -> Result<MetadataResponse> {
    let topics = topics.map(|ts| {
        ts.iter()
            .map(|t| MetadataRequestTopic::default().with_name(Some(name(t))))
            .collect()
    });
    client
        .call(
            &MetadataRequest::default()
                .with_topics(topics)
                .with_allow_auto_topic_creation(false),
            12,
        )
        .await
}

/// Longest a created topic may take to show a leader in Metadata.
const LEADER_WAIT: Duration = Duration::from_secs(10);

/// Waits until Metadata lists `topic` with a leader for every partition, as a Kafka client
/// does after CreateTopics: the controller answers once the topic is committed, and a broker
/// may learn of it a moment later.
async fn wait_for_leader(client: &mut RawClient, topic: &str) -> Result<()> {
    let deadline = Instant::now() + LEADER_WAIT;
    loop {
        let meta = metadata(client, Some(&[topic])).await?;
        let ready = meta.topics.first().is_some_and(|t| {
            t.error_code == 0
                && !t.partitions.is_empty()
                && t.partitions
                    .iter()
                    .all(|p| p.error_code == 0 && p.leader_id.0 >= 0)
        });
        if ready {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "{topic} has no leader after {LEADER_WAIT:?}: {meta:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn api_versions(client: &mut RawClient) -> Result<ApiVersionsResponse> {
    let req = ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("ferrymq-e2e"))
        .with_client_software_version(StrBytes::from_static_str("1"));
    client.call(&req, 3).await
}

/// Checks an ApiVersions answer lists the APIs a client needs with FerryMQ's ranges.
fn assert_lists_core_apis(resp: &ApiVersionsResponse) {
    let range = |key: ApiKey| {
        resp.api_keys
            .iter()
            .find(|k| k.api_key == key as i16)
            .map(|k| (k.min_version, k.max_version))
    };
    assert_eq!(range(ApiKey::ApiVersions), Some((0, 4)), "{resp:?}");
    assert_eq!(range(ApiKey::Produce), Some((0, 12)), "{resp:?}");
    assert_eq!(range(ApiKey::Fetch), Some((4, 16)), "{resp:?}");
    assert_eq!(range(ApiKey::Metadata), Some((0, 12)), "{resp:?}");
}

// ---- the well-behaved client ----

/// A client that behaves: connected before the bad input, it owns a one-partition topic with
/// known contents and checks afterwards that every answer is still exact.
struct Witness {
    client: RawClient,
    addr: String,
    topic: String,
    /// Every record the log must hold, in offset order.
    expected: Vec<(i64, Vec<u8>)>,
}

impl Witness {
    /// Connects, creates its topic with `configs` and produces two records at offsets 0 and 1.
    async fn open(broker: &BrokerProcess, configs: &[(&str, &str)]) -> Result<Witness> {
        let mut client = RawClient::connect(&broker.addr).await?;
        let topic = topic("witness");
        let created = create_topic(&mut client, &topic, 1, 1, configs).await?;
        assert_ok("witness CreateTopics", created.error_code);
        wait_for_leader(&mut client, &topic).await?;
        let mut w = Witness {
            client,
            addr: broker.addr.clone(),
            topic,
            expected: Vec::new(),
        };
        w.produce_valid(&[b"w-0", b"w-1"]).await?;
        Ok(w)
    }

    /// Produces one valid batch (acks=all) and checks it lands right after what came before.
    async fn produce_valid(&mut self, values: &[&[u8]]) -> Result<()> {
        let next = self.expected.len() as i64;
        let topic = self.topic.clone();
        let part = produce(&mut self.client, &topic, 0, batch(values, now_ms()), -1).await?;
        assert_ok("witness produce", part.error_code);
        assert_eq!(
            part.base_offset, next,
            "a valid batch lands right after the previous one"
        );
        self.expected.extend(
            values
                .iter()
                .enumerate()
                .map(|(i, v)| (next + i as i64, v.to_vec())),
        );
        Ok(())
    }

    /// After the bad input: ApiVersions and Metadata answer exactly, a new batch gets the next
    /// offset, the whole log reads back as exactly what was produced, and a new connection is
    /// served too.
    async fn assert_still_served(&mut self) -> Result<()> {
        let versions = api_versions(&mut self.client).await?;
        assert_ok("witness ApiVersions", versions.error_code);
        assert_lists_core_apis(&versions);
        let topic = self.topic.clone();
        let meta = metadata(&mut self.client, Some(&[topic.as_str()])).await?;
        let t = meta
            .topics
            .first()
            .context("metadata lists the witness topic")?;
        assert_ok("witness Metadata", t.error_code);
        assert_eq!(t.partitions.len(), 1, "{t:?}");
        assert_eq!(
            t.partitions[0].leader_id.0, meta.brokers[0].node_id.0,
            "{meta:?}"
        );
        let n = self.expected.len();
        self.produce_valid(&[format!("w-{n}").as_bytes()]).await?;
        let log = read_partition(&mut self.client, &topic, self.expected.len() as i64).await?;
        assert_eq!(
            log, self.expected,
            "the log holds exactly the valid batches, at their offsets"
        );
        let mut fresh = RawClient::connect(&self.addr).await?;
        assert_ok(
            "new connection ApiVersions",
            api_versions(&mut fresh).await?.error_code,
        );
        Ok(())
    }
}

/// Waits for a WARN line containing `needle` in the broker's log.
async fn assert_warn_logged(broker: &BrokerProcess, needle: &str) {
    let deadline = Instant::now() + LOG_WAIT;
    loop {
        let log = broker.log();
        if log
            .lines()
            .any(|l| l.contains(" WARN ") && l.contains(needle))
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no WARN line containing {needle:?} within {LOG_WAIT:?}; log:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs one frame-level case: the bad bytes close their own connection only.
async fn assert_frame_closes_only_its_connection(
    overrides: &[&str],
    bad: &[u8],
    log_needle: &str,
) -> Result<()> {
    let mut broker = BrokerProcess::start(overrides)?;
    let mut witness = Witness::open(&broker, &[]).await?;
    let mut client = RawClient::connect(&broker.addr).await?;
    client.send_raw(bad).await?;
    assert!(
        client.is_closed().await,
        "the broker closes a connection that sent {} bad bytes",
        bad.len()
    );
    witness.assert_still_served().await?;
    assert!(
        broker.is_running(),
        "bad input must not end the process; log:\n{}",
        broker.log()
    );
    assert_warn_logged(&broker, log_needle).await;
    Ok(())
}

/// A frame with a hand-written header prefix (api key, version, correlation id), a null client
/// id and `body`.
fn hand_frame(api_key: i16, version: i16, body: &[u8]) -> BytesMut {
    let mut buf = BytesMut::new();
    buf.put_i32((HEADER_PREFIX_BYTES + 2 + body.len()) as i32);
    buf.put_i16(api_key);
    buf.put_i16(version);
    buf.put_i32(1);
    buf.put_i16(-1);
    buf.put_slice(body);
    buf
}

/// A correctly encoded frame of `req` at `encode_version`, its header then claiming `claimed`.
fn frame_claiming_version<R: Request>(
    req: &R,
    encode_version: i16,
    claimed: i16,
) -> Result<BytesMut> {
    let key = ApiKey::try_from(R::KEY).map_err(|_| anyhow::anyhow!("unknown key {}", R::KEY))?;
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(encode_version)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_static_str("bad-input")));
    let mut frame = BytesMut::new();
    frame.put_i32(0);
    header.encode(&mut frame, key.request_header_version(encode_version))?;
    req.encode(&mut frame, encode_version)?;
    let size = (frame.len() - 4) as i32;
    frame[..4].copy_from_slice(&size.to_be_bytes());
    frame[6..8].copy_from_slice(&claimed.to_be_bytes());
    Ok(frame)
}

// ---- frames Kafka cannot parse: the connection is closed ----

#[tokio::test]
async fn oversized_frame_closes_only_that_connection() -> Result<()> {
    let limit = format!("socket.request.max.bytes={REQUEST_BYTES_MAX}");
    // Only the size is sent: the broker must refuse before reading (or reserving) the body.
    let size = (REQUEST_BYTES_MAX as i32 + 1).to_be_bytes();
    assert_frame_closes_only_its_connection(&[&limit], &size, "exceeds socket.request.max.bytes")
        .await
}

#[tokio::test]
async fn negative_frame_size_closes_only_that_connection() -> Result<()> {
    assert_frame_closes_only_its_connection(&[], &(-1i32).to_be_bytes(), "invalid frame size -1")
        .await
}

#[tokio::test]
async fn truncated_frame_closes_only_that_connection() -> Result<()> {
    let mut broker = BrokerProcess::start(&[])?;
    let mut witness = Witness::open(&broker, &[]).await?;
    let mut stream = tokio::net::TcpStream::connect(&broker.addr).await?;
    let frame = frame_claiming_version(&MetadataRequest::default(), 12, 12)?;
    // Half the frame, then end of stream: the broker sees the peer leave mid-frame.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(&frame[..frame.len() / 2]).await?;
    stream.shutdown().await?;
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "no answer to a truncated frame, then close: {read:?} {rest:?}"
    );
    witness.assert_still_served().await?;
    assert!(broker.is_running(), "log:\n{}", broker.log());
    assert_warn_logged(&broker, "socket: early eof").await;
    Ok(())
}

#[tokio::test]
async fn unknown_api_key_closes_only_that_connection() -> Result<()> {
    assert_frame_closes_only_its_connection(&[], &hand_frame(1000, 0, &[]), "unknown API key 1000")
        .await
}

#[tokio::test]
async fn metadata_version_above_the_served_range_closes_only_that_connection() -> Result<()> {
    let frame = frame_claiming_version(&MetadataRequest::default(), 12, 13)?;
    assert_frame_closes_only_its_connection(&[], &frame, "Metadata version 13").await
}

#[tokio::test]
async fn fetch_version_below_the_served_range_closes_only_that_connection() -> Result<()> {
    let frame = frame_claiming_version(&FetchRequest::default(), 4, 3)?;
    assert_frame_closes_only_its_connection(&[], &frame, "Fetch version 3").await
}

#[tokio::test]
async fn produce_v2_closes_the_connection_though_v0_is_advertised() -> Result<()> {
    // Kafka 4 advertises Produce v0 for librdkafka's sake but serves v3 and up (KAFKA-18659).
    let frame = frame_claiming_version(&produce_request("any", 0, batch(&[b"x"], 0), 1), 3, 2)?;
    assert_frame_closes_only_its_connection(&[], &frame, "Produce version 2").await
}

#[tokio::test]
async fn malformed_request_body_closes_only_that_connection() -> Result<()> {
    // Metadata v12 with an empty tagged-field section after the header, then a topics array
    // announcing four entries (compact length 5) and nothing more.
    let frame = hand_frame(ApiKey::Metadata as i16, 12, &[0x00, 0x05]);
    assert_frame_closes_only_its_connection(&[], &frame, "malformed Metadata v12 request").await
}

#[tokio::test]
async fn malformed_request_header_closes_only_that_connection() -> Result<()> {
    // ApiVersions v3 whose client id claims 300 bytes in a 12-byte frame.
    let mut frame = BytesMut::new();
    frame.put_i32(12);
    frame.put_i16(ApiKey::ApiVersions as i16);
    frame.put_i16(3);
    frame.put_i32(1);
    frame.put_i16(300);
    frame.put_i16(0);
    assert_frame_closes_only_its_connection(&[], &frame, "malformed ApiVersions request header")
        .await
}

#[tokio::test]
async fn requests_before_a_bad_frame_are_answered_before_the_close() -> Result<()> {
    // Kafka handles a connection's requests one at a time, so everything sent before the bad
    // frame is answered, in order, before the connection closes.
    let mut broker = BrokerProcess::start(&[])?;
    let mut witness = Witness::open(&broker, &[]).await?;
    let mut client = RawClient::connect(&broker.addr).await?;
    let mut pipelined = BytesMut::new();
    let api = ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("ferrymq-e2e"))
        .with_client_software_version(StrBytes::from_static_str("1"));
    for _ in 0..3 {
        pipelined.extend_from_slice(&client.frame(&api, 3)?);
    }
    let meta = MetadataRequest::default().with_topics(Some(vec![
        MetadataRequestTopic::default().with_name(Some(name(&witness.topic)))
    ]));
    pipelined.extend_from_slice(&client.frame(&meta, 12)?);
    pipelined.extend_from_slice(&hand_frame(1000, 0, &[]));
    client.send_raw(&pipelined).await?;
    for want in 1..=3 {
        let (correlation_id, resp) = client.read_response::<ApiVersionsRequest>(3).await?;
        assert_eq!(correlation_id, want, "answers in request order");
        assert_ok("pipelined ApiVersions", resp.error_code);
    }
    let (correlation_id, resp) = client.read_response::<MetadataRequest>(12).await?;
    assert_eq!(correlation_id, 4);
    assert_ok("pipelined Metadata", resp.topics[0].error_code);
    assert!(
        client.is_closed().await,
        "then the unknown API key closes the connection"
    );
    witness.assert_still_served().await?;
    assert!(broker.is_running(), "log:\n{}", broker.log());
    assert_warn_logged(&broker, "unknown API key 1000").await;
    Ok(())
}

// ---- ApiVersions too new: answered, not closed (KIP-511) ----

#[tokio::test]
async fn api_versions_too_new_gets_a_v0_answer_with_unsupported_version() -> Result<()> {
    let mut broker = BrokerProcess::start(&[])?;
    let mut witness = Witness::open(&broker, &[]).await?;
    let mut client = RawClient::connect(&broker.addr).await?;
    // What a newer client sends: flexible header (v2) and a body of a version we do not know.
    let mut frame = BytesMut::new();
    let client_id = b"future-client";
    let body: &[u8] = &[0x03, b'f', b'c', 0x02, b'9', 0x00];
    frame.put_i32((HEADER_PREFIX_BYTES + 2 + client_id.len() + 1 + body.len()) as i32);
    frame.put_i16(ApiKey::ApiVersions as i16);
    frame.put_i16(99);
    frame.put_i32(4242);
    frame.put_i16(client_id.len() as i16);
    frame.put_slice(client_id);
    frame.put_u8(0);
    frame.put_slice(body);
    client.send_raw(&frame).await?;
    let mut answer = client
        .read_frame()
        .await?
        .context("an answer, not a closed connection")?;
    let header = ResponseHeader::decode(&mut answer, 0)?;
    assert_eq!(header.correlation_id, 4242);
    let resp = ApiVersionsResponse::decode(&mut answer, 0)?;
    assert_code(
        "ApiVersions v99",
        resp.error_code,
        ResponseError::UnsupportedVersion,
    );
    assert_lists_core_apis(&resp);
    assert!(
        answer.is_empty(),
        "a v0 body and nothing after it: {} bytes left",
        answer.len()
    );
    // The client retries with a version we speak, on the same connection.
    let retry = api_versions(&mut client).await?;
    assert_ok("ApiVersions v3 after v99", retry.error_code);
    witness.assert_still_served().await?;
    assert!(broker.is_running(), "log:\n{}", broker.log());
    Ok(())
}

// ---- Produce: the partition gets Kafka's error and the log is untouched ----

/// Sends `records` to the witness topic from another connection, expects `want` for the
/// partition, then checks the connection, the witness, the process and (if given) the log line.
async fn assert_produce_refused(
    configs: &[(&str, &str)],
    records: impl FnOnce(&Witness) -> (String, i32, Bytes, i16),
    want: ResponseError,
    log_needle: Option<&str>,
) -> Result<()> {
    let mut broker = BrokerProcess::start(&[])?;
    let mut witness = Witness::open(&broker, configs).await?;
    let mut client = RawClient::connect(&broker.addr).await?;
    let (topic, partition, bytes, acks) = records(&witness);
    let part = produce(&mut client, &topic, partition, bytes, acks).await?;
    assert_code("bad produce", part.error_code, want);
    assert_eq!(
        part.base_offset, -1,
        "a refused batch has no offset: {part:?}"
    );
    // Kafka answers a bad batch and keeps the connection.
    assert_ok(
        "ApiVersions after a refused produce",
        api_versions(&mut client).await?.error_code,
    );
    witness.assert_still_served().await?;
    assert!(broker.is_running(), "log:\n{}", broker.log());
    if let Some(needle) = log_needle {
        assert_warn_logged(&broker, needle).await;
    }
    Ok(())
}

#[tokio::test]
async fn bad_crc_is_corrupt_message_and_nothing_is_appended() -> Result<()> {
    assert_produce_refused(
        &[],
        |w| {
            let mut raw = batch(&[b"bad-0", b"bad-1"], now_ms()).to_vec();
            let last = raw.len() - 2;
            raw[last] ^= 0x40;
            (w.topic.clone(), 0, raw.into(), -1)
        },
        ResponseError::CorruptMessage,
        Some("crc mismatch"),
    )
    .await
}

#[tokio::test]
async fn bad_magic_is_invalid_record_and_nothing_is_appended() -> Result<()> {
    assert_produce_refused(
        &[],
        |w| {
            let mut raw = batch(&[b"bad"], now_ms()).to_vec();
            raw[MAGIC_AT] = 1;
            (w.topic.clone(), 0, raw.into(), -1)
        },
        ResponseError::InvalidRecord,
        Some("unsupported magic 1"),
    )
    .await
}

#[tokio::test]
async fn magic_above_2_is_corrupt_message() -> Result<()> {
    // Kafka reads a magic it does not know as damage (`ByteBufferLogInputStream.nextBatchSize`:
    // CorruptRecordException "Invalid magic found in record"), unlike an old magic 0 or 1, which
    // is a well-formed batch of the wrong version (INVALID_RECORD).
    assert_produce_refused(
        &[],
        |w| {
            let mut raw = batch(&[b"bad"], now_ms()).to_vec();
            raw[MAGIC_AT] = 3;
            (w.topic.clone(), 0, raw.into(), -1)
        },
        ResponseError::CorruptMessage,
        Some("produce refused"),
    )
    .await
}

#[tokio::test]
async fn batch_cut_short_of_its_length_is_invalid_record() -> Result<()> {
    // The length field promises more bytes than the partition's records hold. Kafka's batch
    // iterator yields no batch at all for such a tail, so the produce is refused with
    // INVALID_RECORD ("must have at least one record batch per partition"), not CORRUPT_MESSAGE.
    assert_produce_refused(
        &[],
        |w| {
            let raw = batch(&[b"bad-0", b"bad-1"], now_ms());
            (w.topic.clone(), 0, raw.slice(..40), -1)
        },
        ResponseError::InvalidRecord,
        Some("produce refused"),
    )
    .await
}

#[tokio::test]
async fn record_count_disagreeing_with_last_offset_delta_is_invalid_record() -> Result<()> {
    assert_produce_refused(
        &[],
        |w| {
            // Two records claiming to be five, CRC re-sealed so only the counts are wrong: a
            // broker trusting the count would assign offsets 2..7 and shift every later batch.
            let mut raw = batch(&[b"bad-0", b"bad-1"], now_ms()).to_vec();
            raw[RECORD_COUNT_AT..RECORD_COUNT_AT + 4].copy_from_slice(&5i32.to_be_bytes());
            reseal(&mut raw);
            (w.topic.clone(), 0, raw.into(), -1)
        },
        ResponseError::InvalidRecord,
        Some("record count 5 does not match last offset delta 1"),
    )
    .await
}

#[tokio::test]
async fn two_batches_for_one_partition_are_invalid_record() -> Result<()> {
    assert_produce_refused(
        &[],
        |w| {
            let mut raw = batch(&[b"bad-0"], now_ms()).to_vec();
            raw.extend_from_slice(&batch(&[b"bad-1"], 6));
            (w.topic.clone(), 0, raw.into(), -1)
        },
        ResponseError::InvalidRecord,
        Some("expected exactly one batch, found 2"),
    )
    .await
}

#[tokio::test]
async fn unknown_partition_of_an_existing_topic_is_unknown_topic_or_partition() -> Result<()> {
    assert_produce_refused(
        &[],
        |w| (w.topic.clone(), 7, batch(&[b"x"], now_ms()), -1),
        ResponseError::UnknownTopicOrPartition,
        None,
    )
    .await
}

#[tokio::test]
async fn produce_to_an_unknown_topic_is_unknown_topic_or_partition_and_creates_nothing(
) -> Result<()> {
    let mut broker = BrokerProcess::start(&[])?;
    let mut witness = Witness::open(&broker, &[]).await?;
    let mut client = RawClient::connect(&broker.addr).await?;
    let missing = topic("never-created");
    let part = produce(&mut client, &missing, 0, batch(&[b"x"], now_ms()), -1).await?;
    assert_code(
        "produce to unknown topic",
        part.error_code,
        ResponseError::UnknownTopicOrPartition,
    );
    let meta = metadata(&mut client, Some(&[missing.as_str()])).await?;
    assert_code(
        "Metadata of the unknown topic",
        meta.topics[0].error_code,
        ResponseError::UnknownTopicOrPartition,
    );
    witness.assert_still_served().await?;
    assert!(broker.is_running(), "log:\n{}", broker.log());
    Ok(())
}

#[tokio::test]
async fn acks_5_is_invalid_required_acks() -> Result<()> {
    assert_produce_refused(
        &[],
        |w| (w.topic.clone(), 0, batch(&[b"x"], now_ms()), 5),
        ResponseError::InvalidRequiredAcks,
        None,
    )
    .await
}

#[tokio::test]
async fn batch_over_max_message_bytes_is_message_too_large() -> Result<()> {
    assert_produce_refused(
        &[("max.message.bytes", "1000")],
        |w| {
            let value = vec![b'z'; 2_000];
            (w.topic.clone(), 0, batch(&[&value], now_ms()), -1)
        },
        ResponseError::MessageTooLarge,
        Some("produce failed"),
    )
    .await
}

#[tokio::test]
async fn bad_batch_with_acks_0_closes_the_connection() -> Result<()> {
    // An acks=0 producer reads no responses, so Kafka closes its connection when a partition
    // fails ("Closing connection due to error during produce request"): the producer then
    // reconnects and refreshes its metadata instead of sending into the void.
    let mut broker = BrokerProcess::start(&[])?;
    let mut witness = Witness::open(&broker, &[]).await?;
    let mut client = RawClient::connect(&broker.addr).await?;
    let mut raw = batch(&[b"bad"], now_ms()).to_vec();
    let last = raw.len() - 2;
    raw[last] ^= 0x40;
    let frame = client.frame(&produce_request(&witness.topic, 0, raw.into(), 0), 9)?;
    client.send_raw(&frame).await?;
    assert!(
        client.is_closed().await,
        "an acks=0 produce that failed closes its connection"
    );
    witness.assert_still_served().await?;
    assert!(broker.is_running(), "log:\n{}", broker.log());
    assert_warn_logged(&broker, "crc mismatch").await;
    Ok(())
}

// ---- CreateTopics: each refusal answered, nothing created ----

/// Sends one CreateTopics, expects `want`, checks no topic of that name exists afterwards
/// (unless `exists_before`), that the connection is kept and the witness still served.
async fn assert_create_refused(
    topic_name: impl FnOnce(&Witness) -> String,
    partitions: i32,
    replication_factor: i16,
    configs: &[(&str, &str)],
    want: ResponseError,
) -> Result<()> {
    let mut broker = BrokerProcess::start(&[])?;
    let mut witness = Witness::open(&broker, &[]).await?;
    let mut client = RawClient::connect(&broker.addr).await?;
    let topic = topic_name(&witness);
    let result = create_topic(&mut client, &topic, partitions, replication_factor, configs).await?;
    assert_code(&format!("CreateTopics {topic:?}"), result.error_code, want);
    assert!(
        result.error_message.is_some(),
        "Kafka explains a refusal: {result:?}"
    );
    let all = metadata(&mut client, None).await?;
    let names: Vec<String> = all
        .topics
        .iter()
        .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
        .collect();
    assert_eq!(
        names,
        vec![witness.topic.clone()],
        "only the witness topic exists"
    );
    witness.assert_still_served().await?;
    assert!(broker.is_running(), "log:\n{}", broker.log());
    Ok(())
}

#[tokio::test]
async fn invalid_topic_names_are_invalid_topic_exception() -> Result<()> {
    for bad in [
        "bad name".to_string(),
        "a/b".into(),
        ".".into(),
        "x".repeat(250),
    ] {
        assert_create_refused(
            |_| bad.clone(),
            1,
            1,
            &[],
            ResponseError::InvalidTopicException,
        )
        .await?;
    }
    Ok(())
}

#[tokio::test]
async fn creating_an_existing_topic_is_topic_already_exists_and_changes_nothing() -> Result<()> {
    // Three partitions asked for; the witness's check that its topic still has one proves the
    // refused request did not alter it.
    assert_create_refused(
        |w| w.topic.clone(),
        3,
        1,
        &[],
        ResponseError::TopicAlreadyExists,
    )
    .await
}

#[tokio::test]
async fn zero_partitions_is_invalid_partitions() -> Result<()> {
    assert_create_refused(
        |_| topic("zero-partitions"),
        0,
        1,
        &[],
        ResponseError::InvalidPartitions,
    )
    .await
}

#[tokio::test]
async fn replication_factor_above_the_broker_count_is_invalid_replication_factor() -> Result<()> {
    assert_create_refused(
        |_| topic("rf-two"),
        1,
        2,
        &[],
        ResponseError::InvalidReplicationFactor,
    )
    .await
}

#[tokio::test]
async fn unknown_topic_config_is_invalid_config() -> Result<()> {
    assert_create_refused(
        |_| topic("odd-config"),
        1,
        1,
        &[("no.such.config", "1")],
        ResponseError::InvalidConfig,
    )
    .await
}

// ---- Fetch ----

#[tokio::test]
async fn fetch_past_the_end_is_offset_out_of_range() -> Result<()> {
    let mut broker = BrokerProcess::start(&[])?;
    let mut witness = Witness::open(&broker, &[]).await?;
    let mut client = RawClient::connect(&broker.addr).await?;
    let end = witness.expected.len() as i64;
    let at_end = fetch(&mut client, &witness.topic, 0, end).await?;
    assert_ok("fetch at the log end", at_end.error_code);
    assert!(records(&at_end)?.is_empty(), "nothing past the end yet");
    for offset in [end + 1, 1_000_000, -1] {
        let part = fetch(&mut client, &witness.topic, 0, offset).await?;
        assert_code(
            &format!("fetch at {offset} (log end {end})"),
            part.error_code,
            ResponseError::OffsetOutOfRange,
        );
        assert!(
            records(&part)?.is_empty(),
            "no records with an error: {part:?}"
        );
    }
    witness.assert_still_served().await?;
    assert!(broker.is_running(), "log:\n{}", broker.log());
    Ok(())
}

#[tokio::test]
async fn fetch_of_an_unknown_topic_is_unknown_topic_or_partition() -> Result<()> {
    let mut broker = BrokerProcess::start(&[])?;
    let mut witness = Witness::open(&broker, &[]).await?;
    let mut client = RawClient::connect(&broker.addr).await?;
    let part = fetch(&mut client, &topic("never-created"), 0, 0).await?;
    assert_code(
        "fetch of an unknown topic",
        part.error_code,
        ResponseError::UnknownTopicOrPartition,
    );
    let part = fetch(&mut client, &witness.topic, 3, 0).await?;
    assert_code(
        "fetch of an unknown partition",
        part.error_code,
        ResponseError::UnknownTopicOrPartition,
    );
    witness.assert_still_served().await?;
    assert!(broker.is_running(), "log:\n{}", broker.log());
    Ok(())
}

// ---- Metadata ----

#[tokio::test]
async fn metadata_auto_creating_an_invalid_name_is_invalid_topic_exception() -> Result<()> {
    let mut broker = BrokerProcess::start(&["auto.create.topics.enable=true"])?;
    let mut witness = Witness::open(&broker, &[]).await?;
    let mut client = RawClient::connect(&broker.addr).await?;
    let req = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(name("bad name")))
        ]))
        .with_allow_auto_topic_creation(true);
    let resp = client.call(&req, 12).await?;
    assert_code(
        "Metadata auto-creating \"bad name\"",
        resp.topics[0].error_code,
        ResponseError::InvalidTopicException,
    );
    let all = metadata(&mut client, None).await?;
    let names: Vec<String> = all
        .topics
        .iter()
        .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
        .collect();
    assert_eq!(
        names,
        vec![witness.topic.clone()],
        "only the witness topic exists"
    );
    witness.assert_still_served().await?;
    assert!(broker.is_running(), "log:\n{}", broker.log());
    Ok(())
}
