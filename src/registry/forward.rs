//! What goes to the registry unchanged: requests forwarded with the client's own credentials,
//! reads passed on uncached (from the object's owner or the registry, as `source.rs` decides),
//! and, with `cache.auth_on_hit = "upstream"`, the registry's verdict on a client's access to a
//! cached object turned into the answer the client gets.

use http::header::WWW_AUTHENTICATE;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::source::{Sources, stored_object};
use super::target::{Target, invalid_path, path_and_query};
use crate::config::AuthOnHit;
use crate::hoard::Hoard;
use crate::http::{Body, CacheStatus, error, pass_through};
use crate::http::{strip_hop_by_hop, upstream_headers};
use crate::oci::{Reference, Route};
use crate::upstream::auth::{Asker, Verdict};
use crate::upstream::upstream_error;

/// Forwards a request unchanged, body streamed both ways, nothing cached.
pub(super) async fn forward(
    request: Request<Incoming>,
    target: &Target,
    hoard: &Hoard,
) -> Response<Body> {
    let Some(uri) = target.uri(path_and_query(&request)) else {
        return invalid_path();
    };
    let (mut parts, body) = request.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let config = hoard.config();
    let credential = target.credential(&config);
    hoard.registry_auth.preauthorize(
        credential,
        &parts.method,
        parts.uri.path(),
        &mut parts.headers,
    );
    parts.uri = uri;
    let upstream = Request::from_parts(parts, body.map_err(Into::into).boxed());
    match hoard.upstream().send(upstream).await {
        Ok(response) => pass_through(response, CacheStatus::Bypass),
        Err(err) => upstream_error(&err, target.host_port()),
    }
}

/// A read nothing is kept of (a far blob range, a tag list for a mirror client), passed on as
/// asked, with `headers` (the client's, made fit for the upstream). As for a fill, redirects are
/// followed, and hoard's credentials (or its anonymous stand-in) answer the registry's
/// challenge, not the client.
pub(super) async fn pull(
    sources: &Sources<'_>,
    method: Method,
    headers: HeaderMap,
) -> Response<Body> {
    match sources.send(method, headers).await {
        Ok((response, _)) => pass_through(response, CacheStatus::Bypass),
        Err(err) => upstream_error(&err, sources.target.host_port()),
    }
}

/// [`pull`] for a whole client request.
pub(super) async fn pull_request(
    request: &Request<Incoming>,
    sources: &Sources<'_>,
) -> Response<Body> {
    let headers = upstream_headers(request.headers());
    pull(sources, request.method().clone(), headers).await
}

/// A read nothing is kept of (a tag list, the catalog): forwarded. A mirror client cannot log in
/// upstream, so for it hoard does.
pub(super) async fn uncached(request: Request<Incoming>, sources: &Sources<'_>) -> Response<Body> {
    if sources.target.anonymous.is_some() {
        pull_request(&request, sources).await
    } else {
        forward(request, sources.target, sources.hoard).await
    }
}

/// With `cache.auth_on_hit = "upstream"`, the registry's word on whether this client may have
/// this blob or manifest; `None` when it may (or when the check is off). A yes from the registry
/// records the route's repository as an origin of the object. While the registry cannot be
/// asked, the object goes only to a credential it accepted before for one of the object's
/// origins.
pub(super) async fn access_refused(
    request: &Request<Incoming>,
    sources: &Sources<'_>,
) -> Option<Response<Body>> {
    let (hoard, target, route) = (sources.hoard, sources.target, &sources.route);
    let config = hoard.config();
    if config.cache.auth_on_hit != AuthOnHit::Upstream {
        return None;
    }
    let uri = target.uri(request.uri().path())?;
    let credential = target.credential(&config);
    let host = target.key.as_str();
    let auth = &hoard.registry_auth;
    let asker = Asker::of(request.headers(), credential, target.user());
    let verdict = auth
        .check_access(
            &hoard.upstream(),
            credential,
            host,
            route,
            uri,
            request.headers(),
            &asker,
        )
        .await;
    let mut refusal = match verdict {
        Verdict::Allowed { asked } => {
            if asked && let Some((_, key)) = stored_object(route) {
                sources.note_origin(key);
            }
            return None;
        }
        Verdict::Refused { status, challenge } => refused(status, challenge),
        Verdict::Unreachable => {
            let repos = known_repos(hoard, target, route).await;
            if auth.allowed_before(&asker, host, &repos) {
                return None;
            }
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the registry cannot confirm access to this cached object right now",
            )
        }
    };
    refusal.extensions_mut().insert(CacheStatus::Local);
    Some(refusal)
}

/// The registry's refusal, with its challenge, for the client.
fn refused(status: StatusCode, challenge: Option<HeaderValue>) -> Response<Body> {
    let mut response = error(status, "the registry did not grant access to this object");
    if let Some(challenge) = challenge {
        response.headers_mut().insert(WWW_AUTHENTICATE, challenge);
    }
    response
}

/// The repositories of this registry a blob or manifest is known to come from: its origins as
/// the store keeps them (none for entries stored before origins were kept), or a tag's own.
async fn known_repos(hoard: &Hoard, target: &Target, route: &Route) -> Vec<String> {
    if let Route::Manifest {
        repo,
        reference: Reference::Tag(_),
    } = route
    {
        return vec![repo.clone()];
    }
    let Some((_, key)) = stored_object(route) else {
        return Vec::new();
    };
    hoard
        .store
        .origins(&key)
        .await
        .into_iter()
        .filter(|(host, _)| host == target.key.as_str())
        .map(|(_, repo)| repo)
        .collect()
}
