//! The network the chaos cluster runs on, and the network faults.
//!
//! As root, each node gets its own network namespace `fmqc-n<i>` whose `eth0` (10.77.0.<i>/24)
//! is one end of a veth pair; the other ends are enslaved to a bridge that lives in a namespace
//! of its own (`fmqc-sw`), so nothing is added to the host's bridges or firewall. The harness
//! (and its Kafka clients) reach the nodes from the host namespace through one more veth pair,
//! `fmqc-h` = 10.77.0.254/24. Faults act inside the node namespaces only: nftables rules in a
//! table `chaos` drop traffic between nodes (partitions, one-way loss), `tc netem` delays and
//! drops on a node's `eth0`. Everything is removed on drop, and leftovers of a run that died are
//! removed before a new one starts (one chaos run at a time per machine, under a lock file).
//!
//! Without root or without `ip`/`nft`/`tc`, nodes run on loopback and the network faults are
//! skipped, with a message saying so.

use std::fs::File;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Prefix of every namespace and interface the harness creates.
const PREFIX: &str = "fmqc";
/// The switch namespace holding the bridge.
const SWITCH_NS: &str = "fmqc-sw";
/// Host-side interface (10.77.0.254).
const HOST_IF: &str = "fmqc-h";
/// The private subnet, inside our own namespaces only.
const SUBNET: &str = "10.77.0";
/// The subnet in CIDR form.
const SUBNET_CIDR: &str = "10.77.0.0/24";
/// Rate of the `tbf` stand-in for netem's delay: below what a node sends under the workload,
/// so its queue fills and holds packets.
const TBF_RATE: &str = "2mbit";
/// Lock file serialising chaos runs on one machine.
const LOCK_PATH: &str = "/tmp/ferrymq-chaos.lock";

/// How nodes are connected.
#[derive(Debug)]
pub enum Network {
    /// Network namespaces joined by a bridge; network faults available.
    Namespaces(Namespaces),
    /// Plain loopback; network faults skipped.
    Loopback {
        /// Why namespaces are not used.
        reason: String,
    },
}

/// The namespaces of one run.
#[derive(Debug)]
pub struct Namespaces {
    nodes: usize,
    _lock: File,
}

