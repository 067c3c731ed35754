//! Process logging through `tracing`: human-readable by default, JSON on request; `RUST_LOG`
//! overrides the configured filter.

use std::io::IsTerminal;

use anyhow::{bail, Result};
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber writing to stderr.
pub fn init(level: &str, format: &str) -> Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => EnvFilter::try_new(v)?,
        // openraft narrates every election at info; its warnings are what an operator needs.
        _ => EnvFilter::try_new(format!("openraft=warn,{level}"))?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        "text" => builder.init(),
        "json" => builder.json().init(),
        other => bail!("log.format must be text or json, not {other:?}"),
    }
    Ok(())
}
