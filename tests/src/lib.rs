//! Support for end-to-end tests: the real `ferrymq` binary as a child process on a free port
//! with its own temporary data dir, killed on drop, and a raw Kafka-protocol client for
//! sending exactly the bytes a test wants (bad input included).

pub mod chaos;
pub mod cluster;
pub mod delay_proxy;
pub mod workload;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Path of the `ferrymq` binary: `FERRYMQ_BIN`, else next to this test executable's target dir.
pub fn ferrymq_bin() -> PathBuf {
    if let Ok(p) = std::env::var("FERRYMQ_BIN") {
        return PathBuf::from(p);
    }
    // target/<profile>/deps/<test-exe> → target/<profile>/ferrymq
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let bin = profile_dir.join("ferrymq");
    assert!(
        bin.exists(),
        "{} is missing: build it first (cargo build -p ferrymq-server) or set FERRYMQ_BIN",
        bin.display()
    );
    bin
}

/// `n` different free TCP ports on loopback (bound then released; the brokers bind them right
/// after).
pub fn free_ports(n: usize) -> Vec<u16> {
    // Held together while chosen, so they differ from each other (two `free_port` calls in a
    // row can return the same port: a cluster once got one controller port for two nodes).
    let held: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind port 0"))
        .collect();
    held.iter()
        .map(|l| l.local_addr().expect("addr").port())
        .collect()
}

/// A free TCP port on loopback (bound then released; the broker binds it right after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind port 0")
        .local_addr()
        .expect("addr")
        .port()
}

/// A broker child process. Killed (SIGKILL) on drop if still running.
pub struct BrokerProcess {
    child: Option<Child>,
    /// `127.0.0.1:port` of the Kafka listener.
    pub addr: String,
    /// `127.0.0.1:port` of the admin HTTP listener (metrics, health, /v1), as this start of
    /// the broker logged it (it is given port 0 and picks a free one).
    pub admin_addr: String,
    /// The data directory (kept across restarts).
    pub data_dir: PathBuf,
    log_path: PathBuf,
    extra: Vec<String>,
    /// Command-line arguments before the overrides (node id, controller settings).
    args: Vec<String>,
    /// Length of the log file at the current start: readiness is looked for after it.
    log_len_at_launch: u64,
    /// Network namespace the process runs in (`ip netns exec`), if any.
    netns: Option<String>,
    _tmp: Option<tempfile::TempDir>,
}

impl BrokerProcess {
    /// Starts a broker on a free port with a fresh data dir and extra `--override` settings.
    pub fn start(overrides: &[&str]) -> Result<BrokerProcess> {
        let mut b = BrokerProcess::prepare(overrides, Vec::new())?;
        b.spawn()?;
        Ok(b)
    }

    /// A broker ready to start with `args` before the overrides (not started yet).
    pub fn prepare(overrides: &[&str], args: Vec<String>) -> Result<BrokerProcess> {
        let tmp = tempfile::tempdir()?;
        Ok(BrokerProcess {
            child: None,
            addr: format!("127.0.0.1:{}", free_port()),
            admin_addr: String::new(),
            data_dir: tmp.path().join("data"),
            log_path: tmp.path().join("broker.log"),
            extra: overrides.iter().map(|s| s.to_string()).collect(),
            args,
            log_len_at_launch: 0,
            netns: None,
            _tmp: Some(tmp),
        })
    }

    /// A broker ready to start at `addr`, keeping its data dir and log under `dir` (which the
    /// caller owns and removes), inside network namespace `netns` when given.
    pub fn prepare_in(
        dir: &Path,
        addr: String,
        netns: Option<String>,
        overrides: &[String],
        args: Vec<String>,
    ) -> Result<BrokerProcess> {
        std::fs::create_dir_all(dir)?;
        Ok(BrokerProcess {
            child: None,
            addr,
            admin_addr: String::new(),
            data_dir: dir.join("data"),
            log_path: dir.join("broker.log"),
            extra: overrides.to_vec(),
            args,
            log_len_at_launch: 0,
            netns,
            _tmp: None,
        })
    }

    /// Sets the arguments given before the overrides (takes effect at the next start).
    pub fn set_args(&mut self, args: Vec<String>) {
        self.args = args;
    }

    /// Starts the process without waiting for it to serve.
    pub fn launch(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)?;
        let mut cmd = match &self.netns {
            Some(ns) => {
                // `ip netns exec` execs the broker in place: the child's pid is the broker's.
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(ferrymq_bin());
                c
            }
            None => Command::new(ferrymq_bin()),
        };
        cmd.arg("serve")
            .arg("--listen")
            .arg(&self.addr)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--admin-listen")
            .arg("127.0.0.1:0")
            .args(&self.args)
            .env(
                "RUST_LOG",
                std::env::var("FERRYMQ_TEST_LOG").unwrap_or_else(|_| "info,openraft=warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        for o in &self.extra {
            cmd.arg("--override").arg(o);
        }
        self.log_len_at_launch = std::fs::metadata(&self.log_path).map_or(0, |m| m.len());
        self.admin_addr.clear();
        self.child = Some(cmd.spawn().context("spawning ferrymq")?);
        Ok(())
    }

