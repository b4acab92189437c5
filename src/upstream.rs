//! The upstream side: one pooled HTTPS client (h1 and h2) verifying against webpki roots, the system
//! store and configured extra CAs, with name overrides, timeouts, and redirect following for blobs.
//! Every upstream connection, the clients' and the tunnels', is opened here: straight, or through
//! the parent proxy (`crate::parent`).

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{AUTHORIZATION, HOST, LOCATION};
use http::{HeaderMap, Method, Request, Response, Uri};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::net::TcpStream;

use crate::config::Config;
use crate::parent::Routes;
use crate::{Body, BoxError};

/// How long hoard waits for an upstream's response headers before calling it unreachable.
/// containerd gives up after 30 s without headers, so hoard must decide well before that.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(20);

/// Redirect hops followed for one blob (Docker Hub uses 1, GCR up to 2; 5 leaves room).
const MAX_REDIRECTS: usize = 5;

/// Errors setting up the client.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("cannot read extra CA file {path}: {message}")]
    ExtraCa { path: String, message: String },
    #[error("tls setup failed: {0}")]
    Tls(#[from] rustls::Error),
}

/// Why an upstream request produced no response. All of these count as "upstream unreachable"
/// for serving stale content.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream request failed: {0}")]
    Request(#[from] hyper_util::client::legacy::Error),
    #[error("upstream sent no response headers within {0:?}")]
    Timeout(Duration),
    #[error("upstream redirected more than {MAX_REDIRECTS} times")]
    TooManyRedirects,
    #[error("upstream redirected to an unusable location {0:?}")]
    BadRedirect(String),
}

type HttpsClient = Client<HttpsConnector<Connector>, Body>;

/// The pooled upstream clients: one for the intercepted registries (configured by the operator,
/// so they may live on private addresses), one guarded for everything a client or a registry
/// names (plain forwards, redirect targets, tunnels), which must not reach private addresses
/// unless `proxy.allow_private_destinations` is set.
#[derive(Clone, Debug)]
pub struct Upstream {
    client: HttpsClient,
    guarded: HttpsClient,
    /// How tunnels connect: the guarded client's way, without HTTP on top.
    tunnels: Connector,
    metrics: Arc<crate::metrics::Metrics>,
}

