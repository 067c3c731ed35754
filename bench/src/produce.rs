//! Producer throughput through librdkafka's `BaseProducer`, optionally paced at a fixed rate.
//!
//! The send loop is shared with the latency measurement, which passes a closure that stamps each
//! payload. Delivery reports are counted in the client context; librdkafka's statistics give the
//! average produce request size, which the suite uses as the sink baseline's chunk size so both
//! move the same bytes in similar pieces.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use rdkafka::client::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaErrorCode;

use crate::kafka_client::{self, Acks, Idempotence};
use crate::pacing::{Pacer, Rate};
use crate::rss::RssSampler;
use crate::throughput::Throughput;

/// Largest payload the tool sends; librdkafka would refuse more than a batch anyway.
pub const PAYLOAD_BYTES_MAX: usize = 1_000_000;

/// How often (in messages) the send loop serves delivery reports and checks its deadline.
const POLL_EVERY_MESSAGES: u64 = 1024;

/// How long to wait for the statistics emitted after the last delivery.
const FINAL_STATS_WAIT: Duration = Duration::from_secs(2);

/// Interval of librdkafka's statistics while producing.
const STATS_INTERVAL_MS: u32 = 250;

/// Bound on the warm-up before an unpaced measurement.
const WARM_UP_TIMEOUT: Duration = Duration::from_secs(10);

/// Command line of `ferrymq-bench produce`.
#[derive(clap::Args)]
pub struct Args {
    /// Broker address (loopback only).
    #[arg(long, value_parser = kafka_client::loopback_addr)]
    bootstrap: SocketAddr,
    /// Topic to produce to.
    #[arg(long)]
    topic: String,
    /// Number of messages to send.
    #[arg(long)]
    messages: u64,
    /// Payload size of each message in bytes.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=PAYLOAD_BYTES_MAX as i64))]
    size: u32,
    /// Acknowledgement level.
    #[arg(long, value_enum)]
    acks: Acks,
    /// Idempotent producer (needs --acks all).
    #[arg(long, value_enum, default_value_t = Idempotence::Off)]
    idempotence: Idempotence,
    /// Produce requests in flight per connection (`max.in.flight`, at most 5 with idempotence).
    #[arg(long, default_value_t = kafka_client::INFLIGHT_REQUESTS_MAX)]
    max_in_flight: usize,
    /// Partitions to spread messages over, round robin (the topic must have at least these).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=10_000))]
    partitions: i32,
    /// Send at this many messages per second instead of as fast as possible.
    #[arg(long)]
    rate: Option<u32>,
    /// Create the topic first, with `--partitions` partitions.
    #[arg(long)]
    create_topic: bool,
    /// Give up sending after this many seconds.
    #[arg(long, default_value_t = 120)]
    timeout_s: u64,
    /// Sample this process's memory (the broker's) during the run.
    #[arg(long)]
    broker_pid: Option<u32>,
}

/// What one producer run should do.
#[derive(Clone, Debug)]
pub struct ProduceSpec {
    /// Broker to send to.
    pub bootstrap: SocketAddr,
    /// Topic to send to.
    pub topic: String,
    /// Messages to send.
    pub messages: u64,
    /// Payload bytes per message.
    pub message_bytes: usize,
    /// Acknowledgement level.
    pub acks: Acks,
    /// Whether the producer is idempotent.
    pub idempotence: Idempotence,
    /// Produce requests in flight per connection.
    pub inflight_requests_max: usize,
    /// Messages go to partitions `0..partitions`, round robin.
    pub partitions: i32,
    /// Fixed rate, or `None` for as fast as the broker takes them.
    pub rate: Option<Rate>,
    /// Bound on the whole run, sending and waiting for deliveries.
    pub timeout: Duration,
}

/// What one producer run measured.
#[derive(Clone, Debug)]
pub struct ProduceOutcome {
    /// Delivered messages and bytes, from the first send to the last delivery report.
    pub throughput: Throughput,
    /// Messages the broker refused or that timed out.
    pub failed: u64,
    /// Messages never handed to librdkafka because the run's time ran out.
    pub not_sent: u64,
    /// Average produce request size on the wire, from librdkafka's statistics.
    pub produce_request_bytes_avg: Option<u64>,
    /// The first delivery or client error, if any.
    pub first_error: Option<String>,
}

impl ProduceOutcome {
    /// An error if anything was lost or refused, for callers that treat that as failure.
    pub fn complete(self) -> anyhow::Result<ProduceOutcome> {
        if self.failed > 0 || self.not_sent > 0 {
            bail!(
                "{} delivered, {} failed, {} not sent in time; first error: {}",
                self.throughput.messages,
                self.failed,
                self.not_sent,
                self.first_error.as_deref().unwrap_or("none")
            );
        }
        Ok(self)
    }
}