    /// Waits until the process logs that it serves (or exits, or `timeout` passes).
    pub fn wait_serving(&mut self, timeout: Duration) -> Result<()> {
        self.wait_ready(timeout)
    }

    fn spawn(&mut self) -> Result<()> {
        self.launch()?;
        self.wait_ready(Duration::from_secs(30))
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            // Serving starts once the node is registered with the controller and caught up.
            if self.log_since_launch().contains("FerryMQ broker ready") {
                self.admin_addr = self.logged_admin_addr().unwrap_or_default();
                return Ok(());
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!("broker exited early with {status}; log:\n{}", self.log());
            }
            if Instant::now() > deadline {
                bail!(
                    "broker not listening on {} after {timeout:?}; log:\n{}",
                    self.addr,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The admin address this start of the broker logged (`admin API listening
    /// admin_listen=...`, text or JSON logs), if it has yet.
    fn logged_admin_addr(&self) -> Option<String> {
        let line = self
            .log_since_launch()
            .lines()
            .find(|l| l.contains("admin API listening"))?
            .to_string();
        let rest = line
            .split("admin_listen=")
            .nth(1)
            .or_else(|| line.split("\"admin_listen\":\"").nth(1))?;
        Some(
            rest.split(|c: char| c.is_whitespace() || c == '"')
                .next()?
                .to_string(),
        )
    }

    /// The broker's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// What the broker logged since its current (or last) start.
    pub fn log_since_launch(&self) -> String {
        use std::io::{Read, Seek, SeekFrom};
        let mut out = Vec::new();
        if let Ok(mut f) = std::fs::File::open(&self.log_path) {
            if f.seek(SeekFrom::Start(self.log_len_at_launch)).is_ok() {
                let _ = f.read_to_end(&mut out);
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Path of the broker's log file.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL, as a crash: nothing is flushed.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit; returns the exit code.
    pub fn stop(&mut self) -> Result<i32> {
        let mut c = self.child.take().context("not running")?;
        // SAFETY-free: sending a signal to our own child by pid.
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status()?;
        assert!(status.success(), "kill -TERM failed");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = c.try_wait()? {
                return Ok(s.code().unwrap_or(-1));
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                bail!(
                    "broker did not stop within 30 s after SIGTERM; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the broker again on the same port and data dir.
    pub fn restart(&mut self) -> Result<()> {
        assert!(self.child.is_none(), "stop or kill the broker first");
        self.spawn()
    }

    /// Sends a signal (`STOP`, `CONT`, `TERM`...) to the process.
    pub fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .arg(format!("-{sig}"))
                .arg(c.id().to_string())
                .status();
        }
    }

    /// Waits for the process to exit on its own; its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Some(status.code().unwrap_or(-1));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        // A paused process must be resumed to die of SIGKILL promptly on every kernel.
        self.signal("CONT");
        self.kill9();
        if std::thread::panicking() {
            eprintln!("---- broker log ({}) ----\n{}", self.addr, self.log());
        }
    }
}

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Body as text.
    pub body: String,
}

impl HttpResponse {
    /// The body parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// One HTTP/1.1 request to `addr` (host:port) with `Connection: close`; `token` goes in an
/// `Authorization: Bearer` header.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> Result<HttpResponse> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let body = body.unwrap_or("");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (head, rest) = raw.split_once("\r\n\r\n").context("no HTTP header end")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .context("no status")?
        .parse()?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = rest;
        loop {
            let (size, tail) = rest.split_once("\r\n").context("chunk size")?;
            let size = usize::from_str_radix(size.trim(), 16)?;
            if size == 0 {
                break;
            }
            out.push_str(&tail[..size]);
            rest = &tail[size + 2..];
        }
        out
    } else {
        rest.to_string()
    };
    Ok(HttpResponse { status, body })
}

/// A GET that must answer 200.
pub fn http_get_ok(addr: &str, path: &str) -> HttpResponse {
    let r = http(addr, "GET", path, None, None).expect("admin API reachable");
    assert_eq!(r.status, 200, "GET {path}: {}", r.body);
    r
}

/// One sample of a Prometheus text exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name (with `_bucket`, `_sum`, `_count` for histogram series).
    pub name: String,
    /// Labels.
    pub labels: std::collections::BTreeMap<String, String>,
    /// Value.
    pub value: f64,
}

/// Parses the Prometheus text format (comments skipped), checking every line is well formed.
pub fn parse_prometheus(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("`series value`");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series.to_string(), Default::default()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("closing brace");
                let mut labels = std::collections::BTreeMap::new();
                for pair in body.split("\",").filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once("=\"").expect("label=\"value\"");
                    labels.insert(k.to_string(), v.trim_end_matches('"').to_string());
                }
                (name.to_string(), labels)
            }
        };
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "metric name {name:?}"
        );
        out.push(Sample {
            name,
            labels,
            value,
        });
    }
    out
}

