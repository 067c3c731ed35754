//! The steady producer of the failover trials: its own thread sends one small acks=all message
//! every `SEND_INTERVAL` to the partition under test and serves delivery reports in between,
//! so each report is timestamped as it happens. A report carries the id of the broker that
//! answered (librdkafka records it), which tells an acknowledgement from the new leader apart
//! from a late-read one from the old leader.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message as _};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};

use crate::broker_nodes::NodeId;

/// Time between two messages.
pub const SEND_INTERVAL: Duration = Duration::from_millis(5);
/// Payload bytes of each message.
pub const PAYLOAD_BYTES: usize = 100;
/// librdkafka `retry.backoff.ms` (and `retry.backoff.max.ms`, so it never grows).
pub const RETRY_BACKOFF_MS: u32 = 50;
/// librdkafka `topic.metadata.refresh.fast.interval.ms`: how often it asks for a partition's
/// leader while it knows none.
pub const METADATA_FAST_REFRESH_MS: u32 = 50;
/// librdkafka `reconnect.backoff.ms`, before the first reconnection to a lost broker.
pub const RECONNECT_BACKOFF_MS: u32 = 50;
/// librdkafka `reconnect.backoff.max.ms`.
pub const RECONNECT_BACKOFF_MAX_MS: u32 = 1000;
/// librdkafka `message.timeout.ms`: a message not acknowledged by then fails. Longer than a
/// trial's bound, so that a slow failover shows as a long window rather than as lost messages.
pub const MESSAGE_TIMEOUT_MS: u32 = 60_000;

/// How long stopping waits for messages still in flight.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Delivery reports kept between two reads by the trial loop (read every few ms, at one
/// message per `SEND_INTERVAL`); further ones are counted as dropped.
const DELIVERIES_MAX: usize = 100_000;

/// The producer settings, for the report.
pub fn settings_summary() -> String {
    let (_, version) = rdkafka::util::get_rdkafka_version();
    format!(
        "librdkafka {version}; one producer, bootstrap = all three nodes, one {PAYLOAD_BYTES}-byte \
         message every {} ms to the partition under test; acks=all, linger.ms=0, \
         enable.idempotence=false, retries at librdkafka's default (unbounded within \
         message.timeout.ms={MESSAGE_TIMEOUT_MS}), retry.backoff.ms={RETRY_BACKOFF_MS}, \
         retry.backoff.max.ms={RETRY_BACKOFF_MS}, \
         topic.metadata.refresh.fast.interval.ms={METADATA_FAST_REFRESH_MS}, \
         reconnect.backoff.ms={RECONNECT_BACKOFF_MS}, \
         reconnect.backoff.max.ms={RECONNECT_BACKOFF_MAX_MS}, other settings at librdkafka \
         defaults",
        SEND_INTERVAL.as_millis()
    )
}

/// The producer's settings; also used for the trial loop's Metadata client.
pub fn producer_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("linger.ms", "0")
        .set("enable.idempotence", "false")
        .set("retry.backoff.ms", RETRY_BACKOFF_MS.to_string())
        .set("retry.backoff.max.ms", RETRY_BACKOFF_MS.to_string())
        .set(
            "topic.metadata.refresh.fast.interval.ms",
            METADATA_FAST_REFRESH_MS.to_string(),
        )
        .set("reconnect.backoff.ms", RECONNECT_BACKOFF_MS.to_string())
        .set(
            "reconnect.backoff.max.ms",
            RECONNECT_BACKOFF_MAX_MS.to_string(),
        )
        .set("message.timeout.ms", MESSAGE_TIMEOUT_MS.to_string());
    config
}

/// A delivery report, as the trial loop reads it.
#[derive(Clone, Copy, Debug)]
pub struct Delivery {
    /// When the report was served (the client learnt the outcome).
    pub at: Instant,
    /// The partition the message went to.
    pub partition: i32,
    /// The broker that answered, -1 if librdkafka did not know.
    pub broker: NodeId,
    /// Acknowledged, as opposed to failed.
    pub acknowledged: bool,
}

/// The steady producer.
pub struct Pinger {
    stop: Arc<AtomicBool>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
}

/// What the sending thread, librdkafka's callbacks and the trial loop share.
struct Shared {
    /// The partition messages go to.
    partition: AtomicI32,
    /// Reports not read yet by the trial loop, at most `DELIVERIES_MAX`.
    deliveries: Mutex<Vec<Delivery>>,
    /// Reports not kept because the trial loop had not read the earlier ones.
    dropped: AtomicU64,
    /// Clock base of `last_ack_nanos`.
    started: Instant,
    /// Last acknowledgement of a message to the current `partition`, nanoseconds since
    /// `started`.
    last_ack_nanos: AtomicU64,
}

