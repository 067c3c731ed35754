//! End-to-end latency at a fixed rate: the producer writes the time each message was due (and
//! its index) into the start of its payload, a consumer in the same process subtracts it from
//! the time of receipt. Both read one monotonic clock, so no clock synchronisation is involved.
//!
//! The first `rate × warm-up` messages are received but not counted, so connection setup and
//! the consumer's first fetch do not stand in for steady state.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::consume::{self, ConsumeSpec};
use crate::kafka_client::{self, Acks, Idempotence};
use crate::pacing::Rate;
use crate::produce::{self, ProduceSpec, PAYLOAD_BYTES_MAX};
use crate::rss::RssSampler;

/// Bytes of the stamp at the start of each payload: nanoseconds since the run's clock base
/// when the message was due, then the message's index, both little-endian `u64`.
const STAMP_BYTES: usize = 16;

/// Bound on the latency samples kept (at 8 bytes each, 80 MB).
const SAMPLES_MAX: u64 = 10_000_000;

/// Time the consumer has, after the producer is done, to receive what is still in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Command line of `ferrymq-bench e2e`.
#[derive(clap::Args)]
pub struct Args {
    /// Broker address (loopback only).
    #[arg(long, value_parser = kafka_client::loopback_addr)]
    bootstrap: SocketAddr,
    /// Topic to use; it should be empty, since the consumer reads from the beginning.
    #[arg(long)]
    topic: String,
    /// Messages per second.
    #[arg(long, default_value_t = 20_000)]
    rate: u32,
    /// Measured seconds, after the warm-up.
    #[arg(long, default_value_t = 10)]
    duration_s: u64,
    /// Seconds sent before measuring.
    #[arg(long, default_value_t = 2)]
    warmup_s: u64,
    /// Payload size of each message in bytes (at least 16, for the stamp).
    #[arg(long, default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(STAMP_BYTES as i64..=PAYLOAD_BYTES_MAX as i64))]
    size: u32,
    /// Acknowledgement level.
    #[arg(long, value_enum, default_value = "1")]
    acks: Acks,
    /// Partitions to spread messages over, round robin.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=10_000))]
    partitions: i32,
    /// Create the topic first, with `--partitions` partitions.
    #[arg(long)]
    create_topic: bool,
    /// Sample this process's memory (the broker's) during the run.
    #[arg(long)]
    broker_pid: Option<u32>,
}

/// What one latency run should do.
#[derive(Clone, Debug)]
pub struct LatencySpec {
    /// Producer side: topic, size, acks, partitions; its rate is the fixed rate.
    pub produce: ProduceSpec,
    /// Messages with a smaller index are received but not measured.
    pub warmup_messages: u64,
}

/// What one latency run measured.
#[derive(Clone, Debug)]
pub struct LatencyOutcome {
    /// Messages the producer had delivered.
    pub delivered: u64,
    /// Rate actually reached by the producer, messages per second.
    pub achieved_per_s: f64,
    /// Messages received by the consumer, warm-up included.
    pub received: u64,
    /// Distribution of the measured (post-warm-up) latencies.
    pub latency: LatencySummary,
}

/// Percentiles of a set of latencies.
#[derive(Clone, Copy, Debug, Default)]
pub struct LatencySummary {
    /// Latencies measured.
    pub samples: u64,
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// 99.9th percentile.
    pub p999: Duration,
    /// Largest.
    pub max: Duration,
}

impl LatencySummary {
    /// Summarises latencies in nanoseconds (sorts them in place); all zero if empty.
    pub fn from_nanos(samples: &mut [u64]) -> LatencySummary {
        samples.sort_unstable();
        let at = |quantile: f64| {
            // Nearest rank: the smallest value with at least `quantile` of samples at or below.
            let rank = (quantile * samples.len() as f64).ceil() as usize;
            samples
                .get(rank.clamp(1, samples.len().max(1)) - 1)
                .map_or(Duration::ZERO, |&nanos| Duration::from_nanos(nanos))
        };
        LatencySummary {
            samples: samples.len() as u64,
            p50: at(0.50),
            p99: at(0.99),
            p999: at(0.999),
            max: samples
                .last()
                .map_or(Duration::ZERO, |&n| Duration::from_nanos(n)),
        }
    }
}

/// Runs `ferrymq-bench e2e`.
pub async fn run(args: Args) -> anyhow::Result<()> {
    if args.create_topic {
        kafka_client::create_topic(args.bootstrap, &args.topic, args.partitions).await?;
    }
    let rate = Rate::new(args.rate).context("--rate must be positive")?;
    let spec = spec(
        ProduceSpec {
            bootstrap: args.bootstrap,
            topic: args.topic,
            messages: 0,
            message_bytes: args.size as usize,
            acks: args.acks,
            idempotence: Idempotence::Off,
            inflight_requests_max: kafka_client::INFLIGHT_REQUESTS_MAX,
            partitions: args.partitions,
            rate: Some(rate),
            timeout: Duration::ZERO,
        },
        Duration::from_secs(args.warmup_s),
        Duration::from_secs(args.duration_s),
    )?;
    let sampler = args.broker_pid.map(RssSampler::start);
    let outcome = measure(spec).await?;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let l = &outcome.latency;
    println!(
        "e2e: {} delivered at {:.0} msgs/s, {} received, {} measured: p50 {:.2} ms, p99 {:.2} ms, \
         p99.9 {:.2} ms, max {:.2} ms",
        outcome.delivered,
        outcome.achieved_per_s,
        outcome.received,
        l.samples,
        ms(l.p50),
        ms(l.p99),
        ms(l.p999),
        ms(l.max)
    );
    if let Some(sampler) = sampler {
        println!("broker: {}", sampler.finish().describe());
    }
    Ok(())
}

