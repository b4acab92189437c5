//! The fleet's peer endpoint (`fleet.listen`), a listener of its own: the mirror's API for the
//! other hoards of the fleet only. A request must carry a signature made with the fleet's secret
//! ([`crate::fleet::sign`]) and name its registry in `ns`; the registry must be one this node
//! serves (`intercept.hosts`, `mirror.registries`), so the endpoint is no relay to anywhere
//! else. What it gets is answered here, by the same registry rules as every other request (the
//! owner fills once; everyone reads the growing blob), never from yet another peer.
//! `/fleet/metrics` (signed too) gives a peer this node's counters, for the fleet's figures on
//! its status page.
//!
//! Requests are mapped to their registry as the mirror's are ([`crate::edge::map`]). Plain
//! HTTP: the fleet's traffic is content-addressed and verified by the reader, and the signature
//! keeps strangers out; run it on a private network.

use std::sync::Arc;

use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::access::limits::ConnectionLimits;
use crate::edge::map::{Mapped, Mapping, Rejection, answered, mapped};
use crate::edge::{Listener, Registry, Role};
use crate::fleet::{METRICS_PATH, MODE, Mode, REFUSED, Signed, sign};
use crate::hoard::Hoard;
use crate::http::{Body, full_body};
use crate::registry::conn::{Answer, Answered};
use crate::telemetry::Via;

/// Requests from the fleet's peers.
#[derive(Debug)]
pub(crate) struct FromPeers;

impl Answer for FromPeers {
    async fn answer(&self, request: Request<Incoming>, hoard: Arc<Hoard>) -> Answered {
        if request.uri().path() == METRICS_PATH {
            let response = match metrics(&request, &hoard) {
                Ok(text) => text_response(text),
                Err(refused) => refuse(&refused),
            };
            return Answered::here(response);
        }
        match admitted_request(request, &hoard) {
            Ok((target, request)) => answered(target, request, &hoard).await,
            Err(refused) => Answered::here(refuse(&refused)),
        }
    }
}

/// Binds the peer endpoint when `[fleet]` is on. A peer opens many connections at once (one per
/// request in flight over HTTP/1.1), so only the total connection limit applies.
pub(crate) async fn bind(hoard: &Hoard) -> anyhow::Result<Option<Listener>> {
    let config = hoard.config();
    let (Some(fleet), Some(peers)) = (config.fleet.as_ref(), hoard.fleet.as_ref()) else {
        return Ok(None);
    };
    let limits = ConnectionLimits::new(config.proxy.connections.max, config.proxy.connections.max);
    let listener = Listener::bind(
        fleet.listen,
        "fleet.listen",
        Role::Client(Via::Fleet),
        limits,
        None,
    )
    .await?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, peers = ?peers.peers().iter().map(|p| p.name.clone()).collect::<Vec<_>>(), "fleet peer endpoint listening");
    Ok(Some(listener))
}

/// The peers' requests, each signed and answered here.
pub(crate) fn service() -> Arc<Registry<FromPeers>> {
    Arc::new(Registry(Arc::new(FromPeers)))
}

/// This node's metrics, for a peer that signed its request (the fleet's figures on its status
/// page).
fn metrics(request: &Request<Incoming>, hoard: &Hoard) -> Result<String, Rejection> {
    let Some(fleet) = hoard.fleet.as_ref() else {
        return Err(not_in_a_fleet());
    };
    let signed = Signed {
        method: request.method().as_str(),
        path_and_query: request.uri().path_and_query().map_or("/", |p| p.as_str()),
        mode: Mode::Stats,
        headers: request.headers(),
    };
    fleet
        .verify(signed, request.headers().get(sign::SIGNATURE))
        .map_err(|reason| Rejection::new(StatusCode::UNAUTHORIZED, reason))?;
    if request.method() != Method::GET {
        return Err(Rejection::new(StatusCode::METHOD_NOT_ALLOWED, "GET only"));
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

/// The registry a peer's request is for, and the request as that registry is to get it; or why
/// it is refused.
fn admitted_request(
    mut request: Request<Incoming>,
    hoard: &Hoard,
) -> Result<(crate::registry::Target, Request<Incoming>), Rejection> {
    let Some(fleet) = hoard.fleet.as_ref() else {
        return Err(not_in_a_fleet());
    };
    let mode = request.headers().get(MODE).map(HeaderValue::as_bytes);
    let Some(mode) = mode
        .and_then(Mode::parse)
        .filter(|mode| *mode != Mode::Stats)
    else {
        return Err(Rejection::new(
            StatusCode::BAD_REQUEST,
            "hoard-fleet-mode must be proxy or mirror",
        ));
    };
    let path_and_query = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let signed = Signed {
        method: request.method().as_str(),
        path_and_query,
        mode,
        headers: request.headers(),
    };
    fleet
        .verify(signed, request.headers().get(sign::SIGNATURE))
        .map_err(|reason| Rejection::new(StatusCode::UNAUTHORIZED, reason))?;
    let headers = request.headers_mut();
    headers.remove(sign::SIGNATURE);
    headers.remove(MODE);
    let how = Mapping {
        default_registry: "",
        mode,
        keep_authorization: matches!(mode, Mode::Proxy { .. }),
        for_peer: true,
        user: None,
    };
    match mapped(request, hoard, how)? {
        Mapped::Registry(target, request) => Ok((target, request)),
        Mapped::Ping => Err(Rejection::new(
            StatusCode::BAD_REQUEST,
            "a peer names the registry in ns",
        )),
    }
}

fn not_in_a_fleet() -> Rejection {
    Rejection::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "this node is not in a fleet",
    )
}

/// A refusal of the endpoint's own, with the header that tells the peer so.
fn refuse(refused: &Rejection) -> Response<Body> {
    let (status, reason) = (refused.status, refused.reason.as_str());
    tracing::info!(status = status.as_u16(), reason, "peer request refused");
    let mut response = refused.response();
    let value = HeaderValue::from_str(reason)
        .unwrap_or_else(|_| HeaderValue::from_static("refused by the peer endpoint"));
    response.headers_mut().insert(REFUSED, value);
    response
}
