//! Consumer throughput through librdkafka's `BaseConsumer` with manual assignment of every
//! partition from the beginning: no consumer group, no commits (FerryMQ does not coordinate
//! groups yet).
//!
//! The receive loop is shared with the latency measurement, which passes a closure that reads
//! each payload's stamp and a target that is only known once the producer has finished.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::kafka_client;
use crate::rss::RssSampler;
use crate::throughput::Throughput;

/// How long one poll may block, so the loop notices its deadline and a changed target.
const POLL_TIMEOUT: Duration = Duration::from_millis(50);

/// Consecutive consumer errors after which the run gives up.
const ERRORS_MAX: u32 = 100;

/// Command line of `ferrymq-bench consume`.
#[derive(clap::Args)]
pub struct Args {
    /// Broker address (loopback only).
    #[arg(long, value_parser = kafka_client::loopback_addr)]
    bootstrap: SocketAddr,
    /// Topic to read, every partition from the beginning.
    #[arg(long)]
    topic: String,
    /// Stop after this many messages.
    #[arg(long)]
    messages: u64,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 120)]
    timeout_s: u64,
    /// Sample this process's memory (the broker's) during the run.
    #[arg(long)]
    broker_pid: Option<u32>,
}

/// What one consumer run should read.
#[derive(Clone, Debug)]
pub struct ConsumeSpec {
    /// Broker to read from.
    pub bootstrap: SocketAddr,
    /// Topic to read, every partition from the beginning.
    pub topic: String,
    /// Bound on the whole run.
    pub timeout: Duration,
}

/// Runs `ferrymq-bench consume`.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let spec = ConsumeSpec {
        bootstrap: args.bootstrap,
        topic: args.topic,
        timeout: Duration::from_secs(args.timeout_s),
    };
    let sampler = args.broker_pid.map(RssSampler::start);
    let throughput = measure(spec, args.messages).await?;
    println!("consume: {throughput}");
    if let Some(sampler) = sampler {
        println!("broker: {}", sampler.finish().describe());
    }
    if throughput.messages < args.messages {
        bail!(
            "received {} of {} messages in time",
            throughput.messages,
            args.messages
        );
    }
    Ok(())
}

/// Measures consumer throughput reading `messages` messages, from a blocking thread.
pub async fn measure(spec: ConsumeSpec, messages: u64) -> anyhow::Result<Throughput> {
    tokio::task::spawn_blocking(move || {
        let target = AtomicU64::new(messages);
        receive_until(&spec, &target, |_| {})
    })
    .await
    .context("consumer thread")?
}

/// Reads until `target` messages have arrived (the target may be raised or lowered while this
/// runs) or the deadline passes, calling `on_payload` for each. The interval runs from the
/// assignment to the last message received. Blocking.
pub fn receive_until(
    spec: &ConsumeSpec,
    target: &AtomicU64,
    mut on_payload: impl FnMut(&[u8]),
) -> anyhow::Result<Throughput> {
    let consumer: BaseConsumer = kafka_client::consumer_config(spec.bootstrap)
        .create()
        .context("creating the consumer")?;
    let partitions = kafka_client::partition_count(consumer.client(), &spec.topic)?;
    let mut assignment = TopicPartitionList::with_capacity(partitions as usize);
    for partition in 0..partitions {
        assignment.add_partition_offset(&spec.topic, partition, Offset::Beginning)?;
    }
    let start = Instant::now();
    let deadline = start + spec.timeout;
    consumer.assign(&assignment).context("assign")?;
    let (mut messages, mut payload_bytes, mut last) = (0_u64, 0_u64, start);
    let mut errors_in_a_row = 0;
    while messages < target.load(Ordering::Acquire) && Instant::now() < deadline {
        match consumer.poll(POLL_TIMEOUT) {
            Some(Ok(message)) => {
                let payload = message.payload().unwrap_or_default();
                on_payload(payload);
                messages += 1;
                payload_bytes += payload.len() as u64;
                last = Instant::now();
                errors_in_a_row = 0;
            }
            Some(Err(error)) => {
                errors_in_a_row += 1;
                if errors_in_a_row >= ERRORS_MAX {
                    bail!("{errors_in_a_row} consumer errors in a row, the last: {error}");
                }
            }
            None => {}
        }
    }
    Ok(Throughput {
        messages,
        payload_bytes,
        elapsed: last - start,
    })
}
