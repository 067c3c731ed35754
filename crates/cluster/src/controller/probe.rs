//! Is a node's process gone? A TCP connection to an address it listens on is refused (a reset
//! from its operating system) once the process has died; a paused, cut-off or slow process
//! answers late or not at all, which says nothing. Only a refusal is taken as an answer, so a
//! live node is never judged dead by this.

use std::time::Duration;

/// True if connecting to `addr` is refused within `limit`.
pub(super) async fn refuses(addr: &str, limit: Duration) -> bool {
    matches!(
        tokio::time::timeout(limit, tokio::net::TcpStream::connect(addr)).await,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused
    )
}
