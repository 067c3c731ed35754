//! librdkafka client settings shared by every measurement, and the few admin calls the tool
//! needs (create a topic, learn its partition count).
//!
//! One place for the settings so that every scenario runs the same client configuration and the
//! report can print exactly what was used. No consumer group is ever joined: FerryMQ does not
//! coordinate groups yet, so consumers use manual `assign` and never commit.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{Client, ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::types::RDKafkaErrorCode;

/// Produce requests the client keeps in flight per connection. The sink baseline uses the same
/// window so both sides pipeline equally; 5 is the Java client's default (librdkafka's is a
/// million, i.e. unbounded).
pub const INFLIGHT_REQUESTS_MAX: usize = 5;

/// How long the producer waits to fill a batch.
pub const LINGER_MS: u32 = 5;

/// Largest record batch the producer builds per partition (1 MiB).
pub const BATCH_BYTES_MAX: usize = 1024 * 1024;

/// Largest produce request; must hold one full batch plus request framing.
pub const MESSAGE_BYTES_MAX: usize = BATCH_BYTES_MAX + 64 * 1024;
const _: () = assert!(BATCH_BYTES_MAX < MESSAGE_BYTES_MAX);

/// Bound on what the producer buffers before `send` reports a full queue (64 MiB).
pub const PRODUCER_QUEUE_KIB_MAX: usize = 64 * 1024;

/// Bound on what the consumer prefetches (64 MiB).
pub const CONSUMER_QUEUE_KIB_MAX: usize = 64 * 1024;

/// Required by librdkafka for `assign`; never used to join, subscribe or commit.
const GROUP_ID: &str = "ferrymq-bench";

/// How long one admin or metadata request may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause between metadata requests while a new topic is not listed yet.
const METADATA_RETRY_INTERVAL: Duration = Duration::from_millis(100);

/// Acknowledgement level asked of the broker for each produce request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Acks {
    /// `acks=1`: the leader has appended (page cache, flush policy decides the rest).
    #[value(name = "1")]
    Leader,
    /// `acks=all`: every in-sync replica has it, fsynced before it counts.
    #[value(name = "all")]
    All,
}

impl Acks {
    /// The value librdkafka's `acks` setting takes, also used in labels.
    pub fn as_config(self) -> &'static str {
        match self {
            Acks::Leader => "1",
            Acks::All => "all",
        }
    }
}

/// Parses an address and refuses anything but loopback: this tool only ever loads servers on
/// this machine.
pub fn loopback_addr(text: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = text
        .parse()
        .map_err(|e| format!("{text:?} is not IP:PORT: {e}"))?;
    if !addr.ip().is_loopback() {
        return Err(format!("{addr} is not a loopback address"));
    }
    Ok(addr)
}

/// Producer settings: batching as a throughput-minded application would set it, no
/// compression (the broker never decompresses anyway), no idempotence (not supported yet).
pub fn producer_config(bootstrap: SocketAddr, acks: Acks) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap.to_string())
        .set("acks", acks.as_config())
        .set("linger.ms", LINGER_MS.to_string())
        .set("batch.size", BATCH_BYTES_MAX.to_string())
        .set("message.max.bytes", MESSAGE_BYTES_MAX.to_string())
        .set("compression.type", "none")
        .set("enable.idempotence", "false")
        .set(
            "max.in.flight.requests.per.connection",
            INFLIGHT_REQUESTS_MAX.to_string(),
        )
        .set(
            "queue.buffering.max.kbytes",
            PRODUCER_QUEUE_KIB_MAX.to_string(),
        )
        .set("message.timeout.ms", "60000");
    config
}

/// How long the consumer postpones its next fetch once its local queue is over
/// `queued.min.messages`. librdkafka's default (1 s) stalls a consumer that drains 100,000
/// small messages in a fraction of that, measuring the client's back-off instead of the broker.
const FETCH_QUEUE_BACKOFF_MS: u32 = 10;

/// Consumer settings for manual assignment: a group id only because librdkafka wants one,
/// nothing committed or stored.
pub fn consumer_config(bootstrap: SocketAddr) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap.to_string())
        .set("group.id", GROUP_ID)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS.to_string())
        .set(
            "queued.max.messages.kbytes",
            CONSUMER_QUEUE_KIB_MAX.to_string(),
        );
    config
}

/// The client settings as one line for the report.
pub fn settings_summary() -> String {
    let (_, version) = rdkafka::util::get_rdkafka_version();
    format!(
        "librdkafka {version} (rdkafka crate); producer linger.ms={LINGER_MS}, \
         batch.size={BATCH_BYTES_MAX}, max.in.flight={INFLIGHT_REQUESTS_MAX}, \
         compression.type=none, enable.idempotence=false; consumer: manual assign from the \
         beginning, no group join, no commits, fetch.queue.backoff.ms={FETCH_QUEUE_BACKOFF_MS}, \
         other fetch settings at librdkafka defaults"
    )
}

