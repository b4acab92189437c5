//! The front door: the proxy listener. Each request is a CONNECT (tunnel or intercept), an
//! absolute-form `http://` request (forwarded), or addressed to hoard itself (`/ca.crt`,
//! `/healthz`, `/readyz`, `/setup/...`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::CONTENT_TYPE;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tracing::{Instrument as _, Span};

use crate::access::User;
use crate::access::limits::{ConnectionLimits, Held, Ticket};
use crate::edge::admit::{Login, admit};
use crate::edge::{Accepted, Io, Listener, Role, Serve, Stop};
use crate::hoard::Hoard;
use crate::http::idle::Idle;
use crate::http::{Body, error, full_body, head_too_large, internal, making_room};
use crate::telemetry::Via;
use crate::telemetry::access_log::{RequestInfo, logged};
use crate::upstream::upstream_error;

/// Binds the proxy's listener (`proxy.listen`), with its connection limits.
pub(crate) async fn bind(hoard: &Hoard) -> anyhow::Result<Listener> {
    let config = hoard.config();
    let limits = ConnectionLimits::new(
        config.proxy.connections.max,
        config.proxy.connections.per_client,
    );
    let listener = Listener::bind(
        config.proxy.listen,
        "proxy.listen",
        Role::Client(Via::Proxy),
        limits,
        None,
    )
    .await?;
    // The CA's fingerprint: what a setup script's `--ca-sha256` checks.
    tracing::info!(addr = %listener.local_addr()?, ca = %hoard.ca.fingerprint(), "hoard listening");
    Ok(listener)
}

/// The proxy's connections: HTTP/1.1 with upgrades (CONNECT).
#[derive(Debug)]
pub(crate) struct Front(
    /// The server's stop signal, for `/readyz`.
    pub Stop,
);

impl Serve for Front {
    async fn serve<I: Io>(&self, connection: Accepted<I>, hoard: Arc<Hoard>) {
        let (peer, ticket) = (connection.client, connection.ticket);
        let config = hoard.config();
        let io = TokioIo::new(Idle::new(connection.io, config.proxy.idle_timeout));
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(config.proxy.header_read_timeout)
            .max_buf_size(config.proxy.max_header_size);
        drop(config);
        let connection_span = Span::current();
        let service = service_fn({
            let (ticket, stop) = (ticket.clone(), self.0.clone());
            move |request: Request<Incoming>| {
                let (hoard, stop) = (hoard.clone(), stop.clone());
                let ticket = ticket.clone();
                let busy = ticket.busy();
                let span = tracing::info_span!(
                    parent: &connection_span,
                    "request",
                    method = %request.method(),
                    host = %logged_host(request.uri()),
                );
                // Boxed: hyper keeps room for one answer all the connection's life.
                Box::pin(
                    async move {
                        let Some(busy) = busy else {
                            return Ok::<_, Infallible>(making_room());
                        };
                        let response = handle(request, hoard, peer, ticket, &stop).await;
                        Ok(response.map(|body| Held::new(body, busy).boxed()))
                    }
                    .instrument(span),
                )
            }
        });
        let connection = builder.serve_connection(io, service).with_upgrades();
        // A connection with no request in flight closes at once when evicted to make room.
        let result = tokio::select! {
            result = connection => result,
            () = ticket.evicted() => {
                tracing::debug!(%peer, "client connection closed to make room");
                return;
            }
        };
        if let Err(error) = result {
            tracing::debug!(%peer, %error, "client connection ended");
        }
    }
}

async fn handle(
    request: Request<Incoming>,
    hoard: Arc<Hoard>,
    peer: SocketAddr,
    ticket: Ticket,
    stop: &Stop,
) -> Response<Body> {
    let info = RequestInfo {
        metrics: hoard.metrics.clone(),
        host: logged_host(request.uri()),
        method: request.method().clone(),
        path: request.uri().path().to_owned(),
        start: Instant::now(),
        via: crate::telemetry::Via::Proxy,
        user: String::new(),
        lent: false,
    };
    let user = match admitted(&request, &hoard, peer).await {
        Ok(user) => user,
        Err(refusal) => return logged(info, refusal),
    };
    let info = RequestInfo {
        user: user.clone().map(|User(name)| name).unwrap_or_default(),
        ..info
    };
    if request.method() == Method::CONNECT {
        let response = connect(request, hoard, ticket, peer, user).await;
        // An accepted CONNECT has its line when its tunnel closes, or one per request inside
        // it; a refused one has its line now, like any other request.
        if response.status().is_success() {
            return response;
        }
        return logged(info, response);
    }
    let response = match request.uri().scheme_str() {
        Some("http") => super::forward::forward(request, &hoard).await,
        Some(_) => error(
            StatusCode::BAD_REQUEST,
            "only http:// URLs are forwarded; use CONNECT for https",
        ),
        None => local(&request, &hoard, stop),
    };
    logged(info, response)
}

/// `host[:port]` of a request target for logs and metrics: never the `user:password@` a URL
/// may carry.
fn logged_host(uri: &http::Uri) -> String {
    match uri.authority() {
        Some(authority) => match authority.port_u16() {
            Some(port) => format!("{}:{port}", authority.host()),
            None => authority.host().to_owned(),
        },
        None => String::new(),
    }
}

