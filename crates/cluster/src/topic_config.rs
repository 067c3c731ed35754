//! Topic configs: the names FerryMQ accepts on a topic (Kafka's names), how each is checked,
//! and how a topic's explicit settings combine with the broker's defaults.
//!
//! The controller validates configs here before committing them; brokers resolve them into
//! `TopicSettings` to configure logs and produce checks.

use std::collections::BTreeMap;

use crate::records::TopicConfigs;

/// The type and allowed values of one topic config.
#[derive(Debug, Clone, Copy)]
pub enum ConfigKind {
    /// A 64-bit integer at or above `min`.
    Long { min: i64 },
    /// A 32-bit integer at or above `min`.
    Int { min: i32 },
    /// `true` or `false`.
    Bool,
    /// One of a fixed set of strings.
    Choice(&'static [&'static str]),
    /// A number between 0 and 1.
    Ratio,
}

/// One topic config FerryMQ understands.
#[derive(Debug, Clone, Copy)]
pub struct TopicConfigDef {
    /// Kafka's topic-level name.
    pub name: &'static str,
    /// The broker setting that supplies its default.
    pub broker_key: &'static str,
    /// Type and bounds.
    pub kind: ConfigKind,
    /// One line for DescribeConfigs documentation and `docs/configuration.md`.
    pub doc: &'static str,
}

/// Every topic config FerryMQ accepts. Anything else is `INVALID_CONFIG`, so a client never
/// believes a setting took effect when it did not.
pub const TOPIC_CONFIGS: &[TopicConfigDef] = &[
    TopicConfigDef {
        name: "cleanup.policy",
        broker_key: "log.cleanup.policy",
        kind: ConfigKind::Choice(&["delete", "compact", "compact,delete", "delete,compact"]),
        doc: "How old segments go: delete by retention, compact to the latest record per key, or both.",
    },
    TopicConfigDef {
        name: "delete.retention.ms",
        broker_key: "log.cleaner.delete.retention.ms",
        kind: ConfigKind::Long { min: 0 },
        doc: "How long compaction keeps a tombstone after it was written.",
    },
    TopicConfigDef {
        name: "min.cleanable.dirty.ratio",
        broker_key: "log.cleaner.min.cleanable.ratio",
        kind: ConfigKind::Ratio,
        doc: "Compact once this share of the closed segments is new since the last compaction.",
    },
    TopicConfigDef {
        name: "retention.ms",
        broker_key: "log.retention.ms",
        kind: ConfigKind::Long { min: -1 },
        doc: "Delete closed segments whose newest record is older than this; -1 keeps forever.",
    },
    TopicConfigDef {
        name: "retention.bytes",
        broker_key: "log.retention.bytes",
        kind: ConfigKind::Long { min: -1 },
        doc: "Delete the oldest segments while a partition is larger than this; -1 for no limit.",
    },
    TopicConfigDef {
        name: "segment.bytes",
        broker_key: "log.segment.bytes",
        kind: ConfigKind::Int { min: 14 },
        doc: "Roll the active segment before it passes this size.",
    },
    TopicConfigDef {
        name: "segment.ms",
        broker_key: "log.roll.ms",
        kind: ConfigKind::Long { min: 1 },
        doc: "Roll the active segment once its first record is this old.",
    },
    TopicConfigDef {
        name: "index.interval.bytes",
        broker_key: "log.index.interval.bytes",
        kind: ConfigKind::Int { min: 0 },
        doc: "Bytes between two entries of the sparse offset index.",
    },
    TopicConfigDef {
        name: "max.message.bytes",
        broker_key: "message.max.bytes",
        kind: ConfigKind::Int { min: 0 },
        doc: "Largest record batch accepted from a producer.",
    },
    TopicConfigDef {
        name: "min.insync.replicas",
        broker_key: "min.insync.replicas",
        kind: ConfigKind::Int { min: 1 },
        doc: "acks=all is refused while fewer replicas are in sync.",
    },
    TopicConfigDef {
        name: "unclean.leader.election.enable",
        broker_key: "unclean.leader.election.enable",
        kind: ConfigKind::Bool,
        doc: "Allow a replica outside the ISR to become leader (may lose data).",
    },
    TopicConfigDef {
        name: "message.timestamp.type",
        broker_key: "log.message.timestamp.type",
        kind: ConfigKind::Choice(&["CreateTime"]),
        doc: "Record timestamps are the producer's (CreateTime).",
    },
    TopicConfigDef {
        name: "compression.type",
        broker_key: "compression.type",
        kind: ConfigKind::Choice(&["producer"]),
        doc: "Batches are stored as the producer compressed them.",
    },
];

