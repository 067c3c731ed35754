//! FerryMQ's cluster metadata: what topics and partitions exist, where their replicas live,
//! who leads them, which brokers are alive, and the controller quorum that decides all that.
//!
//! Changes are records (`records`) committed through a Raft quorum (`raft`, on openraft) by the
//! active controller (`controller`) and applied in order to an immutable image (`image`) that is
//! published to every reader. Brokers register and heartbeat (`lifecycle`); the active
//! controller tracks their sessions (`liveness`) and moves leadership away from fenced ones
//! (`election`). This crate knows nothing of partition data, Kafka requests or client sockets;
//! it is the only crate that depends on openraft.

pub mod controller;
pub mod election;
pub mod error;
pub mod image;
pub mod lifecycle;
pub mod liveness;
pub mod meta_properties;
pub mod placement;
pub mod raft;
pub mod records;
pub mod topic_config;
pub mod topic_name;

pub use controller::{
    ConfigOp, Controller, ControllerConfig, CreateTopic, ProducerIdBlock, TopicCreated,
    PRODUCER_ID_BLOCK_SIZE,
};
pub use error::ControllerError;
pub use image::{BrokerInfo, MetadataImage, PartitionInfo, TopicInfo};
pub use lifecycle::BrokerState;
pub use raft::network::connection_lost;
pub use topic_config::{TopicDefaults, TopicSettings};
