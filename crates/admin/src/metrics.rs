//! The Prometheus side: installs the process-wide recorder (the `metrics` facade's, which the
//! broker core and the Kafka front end record into), samples state gauges at scrape time and
//! renders the text format. The controller's and the process's gauges are sampled here.
//!
//! Cluster-wide counts (brokers by state, offline and under-replicated partitions) are
//! reported by the active controller only, 0 elsewhere, as Kafka's controller metrics are: a
//! `sum` or `max` over all nodes gives the cluster's value once.

use std::time::Duration;

use metrics::{describe_gauge, gauge};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;

use crate::process;
use crate::state::AdminState;

/// 1 on the active controller, 0 elsewhere.
pub const CONTROLLER_ACTIVE: &str = "ferrymq_controller_active";
/// Metadata offset applied by this node.
pub const METADATA_APPLIED_OFFSET: &str = "ferrymq_metadata_applied_offset";
/// Registered brokers by state (active controller only).
pub const CLUSTER_BROKERS: &str = "ferrymq_cluster_brokers";
/// Partitions without a live leader (active controller only).
pub const CLUSTER_OFFLINE_PARTITIONS: &str = "ferrymq_cluster_offline_partitions";
/// Partitions with ISR smaller than replicas (active controller only).
pub const CLUSTER_UNDER_REPLICATED: &str = "ferrymq_cluster_under_replicated_partitions";
/// 1 when this node is ready (see `/health/ready`).
pub const NODE_READY: &str = "ferrymq_node_ready";
/// Resident memory.
pub const RSS_BYTES: &str = "process_resident_memory_bytes";
/// Open file descriptors.
pub const OPEN_FDS: &str = "process_open_fds";
/// File descriptor limit.
pub const MAX_FDS: &str = "process_max_fds";

/// Gauges not set for this long disappear from the output: every state gauge is set at each
/// scrape, so only series of things that are gone (a deleted partition) expire.
pub const GAUGE_IDLE: Duration = Duration::from_secs(300);

/// Installs the global recorder and returns the handle that renders it. Call once, before
/// anything records.
pub fn install() -> Result<PrometheusHandle, BuildError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(ferrymq_kafka::metrics::REQUEST_SECONDS.into()),
            ferrymq_kafka::metrics::REQUEST_BUCKETS_SECONDS,
        )?
        .set_buckets_for_metric(
            Matcher::Full(ferrymq_broker::metrics::LOG_FSYNC_SECONDS.into()),
            ferrymq_broker::metrics::FSYNC_BUCKETS_SECONDS,
        )?
        .idle_timeout(MetricKindMask::GAUGE, Some(GAUGE_IDLE))
        .install_recorder()?;
    describe();
    ferrymq_kafka::metrics::describe();
    ferrymq_broker::metrics::describe();
    Ok(handle)
}

fn describe() {
    describe_gauge!(
        CONTROLLER_ACTIVE,
        "1 if this node is the active controller."
    );
    describe_gauge!(
        METADATA_APPLIED_OFFSET,
        "Metadata log offset applied by this node."
    );
    describe_gauge!(
        CLUSTER_BROKERS,
        "Registered brokers by state (live, fenced); reported by the active controller only."
    );
    describe_gauge!(
        CLUSTER_OFFLINE_PARTITIONS,
        "Partitions without a live leader; reported by the active controller only."
    );
    describe_gauge!(
        CLUSTER_UNDER_REPLICATED,
        "Partitions whose ISR is smaller than their replica set; reported by the active controller only."
    );
    describe_gauge!(
        NODE_READY,
        "1 if this node is ready (registered, caught up, serving)."
    );
    describe_gauge!(RSS_BYTES, "Resident memory of the process.");
    describe_gauge!(OPEN_FDS, "Open file descriptors of the process.");
    describe_gauge!(MAX_FDS, "Limit on open file descriptors of the process.");
}

/// Cluster-wide counts from a metadata image.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ClusterCounts {
    /// Registered, serving.
    pub live_brokers: usize,
    /// Registered, fenced.
    pub fenced_brokers: usize,
    /// Partitions.
    pub partitions: usize,
    /// Without a live leader.
    pub offline_partitions: usize,
    /// ISR smaller than replicas.
    pub under_replicated_partitions: usize,
}

/// Counts what an operator alerts on in `image`.
pub fn cluster_counts(image: &ferrymq_cluster::MetadataImage) -> ClusterCounts {
    let mut c = ClusterCounts::default();
    for b in image.brokers.values() {
        if b.fenced {
            c.fenced_brokers += 1;
        } else {
            c.live_brokers += 1;
        }
    }
    for t in image.topics.values() {
        for p in t.partitions.values() {
            c.partitions += 1;
            if !p.leader.is_some_and(|l| image.is_live(l)) {
                c.offline_partitions += 1;
            }
            if p.isr.len() < p.replicas.len() {
                c.under_replicated_partitions += 1;
            }
        }
    }
    c
}

/// Samples every state gauge and renders the Prometheus text.
pub fn render(state: &AdminState) -> Option<String> {
    let handle = state.metrics.as_ref()?;
    let image = state.controller.image();
    let active = state.controller.is_active();
    let counts = if active {
        cluster_counts(&image)
    } else {
        ClusterCounts::default()
    };
    gauge!(CONTROLLER_ACTIVE).set(if active { 1.0 } else { 0.0 });
    gauge!(METADATA_APPLIED_OFFSET).set(image.applied_offset as f64);
    gauge!(CLUSTER_BROKERS, "state" => "live").set(counts.live_brokers as f64);
    gauge!(CLUSTER_BROKERS, "state" => "fenced").set(counts.fenced_brokers as f64);
    gauge!(CLUSTER_OFFLINE_PARTITIONS).set(counts.offline_partitions as f64);
    gauge!(CLUSTER_UNDER_REPLICATED).set(counts.under_replicated_partitions as f64);
    let ready = state.not_ready_reason().is_none();
    gauge!(NODE_READY).set(if ready { 1.0 } else { 0.0 });
    for (name, value) in [
        (RSS_BYTES, process::resident_memory_bytes()),
        (OPEN_FDS, process::open_fds()),
        (MAX_FDS, process::max_fds()),
    ] {
        if let Some(v) = value {
            gauge!(name).set(v as f64);
        }
    }
    ferrymq_kafka::metrics::sample();
    if let Ok(broker) = state.broker() {
        ferrymq_broker::metrics::sample(broker);
    }
    handle.run_upkeep();
    Some(handle.render())
}
