//! The listener edge every listener shares (the proxy, the mirror, the fleet's peer endpoint and
//! the admin listener): a [`Listener`] owns its socket, its connection limits, its optional TLS
//! and its role (a client listener's `via` label, or admin), and runs the one accept loop, a
//! client listener's until the server's [`Stop`] signal. Below it:
//! `admit.rs`, who may ask (allow-list, logins, 429); `map.rs` and `route.rs`, a registry-API
//! request mapped to its registry, for the mirror and the peer endpoint alike; `setup.rs`, the
//! host setup scripts the proxy and the TLS mirror serve. `/readyz` is answered here, for the
//! proxy port and the admin listener alike ([`Stop::readiness`]).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Response, StatusCode};
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tracing::Instrument as _;

use crate::access::accept::admitted;
use crate::access::limits::{ConnectionLimits, Ticket};
use crate::hoard::Hoard;
use crate::http::{Body, full_body};
use crate::registry::conn::{self, Answer};
use crate::telemetry::Via;

pub(crate) mod admit;
pub(crate) mod map;
pub(crate) mod route;
pub(crate) mod setup;

/// Time allowed for a client's TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// The server's one shutdown signal, as each task that must stop holds it.
#[derive(Debug, Clone)]
pub(crate) struct Stop(watch::Receiver<bool>);

/// The sending side of [`Stop`], held by the server; dropping it stops everyone too.
#[derive(Debug)]
pub(crate) struct StopSender(watch::Sender<bool>);

impl Stop {
    /// A new signal, not given yet.
    pub(crate) fn new() -> (StopSender, Stop) {
        let (sender, receiver) = watch::channel(false);
        (StopSender(sender), Stop(receiver))
    }

    /// Waits until the signal is given (or its sender is gone).
    pub(crate) async fn given(&mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }

    /// Whether the signal was given: the server is draining.
    pub(crate) fn is_given(&self) -> bool {
        *self.0.borrow()
    }

    /// `/readyz`, on the proxy port and the admin listener alike: 200 `ready` while hoard takes
    /// connections, 503 `draining` once the signal is given. There is no answer for "the store
    /// is not open yet": the listeners bind only after the CA and the store are open, so a
    /// hoard that does not listen yet is the one not ready.
    pub(crate) fn readiness(&self) -> Response<Body> {
        let (status, text) = if self.is_given() {
            (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
        } else {
            (StatusCode::OK, "ready\n")
        };
        let mut response = Response::new(full_body(text));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}

impl StopSender {
    /// Gives the signal: every listener stops accepting.
    pub(crate) fn give(&self) {
        self.0.send_replace(true);
    }
}

/// A stream a connection is served on: TCP, or TLS over it.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// What a listener is for, which decides how long it accepts and whether a shutdown waits for
/// its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// A client listener (the proxy, the mirror, the peer endpoint) with its `via` label: its
    /// connections count in `hoard_connections_open` and are drained by a shutdown, and it stops
    /// accepting at the stop signal.
    Client(Via),
    /// The admin listener: it answers `/metrics`, `/healthz` and `/readyz` until hoard exits,
    /// and a shutdown does not wait for its connections.
    Admin,
}

impl Role {
    /// The name in logs.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Role::Client(via) => via.as_str(),
            Role::Admin => "admin",
        }
    }
}

/// An accepted connection, admitted by the limits, after its TLS handshake if any.
pub(crate) struct Accepted<I> {
    /// The stream: TCP, or TLS over it.
    pub io: I,
    /// Whether the client chose h2 by ALPN.
    pub h2: bool,
    /// Who connected.
    pub client: SocketAddr,
    /// The address the client connected to, if the socket says.
    pub local: Option<SocketAddr>,
    /// The connection's place in its listener's limits, for as long as it lives.
    pub ticket: Ticket,
    /// The listener it came in by.
    pub role: Role,
}

/// What a listener does with each connection it accepts.
pub(crate) trait Serve: Send + Sync + 'static {
    /// Serves `connection` until it ends.
    fn serve<I: Io>(
        &self,
        connection: Accepted<I>,
        hoard: Arc<Hoard>,
    ) -> impl Future<Output = ()> + Send;
}

/// Registry-API connections (the mirror, the peer endpoint), each request answered by `A`.
#[derive(Debug)]
pub(crate) struct Registry<A>(
    /// What answers each request.
    pub Arc<A>,
);

impl<A: Answer> Serve for Registry<A> {
    async fn serve<I: Io>(&self, connection: Accepted<I>, hoard: Arc<Hoard>) {
        let Role::Client(via) = connection.role else {
            return; // the admin listener serves no registry API
        };
        let client = conn::Client {
            ip: connection.client.ip(),
            via,
        };
        let (io, h2, ticket) = (connection.io, connection.h2, connection.ticket);
        let served = conn::serve(io, h2, hoard, ticket, client, self.0.clone()).await;
        if let Err(error) = served {
            tracing::debug!(%error, "connection ended");
        }
    }
}

/// A bound client listener.
pub(crate) struct Listener {
    socket: TcpListener,
    limits: Arc<ConnectionLimits>,
    tls: Option<TlsAcceptor>,
    role: Role,
}