/// A config name or value the broker does not accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Not a topic config FerryMQ knows.
    #[error("unknown topic config {0:?}")]
    UnknownKey(String),
    /// A value of the wrong type or out of bounds.
    #[error("invalid value {value:?} for {key}: {reason}")]
    InvalidValue {
        key: String,
        value: String,
        reason: String,
    },
}

/// The definition of a topic config by name.
pub fn definition(name: &str) -> Option<&'static TopicConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.name == name)
}

/// Checks one key/value pair.
pub fn validate(key: &str, value: &str) -> Result<(), ConfigError> {
    let def = definition(key).ok_or_else(|| ConfigError::UnknownKey(key.to_string()))?;
    let bad = |reason: String| ConfigError::InvalidValue {
        key: key.to_string(),
        value: value.to_string(),
        reason,
    };
    match def.kind {
        ConfigKind::Long { min } => match value.trim().parse::<i64>() {
            Ok(v) if v >= min => Ok(()),
            Ok(_) => Err(bad(format!("must be at least {min}"))),
            Err(e) => Err(bad(e.to_string())),
        },
        ConfigKind::Int { min } => match value.trim().parse::<i32>() {
            Ok(v) if v >= min => Ok(()),
            Ok(_) => Err(bad(format!("must be at least {min}"))),
            Err(e) => Err(bad(e.to_string())),
        },
        ConfigKind::Bool => match value.trim().to_ascii_lowercase().as_str() {
            "true" | "false" => Ok(()),
            _ => Err(bad("must be true or false".into())),
        },
        ConfigKind::Ratio => match value.trim().parse::<f64>() {
            Ok(v) if (0.0..=1.0).contains(&v) => Ok(()),
            Ok(_) => Err(bad("must be between 0 and 1".into())),
            Err(e) => Err(bad(e.to_string())),
        },
        ConfigKind::Choice(allowed) => {
            if allowed.contains(&value.trim()) {
                Ok(())
            } else {
                Err(bad(format!("supported values: {}", allowed.join(", "))))
            }
        }
    }
}

/// Broker-wide defaults for topic configs, keyed by topic config name, as strings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicDefaults(pub BTreeMap<String, String>);

impl TopicDefaults {
    /// The default of `name`, if the broker supplied one.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

/// A topic's effective settings: explicit configs over broker defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicSettings {
    /// `cleanup.policy` contains `delete`: retention deletes old segments.
    pub cleanup_delete: bool,
    /// `cleanup.policy` contains `compact`: the cleaner keeps the latest record per key.
    pub cleanup_compact: bool,
    /// `delete.retention.ms`.
    pub delete_retention_ms: i64,
    /// `min.cleanable.dirty.ratio`.
    pub min_cleanable_dirty_ratio: f64,
    /// `retention.ms`.
    pub retention_ms: i64,
    /// `retention.bytes`.
    pub retention_bytes: i64,
    /// `segment.bytes`.
    pub segment_bytes: i32,
    /// `segment.ms`.
    pub segment_ms: i64,
    /// `index.interval.bytes`.
    pub index_interval_bytes: i32,
    /// `max.message.bytes`.
    pub max_message_bytes: i32,
    /// `min.insync.replicas`.
    pub min_insync_replicas: i32,
    /// `unclean.leader.election.enable`.
    pub unclean_leader_election: bool,
}

