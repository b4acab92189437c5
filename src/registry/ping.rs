//! The `/v2/` version check: forwarded (it carries the auth challenge), answered by hoard when
//! the upstream is unusable so that pulls of cached images go on.

use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Request, Response};
use hyper::body::Incoming;

use super::source::Sources;
use super::target::unusable;
use crate::http::{Body, CacheStatus, full_body, pass_through, upstream_headers};

/// Answers `GET` or `HEAD` for `/v2/`.
pub(super) async fn ping(request: Request<Incoming>, sources: &Sources<'_>) -> Response<Body> {
    let target = sources.target;
    let method = request.method().clone();
    let headers = upstream_headers(request.headers());
    let result = sources
        .send(method, headers)
        .await
        .map(|(response, _)| response);
    match result {
        Ok(response) if !unusable(response.status()) => pass_through(response, CacheStatus::Bypass),
        Ok(response) => {
            tracing::info!(host = target.authority(), status = %response.status(), "upstream unusable; answering /v2/ locally");
            local_ping()
        }
        Err(err) => {
            tracing::info!(host = target.authority(), error = %err, "upstream unreachable; answering /v2/ locally");
            local_ping()
        }
    }
}

fn local_ping() -> Response<Body> {
    let mut response = Response::new(full_body("{}"));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(
        crate::http::API_VERSION.0,
        HeaderValue::from_static(crate::http::API_VERSION.1),
    );
    response.extensions_mut().insert(CacheStatus::Stale);
    response
}