/// Runs `ferrymq-bench produce`.
pub async fn run(args: Args) -> anyhow::Result<()> {
    if args.create_topic {
        kafka_client::create_topic(args.bootstrap, &args.topic, args.partitions).await?;
    }
    let spec = ProduceSpec {
        bootstrap: args.bootstrap,
        topic: args.topic,
        messages: args.messages,
        message_bytes: args.size as usize,
        acks: args.acks,
        idempotence: args.idempotence,
        inflight_requests_max: args.max_in_flight,
        partitions: args.partitions,
        rate: args
            .rate
            .map(|r| Rate::new(r).context("--rate must be positive"))
            .transpose()?,
        timeout: Duration::from_secs(args.timeout_s),
    };
    let sampler = args.broker_pid.map(RssSampler::start);
    let outcome = measure(spec).await?;
    println!("produce: {}", outcome.throughput);
    if let Some(avg) = outcome.produce_request_bytes_avg {
        println!("produce: average produce request {avg} bytes");
    }
    if let Some(sampler) = sampler {
        println!("broker: {}", sampler.finish().describe());
    }
    outcome.complete().map(drop)
}

/// Measures producer throughput, sending from a blocking thread.
pub async fn measure(spec: ProduceSpec) -> anyhow::Result<ProduceOutcome> {
    tokio::task::spawn_blocking(move || send_all(&spec, |_, _, _| {}))
        .await
        .context("producer thread")?
}

/// Sends `spec.messages` messages, calling `fill(index, due, payload)` before each send so a
/// caller can stamp the payload (`due` is the scheduled time when paced, else now), then waits
/// for every delivery report. Blocking.
pub fn send_all(
    spec: &ProduceSpec,
    mut fill: impl FnMut(u64, Instant, &mut [u8]),
) -> anyhow::Result<ProduceOutcome> {
    assert!(spec.message_bytes <= PAYLOAD_BYTES_MAX, "{spec:?}");
    assert!(spec.partitions > 0, "{spec:?}");
    let producer: BaseProducer<DeliveryTally> = kafka_client::producer_config(
        spec.bootstrap,
        spec.acks,
        spec.idempotence,
        spec.inflight_requests_max,
    )
    .set("statistics.interval.ms", STATS_INTERVAL_MS.to_string())
    .create_with_context(DeliveryTally::default())
    .context("creating the producer")?;
    let available = kafka_client::partition_count(producer.client(), &spec.topic)?;
    if available < spec.partitions {
        bail!(
            "topic {} has {available} partitions, {} asked",
            spec.topic,
            spec.partitions
        );
    }
    let mut payload = vec![0x5a_u8; spec.message_bytes];
    if spec.rate.is_none() {
        warm_up(&producer, spec, &payload)?;
    }
    // Counted from here: warm-up deliveries are not part of the measurement.
    let before = producer.context().counts();
    let start = Instant::now();
    let deadline = start + spec.timeout;
    let pacer = spec.rate.map(|rate| Pacer::new(start, rate));
    let mut sent = 0;
    while sent < spec.messages {
        let due = match &pacer {
            Some(pacer) => pacer.sleep_until_due(sent),
            None => Instant::now(),
        };
        fill(sent, due, &mut payload);
        let partition = i32::try_from(sent % spec.partitions as u64).expect("below an i32");
        if !enqueue(&producer, &spec.topic, partition, &payload, deadline)? {
            break;
        }
        sent += 1;
        if sent % POLL_EVERY_MESSAGES == 0 {
            producer.poll(Duration::ZERO);
            if Instant::now() >= deadline {
                break;
            }
        }
    }
    wait_for_deliveries(&producer, deadline);
    let elapsed = start.elapsed();
    let (delivered, delivered_bytes) = producer.context().counts();
    let throughput = Throughput {
        messages: delivered - before.0,
        payload_bytes: delivered_bytes - before.1,
        elapsed,
    };
    let produce_request_bytes_avg = final_request_bytes_avg(&producer);
    let tally = producer.context();
    let first_error = tally.first_error.lock().expect("not poisoned").clone();
    Ok(ProduceOutcome {
        throughput,
        failed: tally.failed.load(Ordering::Relaxed),
        not_sent: spec.messages - sent,
        produce_request_bytes_avg,
        first_error,
    })
}

