//! The baseline: the simplest server that does what a broker must do with produced bytes —
//! take them off a TCP socket, append them to a file, optionally fsync, acknowledge — and a
//! client that pushes bytes at it with a bounded window of chunks in flight. Whatever it
//! reaches is this machine's limit for that work; broker figures are read as a share of it.
//!
//! Wire format, both directions big-endian: the client sends frames `[u32 length][bytes]`; the
//! server answers `[u32 count]` once `count` more chunks are written (and fsynced, in fsync
//! mode). The server writes every chunk that has arrived as one group with at most one fsync,
//! the group commit a broker does for `acks=all`.

use std::fs::File;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};

use crate::kafka_client;
use crate::throughput::Throughput;

/// Largest chunk the server accepts; checked before allocating.
pub const CHUNK_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Chunks read ahead of the file writer, per connection.
const CHUNKS_QUEUED_MAX: usize = 64;

/// Chunks the client may have unacknowledged; the server's read-ahead covers a full window.
pub const WINDOW_CHUNKS_MAX: usize = CHUNKS_QUEUED_MAX;

/// What the server does before acknowledging.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SyncMode {
    /// Acknowledge once written to the page cache, like `acks=1`.
    PageCache,
    /// Acknowledge once fsynced, one fsync per group of chunks, like `acks=all`.
    Fsync,
}

impl SyncMode {
    /// The name used on the command line and in the report.
    pub fn name(self) -> &'static str {
        match self {
            SyncMode::PageCache => "page-cache",
            SyncMode::Fsync => "fsync",
        }
    }
}

/// Command line of `ferrymq-bench sink-server`.
#[derive(clap::Args)]
pub struct ServerArgs {
    /// Address to listen on (loopback only).
    #[arg(long, value_parser = kafka_client::loopback_addr)]
    listen: SocketAddr,
    /// File to append to; emptied when a client leaves, so a client never pays for freeing the
    /// previous one's data. Connections are served one at a time.
    #[arg(long)]
    file: PathBuf,
    /// What happens before a chunk is acknowledged.
    #[arg(long, value_enum)]
    mode: SyncMode,
}

/// Command line of `ferrymq-bench sink-client`.
#[derive(clap::Args)]
pub struct ClientArgs {
    /// Sink server address (loopback only).
    #[arg(long, value_parser = kafka_client::loopback_addr)]
    connect: SocketAddr,
    /// Total bytes to push.
    #[arg(long)]
    bytes: u64,
    /// Bytes per chunk.
    #[arg(long, default_value_t = 256 * 1024,
          value_parser = clap::value_parser!(u32).range(1..=CHUNK_BYTES_MAX as i64))]
    chunk: u32,
    /// Chunks in flight before waiting for an acknowledgement.
    #[arg(long, default_value_t = kafka_client::INFLIGHT_REQUESTS_MAX as u16,
          value_parser = clap::value_parser!(u16).range(1..=WINDOW_CHUNKS_MAX as i64))]
    window: u16,
    /// Also print the equivalent in messages of this size.
    #[arg(long)]
    message_size: Option<u32>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 120)]
    timeout_s: u64,
}

/// What one sink client run should push.
#[derive(Clone, Copy, Debug)]
pub struct PushSpec {
    /// Sink server.
    pub addr: SocketAddr,
    /// Total bytes.
    pub total_bytes: u64,
    /// Bytes per chunk (the last may be shorter).
    pub chunk_bytes: usize,
    /// Chunks unacknowledged at most.
    pub window_chunks: usize,
    /// Bound on the whole run.
    pub timeout: Duration,
}

/// Runs `ferrymq-bench sink-server` until interrupted.
pub async fn run_server(args: ServerArgs) -> anyhow::Result<()> {
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    eprintln!(
        "sink-server: listening on {}, writing {} ({})",
        args.listen,
        args.file.display(),
        args.mode.name()
    );
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => accepted.context("accept")?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        match serve(stream, &args.file, args.mode).await {
            Ok(bytes) => eprintln!("sink-server: {peer} wrote {bytes} bytes"),
            Err(error) => eprintln!("sink-server: connection from {peer}: {error:#}"),
        }
    }
}