/// The client allow-list and proxy authentication ([`crate::edge::admit`]). `/ca.crt`,
/// `/healthz`, `/readyz` and the `/setup/` scripts are open to every allowed client, so a host
/// can be set up (and a kubelet probe answered) before it has credentials: they hold nothing
/// secret (the scripts take proxy credentials as an argument).
async fn admitted(
    request: &Request<Incoming>,
    hoard: &Hoard,
    peer: SocketAddr,
) -> Result<Option<User>, Response<Body>> {
    if let Some(too_big) = head_too_large(request, hoard.config().proxy.max_header_size) {
        return Err(too_big);
    }
    let public = request.uri().scheme().is_none()
        && request.method() != Method::CONNECT
        && (matches!(request.uri().path(), "/ca.crt" | "/healthz" | "/readyz")
            || request.uri().path().starts_with("/setup/"));
    let login = if public { Login::Open } else { Login::Proxy };
    admit(request.headers(), peer.ip(), hoard, login).await
}

/// Requests addressed to hoard itself. `/readyz` answers as the admin listener's does; while
/// draining the proxy port takes no new connections, so only a connection already open can
/// still hear `draining`.
fn local(request: &Request<Incoming>, hoard: &Hoard, stop: &Stop) -> Response<Body> {
    match (request.method(), request.uri().path()) {
        (&Method::GET | &Method::HEAD, "/ca.crt") => Response::builder()
            .header(CONTENT_TYPE, "application/x-pem-file")
            .body(full_body(hoard.ca.ca_pem().to_owned()))
            .unwrap_or_else(|_| internal()),
        (&Method::GET | &Method::HEAD, "/healthz") => Response::new(full_body("ok\n")),
        (&Method::GET | &Method::HEAD, "/readyz") => stop.readiness(),
        (&Method::GET, "/stats") => Response::builder()
            .header(CONTENT_TYPE, "application/json")
            .body(full_body(hoard.metrics.activity().to_json()))
            .unwrap_or_else(|_| internal()),
        (&Method::GET, path) if path.starts_with("/setup/") => {
            crate::edge::setup::respond(request, hoard)
        }
        _ => error(
            StatusCode::BAD_REQUEST,
            "hoard is a proxy: send CONNECT host:port or an absolute http:// URL \
             (GET /ca.crt gives the CA certificate)",
        ),
    }
}

/// Answers a CONNECT and hands the upgraded connection, with its ticket, to an intercept or
/// tunnel task: it stays counted against the connection limits until that task ends. The
/// requests of an intercepted connection are its proxy login's, `user`.
async fn connect(
    request: Request<Incoming>,
    hoard: Arc<Hoard>,
    ticket: Ticket,
    peer: SocketAddr,
    user: Option<User>,
) -> Response<Body> {
    let Some(authority) = request.uri().authority().cloned() else {
        return error(StatusCode::BAD_REQUEST, "CONNECT needs host:port");
    };
    let Some(port) = authority.port_u16() else {
        return error(StatusCode::BAD_REQUEST, "CONNECT needs host:port");
    };
    let host = crate::net::unbracket(authority.host()).to_owned();

    if !hoard.config().proxy.connect_ports.contains(&port) {
        return error(
            StatusCode::FORBIDDEN,
            &format!("CONNECT to port {port} is not allowed (proxy.connect_ports)"),
        );
    }
    // A host added to `intercept.hosts` that the CA's name constraints leave out would get a
    // leaf its clients reject: it is tunnelled instead (the reload warned about it).
    if hoard.config().intercept.matches(&host) && hoard.ca.covers(&host) {
        // The tasks carry the CONNECT's span (client, host) into the tunnel or intercept.
        tokio::spawn(
            async move {
                let _open = hoard.metrics.upgraded();
                match hyper::upgrade::on(request).await {
                    Ok(upgraded) => {
                        super::intercept::serve(
                            upgraded,
                            host,
                            port,
                            hoard.clone(),
                            ticket,
                            peer.ip(),
                            user,
                        )
                        .await
                    }
                    Err(error) => tracing::debug!(%error, "CONNECT upgrade failed"),
                }
            }
            .in_current_span(),
        );
        return Response::new(crate::http::empty_body());
    }

    // Connect first, so a destination that cannot be reached is a 502 and not a dead tunnel.
    let server = match super::tunnel::connect(&hoard, &host, port).await {
        Ok(server) => server,
        Err(err) => return upstream_error(&err, &crate::net::authority(&host, port)),
    };
    // A tunnel's traffic is opaque: it counts as a request in flight for its whole life, so it
    // is never evicted, and closes when nothing moves for `proxy.idle_timeout`.
    let Some(in_flight) = ticket.busy() else {
        return making_room();
    };
    tokio::spawn(
        async move {
            let _open = hoard.metrics.upgraded();
            let _in_flight = in_flight;
            match hyper::upgrade::on(request).await {
                Ok(upgraded) => {
                    let metrics = hoard.metrics.clone();
                    let idle_timeout = hoard.config().proxy.idle_timeout;
                    let authority = authority.to_string();
                    super::tunnel::run(upgraded, server, authority, metrics, ticket, idle_timeout)
                        .await
                }
                Err(error) => tracing::debug!(%error, "CONNECT upgrade failed"),
            }
        }
        .in_current_span(),
    );
    Response::new(crate::http::empty_body())
}