impl Upstream {
    /// Builds the client from the config's trust and resolve settings.
    pub fn new(
        config: &Config,
        provider: Arc<CryptoProvider>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Result<Upstream, SetupError> {
        let roots = root_store(&config.extra_ca_files)?;
        let tls = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let overrides = Arc::new(config.resolve.clone());
        let routes = Arc::new(Routes::new(config));
        let connector = |guard| {
            let resolver = Resolver {
                overrides: overrides.clone(),
                guard,
            };
            Connector::new(resolver, routes.clone(), config.connect_timeout)
        };
        let tunnels = connector(!config.allow_private_destinations);
        Ok(Upstream {
            client: https_client(tls.clone(), connector(false)),
            guarded: https_client(tls, tunnels.clone()),
            tunnels,
            metrics,
        })
    }

    /// Sends one request to an intercepted registry and waits for its response headers.
    pub async fn send(&self, request: Request<Body>) -> Result<Response<Incoming>, UpstreamError> {
        self.send_on(&self.client, request).await
    }

    /// Sends one request to a host a client named (plain forwarding), guarded.
    pub async fn send_guarded(
        &self,
        request: Request<Body>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        self.send_on(&self.guarded, request).await
    }

    /// Sends a body-less request (GET or HEAD), following redirects itself. `Authorization` is
    /// dropped as soon as a hop leads away from the origin: to another host, or to plain
    /// `http://` (where anyone on the path could read it). The response carries [`Origin`]: whether
    /// it came from the origin itself or from a hop elsewhere.
    pub async fn send_following(
        &self,
        method: Method,
        uri: Uri,
        mut headers: HeaderMap,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let origin = uri.clone();
        let mut uri = uri;
        for _ in 0..=MAX_REDIRECTS {
            let mut request = Request::new(crate::empty_body());
            *request.method_mut() = method.clone();
            *request.uri_mut() = uri.clone();
            *request.headers_mut() = headers.clone();
            let at_origin = same_origin(&origin, &uri);
            // The registry itself is trusted; where it redirects to is guarded.
            let client = if at_origin {
                &self.client
            } else {
                &self.guarded
            };
            let mut response = self.send_on(client, request).await?;
            response.extensions_mut().insert(Origin(at_origin));
            if !response.status().is_redirection() || response.status().as_u16() == 304 {
                return Ok(response);
            }
            let Some(location) = response
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
            else {
                return Ok(response);
            };
            let next = join_location(&uri, location)
                .ok_or_else(|| UpstreamError::BadRedirect(location.to_owned()))?;
            if !same_origin(&origin, &next) {
                headers.remove(AUTHORIZATION);
            }
            // Redirect URLs carry signatures in their query: log the path only.
            tracing::debug!(from = %uri.path(), to_host = ?next.host(), "following upstream redirect");
            uri = next;
        }
        Err(UpstreamError::TooManyRedirects)
    }

    /// Connects to `host:port` for a tunnel, through the parent or straight (overrides first,
    /// then DNS, each address in turn), guarded against private destinations.
    pub async fn connect(&self, host: &str, port: u16) -> std::io::Result<TcpStream> {
        self.tunnels.connect(host, port).await
    }

    /// Refuses (`PermissionDenied`) a destination that the private-destination guard keeps out,
    /// before a plain forward is sent: judged by the addresses its name resolves to when hoard
    /// connects straight, by the address itself when the parent resolves the name.
    pub async fn check_destination(&self, host: &str, port: u16) -> std::io::Result<()> {
        if self.tunnels.routes.parent_for(host).is_some() {
            return self.tunnels.resolver.refuse_literal(host);
        }
        self.tunnels.resolver.lookup(host, port).await.map(drop)
    }
}

impl Upstream {
    async fn send_on(
        &self,
        client: &HttpsClient,
        mut request: Request<Body>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        // hyper sets Host (h1) or :authority (h2) from the URI, and picks the version per
        // connection; an h2 client's request may well go out over h1.
        request.headers_mut().remove(HOST);
        *request.version_mut() = http::Version::HTTP_11;
        let host = request.uri().host().unwrap_or_default().to_owned();
        let (method, path) = (request.method().clone(), request.uri().path().to_owned());
        let result = match tokio::time::timeout(RESPONSE_TIMEOUT, client.request(request)).await {
            Ok(result) => result.map_err(UpstreamError::from),
            Err(_) => Err(UpstreamError::Timeout(RESPONSE_TIMEOUT)),
        };
        let status = result.as_ref().map_or(0, |r| r.status().as_u16());
        self.metrics.upstream_request(&host, &method, &path, status);
        result
    }
}

fn https_client(tls: ClientConfig, connector: Connector) -> HttpsClient {
    // HTTP/1.1 only: every registry and CDN speaks it, dockerd and containerd use nothing
    // else, and a blob streams over it with no flow-control round trips. Over h2 the
    // Distribution registry fed hoard at a third of its h1 speed (bench/run.sh, cold fill).
    // Parallel blobs get one pooled connection each.
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(connector);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(https)
}

/// Opens the TCP connections under the upstream clients (hyper-rustls does TLS on top, so TLS
/// to a registry is end to end through a parent too) and the tunnels: through the parent when
/// the routes say so, else straight as hyper's own connector does it.
#[derive(Clone, Debug)]
struct Connector {
    /// hyper's connector for the straight way: happy eyeballs across the resolved addresses,
    /// the connect timeout shared among them, and the port of an override kept when the URI
    /// names none.
    direct: HttpConnector<Resolver>,
    resolver: Resolver,
    routes: Arc<Routes>,
    connect_timeout: Duration,
}

impl Connector {
    fn new(resolver: Resolver, routes: Arc<Routes>, connect_timeout: Duration) -> Connector {
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
        parent: &crate::parent::Parent,
        host: &str,
        port: u16,
    ) -> std::io::Result<TcpStream> {
        self.resolver.refuse_literal(host)?;
        tracing::debug!(host, port, %parent, "upstream connection through the parent proxy");
        parent.dial(host, port, self.connect_timeout).await
    }