/// Serves one client until it closes: a task reads frames ahead while this one writes groups.
/// Chunk buffers go back to the reader once written, so steady state allocates nothing.
/// Returns the bytes written, then empties the file.
async fn serve(stream: TcpStream, path: &Path, mode: SyncMode) -> anyhow::Result<u64> {
    stream.set_nodelay(true)?;
    let mut file =
        Some(File::create(path).with_context(|| format!("creating {}", path.display()))?);
    let (reader, mut writer) = stream.into_split();
    let (chunks_tx, mut chunks) = mpsc::channel(CHUNKS_QUEUED_MAX);
    let (spare_tx, spare) = mpsc::channel(CHUNKS_QUEUED_MAX);
    let reading = tokio::spawn(read_frames(reader, chunks_tx, spare));
    let mut written_bytes = 0_u64;
    while let Some(first) = chunks.recv().await {
        let mut group = vec![first];
        while let Ok(chunk) = chunks.try_recv() {
            group.push(chunk);
        }
        let count = u32::try_from(group.len()).expect("bounded by CHUNKS_QUEUED_MAX");
        written_bytes += group.iter().map(|chunk| chunk.len() as u64).sum::<u64>();
        let taken = file.take().expect("every group hands the file back");
        let (written, group) = tokio::task::spawn_blocking(move || persist(taken, group, mode))
            .await
            .context("writer thread")??;
        file = Some(written);
        writer.write_all(&count.to_be_bytes()).await?;
        for buffer in group {
            // A full spare list means the reader has enough; this buffer is freed instead.
            let _ = spare_tx.try_send(buffer);
        }
    }
    reading.await.context("reader task")??;
    let file = file.expect("every group hands the file back");
    tokio::task::spawn_blocking(move || file.set_len(0))
        .await
        .context("truncating thread")??;
    Ok(written_bytes)
}

/// Reads frames until the client closes between two frames, into spare buffers when there
/// are any.
async fn read_frames(
    mut reader: OwnedReadHalf,
    chunks: mpsc::Sender<Vec<u8>>,
    mut spare: mpsc::Receiver<Vec<u8>>,
) -> anyhow::Result<()> {
    loop {
        let length = match reader.read_u32().await {
            Ok(length) => length as usize,
            Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(error) => return Err(error.into()),
        };
        if length == 0 || length > CHUNK_BYTES_MAX {
            bail!("frame of {length} bytes, outside 1..={CHUNK_BYTES_MAX}");
        }
        let mut chunk = spare.try_recv().unwrap_or_default();
        chunk.clear();
        chunk.reserve_exact(length);
        (&mut reader)
            .take(length as u64)
            .read_to_end(&mut chunk)
            .await?;
        if chunk.len() != length {
            bail!("connection closed inside a frame of {length} bytes");
        }
        if chunks.send(chunk).await.is_err() {
            bail!("the writer stopped");
        }
    }
}

/// Appends a group of chunks; in fsync mode they are durable when this returns (one
/// `fdatasync` for the group), otherwise they are in the page cache. Hands back the file and
/// the buffers for reuse.
fn persist(
    mut file: File,
    group: Vec<Vec<u8>>,
    mode: SyncMode,
) -> std::io::Result<(File, Vec<Vec<u8>>)> {
    for chunk in &group {
        file.write_all(chunk)?;
    }
    if mode == SyncMode::Fsync {
        file.sync_data()?;
    }
    Ok((file, group))
}