/// Completes a producer spec for a latency run of `warmup + duration` at its rate: sets the
/// message count and a timeout with room to drain.
pub fn spec(
    mut produce: ProduceSpec,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<LatencySpec> {
    let rate = produce.rate.context("a latency run needs a rate")?;
    let total = warmup + duration;
    let messages = (total.as_secs_f64() * f64::from(rate.per_s())).round() as u64;
    let warmup_messages = (warmup.as_secs_f64() * f64::from(rate.per_s())).round() as u64;
    if messages > SAMPLES_MAX {
        bail!("{messages} messages exceed the {SAMPLES_MAX} samples kept; shorten the run");
    }
    if produce.message_bytes < STAMP_BYTES {
        bail!(
            "payloads of {} bytes cannot hold the stamp",
            produce.message_bytes
        );
    }
    produce.messages = messages;
    produce.timeout = total + DRAIN_TIMEOUT;
    Ok(LatencySpec {
        produce,
        warmup_messages,
    })
}

/// Runs a paced producer and a consumer side by side and summarises the latencies.
pub async fn measure(spec: LatencySpec) -> anyhow::Result<LatencyOutcome> {
    let base = Instant::now();
    let warmup_messages = spec.warmup_messages;
    // The consumer stops at this many messages; unknown (unbounded) until the producer is done.
    let target = Arc::new(AtomicU64::new(u64::MAX));
    let consumer = {
        let target = Arc::clone(&target);
        let consume = ConsumeSpec {
            bootstrap: spec.produce.bootstrap,
            topic: spec.produce.topic.clone(),
            timeout: spec.produce.timeout + DRAIN_TIMEOUT,
        };
        let capacity = spec.produce.messages as usize;
        tokio::task::spawn_blocking(move || {
            let mut samples = Vec::with_capacity(capacity);
            let received = consume::receive_until(&consume, &target, |payload| {
                let now = nanos_since(base, Instant::now());
                let Some(stamp) = Stamp::read(payload) else {
                    return;
                };
                if stamp.index >= warmup_messages && samples.len() < capacity {
                    samples.push(now.saturating_sub(stamp.due_nanos));
                }
            });
            received.map(|throughput| (throughput.messages, samples))
        })
    };
    let produce = spec.produce.clone();
    let produced = tokio::task::spawn_blocking(move || {
        produce::send_all(&produce, |index, due, payload| {
            let stamp = Stamp {
                due_nanos: nanos_since(base, due),
                index,
            };
            stamp.write(payload);
        })
    })
    .await
    .context("producer thread")?;
    // Whatever happened to the producer, tell the consumer how many to wait for.
    let delivered = produced.as_ref().map_or(0, |p| p.throughput.messages);
    target.store(delivered, Ordering::Release);
    let (received, mut samples) = consumer.await.context("consumer thread")??;
    let produced = produced?.complete()?;
    if received < delivered {
        bail!("the consumer received {received} of {delivered} delivered messages in time");
    }
    Ok(LatencyOutcome {
        delivered,
        achieved_per_s: produced.throughput.messages_per_s(),
        received,
        latency: LatencySummary::from_nanos(&mut samples),
    })
}

fn nanos_since(base: Instant, at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(base).as_nanos())
        .expect("a run lasts under 584 years")
}

/// What the producer writes at the start of each payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    /// When the message was due, nanoseconds since the run's clock base.
    due_nanos: u64,
    /// Position of the message in the run.
    index: u64,
}

impl Stamp {
    fn write(self, payload: &mut [u8]) {
        payload[..8].copy_from_slice(&self.due_nanos.to_le_bytes());
        payload[8..STAMP_BYTES].copy_from_slice(&self.index.to_le_bytes());
    }

    fn read(payload: &[u8]) -> Option<Stamp> {
        let word = |at: usize| -> Option<u64> {
            let bytes: [u8; 8] = payload.get(at..at + 8)?.try_into().ok()?;
            Some(u64::from_le_bytes(bytes))
        };
        Some(Stamp {
            due_nanos: word(0)?,
            index: word(8)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let mut nanos: Vec<u64> = (1..=1000).rev().map(|ms| ms * 1_000_000).collect();
        let summary = LatencySummary::from_nanos(&mut nanos);
        assert_eq!(summary.samples, 1000);
        assert_eq!(summary.p50, Duration::from_millis(500));
        assert_eq!(summary.p99, Duration::from_millis(990));
        assert_eq!(summary.p999, Duration::from_millis(999));
        assert_eq!(summary.max, Duration::from_millis(1000));
    }

    #[test]
    fn no_samples_summarise_to_zero() {
        let summary = LatencySummary::from_nanos(&mut []);
        assert_eq!(summary.samples, 0);
        assert_eq!(summary.p99, Duration::ZERO);
    }

    #[test]
    fn stamp_round_trips_through_a_payload() {
        let mut payload = vec![0_u8; 1024];
        let stamp = Stamp {
            due_nanos: 42,
            index: 7,
        };
        stamp.write(&mut payload);
        assert_eq!(Stamp::read(&payload), Some(stamp));
        assert_eq!(Stamp::read(&payload[..12]), None);
    }
}