impl TopicSettings {
    /// Resolves a topic's settings. Values were validated on the way in; a value that still
    /// fails to parse (hand-edited log) falls back to the default with a warning.
    pub fn resolve(explicit: &TopicConfigs, defaults: &TopicDefaults) -> TopicSettings {
        let raw = |name: &str| -> Option<&str> {
            explicit
                .get(name)
                .map(String::as_str)
                .or_else(|| defaults.get(name))
        };
        fn parse<T: std::str::FromStr>(name: &str, v: Option<&str>, fallback: T) -> T {
            match v.map(|s| s.trim().parse::<T>()) {
                Some(Ok(x)) => x,
                Some(Err(_)) => {
                    tracing::warn!(
                        config = name,
                        value = v.unwrap_or(""),
                        "unparsable topic config, using default"
                    );
                    fallback
                }
                None => fallback,
            }
        }
        let policy = raw("cleanup.policy").unwrap_or("delete");
        TopicSettings {
            cleanup_delete: policy.split(',').any(|p| p.trim() == "delete"),
            cleanup_compact: policy.split(',').any(|p| p.trim() == "compact"),
            delete_retention_ms: parse(
                "delete.retention.ms",
                raw("delete.retention.ms"),
                86_400_000,
            ),
            min_cleanable_dirty_ratio: parse(
                "min.cleanable.dirty.ratio",
                raw("min.cleanable.dirty.ratio"),
                0.5,
            ),
            retention_ms: parse("retention.ms", raw("retention.ms"), 604_800_000),
            retention_bytes: parse("retention.bytes", raw("retention.bytes"), -1),
            segment_bytes: parse("segment.bytes", raw("segment.bytes"), 1 << 30),
            segment_ms: parse("segment.ms", raw("segment.ms"), 604_800_000),
            index_interval_bytes: parse("index.interval.bytes", raw("index.interval.bytes"), 4096),
            max_message_bytes: parse("max.message.bytes", raw("max.message.bytes"), 1_048_588),
            min_insync_replicas: parse("min.insync.replicas", raw("min.insync.replicas"), 1),
            unclean_leader_election: parse(
                "unclean.leader.election.enable",
                raw("unclean.leader.election.enable"),
                false,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_types_bounds_and_names() {
        assert!(validate("retention.ms", "1000").is_ok());
        assert!(validate("retention.ms", "-1").is_ok());
        assert!(validate("retention.ms", "-2").is_err());
        assert!(validate("retention.ms", "soon").is_err());
        assert!(validate("segment.bytes", "13").is_err());
        assert!(validate("unclean.leader.election.enable", "TRUE").is_ok());
        assert!(matches!(
            validate("no.such", "1"),
            Err(ConfigError::UnknownKey(_))
        ));
        assert!(validate("cleanup.policy", "delete").is_ok());
        assert!(validate("cleanup.policy", "compact,delete").is_ok());
        assert!(validate("cleanup.policy", "shred").is_err());
        assert!(validate("min.cleanable.dirty.ratio", "0.1").is_ok());
        assert!(validate("min.cleanable.dirty.ratio", "1.5").is_err());
    }

    #[test]
    fn explicit_settings_win_over_defaults() {
        let mut defaults = TopicDefaults::default();
        defaults.0.insert("retention.ms".into(), "5".into());
        defaults.0.insert("segment.bytes".into(), "1024".into());
        let mut explicit = TopicConfigs::new();
        explicit.insert("retention.ms".into(), "9".into());
        let s = TopicSettings::resolve(&explicit, &defaults);
        assert_eq!(s.retention_ms, 9);
        assert_eq!(s.segment_bytes, 1024);
        assert_eq!(s.min_insync_replicas, 1);
        assert!(s.cleanup_delete && !s.cleanup_compact);
        explicit.insert("cleanup.policy".into(), "compact,delete".into());
        let s = TopicSettings::resolve(&explicit, &defaults);
        assert!(s.cleanup_delete && s.cleanup_compact);
    }
}
