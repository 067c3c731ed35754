//! A pipelined producer written against the Kafka wire protocol, to measure what the broker
//! pays for idempotence. Both sides do the same client work — one batch built and checksummed
//! per request, a fixed window of requests in flight, partitions in turn — and differ only in
//! the batch header's producer id, epoch and sequence, which the broker then checks against
//! the partition's producer state and records.
//!
//! librdkafka cannot give that comparison: in idempotent mode it sends one request per
//! partition at a time and polls its socket in a tight loop while it waits (it counts messages,
//! not requests, against its limit of five in flight: confluentinc/librdkafka#4989), so its
//! on/off figures on a shared two-core machine mostly measure the client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use ferrymq_log::batch::testing::batch_with_producer;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, InitProducerIdRequest, InitProducerIdResponse, ProduceRequest, ProduceResponse,
    RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::kafka_client::Idempotence;
use crate::throughput::Throughput;

/// Produce version used: flexible, topic names (not ids), what librdkafka 2.x sends.
const PRODUCE_VERSION: i16 = 9;
/// InitProducerId version used (librdkafka's).
const INIT_PRODUCER_ID_VERSION: i16 = 4;
/// Largest response frame accepted.
const RESPONSE_BYTES_MAX: usize = 1024 * 1024;
/// Requests in flight at most (the broker reads ahead up to its own limit, 100 by default).
pub const WINDOW_MAX: usize = 64;

/// What one raw run sends.
#[derive(Clone, Debug)]
pub struct RawSpec {
    /// Broker to send to.
    pub bootstrap: SocketAddr,
    /// Topic, which must exist with at least `partitions` partitions.
    pub topic: String,
    /// Batches to send, one per request.
    pub batches: u64,
    /// Records per batch.
    pub records_per_batch: u32,
    /// Payload bytes per record.
    pub message_bytes: usize,
    /// Partitions written in turn, one batch each.
    pub partitions: i32,
    /// Requests in flight.
    pub window: usize,
    /// Whether batches carry a producer id and sequence.
    pub idempotence: Idempotence,
    /// Bound on the run.
    pub timeout: Duration,
}

/// Sends `spec.batches` acks=all produce requests and waits for every answer, failing on any
/// error code. The interval runs from the first request to the last answer; the connection and
/// InitProducerId come before it.
pub async fn measure(spec: RawSpec) -> anyhow::Result<Throughput> {
    ensure!(
        (1..=WINDOW_MAX).contains(&spec.window),
        "window {} not in 1..={WINDOW_MAX}",
        spec.window
    );
    ensure!(
        spec.partitions > 0 && spec.records_per_batch > 0,
        "{spec:?}"
    );
    let timeout = spec.timeout;
    tokio::time::timeout(timeout, run(spec))
        .await
        .with_context(|| format!("raw produce did not finish within {timeout:?}"))?
}