/// Runs `ferrymq-bench sink-client`.
pub async fn run_client(args: ClientArgs) -> anyhow::Result<()> {
    let throughput = push(PushSpec {
        addr: args.connect,
        total_bytes: args.bytes,
        chunk_bytes: args.chunk as usize,
        window_chunks: usize::from(args.window),
        timeout: Duration::from_secs(args.timeout_s),
    })
    .await?;
    println!(
        "sink: {} chunks, {} bytes in {:.3} s: {:.1} MB/s",
        throughput.messages,
        throughput.payload_bytes,
        throughput.elapsed.as_secs_f64(),
        throughput.mb_per_s()
    );
    if let Some(size) = args.message_size {
        let per_s =
            throughput.payload_bytes as f64 / f64::from(size) / throughput.elapsed.as_secs_f64();
        println!("sink: equivalent to {per_s:.0} msgs/s of {size} bytes");
    }
    Ok(())
}

/// Pushes `total_bytes` in chunks and waits for every acknowledgement. The returned
/// throughput counts chunks as its messages.
pub async fn push(spec: PushSpec) -> anyhow::Result<Throughput> {
    assert!(
        (1..=CHUNK_BYTES_MAX).contains(&spec.chunk_bytes),
        "{spec:?}"
    );
    assert!(
        (1..=WINDOW_CHUNKS_MAX).contains(&spec.window_chunks),
        "{spec:?}"
    );
    tokio::time::timeout(spec.timeout, push_unbounded(spec))
        .await
        .with_context(|| format!("sink push did not finish within {:?}", spec.timeout))?
}

async fn push_unbounded(spec: PushSpec) -> anyhow::Result<Throughput> {
    let chunk_bytes = spec.chunk_bytes as u64;
    let chunks_total = spec.total_bytes.div_ceil(chunk_bytes);
    let stream = TcpStream::connect(spec.addr)
        .await
        .with_context(|| format!("connecting to {}", spec.addr))?;
    stream.set_nodelay(true)?;
    let (mut reader, mut writer) = stream.into_split();
    let window = Arc::new(Semaphore::new(spec.window_chunks));
    let start = Instant::now();
    let acks = {
        let window = Arc::clone(&window);
        tokio::spawn(async move {
            let mut acked = 0_u64;
            while acked < chunks_total {
                let count = reader
                    .read_u32()
                    .await
                    .context("reading an acknowledgement")?;
                acked += u64::from(count);
                window.add_permits(count as usize);
            }
            anyhow::Ok(start.elapsed())
        })
    };
    let full_frame = frame(spec.chunk_bytes);
    for index in 0..chunks_total {
        let remaining = spec.total_bytes - index * chunk_bytes;
        window.acquire().await.context("window closed")?.forget();
        if remaining >= chunk_bytes {
            writer.write_all(&full_frame).await?;
        } else {
            writer.write_all(&frame(remaining as usize)).await?;
        }
    }
    let elapsed = acks.await.context("acknowledgement task")??;
    writer.shutdown().await?;
    Ok(Throughput {
        messages: chunks_total,
        payload_bytes: spec.total_bytes,
        elapsed,
    })
}

/// One frame: length prefix and `length` bytes of filler.
fn frame(length: usize) -> Vec<u8> {
    let prefix = u32::try_from(length).expect("chunks are at most CHUNK_BYTES_MAX");
    let mut frame = Vec::with_capacity(4 + length);
    frame.extend_from_slice(&prefix.to_be_bytes());
    frame.resize(4 + length, 0xa5);
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn server_writes_every_byte_pushed_then_empties_the_file() {
        let dir =
            std::env::temp_dir().join(format!("ferrymq-bench-sink-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sink.bin");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server_path = path.clone();
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            serve(stream, &server_path, SyncMode::Fsync).await
        });
        let spec = PushSpec {
            addr,
            total_bytes: 1_000_003,
            chunk_bytes: 64 * 1024,
            window_chunks: 5,
            timeout: Duration::from_secs(30),
        };
        let throughput = push(spec).await.unwrap();
        let written = server.await.unwrap().unwrap();
        assert_eq!(throughput.messages, 16);
        assert_eq!(written, 1_000_003);
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            0,
            "emptied after the client left"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
