//! `ferrymq serve`: builds the typed configuration of each layer from the resolved settings,
//! opens the data dir, starts the broker core and the Kafka listener, and stops cleanly on
//! SIGTERM or SIGINT.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use ferrymq_broker::group::state::GroupLimits;
use ferrymq_broker::group::GroupConfig;
use ferrymq_broker::replication::fetcher::FetcherConfig;
use ferrymq_broker::{Broker, BrokerConfig, CleanerConfig, SystemClock};
use ferrymq_cluster::topic_config::TOPIC_CONFIGS;
use ferrymq_cluster::{meta_properties, Controller, ControllerConfig, TopicDefaults};
use ferrymq_kafka::replica_transport::KafkaReplicaTransport;
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
    /// `controller.listen`.
    pub controller_listen: Option<String>,
    /// `controller.voters`.
    pub voters: BTreeMap<NodeId, String>,
    /// `broker.heartbeat.interval.ms`.
    pub heartbeat_interval: Duration,
    /// `broker.session.timeout.ms`.
    pub session_timeout: Duration,
    /// `auto.leader.rebalance.enable`.
    pub auto_leader_rebalance: bool,
    /// `leader.imbalance.check.interval.seconds`.
    pub leader_imbalance_check_interval: Duration,
    /// `controlled.shutdown.enable`.
    pub controlled_shutdown: bool,
}

