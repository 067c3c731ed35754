//! Workloads through librdkafka, each on its own thread, recording into the history:
//!
//! - a producer (acks=all; idempotence on or off) sending unique numbered values round-robin
//!   over the partitions at a fixed rate, recording each delivery report as it arrives;
//! - an assign reader: manual assignment of every partition from the start, tailing them for
//!   the whole run (it sees what consumers see while faults happen);
//! - a group member (subscribe, manual commits after each poll batch) and an observer that
//!   fetches the group's committed offsets every second; they run only where the broker serves
//!   the group APIs;
//! - the final read of every partition from the start to its high watermark, after the faults.
//!
//! Every loop is bounded in rate and stops when asked.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

use super::history::{value_for, Reader, Recorder};

/// Most sends awaiting their delivery report: bounds what the client queues while a partition
/// is unavailable.
const UNRESOLVED_MAX: u64 = 20_000;
/// How often the send loop wakes.
const SEND_TICK: Duration = Duration::from_millis(10);

/// How the workloads are configured.
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    /// Bootstrap servers.
    pub bootstrap: String,
    /// Topic.
    pub topic: String,
    /// Partitions written and read.
    pub partitions: i32,
    /// Values sent per second (all partitions together).
    pub rate_per_s: u32,
    /// Producer idempotence.
    pub idempotence: bool,
    /// Run the consumer-group member and the committed-offset observer.
    pub groups: bool,
}

/// Workload threads and their stop flags.
pub struct Workloads {
    stop_producer: Arc<AtomicBool>,
    stop_readers: Arc<AtomicBool>,
    producer: Option<JoinHandle<()>>,
    readers: Vec<JoinHandle<()>>,
}

impl Workloads {
    /// Starts every workload.
    pub fn start(cfg: &WorkloadConfig, rec: Arc<Recorder>) -> Result<Workloads> {
        let stop_producer = Arc::new(AtomicBool::new(false));
        let stop_readers = Arc::new(AtomicBool::new(false));
        let producer = {
            let (cfg, rec, stop) = (cfg.clone(), rec.clone(), stop_producer.clone());
            let p = make_producer(&cfg, rec.clone())?;
            std::thread::Builder::new()
                .name("chaos-producer".into())
                .spawn(move || produce_loop(p, &cfg, &rec, &stop))?
        };
        let mut readers = Vec::new();
        {
            let (cfg, rec, stop) = (cfg.clone(), rec.clone(), stop_readers.clone());
            readers.push(
                std::thread::Builder::new()
                    .name("chaos-assign".into())
                    .spawn(move || assign_reader(&cfg, &rec, &stop))?,
            );
        }
        if cfg.groups {
            let (c, r, s) = (cfg.clone(), rec.clone(), stop_readers.clone());
            readers.push(
                std::thread::Builder::new()
                    .name("chaos-group".into())
                    .spawn(move || group_member(&c, &r, &s))?,
            );
            let (c, r, s) = (cfg.clone(), rec.clone(), stop_readers.clone());
            readers.push(
                std::thread::Builder::new()
                    .name("chaos-commits".into())
                    .spawn(move || commit_observer(&c, &r, &s))?,
            );
        }
        Ok(Workloads {
            stop_producer,
            stop_readers,
            producer: Some(producer),
            readers,
        })
    }

    /// Stops sending and waits (bounded) for the outstanding delivery reports.
    pub fn stop_producer(&mut self) {
        self.stop_producer.store(true, Ordering::Relaxed);
        if let Some(p) = self.producer.take() {
            let _ = p.join();
        }
    }

    /// Stops the readers.
    pub fn stop_readers(&mut self) {
        self.stop_readers.store(true, Ordering::Relaxed);
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }
}

impl Drop for Workloads {
    fn drop(&mut self) {
        self.stop_producer();
        self.stop_readers();
    }
}

/// Delivery reports go straight into the history, timed as they arrive.
struct DeliveryRecorder {
    rec: Arc<Recorder>,
}

impl ClientContext for DeliveryRecorder {
    fn log(&self, _level: RDKafkaLogLevel, fac: &str, message: &str) {
        client_log("producer", fac, message);
    }
}

/// librdkafka's own log, asked for with `FERRYMQ_CHAOS_CLIENT_DEBUG` (its `debug` contexts,
/// e.g. `metadata,topic,broker,eos,fetch`), on stderr with wall-clock milliseconds to line up
/// with the brokers' logs when a failover takes longer than the cluster did.
fn client_log(client: &str, fac: &str, message: &str) {
    // Not asked for: dropped, as the default context does without a `log` backend.
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if !*ON.get_or_init(|| std::env::var_os("FERRYMQ_CHAOS_CLIENT_DEBUG").is_some()) {
        return;
    }
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    eprintln!("rdkafka {client} {ms} {fac} {message}");
}

