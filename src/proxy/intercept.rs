//! Intercepted CONNECTs: TLS terminated with a leaf minted for the host, then HTTP/1.1 or h2 (by
//! ALPN) served to the registry cache.

use std::sync::Arc;
use std::time::Duration;

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;

use crate::access::limits::Ticket;
use crate::error::Chain;
use crate::hoard::Hoard;
use crate::registry::conn::{self, Peer};
use crate::telemetry::Via;

/// Time allowed for the client's TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Terminates TLS on an upgraded CONNECT to `host:port` from `client` and serves registry
/// requests on it ([`conn::serve`]: the ticket keeps it counted against the connection limits).
pub async fn serve(
    upgraded: Upgraded,
    host: String,
    port: u16,
    hoard: Arc<Hoard>,
    ticket: Ticket,
    client: std::net::IpAddr,
) {
    let config = match hoard.ca.server_config(&host) {
        Ok(config) => config,
        Err(error) => {
            tracing::error!(%host, error = %Chain(&error), "cannot mint a certificate");
            return;
        }
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let handshake =
        tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(TokioIo::new(upgraded)));
    // A connection still in its handshake has no request in flight: it may be evicted.
    let handshake = tokio::select! {
        done = handshake => done,
        () = ticket.evicted() => {
            tracing::debug!(%host, "closed in the TLS handshake to make room");
            return;
        }
    };
    let tls = match handshake {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            // Typically a client that does not trust hoard's CA: say so where an operator looks.
            tracing::warn!(%host, %error, "TLS handshake with client failed (does it trust hoard's CA?)");
            return;
        }
        Err(_) => {
            tracing::debug!(%host, "TLS handshake timed out");
            return;
        }
    };

    let target = crate::registry::Target::new(&host, port);
    let Some(target) = target else {
        tracing::warn!(%host, "not a usable registry host name");
        return;
    };
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let peer = Peer {
        client,
        via: Via::Proxy,
    };
    let served = conn::serve(tls, h2, hoard, ticket, peer, Arc::new(target)).await;
    if let Err(error) = served {
        tracing::debug!(%host, %error, "intercepted connection ended");
    }
}
