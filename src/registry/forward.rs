//! What goes to the registry: requests forwarded unchanged, body-less requests sent with hoard's
//! own credentials (whose successes name an object's origin), and, with
//! `cache.auth_on_hit = "upstream"`, the registry's verdict on a client's access to a cached
//! object turned into the answer the client gets.

use http::header::WWW_AUTHENTICATE;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::peer::from_owner;
use super::{Target, invalid_path, path_and_query};
use crate::config::AuthOnHit;
use crate::hoard::Hoard;
use crate::http::{Body, CacheStatus, DOCKER_CONTENT_DIGEST, error, pass_through};
use crate::http::{strip_hop_by_hop, upstream_headers};
use crate::oci::{Digest, Reference, Route};
use crate::store::Key;
use crate::upstream::auth::Verdict;
use crate::upstream::{UpstreamError, upstream_error};

/// Sends a body-less request to the intercepted registry, with hoard's own credentials for it
/// when the client sent none and it is a pull; in a fleet, a blob, manifest or tag another peer
/// owns is asked of that peer first. A success names where the registry has the blob or
/// manifest: that is kept as its origin.
pub(super) async fn registry_send(
    hoard: &Hoard,
    target: &Target,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response<Incoming>, UpstreamError> {
    let config = hoard.config();
    let credential = target.credential(&config);
    let route = Route::parse(uri.path());
    let response = match from_owner(hoard, target, &route, &method, &uri, &headers).await {
        Some(response) => response,
        None => {
            hoard
                .registry_auth
                .send_following(&hoard.upstream(), credential, method, uri, headers)
                .await?
        }
    };
    if response.status().is_success() {
        let announced = || {
            response
                .headers()
                .get(DOCKER_CONTENT_DIGEST)
                .and_then(|v| v.to_str().ok())
                .and_then(Digest::parse)
        };
        let origin = match route {
            Route::Manifest {
                repo,
                reference: Reference::Tag(_),
            } => announced().map(|digest| (repo, Key::Manifest(digest))),
            route => stored_object(&route).map(|(repo, key)| (repo.to_owned(), key)),
        };
        if let Some((repo, key)) = origin {
            hoard.store.note_origin(key, &target.key, &repo);
        }
    }
    Ok(response)
}

/// The repository and store entry of a blob or manifest by digest; `None` for any other route.
fn stored_object(route: &Route) -> Option<(&str, Key)> {
    match route {
        Route::Blob { repo, digest } => Some((repo, Key::Blob(digest.clone()))),
        Route::Manifest {
            repo,
            reference: Reference::Digest(digest),
        } => Some((repo, Key::Manifest(digest.clone()))),
        _ => None,
    }
}

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
        Err(err) => upstream_error(&err),
    }
}

/// A read nothing is kept of (a far blob range, a tag list for a mirror client), passed on as
/// asked. As for a fill, redirects are followed, and hoard's credentials (or its anonymous
/// stand-in) answer the registry's challenge, not the client.
pub(super) async fn pull(
    request: Request<Incoming>,
    target: &Target,
    hoard: &Hoard,
) -> Response<Body> {
    let Some(uri) = target.uri(path_and_query(&request)) else {
        return invalid_path();
    };
    let headers = upstream_headers(request.headers());
    let method = request.method().clone();
    match registry_send(hoard, target, method, uri, headers).await {
        Ok(response) => pass_through(response, CacheStatus::Bypass),
        Err(err) => upstream_error(&err),
    }
}

/// With `cache.auth_on_hit = "upstream"`, the registry's word on whether this client may have
/// this blob or manifest; `None` when it may (or when the check is off). A yes from the registry
/// records the route's repository as an origin of the object. While the registry cannot be
/// asked, the object goes only to a credential it accepted before for one of the object's
/// origins.
pub(super) async fn access_refused(
    request: &Request<Incoming>,
    target: &Target,
    hoard: &Hoard,
    route: &Route,
) -> Option<Response<Body>> {
    let config = hoard.config();
    if config.cache.auth_on_hit != AuthOnHit::Upstream {
        return None;
    }
    let uri = target.uri(request.uri().path())?;
    let credential = target.credential(&config);
    let host = target.key.as_str();
    let auth = &hoard.registry_auth;
    let verdict = auth
        .check_access(
            &hoard.upstream(),
            credential,
            host,
            route,
            uri,
            request.headers(),
        )
        .await;
    let mut refusal = match verdict {
        Verdict::Allowed { asked } => {
            if asked && let Some((repo, key)) = stored_object(route) {
                hoard.store.note_origin(key, &target.key, repo);
            }
            return None;
        }
        Verdict::Refused { status, challenge } => refused(status, challenge),
        Verdict::Unreachable => {
            let repos = known_repos(hoard, target, route).await;
            if auth.allowed_before(request.headers(), host, &repos) {
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