/// Creates a topic with replication factor 1 through the admin API.
pub async fn create_topic(
    bootstrap: SocketAddr,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<()> {
    let spec = TopicSpec {
        name: topic,
        partitions,
        replication_factor: 1,
        replica_assignment: &[],
        configs: &[],
    };
    create_topic_with(&bootstrap.to_string(), &spec).await
}

/// A topic to create.
#[derive(Clone, Copy, Debug)]
pub struct TopicSpec<'a> {
    /// Its name.
    pub name: &'a str,
    /// Partition count.
    pub partitions: i32,
    /// Replicas per partition.
    pub replication_factor: i32,
    /// Replicas of each partition in order, the first preferred as leader; empty leaves the
    /// placement to the broker.
    pub replica_assignment: &'a [&'a [i32]],
    /// Topic-level settings, e.g. `("min.insync.replicas", "2")`.
    pub configs: &'a [(&'a str, &'a str)],
}

/// Creates a topic through the admin API; one that already exists is left as it is.
/// `bootstrap` is one or more comma-separated addresses.
pub async fn create_topic_with(bootstrap: &str, spec: &TopicSpec<'_>) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .context("creating the admin client")?;
    let replication = if spec.replica_assignment.is_empty() {
        TopicReplication::Fixed(spec.replication_factor)
    } else {
        TopicReplication::Variable(spec.replica_assignment)
    };
    let mut new_topic = NewTopic::new(spec.name, spec.partitions, replication);
    for &(key, value) in spec.configs {
        new_topic = new_topic.set(key, value);
    }
    let options = AdminOptions::new()
        .request_timeout(Some(ADMIN_TIMEOUT))
        .operation_timeout(Some(ADMIN_TIMEOUT));
    let results = admin
        .create_topics([&new_topic], &options)
        .await
        .with_context(|| format!("CreateTopics {}", spec.name))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => bail!("CreateTopics {name}: {code}"),
        }
    }
    Ok(())
}

/// One partition's leader and in-sync replicas, as Metadata gives them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionState {
    /// The partition.
    pub partition: i32,
    /// The leader's broker id, -1 while there is none.
    pub leader: i32,
    /// Broker ids of the in-sync replicas.
    pub isr: Vec<i32>,
}

/// Asks one broker (whichever librdkafka picks) for the leader and ISR of every partition of
/// `topic`, waiting at most `timeout`. Blocking.
pub fn topic_state<C: ClientContext>(
    client: &Client<C>,
    topic: &str,
    timeout: Duration,
) -> anyhow::Result<Vec<PartitionState>> {
    let metadata = client
        .fetch_metadata(Some(topic), timeout)
        .with_context(|| format!("Metadata for {topic}"))?;
    let found = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .with_context(|| format!("Metadata did not list topic {topic}"))?;
    if let Some(error) = found.error() {
        bail!("Metadata for {topic}: error {error:?}");
    }
    Ok(found
        .partitions()
        .iter()
        .map(|p| PartitionState {
            partition: p.id(),
            leader: p.leader(),
            isr: p.isr().to_vec(),
        })
        .collect())
}

/// Asks the broker for a topic's partition count, which also opens the client's connection so
/// the measurement that follows does not pay for it. A topic created a moment ago may not be
/// listed yet, so errors are retried until `ADMIN_TIMEOUT`. Blocking.
pub fn partition_count<C: ClientContext>(client: &Client<C>, topic: &str) -> anyhow::Result<i32> {
    let deadline = Instant::now() + ADMIN_TIMEOUT;
    loop {
        match partition_count_once(client, topic) {
            Ok(count) => return Ok(count),
            Err(error) if Instant::now() >= deadline => return Err(error),
            Err(_) => std::thread::sleep(METADATA_RETRY_INTERVAL),
        }
    }
}

fn partition_count_once<C: ClientContext>(client: &Client<C>, topic: &str) -> anyhow::Result<i32> {
    let metadata = client
        .fetch_metadata(Some(topic), ADMIN_TIMEOUT)
        .with_context(|| format!("Metadata for {topic}"))?;
    let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else {
        bail!("Metadata did not list topic {topic}");
    };
    if let Some(error) = found.error() {
        bail!("Metadata for {topic}: error {error:?}");
    }
    let count = found.partitions().len();
    if count == 0 {
        bail!("Metadata for {topic}: no partitions");
    }
    i32::try_from(count).context("partition count fits i32")
}

/// Waits until every partition of `topic` has a leader and `replicas` in-sync replicas, so a
/// measurement does not start while leaders are still being elected. `bootstrap` is one or
/// more comma-separated addresses. Blocking.
pub fn wait_partitions_led(
    bootstrap: &str,
    topic: &str,
    replicas: usize,
    timeout: Duration,
) -> anyhow::Result<()> {
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    let client: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .context("creating a metadata client")?;
    let deadline = Instant::now() + timeout;
    loop {
        let last = partitions_led(client.client(), topic, replicas);
        match last {
            Ok(true) => return Ok(()),
            _ if Instant::now() >= deadline => {
                bail!(
                    "{topic}: not every partition had a leader and {replicas} in-sync replicas \
                     within {timeout:?} (last: {last:?})"
                )
            }
            _ => std::thread::sleep(METADATA_RETRY_INTERVAL),
        }
    }
}

fn partitions_led<C: ClientContext>(
    client: &Client<C>,
    topic: &str,
    replicas: usize,
) -> anyhow::Result<bool> {
    let partitions = topic_state(client, topic, ADMIN_TIMEOUT)?;
    Ok(!partitions.is_empty()
        && partitions
            .iter()
            .all(|p| p.leader >= 0 && p.isr.len() == replicas))
}
