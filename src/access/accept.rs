//! Admission, the first step of the edge's accept loop (`crate::edge`): a connection is admitted
//! by the connection limits ([`ConnectionLimits`]) or answered with a 503 that says why and
//! closed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use super::limits::{ConnectionLimits, Refusal, Ticket};
use crate::telemetry::{ConnectionRefused, Metrics};

/// Waits for the next connection the limits admit. Over the per-client limit a connection is
/// refused with a 503; at the total limit the oldest connection with no request in flight is
/// closed to make room, and when every one is busy the accept waits (new connections wait in
/// the backlog). Accept errors (EMFILE and friends) back off instead of spinning.
pub(crate) async fn admitted(
    listener: &TcpListener,
    limits: &Arc<ConnectionLimits>,
    metrics: &Metrics,
) -> (TcpStream, SocketAddr, Ticket) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        match limits.admit_or_wait(peer.ip()).await {
            Ok((ticket, evicted)) => {
                if evicted {
                    metrics.connection_refused(ConnectionRefused::Evicted);
                }
                return (stream, peer, ticket);
            }
            Err(refusal) => refuse(&stream, peer, refusal, metrics),
        }
    }
}

/// Answers a connection that is not admitted with a 503 saying why, if the socket takes it
/// without waiting, and closes it.
fn refuse(stream: &TcpStream, peer: SocketAddr, refusal: Refusal, metrics: &Metrics) {
    let (label, reason) = match refusal {
        Refusal::PerClient => (
            ConnectionRefused::PerClient,
            format!(
                "too many connections from {} (proxy.max_connections_per_client)",
                peer.ip()
            ),
        ),
        Refusal::Full => (
            ConnectionRefused::Full,
            "too many connections (proxy.max_connections)".into(),
        ),
    };
    metrics.connection_refused(label);
    tracing::debug!(%peer, reason = %reason, "connection refused");
    let body = format!("hoard: {reason}\n");
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.try_write(response.as_bytes());
}