    /// A tunnel's connection. Straight, an override's address is taken whole (its port wins
    /// over the requested one) and the addresses are tried in turn.
    async fn connect(&self, host: &str, port: u16) -> std::io::Result<TcpStream> {
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
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
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
struct Resolver {
    overrides: Arc<HashMap<String, SocketAddr>>,
    guard: bool,
}

impl Resolver {
    async fn lookup(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
        if let Some(addr) = self.overrides.get(&host.to_ascii_lowercase()) {
            return Ok(vec![*addr]);
        }
        if self.guard && crate::access::is_noncanonical_numeric(host) {
            return Err(noncanonical(host));
        }
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
        if !self.guard {
            return Ok(addrs);
        }
        let public: Vec<SocketAddr> = addrs
            .iter()
            .copied()
            .filter(|a| !crate::access::is_private(a.ip()))
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
    fn refuse_literal(&self, host: &str) -> std::io::Result<()> {
        if !self.guard {
            return Ok(());
        }
        if let Ok(ip) = host.parse::<std::net::IpAddr>() {
            return match crate::access::is_private(ip) {
                true => Err(private_destination(host)),
                false => Ok(()),
            };
        }
        if crate::access::is_noncanonical_numeric(host) {
            return Err(noncanonical(host));
        }
        let name = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
        if !name.contains('.') || name.ends_with(".localhost") {
            return Err(refused(format!(
                "{host} is a single-label or localhost name that the parent proxy would resolve \
                 in its own network, which proxy.allow_private_destinations does not allow"
            )));
        }
        Ok(())
    }
}

fn private_destination(host: &str) -> std::io::Error {
    refused(format!(
        "{host} is a private or loopback address, which \
         proxy.allow_private_destinations does not allow"
    ))
}

fn noncanonical(host: &str) -> std::io::Error {
    refused(format!(
        "{host} is a numeric address not written as a.b.c.d, which \
         proxy.allow_private_destinations does not allow"
    ))
}

fn refused(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::PermissionDenied, message)
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

/// The roots hoard trusts: the compiled-in Mozilla roots, the system store, and `extra` PEM files.
pub fn root_store(extra: &[std::path::PathBuf]) -> Result<RootCertStore, SetupError> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let native = rustls_native_certs::load_native_certs();
    let (added, _ignored) = roots.add_parsable_certificates(native.certs);
    tracing::debug!(added, "system roots loaded");
    for path in extra {
        let error = |message: String| SetupError::ExtraCa {
            path: path.display().to_string(),
            message,
        };
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| error(e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| error(e.to_string()))?;
        if certs.is_empty() {
            return Err(error("no certificate in it".into()));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| error(e.to_string()))?;
        }
    }
    Ok(roots)
}

/// Whether a response of [`Upstream::send_following`] came from the host it was sent to (`true`)
/// or from a redirect hop elsewhere (`false`). Only the origin's challenges may be answered with
/// hoard's credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin(pub bool);

/// Same scheme and authority, and that scheme is `https`: the only hops that may see the
/// `Authorization` meant for `origin`.
fn same_origin(origin: &Uri, next: &Uri) -> bool {
    next.scheme() == Some(&http::uri::Scheme::HTTPS)
        && next.scheme() == origin.scheme()
        && next.authority() == origin.authority()
}

/// Resolves a `Location` header against the URI it came from: absolute, scheme-relative,
/// path-absolute or relative.
pub fn join_location(base: &Uri, location: &str) -> Option<Uri> {
    let scheme = base.scheme_str()?;
    let authority = base.authority()?;
    let text = if location.starts_with("https://") || location.starts_with("http://") {
        location.to_owned()
    } else if let Some(rest) = location.strip_prefix("//") {
        format!("{scheme}://{rest}")
    } else if location.starts_with('/') {
        format!("{scheme}://{authority}{location}")
    } else {
        let path = base.path();
        let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
        let dir = if dir.is_empty() { "/" } else { dir };
        format!("{scheme}://{authority}{dir}{location}")
    };
    let uri: Uri = text.parse().ok()?;
    uri.authority()?;
    Some(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_resolve_against_the_request() {
        let base: Uri = "https://gcr.io/v2/p/i/blobs/sha256:00?x=1"
            .parse()
            .unwrap_or_default();
        let join = |l| join_location(&base, l).map(|u| u.to_string());
        assert_eq!(
            join("https://cdn.example/a?sig=1").as_deref(),
            Some("https://cdn.example/a?sig=1")
        );
        assert_eq!(
            join("//cdn.example/a").as_deref(),
            Some("https://cdn.example/a")
        );
        assert_eq!(
            join("/storage/x").as_deref(),
            Some("https://gcr.io/storage/x")
        );
        assert_eq!(
            join("other").as_deref(),
            Some("https://gcr.io/v2/p/i/blobs/other")
        );
        assert_eq!(join("https://"), None);
    }

    #[test]
    fn only_https_to_the_same_authority_is_the_origin() {
        let origin: Uri = "https://gcr.io/v2/p/i/blobs/sha256:00"
            .parse()
            .unwrap_or_default();
        let same = |text: &str| same_origin(&origin, &text.parse().unwrap_or_default());
        assert!(same("https://gcr.io/storage/x?sig=1"));
        assert!(same("https://GCR.io/x"));
        assert!(!same("http://gcr.io/storage/x"), "a downgrade to http");
        assert!(!same("https://gcr.io:8443/x"));
        assert!(!same("https://storage.googleapis.com/x"));
    }
}