/// Turns librdkafka's debug log on for `c` when `FERRYMQ_CHAOS_CLIENT_DEBUG` asks for it.
fn client_debug(c: &mut ClientConfig) {
    if let Ok(contexts) = std::env::var("FERRYMQ_CHAOS_CLIENT_DEBUG") {
        c.set("debug", contexts)
            .set_log_level(RDKafkaLogLevel::Debug);
    }
}

/// The assign-only reader's context: nothing but the debug log.
struct AssignReader;

impl ClientContext for AssignReader {
    fn log(&self, _level: RDKafkaLogLevel, fac: &str, message: &str) {
        client_log("assign-reader", fac, message);
    }
}

impl ConsumerContext for AssignReader {}

impl ProducerContext for DeliveryRecorder {
    type DeliveryOpaque = Box<u64>;

    fn delivery(&self, result: &DeliveryResult<'_>, seq: Self::DeliveryOpaque) {
        let outcome = match result {
            Ok(m) => Ok(m.offset()),
            Err((e, _)) => Err(e.to_string()),
        };
        self.rec.delivered(*seq, outcome);
    }
}

fn make_producer(
    cfg: &WorkloadConfig,
    rec: Arc<Recorder>,
) -> Result<ThreadedProducer<DeliveryRecorder>> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", cfg.idempotence.to_string())
        .set("linger.ms", "5")
        // A request to a paused or cut-off leader is abandoned after this long and retried on
        // the new leader; librdkafka's 30 s default would measure the client, not the broker.
        .set("request.timeout.ms", "5000")
        .set("message.timeout.ms", "60000");
    client_debug(&mut c);
    if !cfg.idempotence {
        // Without idempotence only one request in flight keeps retries in order.
        c.set("max.in.flight.requests.per.connection", "1");
    }
    Ok(c.create_with_context(DeliveryRecorder { rec })?)
}

fn produce_loop(
    p: ThreadedProducer<DeliveryRecorder>,
    cfg: &WorkloadConfig,
    rec: &Recorder,
    stop: &AtomicBool,
) {
    let per_tick = (cfg.rate_per_s as u64 * SEND_TICK.as_millis() as u64 / 1000).max(1);
    let mut next_partition = 0;
    let started = Instant::now();
    let mut ticks: u32 = 0;
    while !stop.load(Ordering::Relaxed) {
        ticks += 1;
        let h = rec.snapshot_counts();
        if h.sent - h.resolved < UNRESOLVED_MAX {
            for _ in 0..per_tick {
                let partition = next_partition;
                next_partition = (next_partition + 1) % cfg.partitions;
                let seq = rec.send(partition);
                let value = value_for(seq);
                let mut record: BaseRecord<(), String, Box<u64>> =
                    BaseRecord::with_opaque_to(&cfg.topic, Box::new(seq))
                        .partition(partition)
                        .payload(&value);
                loop {
                    match p.send(record) {
                        Ok(()) => break,
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                            record = r;
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        Err((e, r)) => {
                            rec.delivered(*r.delivery_opaque, Err(e.to_string()));
                            break;
                        }
                    }
                }
            }
        }
        // Pace by the clock, not by sleeping a fixed time after the work.
        let due = started + SEND_TICK * ticks;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let _ = p.flush(Duration::from_secs(70));
}

/// A consumer that never joins a group (assign only), reading from the start.
fn assign_consumer(cfg: &WorkloadConfig) -> Result<BaseConsumer<AssignReader>> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.bootstrap)
        .set("group.id", "chaos-assign")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "error")
        .set("enable.partition.eof", "false");
    client_debug(&mut c);
    Ok(c.create_with_context(AssignReader)?)
}

fn assign_from(
    c: &BaseConsumer<AssignReader>,
    cfg: &WorkloadConfig,
    next: &BTreeMap<i32, i64>,
) -> Result<()> {
    let mut tpl = TopicPartitionList::new();
    for p in 0..cfg.partitions {
        let o = next
            .get(&p)
            .map_or(Offset::Beginning, |o| Offset::Offset(*o));
        tpl.add_partition_offset(&cfg.topic, p, o)?;
    }
    c.assign(&tpl)?;
    Ok(())
}

fn assign_reader(cfg: &WorkloadConfig, rec: &Recorder, stop: &AtomicBool) {
    let Ok(c) = assign_consumer(cfg) else {
        rec.reader_error("assign reader: cannot create the consumer".into());
        return;
    };
    let mut session = 0;
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    if let Err(e) = assign_from(&c, cfg, &next) {
        rec.reader_error(format!("assign reader: {e}"));
        return;
    }
    while !stop.load(Ordering::Relaxed) {
        match c.poll(Duration::from_millis(200)) {
            None => {}
            Some(Ok(m)) => {
                let value = m.payload().unwrap_or_default();
                rec.read(Reader::Assign, session, m.partition(), m.offset(), value);
                next.insert(m.partition(), m.offset() + 1);
            }
            Some(Err(e)) => {
                // An error the client could not retry (e.g. offset out of range): record it and
                // start a new session from the next offsets.
                rec.reader_error(format!("assign reader: {e}"));
                session += 1;
                std::thread::sleep(Duration::from_millis(500));
                let _ = assign_from(&c, cfg, &next);
            }
        }
    }
}

