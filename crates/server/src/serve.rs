//! `ferrymq serve`: builds the typed configuration of each layer from the resolved settings,
//! opens the data dir, starts the broker core and the Kafka listener, and stops cleanly on
//! SIGTERM or SIGINT.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use ferrymq_broker::group::state::GroupLimits;
use ferrymq_broker::group::GroupConfig;
use ferrymq_broker::{Broker, BrokerConfig, CleanerConfig, SystemClock};
use ferrymq_cluster::topic_config::TOPIC_CONFIGS;
use ferrymq_cluster::{meta_properties, Controller, ControllerConfig, TopicDefaults};
use ferrymq_kafka::{FrontEndConfig, Limits, ServerContext};
use ferrymq_types::NodeId;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::settings::Resolved;

/// Everything `serve` needs, typed.
#[derive(Debug)]
pub struct ServeConfig {
    /// Kafka listener.
    pub listen: String,
    /// Address given to clients.
    pub advertised: Option<String>,
    /// Broker core settings.
    pub broker: BrokerConfig,
    /// Front-end settings.
    pub front_end: FrontEndConfig,
    /// Topic creation defaults.
    pub default_num_partitions: i32,
    /// Default replication factor.
    pub default_replication_factor: i16,
    /// `broker.rack`.
    pub rack: Option<String>,
}

/// Builds the typed configuration, failing on the first invalid value.
pub fn build_config(r: &Resolved) -> Result<ServeConfig> {
    let mut topic_defaults = TopicDefaults::default();
    for def in TOPIC_CONFIGS {
        topic_defaults
            .0
            .insert(def.name.to_string(), r.get(def.broker_key).to_string());
    }
    for (name, value) in &topic_defaults.0 {
        ferrymq_cluster::topic_config::validate(name, value)
            .with_context(|| format!("default for topic config {name}"))?;
    }
    let node_id: i32 = r.parse("node.id")?;
    if node_id < 0 {
        bail!("node.id must not be negative");
    }
    let broker = BrokerConfig {
        node_id: NodeId(node_id),
        data_dir: PathBuf::from(r.get("data.dir")),
        topic_defaults,
        flush_interval_messages: r.parse::<u64>("log.flush.interval.messages")?.max(1),
        flush_interval_ms: r.parse::<u64>("log.flush.interval.ms")?.max(1),
        retention_check_interval_ms: r.parse::<u64>("log.retention.check.interval.ms")?.max(1),
        checkpoint_interval_ms: r
            .parse::<u64>("replica.high.watermark.checkpoint.interval.ms")?
            .max(1),
        writer_queue_max: r.parse::<usize>("log.writer.queue.max")?.max(1),
        groups: group_config(r)?,
        cleaner: CleanerConfig {
            enable: r.parse("log.cleaner.enable")?,
            backoff_ms: r.parse::<u64>("log.cleaner.backoff.ms")?.max(1),
            io_max_bytes_per_second: r.parse("log.cleaner.io.max.bytes.per.second")?,
            dedupe_buffer_bytes: r.parse("log.cleaner.dedupe.buffer.size")?,
        },
    };
    let front_end = FrontEndConfig {
        limits: Limits {
            request_bytes_max: r.parse("socket.request.max.bytes")?,
            connections_max: r.parse("max.connections")?,
            inflight_requests_max: r
                .parse::<usize>("max.inflight.requests.per.connection")?
                .max(1),
        },
        auto_create_topics: r.parse("auto.create.topics.enable")?,
        broker_settings: r
            .all()
            .map(|(k, v, _)| (k.to_string(), v.to_string()))
            .collect(),
    };
    let advertised = Some(r.get("advertised.listener").to_string()).filter(|a| !a.is_empty());
    Ok(ServeConfig {
        listen: r.get("listen").to_string(),
        advertised,
        broker,
        front_end,
        default_num_partitions: r.parse("num.partitions")?,
        default_replication_factor: r.parse("default.replication.factor")?,
        rack: Some(r.get("broker.rack").to_string()).filter(|s| !s.is_empty()),
    })
}