impl Listener {
    /// Binds `addr` (`key` names the setting in errors), with connection limits of its own and
    /// TLS when there is a config for it.
    pub(crate) async fn bind(
        addr: SocketAddr,
        key: &str,
        role: Role,
        limits: Arc<ConnectionLimits>,
        tls: Option<Arc<ServerConfig>>,
    ) -> anyhow::Result<Listener> {
        use anyhow::Context as _;
        let socket = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} ({key})"))?;
        Ok(Listener {
            socket,
            limits,
            tls: tls.map(TlsAcceptor::from),
            role,
        })
    }

    /// Where it listens.
    pub(crate) fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Accepts connections, each admitted by the limits and served by `service` in a task of its
    /// own. A client listener accepts until `stop` is given; then the socket closes, so new
    /// connections are refused, and the connections open finish on their own (a shutdown closes
    /// the idle ones). The admin listener accepts until its task is stopped, at exit.
    pub(crate) async fn serve<S: Serve>(self, hoard: Arc<Hoard>, service: Arc<S>, mut stop: Stop) {
        let role = self.role;
        let drained = role != Role::Admin;
        if drained {
            hoard.listening(&self.limits);
        }
        loop {
            let (stream, client, ticket) = tokio::select! {
                admitted = admitted(&self.socket, &self.limits, &hoard.metrics) => admitted,
                () = stop.given(), if drained => break,
            };
            let span = match role {
                Role::Client(Via::Proxy) => tracing::info_span!("conn", client = %client),
                Role::Client(Via::Mirror) => tracing::info_span!("mirror", client = %client),
                Role::Client(Via::Fleet) => tracing::info_span!("fleet", peer = %client),
                Role::Admin => tracing::debug_span!("admin", client = %client),
            };
            let (hoard, service, tls) = (hoard.clone(), service.clone(), self.tls.clone());
            tokio::spawn(
                async move {
                    let metrics = hoard.metrics.clone();
                    let _open = drained.then(|| metrics.connection());
                    let _ = stream.set_nodelay(true);
                    let local = stream.local_addr().ok();
                    let accepted = Accepted {
                        io: stream,
                        h2: false,
                        client,
                        local,
                        ticket,
                        role,
                    };
                    match tls {
                        None => service.serve(accepted, hoard).await,
                        // Boxed: a plain connection's task keeps no room for a TLS stream.
                        Some(tls) => Box::pin(serve_tls(&tls, accepted, &*service, hoard)).await,
                    }
                }
                .instrument(span),
            );
        }
        tracing::info!(via = role.as_str(), "listener closed");
    }
}

/// Serves `accepted` over TLS, once its handshake is done.
async fn serve_tls<S: Serve>(
    tls: &TlsAcceptor,
    accepted: Accepted<TcpStream>,
    service: &S,
    hoard: Arc<Hoard>,
) {
    let role = accepted.role;
    let io = match handshake(tls, accepted.io, &accepted.ticket).await {
        Ok(io) => io,
        Err(failed) => {
            let hint = format!(
                "does it trust the {} listener's certificate?",
                role.as_str()
            );
            return failed.log(&hint);
        }
    };
    let h2 = io.get_ref().1.alpn_protocol() == Some(b"h2");
    let accepted = Accepted {
        io,
        h2,
        client: accepted.client,
        local: accepted.local,
        ticket: accepted.ticket,
        role,
    };
    service.serve(accepted, hoard).await;
}

/// Why a TLS handshake gave no connection.
#[derive(Debug)]
pub(crate) enum HandshakeFailed {
    /// Closed to make room for another connection.
    Evicted,
    /// The client took longer than [`HANDSHAKE_TIMEOUT`].
    TimedOut,
    /// The handshake failed (typically: the client does not trust the certificate).
    Failed(std::io::Error),
}

impl HandshakeFailed {
    /// Logs the failure: the one an operator must see (a client that does not trust the
    /// certificate, as `hint` asks) as a warning.
    pub(crate) fn log(&self, hint: &str) {
        match self {
            HandshakeFailed::Evicted => {
                tracing::debug!("closed in the TLS handshake to make room");
            }
            HandshakeFailed::TimedOut => tracing::debug!("TLS handshake timed out"),
            HandshakeFailed::Failed(error) => tracing::warn!(
                %error,
                "TLS handshake with client failed ({hint})"
            ),
        }
    }
}

/// A client's TLS handshake, bounded in time; a connection still in it has no request in flight
/// and may be evicted. The mirror's and every intercepted CONNECT's.
pub(crate) async fn handshake<I: Io>(
    acceptor: &TlsAcceptor,
    io: I,
    ticket: &Ticket,
) -> Result<TlsStream<I>, HandshakeFailed> {
    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(io));
    let done = tokio::select! {
        done = handshake => done,
        () = ticket.evicted() => return Err(HandshakeFailed::Evicted),
    };
    match done {
        Ok(Ok(tls)) => Ok(tls),
        Ok(Err(error)) => Err(HandshakeFailed::Failed(error)),
        Err(_) => Err(HandshakeFailed::TimedOut),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_is_ready_until_the_stop_signal_then_draining() {
        let (sender, stop) = Stop::new();
        let ready = stop.readiness();
        assert_eq!(ready.status(), StatusCode::OK);
        assert_eq!(ready.headers()[CACHE_CONTROL], "no-store");
        sender.give();
        let draining = stop.readiness();
        assert_eq!(draining.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            draining.headers()[CONTENT_TYPE],
            "text/plain; charset=utf-8"
        );
    }
}
