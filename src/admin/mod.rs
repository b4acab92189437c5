//! The admin listener (`admin.listen`, 127.0.0.1:9128 by default): Prometheus metrics at
//! `/metrics`, `/healthz` (up, store writable, CA key readable and matching), `/readyz` (ready
//! for new connections: not while draining), and a status page at `/`. It keeps answering while
//! the other listeners drain, until hoard exits. It answers only a `Host` that names it
//! (`host.rs`): its address, loopback, or `admin.names`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use crate::access::limits::ConnectionLimits;
use crate::config::AdminListen;
use crate::edge::{Accepted, Io, Listener, Role, Serve, Stop};
use crate::error::Chain;
use crate::hoard::Hoard;
use crate::http::{Body, full_body};
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};

mod health;
mod host;
mod status;

use health::health;
use status::{fleet_figures, status_page};

/// Admin connections held at once. Scrapers and an operator's browser need a few; past the
/// limit the oldest is closed to make room.
const MAX_CONNECTIONS: usize = 64;

/// Binds the admin listener. The default address may be taken (a second hoard on the host):
/// then hoard runs without it and says so; a configured address must bind.
pub(crate) async fn bind(admin: AdminListen) -> anyhow::Result<Option<Listener>> {
    let (addr, configured) = match admin {
        AdminListen::Off => return Ok(None),
        AdminListen::Configured(addr) => (addr, true),
        AdminListen::Default(addr) => (addr, false),
    };
    let limits = ConnectionLimits::new(MAX_CONNECTIONS, MAX_CONNECTIONS);
    match Listener::bind(addr, "admin.listen", Role::Admin, limits, None).await {
        Ok(listener) => {
            let addr = listener.local_addr()?;
            tracing::info!(addr = %format!("http://{addr}"), "admin listening: status page /, /metrics, /healthz");
            Ok(Some(listener))
        }
        Err(err) if !configured => {
            tracing::warn!(%addr, error = %Chain(err.as_ref()), "admin listener not started (set admin.listen to choose another address)");
            Ok(None)
        }
        Err(err) => Err(err),
    }
}

/// The admin listener's connections; the stop signal tells `/readyz` the server is draining.
#[derive(Debug)]
pub(crate) struct Admin(
    /// The server's stop signal.
    pub Stop,
);

impl Serve for Admin {
    async fn serve<I: Io>(&self, connection: Accepted<I>, hoard: Arc<Hoard>) {
        let (stop, local) = (self.0.clone(), connection.local);
        let service = hyper::service::service_fn(move |request| {
            let (hoard, stop) = (hoard.clone(), stop.clone());
            async move {
                let names = &hoard.config().admin.names;
                if let Some(reason) = host::misnamed(&request, local, names) {
                    let reason = format!("{reason}\n");
                    return Ok::<_, Infallible>(text(StatusCode::MISDIRECTED_REQUEST, reason));
                }
                Ok(answer(&request, &hoard, &stop).await)
            }
        });
        let served = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(10))
            .serve_connection(TokioIo::new(connection.io), service);
        // Closed to make room for another at the limit, whatever it is doing.
        tokio::select! {
            _ = served => {}
            () = connection.ticket.evicted() => {}
        }
    }
}

async fn answer(request: &Request<Incoming>, hoard: &Hoard, stop: &Stop) -> Response<Body> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n".into());
    }
    match request.uri().path() {
        "/metrics" => {
            refresh_gauges(hoard);
            let mut response = text(StatusCode::OK, hoard.metrics.encode());
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            response
        }
        "/healthz" => {
            let (status, body) = health(hoard);
            text(status, body)
        }
        "/readyz" => stop.readiness(),
        "/" => {
            refresh_gauges(hoard);
            let fleet = fleet_figures(hoard).await;
            let mut response = text(StatusCode::OK, status_page(hoard, fleet.as_deref()));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            response
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "hoard admin: / (status), /metrics, /healthz, /readyz\n".into(),
        ),
    }
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(full_body(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn refresh_gauges(hoard: &Hoard) {
    let usage = hoard.store.usage();
    let m = &hoard.metrics;
    let set = |gauge: &prometheus_client::metrics::gauge::Gauge, value: u64| {
        gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
    };
    set(&m.store_bytes, usage.bytes);
    set(&m.store_entries, usage.entries as u64);
    set(&m.store_reserved_bytes, usage.reserved);
    set(&m.fills_in_flight, usage.fills as u64);
    set(&m.store_evictions, hoard.store.evictions());
    set(&m.leaf_certificates, hoard.ca.minted());
    if let Some(fleet) = &hoard.fleet {
        fleet.update_metrics();
    }
}