fn group_config(r: &Resolved) -> Result<GroupConfig> {
    let partitions: i32 = r.parse("offsets.topic.num.partitions")?;
    if partitions < 1 {
        bail!("offsets.topic.num.partitions must be at least 1");
    }
    let limits = GroupLimits {
        session_timeout_min_ms: r.parse("group.min.session.timeout.ms")?,
        session_timeout_max_ms: r.parse("group.max.session.timeout.ms")?,
        initial_rebalance_delay_ms: r.parse::<i32>("group.initial.rebalance.delay.ms")?.max(0),
    };
    if limits.session_timeout_min_ms > limits.session_timeout_max_ms {
        bail!("group.min.session.timeout.ms is above group.max.session.timeout.ms");
    }
    Ok(GroupConfig {
        offsets_topic_partitions: partitions,
        offsets_topic_replication_factor: r.parse("offsets.topic.replication.factor")?,
        offsets_topic_segment_bytes: r.parse::<i32>("offsets.topic.segment.bytes")?.max(1024),
        offsets_retention_ms: r.parse::<i64>("offsets.retention.minutes")?.max(1) * 60_000,
        offsets_retention_check_interval_ms: r
            .parse::<u64>("offsets.retention.check.interval.ms")?
            .max(1),
        offset_metadata_max_bytes: r.parse("offset.metadata.max.bytes")?,
        limits,
    })
}

fn split_host_port(addr: &str) -> Result<(String, u16)> {
    let (host, port) = addr
        .rsplit_once(':')
        .with_context(|| format!("{addr:?} is not host:port"))?;
    Ok((
        host.trim_matches(['[', ']']).to_string(),
        port.parse().with_context(|| format!("port in {addr:?}"))?,
    ))
}

/// Runs a broker until SIGTERM/SIGINT.
pub async fn run(cfg: ServeConfig) -> Result<()> {
    let data_dir = cfg.broker.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating data dir {}", data_dir.display()))?;
    let meta = meta_properties::load_or_init(&data_dir, cfg.broker.node_id, || {
        uuid::Uuid::new_v4().simple().to_string()
    })
    .context("checking meta.properties")?;
    let listener = TcpListener::bind(&cfg.listen)
        .await
        .with_context(|| format!("binding {}", cfg.listen))?;
    let local: SocketAddr = listener.local_addr()?;
    let (adv_host, adv_port) = match &cfg.advertised {
        Some(a) => split_host_port(a)?,
        None => (local.ip().to_string(), local.port()),
    };
    let controller = Controller::open(
        &data_dir.join("__cluster_metadata"),
        meta.cluster_id.clone(),
        ControllerConfig {
            node_id: cfg.broker.node_id,
            advertised_host: adv_host,
            advertised_port: adv_port,
            rack: cfg.rack.clone(),
            default_num_partitions: cfg.default_num_partitions,
            default_replication_factor: cfg.default_replication_factor,
        },
    )
    .context("opening cluster metadata")?;
    let broker = Broker::open(cfg.broker, Arc::new(controller), Arc::new(SystemClock))
        .context("opening the broker")?;
    broker.start();
    let ctx = Arc::new(ServerContext {
        broker: broker.clone(),
        config: cfg.front_end,
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let listening = tokio::spawn(ferrymq_kafka::listener::run(ctx, listener, stop_rx));
    tracing::info!(listen = %local, cluster_id = %meta.cluster_id, node_id = meta.node_id.0, "FerryMQ broker ready");
    wait_for_stop_signal().await?;
    tracing::info!("stopping: closing the listener and flushing logs");
    stop_tx.send_replace(true);
    let _ = listening.await;
    broker.shutdown().await.context("clean shutdown")?;
    Ok(())
}

async fn wait_for_stop_signal() -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
    Ok(())
}
