//! Every setting of `ferrymq serve`: its name (Kafka's where Kafka has the setting), default and
//! meaning, and how the sources combine. Lowest to highest precedence: built-in defaults, the
//! TOML file (`--config`), `FERRYMQ_*` environment variables, command-line flags.
//!
//! The table below is the single list: `serve --help` and `docs/configuration.md` print it, and
//! a test checks the document against it.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};

/// One setting.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// Dotted name, as in the TOML file and `--override`.
    pub name: &'static str,
    /// Default value, as text.
    pub default: &'static str,
    /// What it does.
    pub doc: &'static str,
}

const fn s(name: &'static str, default: &'static str, doc: &'static str) -> Setting {
    Setting { name, default, doc }
}

/// Every setting, grouped by subject.
pub const SETTINGS: &[Setting] = &[
    s("listen", "127.0.0.1:9092", "Kafka listener address (flag --listen)."),
    s("advertised.listener", "", "host:port given to clients in Metadata; empty means the listen address (flag --advertised-listener)."),
    s("data.dir", "./ferrymq-data", "Directory holding partition logs, checkpoints and metadata (flag --data-dir)."),
    s("node.id", "1", "This node's id (flag --node-id)."),
    s("broker.rack", "", "Rack of this broker, for placement; empty for none."),
    s("controller.listen", "", "Controller listener (Raft and broker-to-controller RPCs); needed in a cluster (flag --controller-listen)."),
    s("controller.voters", "", "Controller quorum voters as id@host:port,...; empty runs a single-node quorum (flag --controller-voters)."),
    s("broker.heartbeat.interval.ms", "250", "How often a broker heartbeats to the active controller."),
    s("broker.session.timeout.ms", "1000", "A broker without a heartbeat for this long is fenced and its partitions move (sooner when its address refuses connections: the process is gone)."),
    s("admin.listen", "127.0.0.1:9644", "Admin HTTP listener: /metrics, /health/*, /v1/* (docs/admin-api.md); port 0 picks a free port (logged); empty disables it (flag --admin-listen)."),
    s("admin.token", "", "Bearer token required by mutating admin endpoints once set; without one they accept loopback clients only. Never logged or shown by DescribeConfigs."),
    s("replica.lag.time.max.ms", "10000", "A follower not caught up with its leader for this long leaves the ISR."),
    s("replica.fetch.wait.max.ms", "500", "How long a follower's fetch waits at the leader for new data."),
    s("replica.fetch.max.bytes", "1048576", "Most bytes a follower fetches per partition per request."),
    s("replica.fetch.response.max.bytes", "10485760", "Most bytes of one follower fetch response."),
    s("replica.fetch.backoff.ms", "100", "Pause of a follower fetcher after an error."),
    s("auto.leader.rebalance.enable", "true", "Move leadership back to each partition's preferred (first) replica once it is in sync."),
    s("leader.imbalance.check.interval.seconds", "30", "How often preferred leaders are restored."),
    s("controlled.shutdown.enable", "true", "On SIGTERM, move leadership to other replicas before stopping."),
    s("log.level", "info", "Log filter (tracing syntax, e.g. info,ferrymq_broker=debug); RUST_LOG overrides it (flag --log-level)."),
    s("log.format", "text", "Log format: text or json (flag --log-format)."),
    s("num.partitions", "1", "Partitions of a topic created without a count (auto-created topics too)."),
    s("default.replication.factor", "1", "Replication factor of a topic created without one."),
    s("auto.create.topics.enable", "true", "Create a topic when a client asks Metadata for it."),
    s("socket.request.max.bytes", "104857600", "Largest request frame; larger frames close the connection."),
    s("max.connections", "10000", "Client connections accepted at once."),
    s("max.inflight.requests.per.connection", "100", "Requests read ahead of their responses on one connection."),
    s("message.max.bytes", "1048588", "Default max.message.bytes of topics: largest record batch accepted."),
    s("log.segment.bytes", "1073741824", "Default segment.bytes: a segment is rolled before it passes this size."),
    s("log.roll.ms", "604800000", "Default segment.ms: a segment is rolled once its first record is this old (7 days)."),
    s("log.retention.ms", "604800000", "Default retention.ms: closed segments older than this are deleted (7 days); -1 keeps forever."),
    s("log.retention.bytes", "-1", "Default retention.bytes: oldest segments are deleted while a partition is larger; -1 for no limit."),
    s("log.index.interval.bytes", "4096", "Default index.interval.bytes: bytes between sparse index entries."),
    s("log.cleanup.policy", "delete", "Default cleanup.policy."),
    s("log.message.timestamp.type", "CreateTime", "Default message.timestamp.type."),
    s("compression.type", "producer", "Default compression.type: batches are stored as the producer compressed them."),
    s("min.insync.replicas", "1", "Default min.insync.replicas: acks=all is refused while fewer replicas are in sync."),
    s("unclean.leader.election.enable", "false", "Default unclean.leader.election.enable."),
    s("log.retention.check.interval.ms", "300000", "How often retention looks for segments to delete."),
    s("log.flush.interval.messages", "9223372036854775807", "fsync a partition once this many messages are unflushed; 1 makes acks=1 wait for fsync. acks=all always waits for fsync."),
    s("log.flush.interval.ms", "1000", "fsync every partition with unflushed data this often: the most acks=0/1 data a power loss can take."),
    s("replica.high.watermark.checkpoint.interval.ms", "5000", "How often the high-watermark, recovery-point and log-start checkpoints are written."),
    s("log.writer.queue.max", "4096", "Appends queued for the log writer thread before producers wait."),
    s("producer.id.expiration.ms", "86400000", "An idempotent producer's state in a partition (epoch, last five batches) is forgotten once its last batch is this old (1 day); its next batch is then accepted at any sequence."),
    s("producer.id.expiration.check.interval.ms", "600000", "How often partitions look for idempotent producers to expire."),
    s("offsets.topic.num.partitions", "10", "Partitions of __consumer_offsets, fixed when it is created on first use (Kafka: 50; fewer suit a single node). A group's coordinator is the leader of partition abs(hash(group)) % this."),
    s("offsets.topic.replication.factor", "3", "Replication factor of __consumer_offsets, capped at the live brokers when it is created."),
    s("offsets.topic.segment.bytes", "104857600", "segment.bytes of __consumer_offsets: smaller segments let compaction clean it sooner."),
    s("offsets.retention.minutes", "10080", "Committed offsets of a group without members expire this long after their commit or the group becoming empty, whichever is later (7 days)."),
    s("offsets.retention.check.interval.ms", "600000", "How often expired committed offsets are looked for."),
    s("offset.metadata.max.bytes", "4096", "Largest metadata string of a committed offset; larger commits get OFFSET_METADATA_TOO_LARGE."),
    s("group.min.session.timeout.ms", "6000", "Smallest session timeout a member may ask for (INVALID_SESSION_TIMEOUT below)."),
    s("group.max.session.timeout.ms", "1800000", "Largest session timeout a member may ask for (INVALID_SESSION_TIMEOUT above)."),
    s("group.initial.rebalance.delay.ms", "3000", "How long the first rebalance of an empty group waits for more members to join, so a group starting together rebalances once."),
    s("log.cleaner.enable", "true", "Run log compaction for topics with cleanup.policy compact (or compact,delete)."),
    s("log.cleaner.backoff.ms", "15000", "How often the cleaner looks for partitions to compact."),
    s("log.cleaner.io.max.bytes.per.second", "52428800", "Bytes per second the cleaner may read plus write, so compaction never starves appends and fetches of disk (50 MiB/s)."),
    s("log.cleaner.dedupe.buffer.size", "134217728", "Memory for the key map of one compaction pass; a log with more keys is compacted in several passes."),
    s("log.cleaner.delete.retention.ms", "86400000", "Default delete.retention.ms: how long a tombstone stays readable after it was written, so consumers see deletions (1 day)."),
    s("log.cleaner.min.cleanable.ratio", "0.5", "Default min.cleanable.dirty.ratio: compact a partition once this share of its closed segments was written since the last compaction."),
];