impl Pinger {
    /// Starts sending to `topic`-`partition`. With `client_debug`, librdkafka's log for those
    /// `debug` contexts goes to stderr with wall-clock times, to set beside the brokers' logs.
    pub fn start(
        bootstrap: &str,
        topic: &str,
        partition: i32,
        client_debug: Option<&str>,
    ) -> anyhow::Result<Pinger> {
        let shared = Arc::new(Shared {
            partition: AtomicI32::new(partition),
            deliveries: Mutex::new(Vec::new()),
            dropped: AtomicU64::new(0),
            started: Instant::now(),
            last_ack_nanos: AtomicU64::new(0),
        });
        let mut config = producer_config(bootstrap);
        if let Some(contexts) = client_debug {
            config
                .set("debug", contexts)
                .set_log_level(RDKafkaLogLevel::Debug);
        }
        let context = Callbacks {
            shared: Arc::clone(&shared),
            print_client_log: client_debug.is_some(),
        };
        let producer: BaseProducer<Callbacks> = config
            .create_with_context(context)
            .context("creating the failover producer")?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (stop, topic) = (Arc::clone(&stop), topic.to_string());
            std::thread::spawn(move || send_steadily(&producer, &topic, &stop))
        };
        Ok(Pinger {
            stop,
            shared,
            thread: Some(thread),
        })
    }

    /// Sends to `partition` from the next message on.
    pub fn switch_to(&self, partition: i32) {
        self.shared.partition.store(partition, Ordering::Relaxed);
    }

    /// The delivery reports since the last call.
    pub fn drain(&self) -> Vec<Delivery> {
        std::mem::take(&mut *self.shared.deliveries.lock().expect("not poisoned"))
    }

    /// Reports not kept so far.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Waits until the current partition acknowledges a message after now.
    pub async fn wait_for_ack(&self, timeout: Duration) -> anyhow::Result<()> {
        let since = Instant::now();
        let since_nanos = self.shared.nanos_since_start(since);
        while self.shared.last_ack_nanos.load(Ordering::Relaxed) <= since_nanos {
            if since.elapsed() >= timeout {
                bail!("the producer had no acknowledgement for {timeout:?}");
            }
            tokio::time::sleep(SEND_INTERVAL).await;
        }
        Ok(())
    }

    /// Stops the sending thread; an error if it failed.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.stop_thread()
    }

    fn stop_thread(&mut self) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take() {
            Some(thread) => thread
                .join()
                .map_err(|_| anyhow::anyhow!("the failover producer thread panicked"))?,
            None => Ok(()),
        }
    }
}

impl Drop for Pinger {
    fn drop(&mut self) {
        let _ = self.stop_thread();
    }
}

impl Shared {
    fn nanos_since_start(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.started).as_nanos()).unwrap_or(u64::MAX)
    }

    fn record(&self, result: &DeliveryResult<'_>) {
        let at = Instant::now();
        let (message, acknowledged) = match result {
            Ok(message) => (message, true),
            Err((_, message)) => (message, false),
        };
        let partition = message.partition();
        if acknowledged && partition == self.partition.load(Ordering::Relaxed) {
            self.last_ack_nanos
                .fetch_max(self.nanos_since_start(at), Ordering::Relaxed);
        }
        let delivery = Delivery {
            at,
            partition,
            broker: NodeId(broker_id(message)),
            acknowledged,
        };
        let mut deliveries = self.deliveries.lock().expect("not poisoned");
        if deliveries.len() < DELIVERIES_MAX {
            deliveries.push(delivery);
        } else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The broker that answered for a message, as librdkafka recorded it.
fn broker_id(message: &BorrowedMessage<'_>) -> i32 {
    // SAFETY: `ptr` is the librdkafka message behind `message`, valid while it is borrowed
    // (for this call); rd_kafka_message_broker_id only reads one of its fields. The rdkafka
    // crate has no safe accessor for it.
    unsafe { rdkafka::bindings::rd_kafka_message_broker_id(message.ptr()) }
}

/// The context handed to librdkafka.
struct Callbacks {
    shared: Arc<Shared>,
    /// Print librdkafka's own log lines on stderr.
    print_client_log: bool,
}

impl ClientContext for Callbacks {
    fn log(&self, _: RDKafkaLogLevel, facility: &str, message: &str) {
        if self.print_client_log {
            eprintln!("{} librdkafka {facility}: {message}", wall_clock());
        }
    }

    /// Client errors (connection refused while a node is down) are expected during a trial,
    /// which measures their effect; librdkafka's default would log each one.
    fn error(&self, _: KafkaError, _: &str) {}
}

impl ProducerContext for Callbacks {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        self.shared.record(result);
    }
}

/// The sending loop; returns when `stop` is set, after serving what is still in flight.
fn send_steadily(
    producer: &BaseProducer<Callbacks>,
    topic: &str,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let payload = [0x5a_u8; PAYLOAD_BYTES];
    let shared = &producer.context().shared;
    let mut next_due = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= next_due {
            let partition = shared.partition.load(Ordering::Relaxed);
            let record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic)
                .payload(&payload[..])
                .partition(partition);
            if let Err((error, _)) = producer.send(record) {
                bail!("enqueueing a failover message: {error}");
            }
            // A late loop does not send a burst to catch up: the schedule restarts from now.
            next_due = (next_due + SEND_INTERVAL).max(now);
        }
        producer.poll(next_due.saturating_duration_since(Instant::now()));
    }
    let _ = producer.flush(FLUSH_TIMEOUT);
    Ok(())
}

/// The time of day in UTC, `HH:MM:SS.mmmmmm`, as the brokers' logs print it.
pub fn wall_clock() -> String {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let of_day = since_epoch.as_secs() % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:06}",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60,
        since_epoch.subsec_micros()
    )
}
