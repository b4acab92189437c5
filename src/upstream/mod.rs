//! The upstream side: one pooled HTTPS client (h1 and h2) verifying against webpki roots, the system
//! store and configured extra CAs, with name overrides, timeouts, and redirect following for blobs.
//! Every upstream connection, the clients' and the tunnels', is opened here: straight, or through
//! the parent proxy (`crate::parent`).

use std::sync::Arc;
use std::time::Duration;

use http::header::{AUTHORIZATION, HOST, LOCATION};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;

use crate::config::UpstreamClients;
use crate::error::{Classify, Side};
use crate::http::Body;
use crate::telemetry::Metrics;
use connect::{Connector, Resolver};
use routes::Routes;

pub mod auth;
mod connect;
mod parent;
mod reach;
mod redirect;
mod routes;
pub(crate) mod shape;

pub(crate) use connect::DestinationRefused;
use reach::Reachability;
use redirect::same_origin;
pub use redirect::{Origin, join_location};

/// How long hoard waits for an upstream's response headers before calling it unreachable.
/// containerd gives up after 30 s without headers, so hoard must decide well before that.
pub(crate) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(20);

/// Redirect hops followed for one blob (Docker Hub uses 1, GCR up to 2; 5 leaves room).
const MAX_REDIRECTS: usize = 5;

/// Why an upstream request produced no response, or a connection was not made. All but
/// [`UpstreamError::Refused`] count as "upstream unreachable" for serving stale content.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    #[error("upstream request failed")]
    Request(#[from] hyper_util::client::legacy::Error),
    #[error("cannot connect to {authority}")]
    Connect {
        authority: String,
        source: std::io::Error,
    },
    /// The private-destination guard refused where a client (or a redirect) pointed.
    #[error(transparent)]
    Refused(DestinationRefused),
    #[error("upstream sent no response headers within {0:?}")]
    Timeout(Duration),
    #[error("upstream redirected more than {MAX_REDIRECTS} times")]
    TooManyRedirects,
    #[error("upstream redirected to an unusable location {0:?}")]
    BadRedirect(String),
}

impl UpstreamError {
    /// A failed connection to `host:port`: a refusal by the guard, or the network's error.
    fn connect(host: &str, port: u16, source: std::io::Error) -> UpstreamError {
        match DestinationRefused::of(&source) {
            Some(refused) => UpstreamError::Refused(refused.clone()),
            None => UpstreamError::Connect {
                authority: crate::net::authority(host, port),
                source,
            },
        }
    }
}

impl Classify for UpstreamError {
    fn side(&self) -> Side {
        match self {
            UpstreamError::Refused(_) => Side::Client,
            _ => Side::Upstream,
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            UpstreamError::Refused(_) => StatusCode::FORBIDDEN,
            UpstreamError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::BAD_GATEWAY,
        }
    }
}

type HttpsClient = Client<HttpsConnector<Connector>, Body>;

/// The pooled upstream clients: one for the intercepted registries (configured by the operator,
/// so they may live on private addresses), one guarded for everything a client or a registry
/// names (plain forwards, redirect targets, tunnels), which must not reach private addresses
/// unless `proxy.allow_private_destinations` is set.
#[derive(Clone, Debug)]
pub(crate) struct Upstream {
    client: HttpsClient,
    guarded: HttpsClient,
    /// How tunnels connect: the guarded client's way, without HTTP on top.
    tunnels: Connector,
    metrics: Arc<Metrics>,
    /// The upstreams that failed lately.
    reach: Arc<Reachability>,
}

