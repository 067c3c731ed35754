//! `ferrymq-bench`: measures FerryMQ through a real Kafka client (librdkafka) and, in the same
//! run, the machine's own limit through a trivial TCP-to-file sink, so every broker figure can be
//! read as a share of what this machine can do at all.
//!
//! Each subcommand is one measurement; `suite` starts a broker and runs the whole matrix, then
//! prints a Markdown report for `docs/benchmarks.md`; `cluster` does the same for replication
//! (a single node against a 3-node cluster) and leader failover. It is a tool that prints
//! figures, not a test: nothing here passes or fails on a number, it only says whether a target
//! was met.

mod broker_nodes;
mod child_process;
mod cluster;
mod cluster_report;
mod consume;
mod cpu;
mod failover;
mod failover_producer;
mod groups;
mod kafka_client;
mod latency;
mod machine;
mod pacing;
mod produce;
mod report;
mod rss;
mod run_dir;
mod sink;
mod suite;
mod throughput;

use clap::{Parser, Subcommand};

/// Command line of `ferrymq-bench`.
#[derive(Parser)]
#[command(name = "ferrymq-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// One measurement, or the whole suite.
#[derive(Subcommand)]
enum Command {
    /// Producer throughput through librdkafka.
    Produce(produce::Args),
    /// Consumer throughput through librdkafka (manual assignment, no consumer group).
    Consume(consume::Args),
    /// End-to-end latency at a fixed rate: the producer stamps the payload, the consumer
    /// computes now minus stamp.
    E2e(latency::Args),
    /// Baseline server: appends whatever it receives over TCP to a file, acknowledging chunks.
    SinkServer(sink::ServerArgs),
    /// Baseline client: pushes bytes to a sink server in chunks with a bounded window.
    SinkClient(sink::ClientArgs),
    /// Starts a broker, runs the whole matrix beside the sink baseline, prints Markdown.
    Suite(suite::Args),
    /// Single node vs a 3-node cluster (replication factor 3) in one run, then leader-kill
    /// failover trials; prints Markdown.
    Cluster(cluster::Args),
    /// Starts a broker; measures group rebalance time (10 members, one joins) and compaction
    /// throughput while producing; prints Markdown.
    Groups(groups::Args),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Produce(args) => produce::run(args).await,
            Command::Consume(args) => consume::run(args).await,
            Command::E2e(args) => latency::run(args).await,
            Command::SinkServer(args) => sink::run_server(args).await,
            Command::SinkClient(args) => sink::run_client(args).await,
            Command::Suite(args) => suite::run(args).await,
            Command::Cluster(args) => cluster::run(args).await,
            Command::Groups(args) => groups::run(args).await,
        }
    })
}
