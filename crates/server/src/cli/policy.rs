//! `ferrymq policy list|create|delete`: replication policies through the admin API (Kafka has
//! no request for them).

use anyhow::{Context, Result};
use ferrymq_admin::views::{AllWord, PolicyView, ReplicasView};

use super::http::{call, AdminTarget};

/// `policy` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum PolicyCommand {
    /// List replication policies.
    List {
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Create or replace a policy: topics matching PATTERN created without a replication
    /// factor get REPLICAS replicas (and min.insync.replicas if given).
    Create {
        /// Policy name.
        name: String,
        /// Topic-name glob, `*` matching any run of characters (e.g. `orders-*`).
        #[arg(long)]
        pattern: String,
        /// `all` (every broker at creation time) or a count.
        #[arg(long, default_value = "all")]
        replicas: String,
        /// min.insync.replicas for matching topics.
        #[arg(long)]
        min_insync_replicas: Option<i32>,
        /// Evaluation order: lower first.
        #[arg(long, default_value_t = 0)]
        priority: i32,
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Delete a policy (topics already created keep their replicas).
    Delete {
        /// Policy name.
        name: String,
        #[command(flatten)]
        target: AdminTarget,
    },
}

fn replicas_text(r: &ReplicasView) -> String {
    match r {
        ReplicasView::Count(n) => n.to_string(),
        ReplicasView::Word(AllWord::All) => "all".into(),
    }
}

/// Runs a `policy` subcommand.
pub fn run(cmd: PolicyCommand) -> Result<()> {
    match cmd {
        PolicyCommand::List { target } => {
            let (_, body) = call(&target, "GET", "/v1/policies", None)?;
            let policies: Vec<PolicyView> =
                serde_json::from_str(&body).context("decoding the policy list")?;
            println!(
                "{:<24} {:<24} {:>8} {:>18} {:>8}",
                "name", "pattern", "replicas", "min.insync.replicas", "priority"
            );
            for p in policies {
                println!(
                    "{:<24} {:<24} {:>8} {:>18} {:>8}",
                    p.name,
                    p.pattern,
                    replicas_text(&p.replicas),
                    p.min_insync_replicas
                        .map_or("-".to_string(), |m| m.to_string()),
                    p.priority
                );
            }
        }
        PolicyCommand::Create {
            name,
            pattern,
            replicas,
            min_insync_replicas,
            priority,
            target,
        } => {
            let replicas = match replicas.trim() {
                "all" => ReplicasView::Word(AllWord::All),
                n => ReplicasView::Count(n.parse().map_err(|_| {
                    super::failed(format!("--replicas must be `all` or a count, not {n:?}"))
                })?),
            };
            let view = PolicyView {
                name: name.clone(),
                pattern,
                replicas,
                min_insync_replicas,
                priority,
            };
            call(
                &target,
                "POST",
                "/v1/policies",
                Some(&serde_json::to_string(&view)?),
            )?;
            println!("policy {name} set");
        }
        PolicyCommand::Delete { name, target } => {
            call(&target, "DELETE", &format!("/v1/policies/{name}"), None)?;
            println!("policy {name} deleted");
        }
    }
    Ok(())
}
