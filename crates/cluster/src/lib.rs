//! FerryMQ's cluster metadata: what topics and partitions exist, where their replicas live,
//! who leads them, and the controller that changes all of that.
//!
//! Changes are records (`records`) committed to a metadata log (`metadata_log`) by the
//! controller (`controller`) and applied in order to an immutable image (`image`) that is
//! published to every reader. This crate knows nothing of partition data, Kafka requests or
//! sockets; only it will know about the Raft quorum.

pub mod controller;
pub mod error;
pub mod image;
pub mod meta_properties;
pub mod metadata_log;
pub mod placement;
pub mod records;
pub mod topic_config;
pub mod topic_name;

pub use controller::{
    ConfigOp, Controller, ControllerConfig, CreateTopic, ProducerIdBlock, TopicCreated,
    PRODUCER_ID_BLOCK_SIZE,
};
pub use error::ControllerError;
pub use image::{BrokerInfo, MetadataImage, PartitionInfo, TopicInfo};
pub use topic_config::{TopicDefaults, TopicSettings};