/// Counts rebalances, so reads after one start a new session.
struct RebalanceCounter {
    session: Arc<AtomicU32>,
}

impl ClientContext for RebalanceCounter {}

impl ConsumerContext for RebalanceCounter {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, _: &Rebalance<'_>) {
        self.session.fetch_add(1, Ordering::Relaxed);
    }
}

fn group_member(cfg: &WorkloadConfig, rec: &Recorder, stop: &AtomicBool) {
    let session = Arc::new(AtomicU32::new(0));
    let c: BaseConsumer<RebalanceCounter> = match ClientConfig::new()
        .set("bootstrap.servers", &cfg.bootstrap)
        .set("group.id", "chaos-group")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .create_with_context(RebalanceCounter {
            session: session.clone(),
        }) {
        Ok(c) => c,
        Err(e) => {
            rec.reader_error(format!("group member: {e}"));
            return;
        }
    };
    if let Err(e) = c.subscribe(&[&cfg.topic]) {
        rec.reader_error(format!("group member subscribe: {e}"));
        return;
    }
    let mut since_commit = 0;
    while !stop.load(Ordering::Relaxed) {
        if let Some(r) = c.poll(Duration::from_millis(200)) {
            match r {
                Ok(m) => {
                    let value = m.payload().unwrap_or_default();
                    let s = session.load(Ordering::Relaxed);
                    rec.read(Reader::Group, s, m.partition(), m.offset(), value);
                    since_commit += 1;
                }
                Err(e) => rec.reader_error(format!("group member: {e}")),
            }
        }
        if since_commit >= 200 {
            since_commit = 0;
            if let Err(e) = c.commit_consumer_state(CommitMode::Sync) {
                rec.reader_error(format!("group commit: {e}"));
            }
        }
    }
    let _ = c.commit_consumer_state(CommitMode::Sync);
}

fn commit_observer(cfg: &WorkloadConfig, rec: &Recorder, stop: &AtomicBool) {
    let c: BaseConsumer = match ClientConfig::new()
        .set("bootstrap.servers", &cfg.bootstrap)
        .set("group.id", "chaos-group")
        .set("enable.auto.commit", "false")
        .create()
    {
        Ok(c) => c,
        Err(e) => {
            rec.reader_error(format!("commit observer: {e}"));
            return;
        }
    };
    let mut tpl = TopicPartitionList::new();
    for p in 0..cfg.partitions {
        let _ = tpl.add_partition(&cfg.topic, p);
    }
    while !stop.load(Ordering::Relaxed) {
        if let Ok(got) = c.committed_offsets(tpl.clone(), Duration::from_secs(3)) {
            for e in got.elements() {
                if let Offset::Offset(o) = e.offset() {
                    rec.commit_seen(e.partition(), o);
                }
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Reads every partition from the start to its high watermark into the history as the final
/// read. Fails if the watermarks cannot be had or reading stalls for `stall_max`.
pub fn final_read(
    cfg: &WorkloadConfig,
    rec: &Recorder,
    stall_max: Duration,
) -> Result<BTreeMap<i32, i64>> {
    let c = assign_consumer(cfg)?;
    let mut ends = BTreeMap::new();
    for p in 0..cfg.partitions {
        let (_, high) = c
            .fetch_watermarks(&cfg.topic, p, Duration::from_secs(20))
            .with_context(|| format!("watermarks of partition {p}"))?;
        ends.insert(p, high);
    }
    assign_from(&c, cfg, &BTreeMap::new())?;
    let mut next: BTreeMap<i32, i64> = (0..cfg.partitions).map(|p| (p, 0)).collect();
    let mut last_progress = Instant::now();
    while ends.iter().any(|(p, end)| next[p] < *end) {
        if last_progress.elapsed() > stall_max {
            bail!("final read stalled at {next:?} of {ends:?}");
        }
        match c.poll(Duration::from_millis(200)) {
            None => {}
            Some(Ok(m)) => {
                if m.offset() < ends[&m.partition()] {
                    let value = m.payload().unwrap_or_default();
                    rec.read(Reader::Final, 0, m.partition(), m.offset(), value);
                }
                next.insert(m.partition(), m.offset() + 1);
                last_progress = Instant::now();
            }
            Some(Err(e)) => bail!("final read: {e}"),
        }
    }
    Ok(ends)
}
