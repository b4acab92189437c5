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
use crate::store::{Key, Origin};
use crate::upstream::auth::{Asker, RegistryAuth, Verdict};
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
        Err(err) => upstream_error(&err, &target.host_port()),
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
        Err(err) => upstream_error(&err, &sources.target.host_port()),
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
            let known = known_origins(hoard, target, route).await;
            if allowed_offline(auth, &asker, host, route, &known) {
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

/// Where this registry had a blob or manifest, as far as hoard knows: the object's origins as the
/// store keeps them (none for entries stored before origins were kept) or, for a tag, the tag's
/// own repository and the origins of the manifests it points at.
async fn known_origins(hoard: &Hoard, target: &Target, route: &Route) -> Vec<Origin> {
    let host = target.key.as_str();
    let keys = match route {
        Route::Manifest {
            repo,
            reference: Reference::Tag(tag),
        } => {
            let pointed = hoard.store.tag(&target.key, repo, tag).await;
            let mut known = vec![Origin {
                host: host.to_owned(),
                repository: repo.clone(),
                imported: false,
            }];
            for entry in pointed {
                known.extend(hoard.store.origins(&Key::Manifest(entry.digest)).await);
            }
            return known.into_iter().filter(|o| o.host == host).collect();
        }
        _ => stored_object(route).map(|(_, key)| key),
    };
    let Some(key) = keys else {
        return Vec::new();
    };
    let origins = hoard.store.origins(&key).await;
    origins.into_iter().filter(|o| o.host == host).collect()
}

/// Whether a client that passed hoard's own checks may have an object while its registry cannot
/// be asked: the registry accepted its credential before for a repository the object came from,
/// or the object was imported for the repository the client asks for.
fn allowed_offline(
    auth: &RegistryAuth,
    asker: &Asker,
    host: &str,
    route: &Route,
    known: &[Origin],
) -> bool {
    let asked_repo = route.repo().unwrap_or_default();
    if known
        .iter()
        .any(|o| o.imported && o.repository == asked_repo)
    {
        return true;
    }
    let repos: Vec<String> = known.iter().map(|o| o.repository.clone()).collect();
    auth.allowed_before(asker, host, &repos)
}