async fn run(spec: RawSpec) -> anyhow::Result<Throughput> {
    let stream = TcpStream::connect(spec.bootstrap)
        .await
        .with_context(|| format!("connecting to {}", spec.bootstrap))?;
    stream.set_nodelay(true)?;
    let (mut reader, mut writer) = stream.into_split();
    let mut correlation_id = 0;
    let producer_id = match spec.idempotence {
        Idempotence::Off => -1,
        Idempotence::On => {
            let req = InitProducerIdRequest::default().with_transactional_id(None);
            writer
                .write_all(&frame(&req, INIT_PRODUCER_ID_VERSION, correlation_id)?)
                .await?;
            let resp: InitProducerIdResponse =
                read_response(&mut reader, INIT_PRODUCER_ID_VERSION, correlation_id).await?;
            ensure!(
                resp.error_code == 0,
                "InitProducerId error {}",
                resp.error_code
            );
            correlation_id += 1;
            resp.producer_id.0
        }
    };
    let value = vec![0x5a_u8; spec.message_bytes];
    let values: Vec<&[u8]> = (0..spec.records_per_batch)
        .map(|_| value.as_slice())
        .collect();
    let window = Arc::new(Semaphore::new(spec.window));
    let answers = tokio::spawn(read_answers(
        reader,
        Arc::clone(&window),
        correlation_id,
        spec.batches,
    ));
    let mut sequences = vec![0_i32; spec.partitions as usize];
    for index in 0..spec.batches {
        let partition = (index % spec.partitions as u64) as usize;
        // Built per request on both sides, so the client does the same work either way.
        let (epoch, sequence) = match spec.idempotence {
            Idempotence::Off => (-1, -1),
            Idempotence::On => (0, sequences[partition]),
        };
        // Stamped now: an old timestamp would make every batch roll a segment by age.
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let batch = batch_with_producer(&values, now_ms, producer_id, epoch, sequence);
        sequences[partition] = sequences[partition].wrapping_add(spec.records_per_batch as i32);
        let req = produce_request(&spec.topic, partition as i32, batch);
        let bytes = frame(&req, PRODUCE_VERSION, correlation_id + index as i32)?;
        window.acquire().await.context("window closed")?.forget();
        writer.write_all(&bytes).await?;
    }
    let elapsed = answers.await.context("answer task")??;
    let messages = spec.batches * spec.records_per_batch as u64;
    Ok(Throughput {
        messages,
        payload_bytes: messages * spec.message_bytes as u64,
        elapsed,
    })
}

/// Reads the answers in order, releasing a window slot for each; returns the time from the
/// start of the run to the last answer.
async fn read_answers(
    mut reader: OwnedReadHalf,
    window: Arc<Semaphore>,
    first_correlation_id: i32,
    batches: u64,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    for index in 0..batches {
        let resp: ProduceResponse = read_response(
            &mut reader,
            PRODUCE_VERSION,
            first_correlation_id + index as i32,
        )
        .await?;
        for topic in &resp.responses {
            for p in &topic.partition_responses {
                if p.error_code != 0 {
                    bail!("partition {} answered error {}", p.index, p.error_code);
                }
            }
        }
        window.add_permits(1);
    }
    Ok(start.elapsed())
}

fn produce_request(topic: &str, partition: i32, batch: Bytes) -> ProduceRequest {
    ProduceRequest::default()
        .with_transactional_id(None)
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(batch))])])
}

/// A request with its header in a size-prefixed frame.
fn frame<R: Request>(req: &R, version: i16, correlation_id: i32) -> anyhow::Result<Bytes> {
    let key = ApiKey::try_from(R::KEY).map_err(|_| anyhow::anyhow!("unknown API key"))?;
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("ferrymq-bench-raw")));
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    header.encode(&mut buf, key.request_header_version(version))?;
    req.encode(&mut buf, version)?;
    let size = i32::try_from(buf.len() - 4).context("request too large")?;
    buf[..4].copy_from_slice(&size.to_be_bytes());
    Ok(buf.freeze())
}

/// Reads one response frame and decodes it, checking its correlation id.
async fn read_response<R: Decodable + HeaderVersion>(
    reader: &mut OwnedReadHalf,
    version: i16,
    correlation_id: i32,
) -> anyhow::Result<R> {
    let size = reader.read_u32().await.context("reading a response size")? as usize;
    ensure!(size <= RESPONSE_BYTES_MAX, "response of {size} bytes");
    let mut body = vec![0_u8; size];
    reader.read_exact(&mut body).await?;
    let mut body = Bytes::from(body);
    let header = ResponseHeader::decode(&mut body, R::header_version(version))?;
    ensure!(
        header.correlation_id == correlation_id,
        "answer {} where {correlation_id} was due",
        header.correlation_id
    );
    let resp = R::decode(&mut body, version)?;
    ensure!(
        !body.has_remaining(),
        "{} bytes after the response",
        body.remaining()
    );
    Ok(resp)
}
