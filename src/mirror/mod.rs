//! The registry-mirror listener (`[mirror]`): hoard's one store served as a registry mirror, for
//! hosts that must not trust an intercepting CA. containerd `hosts.toml`, dockerd
//! `registry-mirrors` and podman/CRI-O `registries.conf` mirrors point at it; each request is
//! mapped to its upstream registry (`route.rs`) and answered by the same registry rules as
//! intercepted traffic (`answer.rs`).
//!
//! In a fleet, `peers.rs` serves the same API to the other hoards on `fleet.listen`.
//!
//! Plain HTTP, or TLS with the operator's certificate or a leaf from hoard's CA for
//! `mirror.names`; HTTP/1.1, and h2 over TLS by ALPN. Connections count against limits of their
//! own with the proxy's numbers, and close when idle as intercepted ones do.

use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tracing::Instrument as _;

use crate::access::accept::admitted;
use crate::access::limits::{ConnectionLimits, Ticket};
use crate::config::{Mirror, MirrorTls};
use crate::hoard::Hoard;
use crate::registry::conn::{self, Answer, Peer};
use crate::telemetry::Via;

mod answer;
pub(crate) mod peers;
mod route;

use answer::Mirrored;

/// Time allowed for a client's TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// The TLS server config the mirror presents, `None` for plain HTTP. Read or minted once, at
/// start: a certificate that cannot be used stops hoard.
pub(crate) fn tls_config(
    mirror: &Mirror,
    hoard: &Hoard,
) -> anyhow::Result<Option<Arc<ServerConfig>>> {
    use anyhow::Context as _;
    Ok(match &mirror.tls {
        MirrorTls::Plain => None,
        MirrorTls::Files { cert, key } => Some(
            crate::tls::server_config_from_files(crate::crypto_provider(), cert, key)
                .context("mirror.tls_cert")?,
        ),
        MirrorTls::Minted(names) => Some(
            hoard
                .ca
                .server_config_for(names)
                .context("minting the mirror's certificate (mirror.names)")?,
        ),
    })
}

/// Accepts mirror connections until the listener fails.
pub(crate) async fn serve(
    listener: TcpListener,
    hoard: Arc<Hoard>,
    tls: Option<Arc<ServerConfig>>,
) {
    let config = hoard.config();
    let limits = ConnectionLimits::new(config.max_connections, config.max_connections_per_client);
    hoard.listening(&limits);
    drop(config);
    accept(
        listener,
        hoard,
        tls,
        limits,
        Arc::new(Mirrored),
        Via::Mirror,
    )
    .await;
}

/// Accepts connections to the registry API until the listener fails, each admitted by `limits`,
/// over TLS when there is a config for it, and served by `answer`: the mirror's and the fleet's
/// peer endpoint's loop.
pub(crate) async fn accept<A: Answer>(
    listener: TcpListener,
    hoard: Arc<Hoard>,
    tls: Option<Arc<ServerConfig>>,
    limits: Arc<ConnectionLimits>,
    answer: Arc<A>,
    via: Via,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    loop {
        let (stream, peer, ticket) = admitted(&listener, &limits, &hoard.metrics).await;
        let span = match via {
            Via::Fleet => tracing::info_span!("fleet", peer = %peer),
            _ => tracing::info_span!("mirror", client = %peer),
        };
        let (hoard, acceptor, answer) = (hoard.clone(), acceptor.clone(), answer.clone());
        tokio::spawn(
            async move {
                let metrics = hoard.metrics.clone();
                let _open = metrics.connection();
                let _ = stream.set_nodelay(true);
                let peer = Peer {
                    client: peer.ip(),
                    via,
                };
                let served = match acceptor {
                    None => conn::serve(stream, false, hoard, ticket, peer, answer).await,
                    Some(acceptor) => {
                        let Some(tls) = handshake(&acceptor, stream, &ticket).await else {
                            return;
                        };
                        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                        conn::serve(tls, h2, hoard, ticket, peer, answer).await
                    }
                };
                if let Err(error) = served {
                    tracing::debug!(%error, "connection ended");
                }
            }
            .instrument(span),
        );
    }
}

/// The client's TLS handshake, bounded in time; a connection still in it may be evicted.
async fn handshake(
    acceptor: &tokio_rustls::TlsAcceptor,
    stream: TcpStream,
    ticket: &Ticket,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
    let done = tokio::select! {
        done = handshake => done,
        () = ticket.evicted() => return None,
    };
    match done {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(error)) => {
            tracing::info!(%error, "TLS handshake with a mirror client failed (does it trust the mirror's certificate?)");
            None
        }
        Err(_) => None,
    }
}