/// Before an unpaced measurement, sends one message to each partition and waits for them, so
/// that the connection, the partitions' leaders and, for an idempotent producer, its producer id
/// are in place when the clock starts: librdkafka asks for a producer id only on a timer some
/// hundreds of milliseconds after connecting, and a throughput run would otherwise measure that
/// wait rather than the broker.
fn warm_up(
    producer: &BaseProducer<DeliveryTally>,
    spec: &ProduceSpec,
    payload: &[u8],
) -> anyhow::Result<()> {
    let deadline = Instant::now() + WARM_UP_TIMEOUT;
    for partition in 0..spec.partitions {
        if !enqueue(producer, &spec.topic, partition, payload, deadline)? {
            bail!("warm-up: could not enqueue within {WARM_UP_TIMEOUT:?}");
        }
    }
    wait_for_deliveries(producer, deadline);
    let failed = producer.context().failed.load(Ordering::Relaxed);
    if producer.in_flight_count() > 0 || failed > 0 {
        bail!(
            "warm-up: {} undelivered, {failed} failed within {WARM_UP_TIMEOUT:?}; first error: {}",
            producer.in_flight_count(),
            producer
                .context()
                .first_error
                .lock()
                .expect("not poisoned")
                .as_deref()
                .unwrap_or("none")
        );
    }
    Ok(())
}

/// Hands one message to librdkafka, serving delivery reports while its queue is full. Returns
/// false if the deadline passed first.
fn enqueue(
    producer: &BaseProducer<DeliveryTally>,
    topic: &str,
    partition: i32,
    payload: &[u8],
    deadline: Instant,
) -> anyhow::Result<bool> {
    let mut record: BaseRecord<'_, [u8], [u8]> =
        BaseRecord::to(topic).payload(payload).partition(partition);
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(true),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                if Instant::now() >= deadline {
                    return Ok(false);
                }
                record = returned;
                producer.poll(Duration::from_millis(1));
            }
            Err((error, _)) => bail!("enqueueing a message: {error}"),
        }
    }
}

/// Serves delivery reports until none is outstanding or the deadline passes. Polls in 1 ms
/// steps rather than `flush`, whose 100 ms steps would blur the end of the interval.
fn wait_for_deliveries(producer: &BaseProducer<DeliveryTally>, deadline: Instant) {
    while producer.in_flight_count() > 0 && Instant::now() < deadline {
        producer.poll(Duration::from_millis(1));
    }
}

/// Waits for the statistics emitted after the last delivery and returns the average produce
/// request size they show.
fn final_request_bytes_avg(producer: &BaseProducer<DeliveryTally>) -> Option<u64> {
    let seen = producer.context().stats_received.load(Ordering::Relaxed);
    let deadline = Instant::now() + FINAL_STATS_WAIT;
    while producer.context().stats_received.load(Ordering::Relaxed) == seen
        && Instant::now() < deadline
    {
        producer.poll(Duration::from_millis(10));
    }
    let sizes = *producer
        .context()
        .request_sizes
        .lock()
        .expect("not poisoned");
    sizes.and_then(RequestSizes::average_bytes)
}

/// Produce requests and bytes sent, summed over brokers, from librdkafka's statistics.
#[derive(Clone, Copy, Debug, Default)]
struct RequestSizes {
    produce_requests: u64,
    /// Bytes sent on connections that carried produce requests (a few metadata requests
    /// included, which are small next to megabytes of batches).
    bytes_sent: u64,
}

impl RequestSizes {
    fn average_bytes(self) -> Option<u64> {
        (self.produce_requests > 0).then(|| self.bytes_sent / self.produce_requests)
    }
}

/// Client context that counts delivery reports and keeps the latest request statistics.
#[derive(Default)]
pub struct DeliveryTally {
    delivered: AtomicU64,
    delivered_bytes: AtomicU64,
    failed: AtomicU64,
    stats_received: AtomicU64,
    first_error: Mutex<Option<String>>,
    request_sizes: Mutex<Option<RequestSizes>>,
}

impl DeliveryTally {
    /// Messages and payload bytes delivered so far.
    fn counts(&self) -> (u64, u64) {
        (
            self.delivered.load(Ordering::Relaxed),
            self.delivered_bytes.load(Ordering::Relaxed),
        )
    }

    fn note_error(&self, error: String) {
        let mut first = self.first_error.lock().expect("not poisoned");
        if first.is_none() {
            *first = Some(error);
        }
    }
}

impl ClientContext for DeliveryTally {
    fn stats(&self, statistics: Statistics) {
        let mut sizes = RequestSizes::default();
        for broker in statistics.brokers.values() {
            let produces = broker.req.get("Produce").copied().unwrap_or(0);
            if produces > 0 {
                sizes.produce_requests += u64::try_from(produces).unwrap_or(0);
                sizes.bytes_sent += broker.txbytes;
            }
        }
        *self.request_sizes.lock().expect("not poisoned") = Some(sizes);
        self.stats_received.fetch_add(1, Ordering::Relaxed);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.note_error(format!("client error {error}: {reason}"));
    }
}

impl ProducerContext for DeliveryTally {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(message) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
                let bytes = message.payload_len() as u64;
                self.delivered_bytes.fetch_add(bytes, Ordering::Relaxed);
            }
            Err((error, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                self.note_error(format!("delivery failed: {error}"));
            }
        }
    }
}
