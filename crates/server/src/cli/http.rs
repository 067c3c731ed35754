//! A small HTTP/1.1 client for the admin API: one request per connection (`Connection:
//! close`), JSON bodies, bearer token. Enough for `ferrymq policy`; not a general client.

use std::io::{Read, Write};
use std::net::TcpStream;

use anyhow::{Context, Result};

use super::{Failure, EXIT_FAILED, EXIT_UNREACHABLE, EXIT_UNSUPPORTED, REQUEST_TIMEOUT};

/// Largest response read.
const RESPONSE_BYTES_MAX: u64 = 16 * 1024 * 1024;

/// Where the admin API is.
#[derive(Debug, Clone, clap::Args)]
pub struct AdminTarget {
    /// Admin HTTP address of any node (setting admin.listen of that node).
    #[arg(
        long,
        default_value = "127.0.0.1:9644",
        env = "FERRYMQ_ADMIN",
        value_name = "HOST:PORT"
    )]
    pub admin: String,
    /// Admin token, if the cluster sets admin.token.
    #[arg(long, env = "FERRYMQ_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// Sends one request; returns the status and body. Non-2xx answers become errors carrying
/// the server's message, with exit code 4 for 501 (not available yet) and 1 otherwise.
pub fn call(
    target: &AdminTarget,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<(u16, String)> {
    let addr = target.admin.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).map_err(|e| Failure {
        code: EXIT_UNREACHABLE,
        message: format!("cannot reach the admin API at {addr}: {e}"),
    })?;
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    let body = body.unwrap_or("");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: application/json\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(t) = &target.token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    stream.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    stream
        .take(RESPONSE_BYTES_MAX)
        .read_to_end(&mut raw)
        .context("reading the admin API's answer")?;
    let (status, text) = parse_response(&raw)?;
    if !(200..300).contains(&status) {
        let message = serde_json::from_str::<ferrymq_admin::views::ErrorBody>(&text)
            .map(|e| e.message)
            .unwrap_or(text);
        let code = if status == 501 {
            EXIT_UNSUPPORTED
        } else {
            EXIT_FAILED
        };
        return Err(Failure {
            code,
            message: format!("{method} {path}: HTTP {status}: {message}"),
        }
        .into());
    }
    Ok((status, text))
}

/// Splits a raw HTTP/1.1 response into status and body (chunked or not).
fn parse_response(raw: &[u8]) -> Result<(u16, String)> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("malformed HTTP response")?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("malformed HTTP status line")?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    Ok((
        status,
        if chunked {
            dechunk(body)?
        } else {
            body.to_string()
        },
    ))
}

fn dechunk(mut body: &str) -> Result<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").context("malformed chunk")?;
        let size = usize::from_str_radix(size.trim(), 16).context("malformed chunk size")?;
        if size == 0 {
            return Ok(out);
        }
        out.push_str(rest.get(..size).context("short chunk")?);
        body = rest.get(size + 2..).context("short chunk")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked_responses() {
        let plain = b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(parse_response(plain).unwrap(), (201, "{}".into()));
        let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).unwrap(), (200, "abcde".into()));
    }
}
