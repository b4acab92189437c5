//! The front door: the proxy listener. Each request is a CONNECT (tunnel or intercept), an
//! absolute-form `http://` request (forwarded), or addressed to hoard itself (`/ca.crt`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{CONTENT_TYPE, PROXY_AUTHENTICATE};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::access::AuthVerdict;
use crate::idle::Idle;

use crate::log::{CacheStatus, RequestInfo, logged};
use crate::{Body, Hoard, full_body};

/// Accepts connections until the listener fails, at most `proxy.max_connections` at a time:
/// beyond that, new connections wait in the kernel's backlog.
pub async fn serve(listener: TcpListener, hoard: Arc<Hoard>) {
    tracing::info!(addr = %hoard.config().listen, "hoard listening");
    let slots = Arc::new(Semaphore::new(hoard.config().max_connections));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let hoard = hoard.clone();
        tokio::spawn(async move {
            serve_connection(stream, peer, hoard).await;
            drop(slot);
        });
    }
}

async fn serve_connection(stream: TcpStream, peer: SocketAddr, hoard: Arc<Hoard>) {
    let _open = hoard.metrics.connection();
    let _ = stream.set_nodelay(true);
    let config = hoard.config();
    let io = TokioIo::new(Idle::new(stream, config.idle_timeout));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .max_buf_size(config.max_header_size);
    let service = service_fn({
        let hoard = hoard.clone();
        move |request| {
            let hoard = hoard.clone();
            async move { Ok::<_, Infallible>(handle(request, hoard, peer).await) }
        }
    });
    let result = builder.serve_connection(io, service).with_upgrades().await;
    if let Err(error) = result {
        tracing::debug!(%peer, %error, "client connection ended");
    }
}

