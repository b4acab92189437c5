//! Responses hoard makes itself: an error with a one-line reason, an upstream response relayed
//! as it is, and the few fixed answers of the front door.

use http::header::CONTENT_TYPE;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;

use super::body::{Body, full_body};
use super::cache_status::CacheStatus;
use super::headers::strip_hop_by_hop;

/// Why hoard answered a request with an error: the reason in its body, kept as a response
/// extension so that the request's one log line can say it.
#[derive(Debug, Clone)]
pub(crate) struct ErrorReason(pub String);

/// A response made by hoard itself, with a one-line reason in the body.
pub(crate) fn error(status: StatusCode, reason: &str) -> Response<Body> {
    let mut response = Response::new(full_body(format!("hoard: {reason}\n")));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response.extensions_mut().insert(CacheStatus::Local);
    response
        .extensions_mut()
        .insert(ErrorReason(reason.to_owned()));
    response
}

pub(crate) fn internal() -> Response<Body> {
    error(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
}

/// The answer to a request that arrives on a connection just closed to make room for another.
/// The connection closes right after it.
pub(crate) fn making_room() -> Response<Body> {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "connection closed to make room for others (proxy.max_connections)",
    )
}

/// hyper bounds the buffer a request head is read into, but not exactly at the limit: the head
/// itself is measured here. `None` when it is within `limit` bytes.
pub(crate) fn head_too_large<B>(request: &Request<B>, limit: usize) -> Option<Response<Body>> {
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

/// An upstream response relayed to the client as it is, body streamed.
pub(crate) fn pass_through(response: Response<Incoming>, status: CacheStatus) -> Response<Body> {
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.extensions = http::Extensions::new();
    parts.extensions.insert(status);
    Response::from_parts(parts, body.map_err(Into::into).boxed())
}
