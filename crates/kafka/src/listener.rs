//! The Kafka listener: accepts connections up to `connections_max` and serves each in its own
//! task.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::connection;
use crate::context::ServerContext;

/// Accepts and serves connections until `stop` turns true.
pub async fn run(ctx: Arc<ServerContext>, listener: TcpListener, mut stop: watch::Receiver<bool>) {
    let open = Arc::new(AtomicUsize::new(0));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and similar: back off a little instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        if open.load(Ordering::Acquire) >= ctx.config.limits.connections_max {
            tracing::warn!(%peer, max = ctx.config.limits.connections_max, "connection refused: max.connections reached");
            drop(stream);
            continue;
        }
        open.fetch_add(1, Ordering::AcqRel);
        let ctx = ctx.clone();
        let open = open.clone();
        crate::metrics::connection_open(1);
        tokio::spawn(async move {
            connection::serve(ctx, stream, peer).await;
            crate::metrics::connection_open(-1);
            open.fetch_sub(1, Ordering::AcqRel);
        });
    }
}