async fn handle(request: Request<Incoming>, hoard: Arc<Hoard>, peer: SocketAddr) -> Response<Body> {
    let info = RequestInfo {
        metrics: hoard.metrics.clone(),
        host: logged_host(request.uri()),
        method: request.method().clone(),
        path: request.uri().path().to_owned(),
        start: Instant::now(),
    };
    if let Some(refusal) = admit(&request, &hoard, peer).await {
        if request.method() == Method::CONNECT {
            tracing::info!(host = %info.host, method = %"CONNECT", %peer, status = refusal.status().as_u16(), "refused");
        }
        return logged(info, refusal);
    }
    if request.method() == Method::CONNECT {
        return connect(request, hoard).await;
    }
    let response = match request.uri().scheme_str() {
        Some("http") => crate::forward::forward(request, &hoard).await,
        Some(_) => error(
            StatusCode::BAD_REQUEST,
            "only http:// URLs are forwarded; use CONNECT for https",
        ),
        None => local(&request, &hoard),
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

/// The client allow-list and proxy authentication. `/ca.crt`, `/healthz` and the `/setup/`
/// scripts are open to every allowed client, so a host can be set up before it has credentials:
/// they hold nothing secret (the scripts take proxy credentials as an argument).
async fn admit(
    request: &Request<Incoming>,
    hoard: &Hoard,
    peer: SocketAddr,
) -> Option<Response<Body>> {
    let config = hoard.config();
    if let Some(too_big) = head_too_large(request, config.max_header_size) {
        return Some(too_big);
    }
    if !config.allow_clients.is_empty()
        && !config.allow_clients.iter().any(|c| c.contains(peer.ip()))
    {
        hoard.metrics.auth_failure("allow_list");
        return Some(error(
            StatusCode::FORBIDDEN,
            &format!("client address {} is not in proxy.allow_clients", peer.ip()),
        ));
    }
    let users = config.users.as_ref()?;
    let public = request.uri().scheme().is_none()
        && request.method() != Method::CONNECT
        && (matches!(request.uri().path(), "/ca.crt" | "/healthz")
            || request.uri().path().starts_with("/setup/"));
    if public || users.check(request.headers()).await == AuthVerdict::Allowed {
        return None;
    }
    hoard.metrics.auth_failure("proxy_auth");
    let mut response = error(
        StatusCode::PROXY_AUTHENTICATION_REQUIRED,
        "proxy authentication required (user:password in the proxy URL)",
    );
    response.headers_mut().insert(
        PROXY_AUTHENTICATE,
        http::HeaderValue::from_static("Basic realm=\"hoard\""),
    );
    Some(response)
}

/// Requests addressed to hoard itself.
fn local(request: &Request<Incoming>, hoard: &Hoard) -> Response<Body> {
    match (request.method(), request.uri().path()) {
        (&Method::GET | &Method::HEAD, "/ca.crt") => Response::builder()
            .header(CONTENT_TYPE, "application/x-pem-file")
            .body(full_body(hoard.ca.ca_pem().to_owned()))
            .unwrap_or_else(|_| internal()),
        (&Method::GET | &Method::HEAD, "/healthz") => Response::new(full_body("ok\n")),
        (&Method::GET, "/stats") => Response::builder()
            .header(CONTENT_TYPE, "application/json")
            .body(full_body(hoard.metrics.to_json()))
            .unwrap_or_else(|_| internal()),
        (&Method::GET, path) if path.starts_with("/setup/") => {
            crate::setup::respond(request, hoard)
        }
        _ => error(
            StatusCode::BAD_REQUEST,
            "hoard is a proxy: send CONNECT host:port or an absolute http:// URL \
             (GET /ca.crt gives the CA certificate)",
        ),
    }
}

async fn connect(request: Request<Incoming>, hoard: Arc<Hoard>) -> Response<Body> {
    let Some(authority) = request.uri().authority().cloned() else {
        return error(StatusCode::BAD_REQUEST, "CONNECT needs host:port");
    };
    let Some(port) = authority.port_u16() else {
        return error(StatusCode::BAD_REQUEST, "CONNECT needs host:port");
    };
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();

    if !hoard.config().connect_ports.contains(&port) {
        return error(
            StatusCode::FORBIDDEN,
            &format!("CONNECT to port {port} is not allowed (proxy.connect_ports)"),
        );
    }
    if hoard.config().intercept.matches(&host) {
        tokio::spawn(async move {
            let _open = hoard.metrics.upgraded();
            match hyper::upgrade::on(request).await {
                Ok(upgraded) => crate::intercept::serve(upgraded, host, port, hoard.clone()).await,
                Err(error) => tracing::debug!(%error, "CONNECT upgrade failed"),
            }
        });
        return Response::new(crate::empty_body());
    }

    // Connect first, so a destination that cannot be reached is a 502 and not a dead tunnel.
    let server = match crate::tunnel::connect(&hoard, &host, port).await {
        Ok(server) => server,
        Err(err) if err.kind() == std::io::ErrorKind::PermissionDenied => {
            return error(StatusCode::FORBIDDEN, &err.to_string());
        }
        Err(err) => {
            tracing::info!(host = %logged_host(request.uri()), method = %"CONNECT", status = 502, cache = %"TUNNEL", error = %err, "request");
            return error(
                StatusCode::BAD_GATEWAY,
                &format!("cannot connect to {authority}: {err}"),
            );
        }
    };
    tokio::spawn(async move {
        let _open = hoard.metrics.upgraded();
        match hyper::upgrade::on(request).await {
            Ok(upgraded) => {
                let metrics = hoard.metrics.clone();
                crate::tunnel::run(upgraded, server, authority.to_string(), metrics).await
            }
            Err(error) => tracing::debug!(%error, "CONNECT upgrade failed"),
        }
    });
    Response::new(crate::empty_body())
}

/// hyper bounds the buffer a request head is read into, but not exactly at the limit: the head
/// itself is measured here. `None` when it is within `limit` bytes.
pub fn head_too_large<B>(request: &Request<B>, limit: usize) -> Option<Response<Body>> {
    let size: usize = request.uri().to_string().len()
        + request
            .headers()
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum::<usize>();
    (size > limit).then(|| {
        error(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            &format!("request head of {size} bytes is over the {limit}-byte limit"),
        )
    })
}

/// A response made by hoard itself, with a one-line reason in the body.
pub fn error(status: StatusCode, reason: &str) -> Response<Body> {
    let mut response = Response::new(full_body(format!("hoard: {reason}\n")));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response.extensions_mut().insert(CacheStatus::Local);
    response
}

fn internal() -> Response<Body> {
    error(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
}