/// The value of the series `name` whose labels include `labels`, if present.
pub fn metric(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

/// Scrapes and parses `/metrics` of the admin listener at `admin_addr`.
pub fn scrape(admin_addr: &str) -> Vec<Sample> {
    parse_prometheus(&http_get_ok(admin_addr, "/metrics").body)
}

/// What a `ferrymq` CLI run printed and its exit code.
#[derive(Debug, Clone)]
pub struct CliOutput {
    /// Exit code.
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs the `ferrymq` binary with `args`, feeding `stdin`.
pub fn ferrymq(args: &[&str], stdin: &str) -> CliOutput {
    use std::io::Write;
    let mut child = Command::new(ferrymq_bin())
        .args(args)
        .env_remove("FERRYMQ_BOOTSTRAP")
        .env_remove("FERRYMQ_ADMIN")
        .env_remove("FERRYMQ_ADMIN_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning ferrymq");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("writing stdin");
    let out = child.wait_with_output().expect("ferrymq output");
    CliOutput {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A Kafka connection speaking raw frames, for tests that control every byte.
pub struct RawClient {
    stream: TcpStream,
    correlation_id: i32,
}

impl RawClient {
    /// Connects to `addr`.
    pub async fn connect(addr: &str) -> Result<RawClient> {
        Ok(RawClient {
            stream: TcpStream::connect(addr).await?,
            correlation_id: 0,
        })
    }

    /// Sends raw bytes as they are.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream.write_all(bytes).await?;
        Ok(())
    }

    /// Reads one response frame (without its size); `None` if the broker closed the connection.
    pub async fn read_frame(&mut self) -> Result<Option<Bytes>> {
        let mut size = [0u8; 4];
        match tokio::time::timeout(Duration::from_secs(30), self.stream.read_exact(&mut size))
            .await?
        {
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::UnexpectedEof
                    || e.kind() == std::io::ErrorKind::ConnectionReset =>
            {
                return Ok(None)
            }
            Err(e) => return Err(e.into()),
        }
        let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
        self.stream.read_exact(&mut body).await?;
        Ok(Some(Bytes::from(body)))
    }

    /// True if the broker closed the connection (reads EOF within a few seconds).
    pub async fn is_closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(
            tokio::time::timeout(Duration::from_secs(5), self.stream.read(&mut b)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    /// Encodes a request with header at `version` into a frame.
    pub fn frame<R: Request>(&mut self, req: &R, version: i16) -> Result<BytesMut> {
        self.correlation_id += 1;
        let key = ApiKey::try_from(R::KEY).map_err(|_| anyhow::anyhow!("bad key"))?;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("raw-test")));
        let mut buf = BytesMut::new();
        buf.put_i32(0);
        header.encode(&mut buf, key.request_header_version(version))?;
        req.encode(&mut buf, version)?;
        let size = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&size.to_be_bytes());
        Ok(buf)
    }

    /// Sends a request and decodes its response.
    pub async fn call<R: Request>(&mut self, req: &R, version: i16) -> Result<R::Response>
    where
        R::Response: Decodable + HeaderVersion,
    {
        let frame = self.frame(req, version)?;
        self.send_raw(&frame).await?;
        let mut body = self.read_frame().await?.context("connection closed")?;
        let header = ResponseHeader::decode(&mut body, R::Response::header_version(version))?;
        assert_eq!(
            header.correlation_id, self.correlation_id,
            "responses come in request order"
        );
        R::Response::decode(&mut body, version)
    }

    /// Reads and decodes the next response of type `R::Response`.
    pub async fn read_response<R: Request>(&mut self, version: i16) -> Result<(i32, R::Response)>
    where
        R::Response: Decodable + HeaderVersion,
    {
        let mut body = self.read_frame().await?.context("connection closed")?;
        let header = ResponseHeader::decode(&mut body, R::Response::header_version(version))?;
        Ok((
            header.correlation_id,
            R::Response::decode(&mut body, version)?,
        ))
    }
}

/// A unique topic name for a test.
pub fn topic(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Reads a big-endian i16 at `at` (for poking at raw response bytes).
pub fn i16_at(b: &[u8], at: usize) -> i16 {
    (&b[at..at + 2]).get_i16()
}
