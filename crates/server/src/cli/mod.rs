//! Operator subcommands of the `ferrymq` binary that talk to a running cluster.

pub mod cluster;
pub mod dev;
