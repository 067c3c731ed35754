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