/// Parses `controller.voters`: `id@host:port,...`.
pub fn parse_voters(text: &str) -> Result<BTreeMap<NodeId, String>> {
    let mut out = BTreeMap::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (id, addr) = item
            .split_once('@')
            .with_context(|| format!("voter {item:?} is not id@host:port"))?;
        let id: i32 = id
            .parse()
            .with_context(|| format!("voter id in {item:?}"))?;
        split_host_port(addr)?;
        if out.insert(NodeId(id), addr.to_string()).is_some() {
            bail!("voter {id} listed twice");
        }
    }
    Ok(out)
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
        replica_lag_time_max_ms: r.parse::<u64>("replica.lag.time.max.ms")?.max(1),
        fetcher: FetcherConfig {
            wait_max_ms: r.parse("replica.fetch.wait.max.ms")?,
            partition_max_bytes: r.parse::<usize>("replica.fetch.max.bytes")?.max(1024),
            response_max_bytes: r
                .parse::<usize>("replica.fetch.response.max.bytes")?
                .max(1024),
            backoff_ms: r.parse("replica.fetch.backoff.ms")?,
        },
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
    let voters = parse_voters(r.get("controller.voters"))?;
    let controller_listen = Some(r.get("controller.listen").to_string()).filter(|a| !a.is_empty());
    if !voters.is_empty() && controller_listen.is_none() {
        bail!("controller.voters is set: this node needs controller.listen too");
    }
    if let (Some(own), Some(listen)) = (voters.get(&broker.node_id), &controller_listen) {
        if own != listen {
            tracing::info!(
                voter_addr = own,
                controller_listen = listen,
                "voter address differs from the controller listener"
            );
        }
    }
    Ok(ServeConfig {
        listen: r.get("listen").to_string(),
        advertised,
        broker,
        front_end,
        default_num_partitions: r.parse("num.partitions")?,
        default_replication_factor: r.parse("default.replication.factor")?,
        rack: Some(r.get("broker.rack").to_string()).filter(|s| !s.is_empty()),
        controller_listen,
        voters,
        heartbeat_interval: Duration::from_millis(
            r.parse::<u64>("broker.heartbeat.interval.ms")?.max(10),
        ),
        session_timeout: Duration::from_millis(
            r.parse::<u64>("broker.session.timeout.ms")?.max(50),
        ),
        auto_leader_rebalance: r.parse("auto.leader.rebalance.enable")?,
        leader_imbalance_check_interval: Duration::from_secs(
            r.parse::<u64>("leader.imbalance.check.interval.seconds")?
                .max(1),
        ),
        controlled_shutdown: r.parse("controlled.shutdown.enable")?,
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

/// Runs a node until SIGTERM/SIGINT: its controller (voter or learner of the metadata
/// quorum), its broker, and the Kafka listener, opened once the node is registered and caught
/// up with metadata.
pub async fn run(cfg: ServeConfig) -> Result<()> {
    let data_dir = cfg.broker.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating data dir {}", data_dir.display()))?;
    let meta = meta_properties::load_or_init(&data_dir, cfg.broker.node_id)
        .context("checking meta.properties")?;
    let listener = TcpListener::bind(&cfg.listen)
        .await
        .with_context(|| format!("binding {}", cfg.listen))?;
    let local: SocketAddr = listener.local_addr()?;
    let (adv_host, adv_port) = match &cfg.advertised {
        Some(a) => split_host_port(a)?,
        None => (local.ip().to_string(), local.port()),
    };
    let controller_listener = match &cfg.controller_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding controller listener {addr}"))?,
        ),
        None => None,
    };
    let controller_addr = match (&controller_listener, cfg.voters.get(&cfg.broker.node_id)) {
        (_, Some(voter_addr)) => voter_addr.clone(),
        (Some(l), None) => l.local_addr()?.to_string(),
        (None, None) => String::new(),
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let controller = Controller::start(
        ControllerConfig {
            node_id: cfg.broker.node_id,
            advertised_host: adv_host,
            advertised_port: adv_port,
            rack: cfg.rack.clone(),
            default_num_partitions: cfg.default_num_partitions,
            default_replication_factor: cfg.default_replication_factor,
            topic_defaults: cfg.broker.topic_defaults.clone(),
            metadata_dir: data_dir.join("__cluster_metadata"),
            controller_addr,
            voters: cfg.voters.clone(),
            heartbeat_interval: cfg.heartbeat_interval,
            session_timeout: cfg.session_timeout,
            known_cluster_id: meta.cluster_id.clone(),
            auto_leader_rebalance: cfg.auto_leader_rebalance,
            leader_imbalance_check_interval: cfg.leader_imbalance_check_interval,
        },
        controller_listener,
        stop_rx.clone(),
    )
    .await
    .context("starting the controller")?;
    let cluster_id = tokio::select! {
        joined = wait_until_serving(&controller) => joined?,
        signal = wait_for_stop_signal() => {
            signal?;
            stop_tx.send_replace(true);
            controller.shutdown().await;
            return Ok(());
        }
    };
    meta_properties::record_cluster_id(&data_dir, &cluster_id)
        .context("recording the cluster id")?;
    let transport = Arc::new(KafkaReplicaTransport::new());
    let broker = Broker::open(
        cfg.broker,
        controller.clone(),
        Arc::new(SystemClock),
        transport,
    )
    .context("opening the broker")?;
    broker.start();
    let ctx = Arc::new(ServerContext {
        broker: broker.clone(),
        config: cfg.front_end,
    });
    let listening = tokio::spawn(ferrymq_kafka::listener::run(ctx, listener, stop_rx));
    tracing::info!(listen = %local, cluster_id, node_id = meta.node_id.0, "FerryMQ broker ready");
    wait_for_stop_signal().await?;
    if cfg.controlled_shutdown {
        // Leadership moves while this broker still answers, so clients follow it at once.
        let moved = controller
            .controlled_shutdown(CONTROLLED_SHUTDOWN_WAIT)
            .await;
        tracing::info!(moved, "controlled shutdown: leadership moved away");
    }
    tracing::info!("stopping: closing the listener and flushing logs");
    stop_tx.send_replace(true);
    let _ = listening.await;
    broker.shutdown().await.context("clean shutdown")?;
    controller.shutdown().await;
    Ok(())
}

/// Longest a stopping broker waits for the controller to move its leaderships.
const CONTROLLED_SHUTDOWN_WAIT: Duration = Duration::from_secs(10);

/// Waits until the controller has registered this node and unfenced it; returns the cluster id.
async fn wait_until_serving(controller: &Controller) -> Result<String> {
    let mut state = controller.broker_state();
    let mut warned = tokio::time::Instant::now();
    loop {
        {
            let s = state.borrow_and_update();
            if let Some(reason) = &s.refused {
                bail!("refused by the controller: {reason}");
            }
            if s.registered && !s.fenced {
                if let Some(id) = &s.cluster_id {
                    return Ok(id.clone());
                }
            }
        }
        if warned.elapsed() > Duration::from_secs(5) {
            tracing::warn!("waiting for the controller quorum to register this node");
            warned = tokio::time::Instant::now();
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), state.changed()).await;
    }
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
