//! The processes the suite starts — the broker and the sink servers — each on a free loopback
//! port, with output going to a log file, killed by PID when dropped.

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

/// How long a started process may take to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Lines of a failed process's log shown in an error.
const LOG_TAIL_LINES: usize = 20;

/// A child process that is killed when this is dropped.
pub struct ChildProcess {
    /// What it is, for messages.
    name: String,
    child: Child,
    /// Where it listens.
    addr: SocketAddr,
    /// Its standard output and error.
    log_path: PathBuf,
}

impl ChildProcess {
    /// Starts `command` (which must listen on `addr`), sending its output to `log_path`, and
    /// waits until it accepts connections.
    pub async fn start(
        name: &str,
        mut command: Command,
        addr: SocketAddr,
        log_path: &Path,
    ) -> anyhow::Result<ChildProcess> {
        let log =
            File::create(log_path).with_context(|| format!("creating {}", log_path.display()))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {name}: {command:?}"))?;
        let mut process = ChildProcess {
            name: name.to_string(),
            child,
            addr,
            log_path: log_path.to_path_buf(),
        };
        process.wait_until_accepting().await?;
        Ok(process)
    }

    /// The process id, for memory sampling.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// An error with the end of the log if the process has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited ({status}); its log ends:\n{}",
                self.name,
                self.log_tail()
            );
        }
        Ok(())
    }

    /// The last lines of the process's output.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }

    async fn wait_until_accepting(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            self.check_running()?;
            if tokio::net::TcpStream::connect(self.addr).await.is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} did not accept on {} within {READY_TIMEOUT:?}; its log ends:\n{}",
                    self.name,
                    self.addr,
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        // SIGKILL to this child's PID only; its data is thrown away with the work directory.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback address with a port that was free a moment ago. Another process could take it
/// before the child binds; the child then fails to start and says so.
pub fn free_loopback_addr() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?)
}
