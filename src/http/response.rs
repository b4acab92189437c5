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
    let uri = request.uri();
    // The length of the URI as written (`scheme://authority/path?query`), without writing it.
    let target = uri.scheme_str().map_or(0, |s| s.len() + "://".len())
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.path().len()
        + uri.query().map_or(0, |q| "?".len() + q.len());
    let size: usize = target
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_is_measured_as_written() {
        for uri in [
            "/v2/",
            "/v2/a/blobs/sha256:00?ns=gcr.io",
            "https://gcr.io/v2/x/manifests/v1?n=1",
            "gcr.io:443",
            "http://h",
        ] {
            let request = Request::get(uri)
                .header("x-a", "bc")
                .body(())
                .unwrap_or_default();
            let written = uri
                .parse::<http::Uri>()
                .map(|u| u.to_string().len())
                .unwrap_or(0);
            let limit = written + "x-a".len() + "bc".len() + 4;
            assert!(
                head_too_large(&request, limit).is_none(),
                "{uri} at its size"
            );
            assert!(
                head_too_large(&request, limit - 1).is_some(),
                "{uri} one byte over"
            );
        }
    }
}