impl Upstream {
    /// Builds the client from the config's trust and resolve settings.
    pub(crate) fn new(
        config: &UpstreamClients,
        roots: RootCertStore,
        provider: Arc<CryptoProvider>,
        metrics: Arc<Metrics>,
    ) -> Result<Upstream, rustls::Error> {
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
            reach: Arc::default(),
        })
    }

    /// The metrics upstream requests are counted in.
    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// How long ago the upstream of `uri` failed to answer, if it did lately and has not answered
    /// since (see `reach.rs`): a caller with something to serve anyway need not ask it.
    pub(crate) fn down_for(&self, uri: &Uri) -> Option<Duration> {
        self.reach.down_for(uri)
    }

    /// Sends one request to an intercepted registry and waits for its response headers.
    pub(crate) async fn send(
        &self,
        request: Request<Body>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        self.send_on(&self.client, request).await
    }

    /// Sends one request to a host a client named (plain forwarding), guarded.
    pub(crate) async fn send_guarded(
        &self,
        request: Request<Body>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        self.send_on(&self.guarded, request).await
    }

    /// Sends a body-less request (GET or HEAD), following redirects itself. `Authorization` is
    /// dropped as soon as a hop leads away from the origin: to another host, or to plain
    /// `http://` (where anyone on the path could read it). The response carries [`Origin`]: whether
    /// it came from the origin itself or from a hop elsewhere.
    pub(crate) async fn send_following(
        &self,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
    ) -> Result<Response<Incoming>, UpstreamError> {
        self.send_with_hops(method, uri, headers, MAX_REDIRECTS)
            .await
    }

    /// Sends a body-less request to the origin alone: a redirect is the answer, not followed.
    pub(crate) async fn send_at_origin(
        &self,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
    ) -> Result<Response<Incoming>, UpstreamError> {
        self.send_with_hops(method, uri, headers, 0).await
    }

    /// [`send_following`](Self::send_following) with at most `hops` redirects followed: with
    /// none, a redirect is the answer; past `hops` of them, an error.
    async fn send_with_hops(
        &self,
        method: Method,
        uri: Uri,
        mut headers: HeaderMap,
        hops: usize,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let origin = uri.clone();
        let mut uri = uri;
        for _ in 0..=hops {
            let mut request = Request::new(crate::http::empty_body());
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
            let redirected =
                response.status().is_redirection() && response.status().as_u16() != 304;
            if !redirected || hops == 0 {
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
    pub(crate) async fn connect(&self, host: &str, port: u16) -> Result<TcpStream, UpstreamError> {
        self.tunnels
            .connect(host, port)
            .await
            .map_err(|err| UpstreamError::connect(host, port, err))
    }

    /// Refuses ([`UpstreamError::Refused`]) a destination that the private-destination guard
    /// keeps out, before a plain forward is sent: judged by the addresses its name resolves to
    /// when hoard connects straight, by the address itself when the parent resolves the name.
    pub(crate) async fn check_destination(
        &self,
        host: &str,
        port: u16,
    ) -> Result<(), UpstreamError> {
        let checked = if self.tunnels.routes.parent_for(host).is_some() {
            self.tunnels.resolver.refuse_literal(host)
        } else {
            self.tunnels.resolver.lookup(host, port).await.map(drop)
        };
        checked.map_err(|err| UpstreamError::connect(host, port, err))
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
        let uri = request.uri().clone();
        let host = uri.host().unwrap_or_default().to_owned();
        let (method, path) = (request.method().clone(), uri.path().to_owned());
        let result = match tokio::time::timeout(RESPONSE_TIMEOUT, client.request(request)).await {
            Ok(result) => result.map_err(UpstreamError::from),
            Err(_) => Err(UpstreamError::Timeout(RESPONSE_TIMEOUT)),
        };
        match &result {
            Ok(_) => self.reach.note(&uri, true),
            Err(UpstreamError::Request(err)) if !err.is_connect() => {}
            Err(_) => self.reach.note(&uri, false),
        }
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

/// The client's view of an upstream failure: 504 for a timeout, 403 for a refused destination,
/// 502 otherwise. A request that failed on the network names the upstream as the client did,
/// `asked` (`host[:port]`), and a parent proxy's complaint; the address it resolved to and the
/// system's error go to the log only.
pub(crate) fn upstream_error(err: &UpstreamError, asked: &str) -> Response<Body> {
    let failed = match err {
        UpstreamError::Connect { .. } => "cannot connect to",
        UpstreamError::Request(inner) if inner.is_connect() => "cannot connect to",
        UpstreamError::Request(_) => "no answer from",
        _ => return crate::error::response(err),
    };
    tracing::warn!(upstream = asked, error = %crate::error::Chain(err), "upstream failed");
    let reason = match parent_complaint(err) {
        Some(parent) => format!("{failed} {asked}: {parent}"),
        None => format!("{failed} {asked} (hoard's log says why)"),
    };
    crate::http::error(err.status(), &reason)
}

/// What a parent proxy said, if the failure is its (`parent proxy <addr>: ...`): the operator's
/// own proxy, whose answer the client may see.
fn parent_complaint(err: &UpstreamError) -> Option<String> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(now) = cause {
        if let Some(io) = now.downcast_ref::<std::io::Error>()
            && io.raw_os_error().is_none()
            && io.to_string().starts_with("parent proxy ")
        {
            return Some(io.to_string());
        }
        cause = now.source();
    }
    None
}
