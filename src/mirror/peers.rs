//! The fleet's peer endpoint (`fleet.listen`): the mirror's API for the other hoards of the
//! fleet only. A request must carry a signature made with the fleet's secret
//! ([`crate::fleet::sign`]) and name its registry in `ns`; the registry must be one this node
//! serves (`intercept.hosts`, `mirror.registries`), so the endpoint is no relay to anywhere
//! else. What it gets is answered here, by the same registry rules as every other request (the
//! owner fills once; everyone reads the growing blob), never from yet another peer.
//! `/fleet/metrics` (signed too) gives a peer this node's counters, for the fleet's figures on
//! its status page.
//!
//! Plain HTTP: the fleet's traffic is content-addressed and verified by the reader, and the
//! signature keeps strangers out; run it on a private network.

use std::sync::Arc;

use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use tokio::net::TcpListener;

use super::route::{Mapped, map};
use crate::access::limits::ConnectionLimits;
use crate::fleet::{METRICS_PATH, MODE, REFUSED, STATS, Signed, sign};
use crate::hoard::Hoard;
use crate::http::{Body, error, full_body};
use crate::registry::Target;
use crate::registry::conn::{Answer, Answered};
use crate::telemetry::Via;

/// Requests from the fleet's peers.
#[derive(Debug)]
struct FromPeers;

impl Answer for FromPeers {
    async fn answer(&self, request: Request<Incoming>, hoard: Arc<Hoard>) -> Answered {
        if request.uri().path() == METRICS_PATH {
            let response = match metrics(&request, &hoard) {
                Ok(text) => text_response(text),
                Err(Refusal(status, reason)) => refuse(status, &reason),
            };
            return Answered {
                host: String::new(),
                path: None,
                response,
            };
        }
        match admitted_request(request, &hoard) {
            Ok((target, request)) => Answered {
                host: target.authority().to_owned(),
                path: Some(request.uri().path().to_owned()),
                response: crate::registry::handle(request, &target, &hoard).await,
            },
            Err(Refusal(status, reason)) => Answered {
                host: String::new(),
                path: None,
                response: refuse(status, &reason),
            },
        }
    }
}

/// Accepts peer connections until the listener fails. A peer opens many connections at once (one
/// per request in flight over HTTP/1.1), so only the total connection limit applies.
pub(crate) async fn serve(listener: TcpListener, hoard: Arc<Hoard>) {
    let config = hoard.config();
    let limits = ConnectionLimits::new(config.max_connections, config.max_connections);
    hoard.listening(&limits);
    drop(config);
    super::accept(
        listener,
        hoard,
        None,
        limits,
        Arc::new(FromPeers),
        Via::Fleet,
    )
    .await;
}

/// This node's metrics, for a peer that signed its request (the fleet's figures on its status
/// page).
fn metrics(request: &Request<Incoming>, hoard: &Hoard) -> Result<String, Refusal> {
    let Some(fleet) = hoard.fleet.as_ref() else {
        return Err(Refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            String::from("this node is not in a fleet"),
        ));
    };
    let signed = Signed {
        method: request.method().as_str(),
        path_and_query: request.uri().path_and_query().map_or("/", |p| p.as_str()),
        mode: STATS,
    };
    let secret = fleet.secret();
    sign::verify(&secret.0, signed, request.headers().get(sign::SIGNATURE))
        .map_err(|reason| Refusal(StatusCode::UNAUTHORIZED, String::from(reason)))?;
    if request.method() != Method::GET {
        return Err(Refusal(
            StatusCode::METHOD_NOT_ALLOWED,
            String::from("GET only"),
        ));
    }
    Ok(hoard.metrics.encode())
}

fn text_response(text: String) -> Response<Body> {
    let mut response = Response::new(full_body(text));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The registry a peer's request is for, and the request as that registry is to get it; or a
/// refusal, marked as this endpoint's own so that the peer asks the registry itself.
fn admitted_request(
    mut request: Request<Incoming>,
    hoard: &Hoard,
) -> Result<(Target, Request<Incoming>), Refusal> {
    let Some(fleet) = hoard.fleet.as_ref() else {
        return Err(Refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            String::from("this node is not in a fleet"),
        ));
    };
    let mode = match request.headers().get(MODE).map(HeaderValue::as_bytes) {
        Some(b"proxy") => "proxy",
        Some(b"mirror") => "mirror",
        _ => {
            return Err(Refusal(
                StatusCode::BAD_REQUEST,
                String::from("hoard-fleet-mode must be proxy or mirror"),
            ));
        }
    };
    let path_and_query = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let signed = Signed {
        method: request.method().as_str(),
        path_and_query: &path_and_query,
        mode,
    };
    let secret = fleet.secret();
    if let Err(reason) = sign::verify(&secret.0, signed, request.headers().get(sign::SIGNATURE)) {
        return Err(Refusal(StatusCode::UNAUTHORIZED, String::from(reason)));
    }
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        return Err(Refusal(
            StatusCode::METHOD_NOT_ALLOWED,
            String::from("peers ask for pulls only (GET and HEAD)"),
        ));
    }
    let uri = request.uri();
    let (registry, path) = match map(uri.path(), uri.query(), "") {
        Ok(Mapped::Registry { registry, path }) if !registry.is_empty() => (registry, path),
        Ok(_) => {
            return Err(Refusal(
                StatusCode::BAD_REQUEST,
                String::from("a peer names the registry in ns"),
            ));
        }
        Err(reason) => return Err(Refusal(StatusCode::BAD_REQUEST, reason)),
    };
    let (host, port) = match crate::net::split_authority(&registry) {
        Some(authority) => (authority.host, authority.port.unwrap_or(443)),
        None => (registry.as_str(), 443),
    };
    let config = hoard.config();
    let served = config.intercept.matches(host)
        || config
            .mirror
            .as_ref()
            .is_some_and(|m| m.registries.matches(host));
    if !served {
        return Err(Refusal(
            StatusCode::FORBIDDEN,
            format!("registry {registry} is not served by this node"),
        ));
    }
    let target = match mode {
        "mirror" => Target::mirrored(host, port),
        _ => Target::new(host, port),
    };
    let Some(target) = target else {
        return Err(Refusal(
            StatusCode::BAD_REQUEST,
            String::from("not a registry host"),
        ));
    };
    let Ok(uri) = path.parse::<Uri>() else {
        return Err(Refusal(
            StatusCode::BAD_REQUEST,
            String::from("request path is not a valid URI"),
        ));
    };
    *request.uri_mut() = uri;
    let headers = request.headers_mut();
    headers.remove(sign::SIGNATURE);
    headers.remove(MODE);
    if mode == "mirror" {
        headers.remove(AUTHORIZATION);
    }
    Ok((target.for_peer(), request))
}

/// Why a peer's request is refused, and with what status.
struct Refusal(StatusCode, String);

/// A refusal of the endpoint's own, with the header that tells the peer so.
fn refuse(status: StatusCode, reason: &str) -> Response<Body> {
    tracing::info!(status = status.as_u16(), reason, "peer request refused");
    let mut response = error(status, reason);
    let value = HeaderValue::from_str(reason)
        .unwrap_or_else(|_| HeaderValue::from_static("refused by the peer endpoint"));
    response.headers_mut().insert(REFUSED, value);
    response
}
