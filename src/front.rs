//! The front door: the proxy listener. Each request is a CONNECT (tunnel or intercept), an
//! absolute-form `http://` request (forwarded), or addressed to hoard itself (`/ca.crt`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::CONTENT_TYPE;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};

use crate::log::{CacheStatus, RequestInfo, logged};
use crate::{Body, Hoard, full_body};

/// Time a client has to send a complete request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest request head accepted on the proxy port (64 KiB; Docker's biggest are ~4 KiB).
const MAX_HEAD_BYTES: usize = 64 << 10;

/// Accepts connections until the listener fails.
pub async fn serve(listener: TcpListener, hoard: Arc<Hoard>) {
    tracing::info!(addr = %hoard.config.listen, "hoard listening");
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        tokio::spawn(serve_connection(stream, peer, hoard.clone()));
    }
}

async fn serve_connection(stream: TcpStream, peer: SocketAddr, hoard: Arc<Hoard>) {
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |request| {
        let hoard = hoard.clone();
        async move { Ok::<_, Infallible>(handle(request, hoard).await) }
    });
    let result = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades()
        .await;
    if let Err(error) = result {
        tracing::debug!(%peer, %error, "client connection ended");
    }
}

async fn handle(request: Request<Incoming>, hoard: Arc<Hoard>) -> Response<Body> {
    let info = RequestInfo {
        stats: hoard.stats.clone(),
        host: request
            .uri()
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_default(),
        method: request.method().clone(),
        path: request.uri().path().to_owned(),
        start: Instant::now(),
    };
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
            .body(full_body(hoard.stats.to_json()))
            .unwrap_or_else(|_| internal()),
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

    if hoard.config.intercept.matches(&host) {
        tokio::spawn(async move {
            match hyper::upgrade::on(request).await {
                Ok(upgraded) => crate::intercept::serve(upgraded, host, port, hoard).await,
                Err(error) => tracing::debug!(%error, "CONNECT upgrade failed"),
            }
        });
        return Response::new(crate::empty_body());
    }

    // Connect first, so a destination that cannot be reached is a 502 and not a dead tunnel.
    let server = match crate::tunnel::connect(&hoard, &host, port).await {
        Ok(server) => server,
        Err(err) => {
            tracing::info!(host = %authority, method = %"CONNECT", status = 502, cache = %"TUNNEL", error = %err, "request");
            return error(
                StatusCode::BAD_GATEWAY,
                &format!("cannot connect to {authority}: {err}"),
            );
        }
    };
    tokio::spawn(async move {
        match hyper::upgrade::on(request).await {
            Ok(upgraded) => {
                let stats = hoard.stats.clone();
                crate::tunnel::run(upgraded, server, authority.to_string(), stats).await
            }
            Err(error) => tracing::debug!(%error, "CONNECT upgrade failed"),
        }
    });
    Response::new(crate::empty_body())
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
