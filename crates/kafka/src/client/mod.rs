//! A minimal Kafka client for FerryMQ's own command-line tools: one connection (`Client`),
//! typed requests at fixed versions this broker serves, responses decoded in order; a view of
//! the cluster that routes to partition leaders (`cluster`); record batches encoded from and
//! decoded into plain records, compressed ones included (`records`); Kafka's key partitioner
//! (`partitioner`). Not a general client.

pub mod cluster;
pub mod groups;
pub mod ops;
pub mod partitioner;
pub mod records;

pub use cluster::ClusterClient;

use std::time::Duration;

use bytes::{BufMut, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response accepted.
const RESPONSE_BYTES_MAX: usize = 100 * 1024 * 1024;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Connecting, reading or writing failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The answer could not be encoded or decoded.
    #[error("protocol: {0}")]
    Protocol(String),
    /// No answer in time.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// No broker of the bootstrap list could be reached.
    #[error("cannot reach any broker of {bootstrap}: {last}")]
    Unreachable { bootstrap: String, last: String },
    /// The cluster does not serve an API the command needs.
    #[error("{0}")]
    Unsupported(String),
}

impl ClientError {
    /// True when the cluster could not be reached at all (connection refused, timeout).
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            ClientError::Io(_) | ClientError::Timeout(_) | ClientError::Unreachable { .. }
        )
    }
}

/// A duplicate of a client's socket (`Client::watch`), only ever peeked at.
#[derive(Debug)]
pub struct ConnWatch(std::net::TcpStream);

impl ConnWatch {
    /// True if the other side closed or reset the connection: a peek finds the end of the
    /// stream or an error. Unread answer bytes or nothing to read yet mean it is open. Never
    /// blocks: the socket is non-blocking (set by tokio, shared by the duplicate).
    pub fn closed_by_peer(&self) -> bool {
        match self.0.peek(&mut [0u8; 1]) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
        }
    }
}

/// One connection to a broker.
#[derive(Debug)]
pub struct Client {
    stream: TcpStream,
    correlation_id: i32,
    timeout: Duration,
}

impl Client {
    /// Connects to `addr` (host:port).
    pub async fn connect(addr: &str, timeout: Duration) -> Result<Client, ClientError> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| ClientError::Timeout(timeout))??;
        if stream.local_addr()? == stream.peer_addr()? {
            // A self-connection to a port nobody listens on yet: refuse it, freeing the port.
            return Err(ClientError::Io(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "self-connection",
            )));
        }
        stream.set_nodelay(true)?;
        Ok(Client {
            stream,
            correlation_id: 0,
            timeout,
        })
    }

    /// A second handle on this connection's socket, to see whether the other side closed it
    /// while a call is in flight (`ConnWatch`). The socket stays open while either handle
    /// lives: drop the watch with the client.
    pub fn watch(&self) -> std::io::Result<ConnWatch> {
        use std::os::fd::AsFd;
        let fd = self.stream.as_fd().try_clone_to_owned()?;
        Ok(ConnWatch(std::net::TcpStream::from(fd)))
    }

    /// Changes how long a call may take.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Sends `req` at `version` and returns its response.
    pub async fn call<R: Request>(
        &mut self,
        req: &R,
        version: i16,
    ) -> Result<R::Response, ClientError>
    where
        R::Response: Decodable + HeaderVersion,
    {
        self.correlation_id += 1;
        let key = ApiKey::try_from(R::KEY)
            .map_err(|_| ClientError::Protocol(format!("unknown api key {}", R::KEY)))?;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("ferrymq-cli")));
        let mut buf = BytesMut::new();
        buf.put_i32(0);
        header
            .encode(&mut buf, key.request_header_version(version))
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        req.encode(&mut buf, version)
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let size = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&size.to_be_bytes());
        let timeout = self.timeout;
        tokio::time::timeout(timeout, async {
            self.stream.write_all(&buf).await?;
            let mut size = [0u8; 4];
            self.stream.read_exact(&mut size).await?;
            let size = i32::from_be_bytes(size);
            if size < 0 || size as usize > RESPONSE_BYTES_MAX {
                return Err(ClientError::Protocol(format!("response size {size}")));
            }
            let mut body = vec![0u8; size as usize];
            self.stream.read_exact(&mut body).await?;
            let mut body = bytes::Bytes::from(body);
            let rh = ResponseHeader::decode(&mut body, R::Response::header_version(version))
                .map_err(|e| ClientError::Protocol(e.to_string()))?;
            if rh.correlation_id != self.correlation_id {
                return Err(ClientError::Protocol(format!(
                    "correlation id {} != {}",
                    rh.correlation_id, self.correlation_id
                )));
            }
            R::Response::decode(&mut body, version)
                .map_err(|e| ClientError::Protocol(e.to_string()))
        })
        .await
        .map_err(|_| ClientError::Timeout(timeout))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_watch_sees_the_other_side_close_without_reading() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let client = Client::connect(&addr, Duration::from_secs(5))
            .await
            .unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        let watch = client.watch().unwrap();
        assert!(!watch.closed_by_peer(), "open, nothing sent");
        server.write_all(b"x").await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!watch.closed_by_peer(), "open, an unread byte waiting");
        // The peek took nothing: the client still reads the byte.
        let mut client = client;
        let mut byte = [0u8; 1];
        client.stream.read_exact(&mut byte).await.unwrap();
        assert_eq!(&byte, b"x");
        drop(server);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(watch.closed_by_peer(), "closed by the other side");
    }
}
