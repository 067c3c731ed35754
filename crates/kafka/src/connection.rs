//! One client connection: frames are read ahead (up to `inflight_requests_max`), handled
//! concurrently, and answered strictly in request order, as Kafka clients require.
//!
//! A reader task owns the socket's read half and feeds frames through a bounded channel; the
//! connection task runs the handlers and writes responses. A bad frame or an unparsable
//! request ends this connection only, logged once.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::{FuturesOrdered, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::context::ServerContext;
use crate::dispatch::{self, Outcome};
use crate::frame::read_frame;
use crate::order::OrderGate;

/// Serves one connection until the peer leaves or sends something unacceptable.
pub async fn serve(ctx: Arc<ServerContext>, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let (mut read_half, mut write_half) = stream.into_split();
    let inflight_max = ctx.config.limits.inflight_requests_max.max(1);
    let request_bytes_max = ctx.config.limits.request_bytes_max;
    let (tx, mut rx) = mpsc::channel::<Bytes>(inflight_max);
    let reader = tokio::spawn(async move {
        loop {
            match read_frame(&mut read_half, request_bytes_max).await {
                Ok(Some(frame)) => {
                    if tx.send(frame).await.is_err() {
                        return None;
                    }
                }
                Ok(None) => return None,
                Err(e) => return Some(e.to_string()),
            }
        }
    });
    let gate = Arc::new(OrderGate::default());
    let mut inflight = FuturesOrdered::new();
    let mut reading = true;
    let mut close_reason: Option<String> = None;
    loop {
        tokio::select! {
            frame = rx.recv(), if reading && inflight.len() < inflight_max => match frame {
                Some(frame) => {
                    let ctx = ctx.clone();
                    let gate = gate.clone();
                    // Produce requests take a ticket in read order (frame bytes 0..2: api key 0).
                    let ticket = (frame.len() >= 2 && frame[..2] == [0, 0]).then(|| gate.ticket());
                    inflight.push_back(async move { dispatch::handle(&ctx, frame, (&gate, ticket)).await });
                }
                None => reading = false,
            },
            Some(outcome) = inflight.next(), if !inflight.is_empty() => match outcome {
                Outcome::Respond(bytes) => {
                    if let Err(e) = write_half.write_all(&bytes).await {
                        tracing::debug!(%peer, error = %e, "write failed; closing");
                        break;
                    }
                }
                Outcome::Silent => {}
                Outcome::Close(reason) => {
                    close_reason = Some(reason);
                    break;
                }
            },
            else => break,
        }
        if !reading && inflight.is_empty() {
            break;
        }
    }
    reader.abort();
    if let Ok(Some(e)) = reader.await {
        close_reason.get_or_insert(e);
    }
    if let Some(reason) = close_reason {
        crate::metrics::closed_for_bad_input();
        tracing::warn!(%peer, reason, "closing connection");
    }
}
