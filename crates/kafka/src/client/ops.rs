//! Data-path calls of the command-line tools, each sent to the partition's leader: Produce
//! one batch, Fetch from an offset, ListOffsets by time.

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    BrokerId, FetchRequest, ListOffsetsRequest, ProduceRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::{ClientError, ClusterClient};

/// ListOffsets timestamp for the log start.
pub const EARLIEST: i64 = -2;
/// ListOffsets timestamp for the high watermark.
pub const LATEST: i64 = -1;

/// A partition-level failure: the Kafka error code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionError {
    /// Kafka error code.
    pub code: i16,
    /// Broker's message, if any.
    pub message: String,
}

impl std::fmt::Display for PartitionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = crate::metrics::error_name(self.code);
        if self.message.is_empty() {
            write!(f, "{name}")
        } else {
            write!(f, "{name}: {}", self.message)
        }
    }
}

/// What a fetch of one partition returned.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The partition's high watermark.
    pub high_watermark: i64,
    /// Raw record batches (possibly ending in a partial one).
    pub records: Bytes,
}

fn name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_string()))
}

impl ClusterClient {
    /// Produces one batch to `topic`/`partition` on `leader`; returns its base offset.
    pub async fn produce(
        &mut self,
        leader: i32,
        topic: &str,
        partition: i32,
        batch: Bytes,
        acks: i16,
    ) -> Result<Result<i64, PartitionError>, ClientError> {
        let req = ProduceRequest::default()
            .with_acks(acks)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(name(topic))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(partition)
                    .with_records(Some(batch))])]);
        let resp = self.node(leader).await?.call(&req, 8).await?;
        let p = resp
            .responses
            .first()
            .and_then(|t| t.partition_responses.first())
            .ok_or_else(|| ClientError::Protocol("empty produce response".into()))?;
        Ok(if p.error_code == 0 {
            Ok(p.base_offset)
        } else {
            Err(PartitionError {
                code: p.error_code,
                message: p
                    .error_message
                    .as_ref()
                    .map(|m| m.to_string())
                    .unwrap_or_default(),
            })
        })
    }

    /// Fetches `topic`/`partition` from `offset` on `leader`, waiting up to `max_wait_ms`.
    pub async fn fetch(
        &mut self,
        leader: i32,
        topic: &str,
        partition: i32,
        offset: i64,
        max_wait_ms: i32,
    ) -> Result<Result<Fetched, PartitionError>, ClientError> {
        let req = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(max_wait_ms)
            .with_min_bytes(1)
            .with_max_bytes(4 * 1024 * 1024)
            .with_session_epoch(-1)
            .with_topics(vec![FetchTopic::default()
                .with_topic(name(topic))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(partition)
                    .with_fetch_offset(offset)
                    .with_current_leader_epoch(-1)
                    .with_log_start_offset(-1)
                    .with_partition_max_bytes(1024 * 1024)])]);
        let resp = self.node(leader).await?.call(&req, 12).await?;
        let p = resp
            .responses
            .first()
            .and_then(|t| t.partitions.first())
            .ok_or_else(|| ClientError::Protocol("empty fetch response".into()))?;
        Ok(if p.error_code == 0 {
            Ok(Fetched {
                high_watermark: p.high_watermark,
                records: p.records.clone().unwrap_or_default(),
            })
        } else {
            Err(PartitionError {
                code: p.error_code,
                message: String::new(),
            })
        })
    }

    /// ListOffsets for one partition on `leader`: `EARLIEST`, `LATEST` or a timestamp (ms);
    /// `-1` when no record is at or after the timestamp.
    pub async fn list_offset(
        &mut self,
        leader: i32,
        topic: &str,
        partition: i32,
        timestamp: i64,
    ) -> Result<Result<i64, PartitionError>, ClientError> {
        let req = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(name(topic))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(partition)
                    .with_current_leader_epoch(-1)
                    .with_timestamp(timestamp)])]);
        let resp = self.node(leader).await?.call(&req, 7).await?;
        let p = resp
            .topics
            .first()
            .and_then(|t| t.partitions.first())
            .ok_or_else(|| ClientError::Protocol("empty list-offsets response".into()))?;
        Ok(if p.error_code == 0 {
            Ok(p.offset)
        } else {
            Err(PartitionError {
                code: p.error_code,
                message: String::new(),
            })
        })
    }
}