/// Settings whose values are secrets: never logged, never shown by DescribeConfigs.
pub const SECRET_SETTINGS: &[&str] = &["admin.token"];

/// Looks a setting up by name.
pub fn find(name: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.name == name)
}

/// The environment variable of a setting: `FERRYMQ_` and the name upper-cased, `.` as `_`.
pub fn env_name(name: &str) -> String {
    format!(
        "FERRYMQ_{}",
        name.to_ascii_uppercase().replace(['.', '-'], "_")
    )
}

/// Effective settings: every name mapped to its value text, with where it came from.
#[derive(Debug, Clone)]
pub struct Resolved {
    values: BTreeMap<&'static str, (String, &'static str)>,
}

impl Resolved {
    /// Combines the sources. `file` is the TOML file path if given, `env` the process
    /// environment, `flags` name/value pairs from the command line (highest precedence).
    pub fn new(
        file: Option<&Path>,
        env: &BTreeMap<String, String>,
        flags: &[(String, String)],
    ) -> Result<Resolved> {
        let mut values: BTreeMap<&'static str, (String, &'static str)> = SETTINGS
            .iter()
            .map(|s| (s.name, (s.default.to_string(), "default")))
            .collect();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading config file {}", path.display()))?;
            let table: toml::Table = text
                .parse()
                .with_context(|| format!("parsing {}", path.display()))?;
            let mut flat = Vec::new();
            flatten("", &toml::Value::Table(table), &mut flat)?;
            for (k, v) in flat {
                let setting = find(&k)
                    .with_context(|| format!("{}: unknown setting {k:?}", path.display()))?;
                values.insert(setting.name, (v, "file"));
            }
        }
        for s in SETTINGS {
            if let Some(v) = env.get(&env_name(s.name)) {
                values.insert(s.name, (v.clone(), "env"));
            }
        }
        for (k, v) in flags {
            let setting = find(k)
                .with_context(|| format!("unknown setting {k:?} (see ferrymq serve --help)"))?;
            values.insert(setting.name, (v.clone(), "flag"));
        }
        Ok(Resolved { values })
    }

    /// The value of a setting (every name in `SETTINGS` has one).
    pub fn get(&self, name: &str) -> &str {
        &self
            .values
            .get(name)
            .unwrap_or_else(|| panic!("no setting named {name}"))
            .0
    }

    /// Parses a setting, naming it in the error.
    pub fn parse<T: std::str::FromStr>(&self, name: &str) -> Result<T>
    where
        T::Err: std::fmt::Display,
    {
        let v = self.get(name);
        match v.trim().parse::<T>() {
            Ok(x) => Ok(x),
            Err(e) => bail!("setting {name} = {v:?}: {e}"),
        }
    }

    /// Every setting with its value and source, for logging and DescribeConfigs.
    pub fn all(&self) -> impl Iterator<Item = (&'static str, &str, &'static str)> {
        self.values
            .iter()
            .map(|(k, (v, src))| (*k, v.as_str(), *src))
    }
}

