//! Forwarding a request unchanged (plain `http://` proxying, and registry calls hoard does not
//! cache): hop-by-hop headers removed, bodies streamed both ways.

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::hoard::Hoard;
use crate::http::Body;
use crate::http::CacheStatus;
use crate::http::error;
use crate::http::{pass_through, strip_hop_by_hop};
use crate::upstream::{UpstreamError, upstream_error};

/// Forwards a plain `http://` request.
pub(super) async fn forward(request: Request<Incoming>, hoard: &Hoard) -> Response<Body> {
    let Some(host) = request.uri().host() else {
        return error(StatusCode::BAD_REQUEST, "the URL has no host");
    };
    let port = request.uri().port_u16().unwrap_or(80);
    if !hoard.config().proxy.forward_ports.contains(&port) {
        return error(
            StatusCode::FORBIDDEN,
            &format!("forwarding to port {port} is not allowed (proxy.forward_ports)"),
        );
    }
    // Refused here with a clear 403; the guarded client re-checks what it connects to.
    let host = crate::net::unbracket(host);
    if let Err(err @ UpstreamError::Refused(_)) =
        hoard.upstream().check_destination(host, port).await
    {
        return upstream_error(&err, &crate::net::authority(host, port));
    }
    let asked = crate::net::authority(host, port);
    let (mut parts, body) = request.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let request = Request::from_parts(parts, body.map_err(Into::into).boxed());
    match hoard.upstream().send_guarded(request).await {
        Ok(response) => pass_through(response, CacheStatus::Bypass),
        Err(err) => upstream_error(&err, &asked),
    }
}
