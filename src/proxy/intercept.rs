//! Intercepted CONNECTs: TLS terminated with a leaf minted for the host, then HTTP/1.1 or h2 (by
//! ALPN) served to the registry cache.

use std::sync::Arc;

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;

use crate::access::User;
use crate::access::limits::Ticket;
use crate::edge::handshake;
use crate::error::Chain;
use crate::hoard::Hoard;
use crate::registry::conn::{self, Client};
use crate::telemetry::Via;

/// Terminates TLS on an upgraded CONNECT to `host:port` from `client` and serves registry
/// requests on it ([`conn::serve`]: the ticket keeps it counted against the connection limits).
pub(super) async fn serve(
    upgraded: Upgraded,
    host: String,
    port: u16,
    hoard: Arc<Hoard>,
    ticket: Ticket,
    client: std::net::IpAddr,
    user: Option<User>,
) {
    let config = match hoard.ca.server_config(&host) {
        Ok(config) => config,
        Err(error) => {
            tracing::error!(%host, error = %Chain(&error), "cannot mint a certificate");
            return;
        }
    };
    // In a block of its own, and the handshake boxed: the task waiting on an idle connection
    // keeps room only for the stream conn::serve holds, not for the handshake nor a second one.
    let serving = {
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let tls = match Box::pin(handshake(&acceptor, TokioIo::new(upgraded), &ticket)).await {
            Ok(tls) => tls,
            Err(failed) => return failed.log("does it trust hoard's CA?"),
        };
        let target = crate::registry::Target::new(&host, port).map(|t| t.borrowed_by(user));
        let Some(target) = target else {
            tracing::warn!(%host, "not a usable registry host name");
            return;
        };
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        let client = Client {
            ip: client,
            via: Via::Proxy,
        };
        conn::serve(tls, h2, hoard, ticket, client, Arc::new(target))
    };
    let served = serving.await;
    if let Err(error) = served {
        tracing::debug!(%host, %error, "intercepted connection ended");
    }
}
