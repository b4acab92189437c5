//! Forwarding a request unchanged (plain `http://` proxying, and registry calls hoard does not
//! cache): hop-by-hop headers removed, bodies streamed both ways.

use http::header::{CONNECTION, HeaderName};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::front::error;
use crate::log::CacheStatus;
use crate::upstream::UpstreamError;
use crate::{Body, Hoard};

/// Headers that belong to one connection and are never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

/// Removes hop-by-hop headers, including those the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    // The framing is redone by hyper on each side.
    headers.remove(http::header::TRANSFER_ENCODING);
}

/// Forwards a plain `http://` request.
pub async fn forward(request: Request<Incoming>, hoard: &Hoard) -> Response<Body> {
    let Some(host) = request.uri().host() else {
        return error(StatusCode::BAD_REQUEST, "the URL has no host");
    };
    let port = request.uri().port_u16().unwrap_or(80);
    if !hoard.config().forward_ports.contains(&port) {
        return error(
            StatusCode::FORBIDDEN,
            &format!("forwarding to port {port} is not allowed (proxy.forward_ports)"),
        );
    }
    // Refused here with a clear 403; the guarded client re-checks what it connects to.
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Err(err) = hoard.upstream().check_destination(host, port).await
        && err.kind() == std::io::ErrorKind::PermissionDenied
    {
        return error(StatusCode::FORBIDDEN, &err.to_string());
    }
    let (mut parts, body) = request.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let request = Request::from_parts(parts, body.map_err(Into::into).boxed());
    match hoard.upstream().send_guarded(request).await {
        Ok(response) => pass_through(response, CacheStatus::Bypass),
        Err(err) => upstream_error(&err),
    }
}

/// An upstream response relayed to the client as it is, body streamed.
pub fn pass_through(response: Response<Incoming>, status: CacheStatus) -> Response<Body> {
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.extensions = http::Extensions::new();
    parts.extensions.insert(status);
    Response::from_parts(parts, body.map_err(Into::into).boxed())
}

/// The client's view of an upstream failure: 504 for a timeout, 502 otherwise.
pub fn upstream_error(err: &UpstreamError) -> Response<Body> {
    let status = match err {
        UpstreamError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::BAD_GATEWAY,
    };
    // The chain matters here: "client error (Connect)" alone does not say why.
    let mut reason = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        reason.push_str(": ");
        reason.push_str(&cause.to_string());
        source = cause.source();
    }
    error(status, &reason)
}