/// Runs a command, failing with its stderr.
fn run(args: &[&str]) -> Result<()> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("running {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Runs a command inside namespace `ns`.
fn in_ns(ns: &str, args: &[&str]) -> Result<()> {
    let mut all = vec!["ip", "netns", "exec", ns];
    all.extend_from_slice(args);
    run(&all)
}

fn tool_missing(tool: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<std::path::PathBuf> = std::env::split_paths(&path).collect();
    dirs.extend(["/usr/sbin", "/sbin"].map(std::path::PathBuf::from));
    !dirs.iter().any(|d| d.join(tool).is_file())
}

/// Namespace of node `i` (1-based).
pub fn node_ns(i: usize) -> String {
    format!("{PREFIX}-n{i}")
}

/// Address of node `i` inside the private subnet.
pub fn node_ip(i: usize) -> String {
    format!("{SUBNET}.{i}")
}

impl Network {
    /// Namespaces when possible (root, `ip`, `nft`, `tc`, and `FERRYMQ_CHAOS_LOOPBACK` unset),
    /// else loopback with the reason.
    pub fn create(nodes: usize) -> Network {
        let reason = if std::env::var_os("FERRYMQ_CHAOS_LOOPBACK").is_some() {
            Some("FERRYMQ_CHAOS_LOOPBACK is set".to_string())
        } else if !is_root() {
            Some("not running as root".to_string())
        } else {
            ["ip", "nft", "tc"]
                .into_iter()
                .find(|t| tool_missing(t))
                .map(|t| format!("`{t}` is missing (scripts/setup-test-deps.sh installs it)"))
        };
        if let Some(reason) = reason {
            return Network::Loopback { reason };
        }
        match Namespaces::create(nodes) {
            Ok(ns) => Network::Namespaces(ns),
            Err(e) => Network::Loopback {
                reason: format!("network namespaces unavailable: {e:#}"),
            },
        }
    }

    /// True when network faults can be injected.
    pub fn faults_available(&self) -> bool {
        matches!(self, Network::Namespaces(_))
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl Namespaces {
    fn create(nodes: usize) -> Result<Namespaces> {
        let lock = File::create(LOCK_PATH).context("creating the chaos lock file")?;
        lock_exclusive(&lock)?;
        remove_all(nodes.max(9));
        let ns = Namespaces { nodes, _lock: lock };
        ns.build().inspect_err(|_| remove_all(nodes))?;
        Ok(ns)
    }

    fn build(&self) -> Result<()> {
        run(&["ip", "netns", "add", SWITCH_NS])?;
        run(&[
            "ip", "-n", SWITCH_NS, "link", "add", "br0", "type", "bridge",
        ])?;
        run(&["ip", "-n", SWITCH_NS, "link", "set", "br0", "up"])?;
        for i in 1..=self.nodes {
            let ns = node_ns(i);
            let (a, b) = (format!("{PREFIX}-n{i}a"), format!("{PREFIX}-n{i}b"));
            run(&["ip", "netns", "add", &ns])?;
            run(&["ip", "link", "add", &a, "type", "veth", "peer", "name", &b])?;
            run(&["ip", "link", "set", &a, "netns", &ns])?;
            run(&["ip", "-n", &ns, "link", "set", &a, "name", "eth0"])?;
            let cidr = format!("{}/24", node_ip(i));
            run(&["ip", "-n", &ns, "addr", "add", &cidr, "dev", "eth0"])?;
            run(&["ip", "-n", &ns, "link", "set", "eth0", "up"])?;
            run(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
            run(&["ip", "link", "set", &b, "netns", SWITCH_NS])?;
            run(&[
                "ip", "-n", SWITCH_NS, "link", "set", &b, "master", "br0", "up",
            ])?;
            in_ns(&ns, &["nft", "add", "table", "inet", "chaos"])?;
            for (chain, hook) in [("in", "input"), ("out", "output")] {
                let spec = format!("{{ type filter hook {hook} priority 0; policy accept; }}");
                in_ns(&ns, &["nft", "add", "chain", "inet", "chaos", chain, &spec])?;
            }
        }
        let hb = format!("{HOST_IF}b");
        run(&[
            "ip", "link", "add", HOST_IF, "type", "veth", "peer", "name", &hb,
        ])?;
        run(&["ip", "link", "set", &hb, "netns", SWITCH_NS])?;
        run(&[
            "ip", "-n", SWITCH_NS, "link", "set", &hb, "master", "br0", "up",
        ])?;
        let host_cidr = format!("{SUBNET}.254/24");
        run(&["ip", "addr", "add", &host_cidr, "dev", HOST_IF])?;
        run(&["ip", "link", "set", HOST_IF, "up"])?;
        Ok(())
    }

    /// Drops all traffic between `a` and `b` (both directions).
    pub fn cut(&self, a: usize, b: usize) -> Result<()> {
        self.drop_from(a, b)?;
        self.drop_from(b, a)
    }

    /// Drops the packets `from` sends to `to` (one way: `to`'s packets still reach `from`).
    pub fn drop_from(&self, from: usize, to: usize) -> Result<()> {
        let dst = node_ip(to);
        in_ns(
            &node_ns(from),
            &[
                "nft", "add", "rule", "inet", "chaos", "out", "ip", "daddr", &dst, "drop",
            ],
        )
    }

    /// Isolates `group` from every other node (clients still reach everyone).
    pub fn split(&self, group: &[usize]) -> Result<()> {
        for a in group {
            for b in (1..=self.nodes).filter(|b| !group.contains(b)) {
                self.cut(*a, b)?;
            }
        }
        Ok(())
    }

    /// Adds `delay_ms` (± `jitter_ms`) and `loss_pct` % loss to everything `node` sends, with
    /// `tc netem`. Kernels built without netem (no `sch_netem`) get the nearest thing they
    /// have: a `tbf` rate limit whose queue holds packets up to `delay_ms` (delay under load,
    /// drops past it) and an nftables rule dropping `loss_pct` % of packets at random. Returns
    /// what was applied.
    pub fn netem(
        &self,
        node: usize,
        delay_ms: u32,
        jitter_ms: u32,
        loss_pct: u32,
    ) -> Result<String> {
        let ns = node_ns(node);
        let (d, j, l) = (
            format!("{delay_ms}ms"),
            format!("{jitter_ms}ms"),
            format!("{loss_pct}%"),
        );
        let netem = in_ns(
            &ns,
            &[
                "tc", "qdisc", "replace", "dev", "eth0", "root", "netem", "delay", &d, &j, "loss",
                &l,
            ],
        );
        if netem.is_ok() {
            return Ok(format!(
                "tc netem +{delay_ms}±{jitter_ms}ms delay, {loss_pct}% loss"
            ));
        }
        in_ns(
            &ns,
            &[
                "tc", "qdisc", "replace", "dev", "eth0", "root", "tbf", "rate", TBF_RATE, "burst",
                "16kbit", "latency", &d,
            ],
        )?;
        let pct = loss_pct.to_string();
        in_ns(
            &ns,
            &[
                "nft",
                "add",
                "rule",
                "inet",
                "chaos",
                "out",
                "ip",
                "daddr",
                SUBNET_CIDR,
                "numgen",
                "random",
                "mod",
                "100",
                "<",
                &pct,
                "drop",
            ],
        )?;
        Ok(format!(
            "no netem in this kernel: tbf {TBF_RATE} queueing up to {delay_ms}ms, {loss_pct}% random loss (nft)"
        ))
    }

    /// Removes every rule and qdisc the faults added.
    pub fn heal(&self) -> Result<()> {
        for i in 1..=self.nodes {
            let ns = node_ns(i);
            in_ns(&ns, &["nft", "flush", "table", "inet", "chaos"])?;
            for (chain, hook) in [("in", "input"), ("out", "output")] {
                let spec = format!("{{ type filter hook {hook} priority 0; policy accept; }}");
                in_ns(&ns, &["nft", "add", "chain", "inet", "chaos", chain, &spec])?;
            }
            // Absent when no netem was added: not an error.
            let _ = in_ns(&ns, &["tc", "qdisc", "del", "dev", "eth0", "root"]);
        }
        Ok(())
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        remove_all(self.nodes);
    }
}

/// Removes every namespace and interface of a run (ours, or one that died), ignoring absent ones.
fn remove_all(nodes: usize) {
    let _ = run(&["ip", "link", "del", HOST_IF]);
    for i in 1..=nodes {
        let _ = run(&["ip", "netns", "del", &node_ns(i)]);
    }
    let _ = run(&["ip", "netns", "del", SWITCH_NS]);
}

fn lock_exclusive(f: &File) -> Result<()> {
    use std::os::fd::AsRawFd;
    // flock(2) through the util-linux tool would need a child holding the fd; do it directly.
    extern "C" {
        fn flock(fd: i32, operation: i32) -> i32;
    }
    const LOCK_EX: i32 = 2;
    // SAFETY: `f` is an open file descriptor for the duration of the call.
    let rc = unsafe { flock(f.as_raw_fd(), LOCK_EX) };
    if rc != 0 {
        bail!("flock {LOCK_PATH}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}
