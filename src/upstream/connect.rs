//! How every upstream connection is opened, the clients' and the tunnels': names resolved
//! (with `upstream.resolve` overrides), private destinations refused where guarded, then a
//! straight TCP connect or a dial through the parent proxy.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use std::collections::HashMap;

use http::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::routes::Routes;
use crate::http::BoxError;

/// Opens the TCP connections under the upstream clients (hyper-rustls does TLS on top, so TLS
/// to a registry is end to end through a parent too) and the tunnels: through the parent when
/// the routes say so, else straight as hyper's own connector does it.
#[derive(Clone, Debug)]
pub(super) struct Connector {
    /// hyper's connector for the straight way: happy eyeballs across the resolved addresses,
    /// the connect timeout shared among them, and the port of an override kept when the URI
    /// names none.
    direct: HttpConnector<Resolver>,
    pub(super) resolver: Resolver,
    pub(super) routes: Arc<Routes>,
    connect_timeout: Duration,
}

impl Connector {
    pub(super) fn new(
        resolver: Resolver,
        routes: Arc<Routes>,
        connect_timeout: Duration,
    ) -> Connector {
        let mut direct = HttpConnector::new_with_resolver(resolver.clone());
        direct.enforce_http(false);
        direct.set_connect_timeout(Some(connect_timeout));
        direct.set_nodelay(true);
        Connector {
            direct,
            resolver,
            routes,
            connect_timeout,
        }
    }

    /// Through the parent. The parent resolves the name, so the guard can judge only a
    /// destination given as an address.
    async fn via_parent(
        &self,
        parent: &crate::net::Parent,
        host: &str,
        port: u16,
    ) -> std::io::Result<TcpStream> {
        self.resolver.refuse_literal(host)?;
        tracing::debug!(host, port, %parent, "upstream connection through the parent proxy");
        parent.dial(host, port, self.connect_timeout).await
    }

    /// A tunnel's connection. Straight, an override's address is taken whole (its port wins
    /// over the requested one) and the addresses are tried in turn.
    pub(super) async fn connect(&self, host: &str, port: u16) -> std::io::Result<TcpStream> {
        if let Some(parent) = self.routes.parent_for(host) {
            return self.via_parent(parent, host, port).await;
        }
        tracing::debug!(host, port, "upstream connection straight");
        let addrs = self.resolver.lookup(host, port).await?;
        let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address found");
        for addr in addrs {
            match connect_one(addr, self.connect_timeout).await {
                Ok(stream) => return Ok(stream),
                Err(error) => last = error,
            }
        }
        Err(last)
    }
}

async fn connect_one(addr: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.direct.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let host = uri.host().unwrap_or_default();
        let host = crate::net::unbracket(host).to_owned();
        let Some(parent) = self.routes.parent_for(&host).cloned() else {
            tracing::debug!(%host, "upstream connection straight");
            let connecting = self.direct.call(uri);
            return Box::pin(async move { connecting.await.map_err(Into::into) });
        };
        let default_port = if uri.scheme() == Some(&http::uri::Scheme::HTTPS) {
            443
        } else {
            80
        };
        let port = uri.port_u16().unwrap_or(default_port);
        let connector = self.clone();
        Box::pin(async move {
            let stream = connector.via_parent(&parent, &host, port).await?;
            Ok(TokioIo::new(stream))
        })
    }
}

/// DNS with the config's `upstream.resolve` overrides in front and, when `guard` is set, no
/// private addresses behind (checked on the resolved addresses, so a public name that resolves
/// to 127.0.0.1 is refused too). Overrides are the operator's own and pass unguarded.
#[derive(Clone, Debug)]
pub(super) struct Resolver {
    pub(super) overrides: Arc<HashMap<String, SocketAddr>>,
    pub(super) guard: bool,
}

impl Resolver {
    pub(super) async fn lookup(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
        if let Some(addr) = self.overrides.get(&host.to_ascii_lowercase()) {
            return Ok(vec![*addr]);
        }
        if self.guard && crate::net::is_noncanonical_numeric(host) {
            return Err(noncanonical(host));
        }
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
        if !self.guard {
            return Ok(addrs);
        }
        let public: Vec<SocketAddr> = addrs
            .iter()
            .copied()
            .filter(|a| !crate::net::is_private(a.ip()))
            .collect();
        if public.is_empty() && !addrs.is_empty() {
            return Err(private_destination(host));
        }
        Ok(public)
    }

    /// With the guard on, refuses a `host` that someone else (a parent proxy) will resolve when
    /// hoard cannot tell where it leads: a private address, an address in a non-canonical
    /// numeric form (`127.1`), or a single-label name (`localhost`, `metadata`), which the
    /// parent resolves inside its own network.
    pub(super) fn refuse_literal(&self, host: &str) -> std::io::Result<()> {
        if !self.guard {
            return Ok(());
        }
        if let Ok(ip) = host.parse::<std::net::IpAddr>() {
            return match crate::net::is_private(ip) {
                true => Err(private_destination(host)),
                false => Ok(()),
            };
        }
        if crate::net::is_noncanonical_numeric(host) {
            return Err(noncanonical(host));
        }
        let name = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
        if !name.contains('.') || name.ends_with(".localhost") {
            return Err(refused(
                host,
                "a single-label or localhost name that the parent proxy would resolve in its own \
                 network",
            ));
        }
        Ok(())
    }
}

/// A destination the guard keeps out: hoard refusing to be a hop to private addresses (SSRF).
/// It travels inside the `io::Error`s of the connector and resolver, which hyper requires;
/// [`DestinationRefused::of`] finds it again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{host} is {why}, which proxy.allow_private_destinations does not allow")]
pub(crate) struct DestinationRefused {
    host: String,
    why: &'static str,
}

impl DestinationRefused {
    /// The refusal inside an I/O error, if that is what it is.
    pub(crate) fn of(err: &std::io::Error) -> Option<&DestinationRefused> {
        err.get_ref()?.downcast_ref()
    }
}

fn private_destination(host: &str) -> std::io::Error {
    refused(host, "a private or loopback address")
}

fn noncanonical(host: &str) -> std::io::Error {
    refused(host, "a numeric address not written as a.b.c.d")
}

fn refused(host: &str, why: &'static str) -> std::io::Error {
    std::io::Error::other(DestinationRefused {
        host: host.to_owned(),
        why,
    })
}

impl tower_service::Service<Name> for Resolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let resolver = self.clone();
        // Port 0: the connector puts the URI's port on addresses that have none, and keeps the
        // port of an override when the URI names no port of its own.
        Box::pin(async move { Ok(resolver.lookup(name.as_str(), 0).await?.into_iter()) })
    }
}
