//! A view of a running cluster for the command-line tools: bootstraps from a list of
//! addresses, learns which APIs the cluster serves (ApiVersions), the brokers and partition
//! leaders (Metadata), and keeps one connection per broker so requests go to leaders.

use std::collections::HashMap;
use std::time::Duration;

use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, MetadataRequest, MetadataResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::{Client, ClientError};

/// Metadata version used (topic ids, no authorized-operations decoding surprises).
const METADATA_VERSION: i16 = 12;

/// Connections to a cluster's brokers.
#[derive(Debug)]
pub struct ClusterClient {
    bootstrap: String,
    timeout: Duration,
    /// The bootstrap connection: for requests any broker can answer.
    first: Client,
    /// Served version ranges by API key.
    versions: HashMap<i16, (i16, i16)>,
    /// Broker addresses by node id, from the last Metadata.
    brokers: HashMap<i32, String>,
    /// Connections by node id.
    conns: HashMap<i32, Client>,
}

impl ClusterClient {
    /// Connects to the first reachable address of `bootstrap` (comma-separated host:port)
    /// and asks which APIs it serves.
    pub async fn connect(bootstrap: &str, timeout: Duration) -> Result<ClusterClient, ClientError> {
        let mut last = String::from("no address given");
        for addr in bootstrap
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
        {
            match Client::connect(addr, timeout).await {
                Ok(mut first) => {
                    let v = first.call(&ApiVersionsRequest::default(), 0).await?;
                    let versions = v
                        .api_keys
                        .iter()
                        .map(|k| (k.api_key, (k.min_version, k.max_version)))
                        .collect();
                    return Ok(ClusterClient {
                        bootstrap: bootstrap.to_string(),
                        timeout,
                        first,
                        versions,
                        brokers: HashMap::new(),
                        conns: HashMap::new(),
                    });
                }
                Err(e) => last = format!("{addr}: {e}"),
            }
        }
        Err(ClientError::Unreachable {
            bootstrap: bootstrap.to_string(),
            last,
        })
    }

    /// True if the cluster serves `key` at `version`.
    pub fn serves(&self, key: ApiKey, version: i16) -> bool {
        self.versions
            .get(&(key as i16))
            .is_some_and(|(min, max)| (*min..=*max).contains(&version))
    }

    /// Fails with `Unsupported` naming `what` unless every API in `keys` is served at its
    /// version.
    pub fn require(&self, keys: &[(ApiKey, i16)], what: &str) -> Result<(), ClientError> {
        match keys.iter().find(|(k, v)| !self.serves(*k, *v)) {
            None => Ok(()),
            Some((k, v)) => Err(ClientError::Unsupported(format!(
                "{what}: not served by this cluster yet ({k:?} v{v} is missing from its ApiVersions)"
            ))),
        }
    }

    /// The bootstrap connection.
    pub fn any(&mut self) -> &mut Client {
        &mut self.first
    }

    /// Metadata for `topics` (every topic when `None`), without creating any; remembers
    /// the brokers.
    pub async fn metadata(
        &mut self,
        topics: Option<&[String]>,
    ) -> Result<MetadataResponse, ClientError> {
        let req = MetadataRequest::default()
            .with_allow_auto_topic_creation(false)
            .with_topics(topics.map(|ts| {
                ts.iter()
                    .map(|t| {
                        MetadataRequestTopic::default()
                            .with_name(Some(TopicName(StrBytes::from_string(t.clone()))))
                    })
                    .collect()
            }));
        let md = self.first.call(&req, METADATA_VERSION).await?;
        self.brokers = md
            .brokers
            .iter()
            .map(|b| (b.node_id.0, format!("{}:{}", b.host.as_str(), b.port)))
            .collect();
        Ok(md)
    }

    /// Every live broker's id, from the last Metadata.
    pub fn broker_ids(&self) -> Vec<i32> {
        let mut ids: Vec<i32> = self.brokers.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// The connection to broker `id` (opened on first use).
    pub async fn node(&mut self, id: i32) -> Result<&mut Client, ClientError> {
        if !self.conns.contains_key(&id) {
            let addr = self.brokers.get(&id).cloned().ok_or_else(|| {
                ClientError::Protocol(format!(
                    "broker {id} is not in the metadata of {}",
                    self.bootstrap
                ))
            })?;
            let c = Client::connect(&addr, self.timeout).await?;
            self.conns.insert(id, c);
        }
        Ok(self.conns.get_mut(&id).expect("inserted above"))
    }
}

/// The leader of each partition of `topic` in `md`, by partition index; `None` for a
/// partition without a leader. `None` overall if the topic is unknown.
pub fn leaders(md: &MetadataResponse, topic: &str) -> Option<Vec<(i32, Option<i32>)>> {
    let t = md
        .topics
        .iter()
        .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == topic) && t.error_code == 0)?;
    let mut out: Vec<(i32, Option<i32>)> = t
        .partitions
        .iter()
        .map(|p| {
            (
                p.partition_index,
                (p.leader_id.0 >= 0).then_some(p.leader_id.0),
            )
        })
        .collect();
    out.sort_unstable();
    Some(out)
}