fn flatten(prefix: &str, v: &toml::Value, out: &mut Vec<(String, String)>) -> Result<()> {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let name = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&name, v, out)?;
            }
        }
        toml::Value::String(s) => out.push((prefix.to_string(), s.clone())),
        toml::Value::Integer(i) => out.push((prefix.to_string(), i.to_string())),
        toml::Value::Boolean(b) => out.push((prefix.to_string(), b.to_string())),
        toml::Value::Float(f) => out.push((prefix.to_string(), f.to_string())),
        other => bail!("setting {prefix}: unsupported value {other}"),
    }
    Ok(())
}

/// The settings as a Markdown table (for `docs/configuration.md` and `serve --help`).
pub fn markdown_table() -> String {
    let mut out =
        String::from("| setting | environment | default | meaning |\n|---|---|---|---|\n");
    for s in SETTINGS {
        out.push_str(&format!(
            "| `{}` | `{}` | `{}` | {} |\n",
            s.name,
            env_name(s.name),
            s.default,
            s.doc
        ));
    }
    out
}

/// The settings as plain text for `serve --help`.
pub fn help_text() -> String {
    let mut out = String::from(
        "Settings (TOML file keys and --override names; env FERRYMQ_<NAME with . as _>; precedence: default < file < env < flags):\n",
    );
    for s in SETTINGS {
        out.push_str(&format!(
            "  {:<48} default {:<22} {}\n",
            s.name,
            format!("{:?}", s.default),
            s.doc
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_is_default_file_env_flag() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f.toml");
        std::fs::write(
            &file,
            "num.partitions = 3\nlog.retention.ms = 10\n[log.flush.interval]\nms = 7\n",
        )
        .unwrap();
        let mut env = BTreeMap::new();
        env.insert("FERRYMQ_LOG_RETENTION_MS".to_string(), "20".to_string());
        env.insert("FERRYMQ_NODE_ID".to_string(), "4".to_string());
        let flags = vec![("node.id".to_string(), "5".to_string())];
        let r = Resolved::new(Some(&file), &env, &flags).unwrap();
        assert_eq!(r.get("num.partitions"), "3");
        assert_eq!(r.get("log.retention.ms"), "20");
        assert_eq!(r.get("log.flush.interval.ms"), "7");
        assert_eq!(r.get("node.id"), "5");
        assert_eq!(r.get("listen"), "127.0.0.1:9092");
    }

    #[test]
    fn unknown_settings_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f.toml");
        std::fs::write(&file, "num.partitons = 3\n").unwrap();
        assert!(Resolved::new(Some(&file), &BTreeMap::new(), &[]).is_err());
        assert!(Resolved::new(None, &BTreeMap::new(), &[("nope".into(), "1".into())]).is_err());
    }

    #[test]
    fn configuration_doc_lists_every_setting() {
        let doc = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/configuration.md"
        ))
        .unwrap();
        for s in SETTINGS {
            assert!(
                doc.contains(&format!("`{}`", s.name)),
                "docs/configuration.md misses {}",
                s.name
            );
            assert!(
                doc.contains(&format!("`{}`", s.default)),
                "docs/configuration.md misses the default of {}",
                s.name
            );
        }
    }
}
