//! The `ferrymq` binary: one process per node. `ferrymq serve` runs a broker; with no settings
//! it is a working single node on 127.0.0.1:9092 with data in `./ferrymq-data`.
//!
//! This crate wires and configures; it holds no protocol or replication logic.

mod cli;
mod logging;
mod serve;
mod settings;

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

/// FerryMQ: a highly available message queue that speaks the Kafka protocol.
#[derive(Debug, Parser)]
#[command(name = "ferrymq", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a broker (a single node with embedded defaults when given nothing else).
    #[command(after_help = settings::help_text())]
    Serve(ServeArgs),
    /// Print the settings table in Markdown (the source of docs/configuration.md).
    Settings,
    /// A local cluster of child processes on loopback (Ctrl-C stops it).
    Dev(cli::dev::DevArgs),
    /// Inspect a running cluster.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Create, list, describe, alter and delete topics (Kafka protocol).
    #[command(subcommand)]
    Topic(cli::topic::TopicCommand),
    /// List, describe, reset the offsets of and delete consumer groups (Kafka protocol).
    #[command(subcommand)]
    Group(cli::group::GroupCommand),
    /// Write lines from stdin to a topic.
    Produce(cli::produce::ProduceArgs),
    /// Print a topic's records.
    Consume(cli::consume::ConsumeArgs),
    /// List, create and delete replication policies (admin HTTP API).
    #[command(subcommand)]
    Policy(cli::policy::PolicyCommand),
}

#[derive(Debug, Subcommand)]
enum ClusterCommand {
    /// Brokers (live or fenced), the active controller, and each partition's leader, replicas
    /// and ISR. Exits 0 when healthy, 2 when a broker is fenced or a partition has no leader.
    Status {
        #[command(flatten)]
        bootstrap: cli::Bootstrap,
    },
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// TOML file of settings (keys as in the table below; dotted keys or tables).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Kafka listener address (setting `listen`).
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<String>,
    /// Address given to clients, if not the listen address (setting `advertised.listener`).
    #[arg(long, value_name = "HOST:PORT")]
    advertised_listener: Option<String>,
    /// Data directory (setting `data.dir`).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Node id (setting `node.id`).
    #[arg(long)]
    node_id: Option<i32>,
    /// Controller listener for Raft and broker RPCs (setting `controller.listen`).
    #[arg(long, value_name = "HOST:PORT")]
    controller_listen: Option<String>,
    /// Controller quorum voters, `id@host:port,...` (setting `controller.voters`).
    #[arg(long, value_name = "ID@HOST:PORT,...")]
    controller_voters: Option<String>,
    /// Log filter, e.g. `info` or `info,ferrymq_broker=debug` (setting `log.level`).
    #[arg(long)]
    log_level: Option<String>,
    /// Admin HTTP listener for /metrics, /health and /v1 (setting `admin.listen`; port 0 picks one).
    #[arg(long, value_name = "HOST:PORT")]
    admin_listen: Option<String>,
    /// Log format: text or json (setting `log.format`).
    #[arg(long, value_name = "text|json")]
    log_format: Option<String>,
    /// Any setting, as NAME=VALUE; repeatable (like Kafka's --override).
    #[arg(long = "override", value_name = "NAME=VALUE")]
    overrides: Vec<String>,
}

impl ServeArgs {
    fn flags(&self) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        let mut put = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                out.push((k.to_string(), v));
            }
        };
        put("listen", self.listen.clone());
        put("advertised.listener", self.advertised_listener.clone());
        put(
            "data.dir",
            self.data_dir.as_ref().map(|p| p.display().to_string()),
        );
        put("node.id", self.node_id.map(|n| n.to_string()));
        put("controller.listen", self.controller_listen.clone());
        put("controller.voters", self.controller_voters.clone());
        put("admin.listen", self.admin_listen.clone());
        put("log.level", self.log_level.clone());
        put("log.format", self.log_format.clone());
        for o in &self.overrides {
            let (k, v) = o
                .split_once('=')
                .with_context(|| format!("--override {o:?} is not NAME=VALUE"))?;
            out.push((k.trim().to_string(), v.to_string()));
        }
        Ok(out)
    }
}

fn tokio_runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Runs a client subcommand and exits with its code (see `cli` for their meaning), printing
/// the error on stderr.
fn run_client(f: impl std::future::Future<Output = Result<i32>>) -> ! {
    let outcome = tokio_runtime().and_then(|rt| rt.block_on(f));
    let code = match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            cli::exit_code(&e)
        }
    };
    std::process::exit(code)
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let ok = |r: Result<()>| r.map(|_| cli::EXIT_OK);
    match cli.command {
        Command::Topic(cmd) => run_client(async { ok(cli::topic::run(cmd).await) }),
        Command::Group(cmd) => run_client(async { ok(cli::group::run(cmd).await) }),
        Command::Produce(args) => run_client(async { ok(cli::produce::run(args).await) }),
        Command::Consume(args) => run_client(async { ok(cli::consume::run(args).await) }),
        Command::Policy(cmd) => run_client(async { ok(cli::policy::run(cmd)) }),
        Command::Settings => {
            print!("{}", settings::markdown_table());
            Ok(())
        }
        Command::Dev(args) => tokio_runtime()?.block_on(cli::dev::run(args)),
        Command::Cluster(ClusterCommand::Status { bootstrap }) => {
            run_client(cli::cluster::status(&bootstrap.bootstrap))
        }
        Command::Serve(args) => {
            let env: BTreeMap<String, String> = std::env::vars()
                .filter(|(k, _)| k.starts_with("FERRYMQ_"))
                .collect();
            let resolved = settings::Resolved::new(args.config.as_deref(), &env, &args.flags()?)?;
            logging::init(resolved.get("log.level"), resolved.get("log.format"))?;
            for (name, value, source) in resolved.all().filter(|(_, _, src)| *src != "default") {
                let value = if settings::SECRET_SETTINGS.contains(&name) {
                    "<redacted>"
                } else {
                    value
                };
                tracing::info!(setting = name, value, source, "setting");
            }
            let metrics =
                ferrymq_admin::metrics::install().context("installing the metrics recorder")?;
            let cfg = serve::build_config(&resolved)?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("ferrymq")
                .build()?;
            runtime
                .block_on(serve::run(cfg, metrics))
                .inspect_err(|e| tracing::error!(error = format!("{e:#}"), "broker failed"))
        }
    }
}
