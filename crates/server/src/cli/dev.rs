//! `ferrymq dev --nodes N`: a local cluster of N child processes on loopback, for trying things
//! out. Node i (1-based) listens for Kafka on `base-port + i - 1` and for controllers on
//! `controller-base-port + i - 1`, serves its admin API on `admin-base-port + i - 1`, keeps its data in `<dir>/node-i` and logs to
//! `<dir>/node-i.log`; the first min(N, 3) nodes are controller voters. Ctrl-C stops them all
//! cleanly (SIGTERM to each, then wait).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};

/// Options of `dev`.
#[derive(Debug, clap::Args)]
pub struct DevArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 3)]
    nodes: u16,
    /// Folder holding every node's data dir and log.
    #[arg(long, default_value = "./ferrymq-dev")]
    dir: PathBuf,
    /// Kafka port of node 1 (node i gets base + i - 1).
    #[arg(long, default_value_t = 9092)]
    base_port: u16,
    /// Controller port of node 1.
    #[arg(long, default_value_t = 9192)]
    controller_base_port: u16,
    /// Admin HTTP port of node 1 (metrics, health, /v1 API).
    #[arg(long, default_value_t = 9644)]
    admin_base_port: u16,
    /// Extra setting for every node, NAME=VALUE (repeatable).
    #[arg(long = "override", value_name = "NAME=VALUE")]
    overrides: Vec<String>,
}

/// Starts the nodes and waits for Ctrl-C.
pub async fn run(args: DevArgs) -> Result<()> {
    anyhow::ensure!(args.nodes >= 1, "--nodes must be at least 1");
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let exe = std::env::current_exe().context("locating the ferrymq binary")?;
    let voter_count = args.nodes.min(3);
    let voters: Vec<String> = (1..=voter_count)
        .map(|i| format!("{i}@127.0.0.1:{}", args.controller_base_port + i - 1))
        .collect();
    let voters = voters.join(",");
    let mut children: Vec<(u16, Child)> = Vec::new();
    for i in 1..=args.nodes {
        let log_path = args.dir.join(format!("node-{i}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let mut cmd = Command::new(&exe);
        cmd.arg("serve")
            .args(["--node-id", &i.to_string()])
            .args([
                "--data-dir",
                &args.dir.join(format!("node-{i}")).display().to_string(),
            ])
            .args(["--listen", &format!("127.0.0.1:{}", args.base_port + i - 1)])
            .args([
                "--controller-listen",
                &format!("127.0.0.1:{}", args.controller_base_port + i - 1),
            ])
            .args(["--controller-voters", &voters])
            .args([
                "--admin-listen",
                &format!("127.0.0.1:{}", args.admin_base_port + i - 1),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log));
        for o in &args.overrides {
            cmd.args(["--override", o]);
        }
        let child = cmd.spawn().with_context(|| format!("starting node {i}"))?;
        children.push((i, child));
    }
    let bootstrap: Vec<String> = (1..=args.nodes)
        .map(|i| format!("127.0.0.1:{}", args.base_port + i - 1))
        .collect();
    println!(
        "FerryMQ dev cluster: {} nodes, controller voters {voters}",
        args.nodes
    );
    for (i, c) in &children {
        println!(
            "  node {i}: kafka 127.0.0.1:{}  admin http://127.0.0.1:{}  pid {}  log {}",
            args.base_port + i - 1,
            args.admin_base_port + i - 1,
            c.id(),
            args.dir.join(format!("node-{i}.log")).display()
        );
    }
    println!(
        "\nconnect with:  --bootstrap-server {}",
        bootstrap.join(",")
    );
    println!(
        "status:        ferrymq cluster status --bootstrap {}",
        bootstrap[0]
    );
    println!("stop:          Ctrl-C\n");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                for (i, c) in &mut children {
                    if let Ok(Some(status)) = c.try_wait() {
                        println!("node {i} exited ({status}); see its log");
                    }
                }
                children.retain_mut(|(_, c)| matches!(c.try_wait(), Ok(None)));
                if children.is_empty() {
                    return Ok(());
                }
            }
        }
    }
    println!("stopping {} nodes", children.len());
    for (_, c) in &children {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
    }
    for (i, mut c) in children {
        let status = c.wait()?;
        println!("node {i} stopped ({status})");
    }
    Ok(())
}
