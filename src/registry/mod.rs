//! The registry cache: what hoard does with each OCI call on an intercepted host.
//!
//! - blobs and manifests by digest: served from the store, or filled from the upstream while
//!   streaming to the client and verified before they are kept;
//! - manifests by tag: the tag map, fresh for `cache.tag_ttl`, then revalidated with a HEAD;
//! - the `/v2/` ping: forwarded, or answered locally when the upstream is unusable;
//! - everything else: forwarded unchanged.

use std::time::SystemTime;

use http::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, RANGE};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::config::AuthOnHit;
use crate::hoard::Hoard;
use crate::http::{Body, empty_body, full_body};
use crate::http::{CacheStatus, error, pass_through, strip_hop_by_hop};
use crate::http::{DOCKER_CONTENT_DIGEST, insert_digest_headers, upstream_headers};
use crate::oci::{DOCKER_MANIFEST_V2, Digest, Reference, Route, accepts};
use crate::store::{HostKey, Key, MAX_MANIFEST_SIZE, StoredManifest, TagEntry};
use crate::upstream::upstream_error;

pub mod blobs;

/// The intercepted registry a connection talks to.
#[derive(Debug)]
pub struct Target {
    authority: String,
    base: String,
    key: HostKey,
}

impl Target {
    /// `None` when `host` is not a plain host name or IP address.
    pub fn new(host: &str, port: u16) -> Option<Target> {
        let key = HostKey::new(host, port)?;
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_ascii_lowercase()
        };
        let authority = if port == 443 {
            host
        } else {
            format!("{host}:{port}")
        };
        Some(Target {
            base: format!("https://{authority}"),
            authority,
            key,
        })
    }

    /// `host[:port]`, as the client named it.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    pub(crate) fn uri(&self, path_and_query: &str) -> Option<Uri> {
        format!("{}{path_and_query}", self.base).parse().ok()
    }
}

/// Answers one request on an intercepted connection.
pub async fn handle(request: Request<Incoming>, target: &Target, hoard: &Hoard) -> Response<Body> {
    let route = Route::parse(request.uri().path());
    if let Route::Invalid(reason) = route {
        return error(StatusCode::BAD_REQUEST, reason);
    }
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        return write(request, target, hoard, route).await;
    }
    if matches!(route, Route::Blob { .. } | Route::Manifest { .. })
        && let Some(refusal) = access_refused(&request, target, hoard, &route).await
    {
        return refusal;
    }
    match route {
        Route::Ping => ping(request, target, hoard).await,
        Route::Blob { digest, .. } => {
            crate::registry::blobs::blob(request, target, hoard, digest).await
        }
        Route::Manifest {
            reference: Reference::Digest(digest),
            ..
        } => manifest_by_digest(request, target, hoard, digest).await,
        Route::Manifest {
            repo,
            reference: Reference::Tag(tag),
        } => manifest_by_tag(request, target, hoard, &repo, &tag).await,
        Route::Other => forward(request, target, hoard).await,
        Route::Invalid(reason) => error(StatusCode::BAD_REQUEST, reason),
    }
}

/// A push, a tag change, a delete: forwarded with the client's own credentials (hoard lends
/// none, see [`crate::upstream::auth::lends_credentials`]). A manifest PUT or DELETE by tag that
/// the registry took drops the cached tag, so the next pull asks the registry.
async fn write(
    request: Request<Incoming>,
    target: &Target,
    hoard: &Hoard,
    route: Route,
) -> Response<Body> {
    let retag = matches!(*request.method(), Method::PUT | Method::DELETE);
    let response = forward(request, target, hoard).await;
    if let Route::Manifest {
        repo,
        reference: Reference::Tag(tag),
    } = route
        && retag
        && response.status().is_success()
        && let Err(err) = hoard.store.drop_tag(&target.key, &repo, &tag).await
    {
        hoard.store.disk_warning("cannot drop a changed tag", &err);
    }
    response
}

/// Sends a body-less request to the intercepted registry, with hoard's own credentials for it
/// when the client sent none and it is a pull. A success names where the registry has the
/// blob or manifest: that is kept as its origin.
pub(crate) async fn registry_send(
    hoard: &Hoard,
    target: &Target,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response<Incoming>, crate::upstream::UpstreamError> {
    let config = hoard.config();
    let credential = config.credential_for(target.key.as_str());
    let route = Route::parse(uri.path());
    let response = hoard
        .registry_auth
        .send_following(&hoard.upstream(), credential, method, uri, headers)
        .await?;
    if response.status().is_success() {
        let announced = || {
            response
                .headers()
                .get(DOCKER_CONTENT_DIGEST)
                .and_then(|v| v.to_str().ok())
                .and_then(Digest::parse)
        };
        let origin = match route {
            Route::Blob { repo, digest } => Some((repo, Key::Blob(digest))),
            Route::Manifest {
                repo,
                reference: Reference::Digest(digest),
            } => Some((repo, Key::Manifest(digest))),
            Route::Manifest {
                repo,
                reference: Reference::Tag(_),
            } => announced().map(|digest| (repo, Key::Manifest(digest))),
            _ => None,
        };
        if let Some((repo, key)) = origin {
            hoard.store.note_origin(key, &target.key, &repo);
        }
    }
    Ok(response)
}

/// With `cache.auth_on_hit = "upstream"`, the registry's word on whether this client may have
/// this object; `None` when it may (or when the check is off).
async fn access_refused(
    request: &Request<Incoming>,
    target: &Target,
    hoard: &Hoard,
    route: &Route,
) -> Option<Response<Body>> {
    if hoard.config().auth_on_hit != AuthOnHit::Upstream {
        return None;
    }
    let uri = target.uri(request.uri().path())?;
    let config = hoard.config();
    let credential = config.credential_for(target.key.as_str());
    let mut refusal = hoard
        .registry_auth
        .check_access(
            &hoard.upstream(),
            credential,
            &target.key,
            route,
            uri,
            request.headers(),
            &hoard.store,
        )
        .await?;
    refusal.extensions_mut().insert(CacheStatus::Local);
    Some(refusal)
}

/// Whether an upstream answer means "use the cache instead": overloaded, rate-limited, broken.
fn unusable(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS
}

pub(crate) fn path_and_query(request: &Request<Incoming>) -> &str {
    request.uri().path_and_query().map_or("/", |p| p.as_str())
}

/// Forwards a request unchanged, body streamed both ways, nothing cached.
pub(crate) async fn forward(
    request: Request<Incoming>,
    target: &Target,
    hoard: &Hoard,
) -> Response<Body> {
    let Some(uri) = target.uri(path_and_query(&request)) else {
        return error(StatusCode::BAD_REQUEST, "request path is not a valid URI");
    };
    let (mut parts, body) = request.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let config = hoard.config();
    let credential = config.credential_for(target.key.as_str());
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

/// The `/v2/` version check: forwarded (it carries the auth challenge), answered by hoard when the
/// upstream is unusable so that pulls of cached images go on.
async fn ping(request: Request<Incoming>, target: &Target, hoard: &Hoard) -> Response<Body> {
    let Some(uri) = target.uri(path_and_query(&request)) else {
        return error(StatusCode::BAD_REQUEST, "request path is not a valid URI");
    };
    let method = request.method().clone();
    let headers = upstream_headers(request.headers());
    let result = registry_send(hoard, target, method, uri, headers).await;
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

// ---------------------------------------------------------------------------------------------
// Manifests

fn serve_manifest(
    manifest: StoredManifest,
    digest: &Digest,
    head: bool,
    cache: CacheStatus,
) -> Response<Body> {
    let length = manifest.bytes.len() as u64;
    let body = if head {
        empty_body()
    } else {
        full_body(manifest.bytes)
    };
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&manifest.media_type) {
        headers.insert(CONTENT_TYPE, value);
    }
    headers.insert(CONTENT_LENGTH, HeaderValue::from(length));
    insert_digest_headers(headers, digest);
    response.extensions_mut().insert(cache);
    response
}

/// A HEAD answered from the tag map alone.
fn serve_tag_head(entry: &TagEntry, cache: CacheStatus) -> Response<Body> {
    let mut response = Response::new(empty_body());
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&entry.media_type) {
        headers.insert(CONTENT_TYPE, value);
    }
    headers.insert(CONTENT_LENGTH, HeaderValue::from(entry.size));
    insert_digest_headers(headers, &entry.digest);
    response.extensions_mut().insert(cache);
    response
}

async fn manifest_by_digest(
    request: Request<Incoming>,
    target: &Target,
    hoard: &Hoard,
    digest: Digest,
) -> Response<Body> {
    let head = request.method() == Method::HEAD;
    if let Some(manifest) = hoard.store.manifest(&digest).await {
        return serve_manifest(manifest, &digest, head, CacheStatus::Hit);
    }
    if head {
        return forward(request, target, hoard).await;
    }
    let _flight = hoard.flights.enter(format!("manifest {digest}")).await;
    if let Some(manifest) = hoard.store.manifest(&digest).await {
        return serve_manifest(manifest, &digest, head, CacheStatus::Hit);
    }
    let Some(uri) = target.uri(path_and_query(&request)) else {
        return error(StatusCode::BAD_REQUEST, "request path is not a valid URI");
    };
    fetch_manifest(
        hoard,
        target,
        uri,
        upstream_headers(request.headers()),
        Some(digest),
    )
    .await
    .map_or_else(
        |response| response,
        |(manifest, digest)| serve_manifest(manifest, &digest, false, CacheStatus::Miss),
    )
}

/// GETs a manifest from the upstream, checks it against `expected` (or the upstream's
/// `Docker-Content-Digest`, or computes it), stores it, and returns it. Any other outcome is
/// the response to give the client.
async fn fetch_manifest(
    hoard: &Hoard,
    target: &Target,
    uri: Uri,
    headers: HeaderMap,
    expected: Option<Digest>,
) -> Result<(StoredManifest, Digest), Response<Body>> {
    let route = Route::parse(uri.path());
    let response = registry_send(hoard, target, Method::GET, uri, headers)
        .await
        .map_err(|err| upstream_error(&err))?;
    if response.status() != StatusCode::OK {
        return Err(pass_through(response, CacheStatus::Bypass));
    }
    let media_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map_or(DOCKER_MANIFEST_V2, |v| {
            v.split(';').next().unwrap_or(v).trim()
        })
        .to_owned();
    let announced = response
        .headers()
        .get(DOCKER_CONTENT_DIGEST)
        .and_then(|v| v.to_str().ok())
        .and_then(Digest::parse);
    let bytes = Limited::new(response.into_body(), MAX_MANIFEST_SIZE)
        .collect()
        .await
        .map_err(|err| {
            error(
                StatusCode::BAD_GATEWAY,
                &format!("reading upstream manifest: {err}"),
            )
        })?
        .to_bytes();
    let computed = expected.is_none() && announced.is_none();
    let digest = expected
        .or(announced)
        .unwrap_or_else(|| Digest::sha256_of(&bytes));
    let mut hasher = digest.hasher();
    hasher.update(&bytes);
    if !hasher.matches(&digest) {
        tracing::warn!(%digest, "upstream manifest does not match its digest; discarded");
        return Err(error(
            StatusCode::BAD_GATEWAY,
            "upstream manifest does not match its digest",
        ));
    }
    if computed && let Route::Manifest { repo, .. } = route {
        // registry_send could not know the digest of this manifest by tag.
        let key = Key::Manifest(digest.clone());
        hoard.store.note_origin(key, &target.key, &repo);
    }
    if let Err(err) = hoard.store.put_manifest(&digest, &media_type, &bytes).await {
        hoard.store.disk_warning("cannot store a manifest", &err);
    }
    Ok((StoredManifest { media_type, bytes }, digest))
}

async fn manifest_by_tag(
    request: Request<Incoming>,
    target: &Target,
    hoard: &Hoard,
    repo: &str,
    tag: &str,
) -> Response<Body> {
    let head = request.method() == Method::HEAD;
    let Some(tag_uri) = target.uri(path_and_query(&request)) else {
        return error(StatusCode::BAD_REQUEST, "request path is not a valid URI");
    };
    let store = &hoard.store;
    let accept: Vec<String> = request
        .headers()
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect();
    let lookup = || async {
        let known = store
            .tag(&target.key, repo, tag)
            .await
            .into_iter()
            .filter(|e| accepts(accept.iter().map(String::as_str), &e.media_type))
            .max_by_key(|e| e.fetched);
        let stored = match &known {
            Some(entry) if !head => store.manifest(&entry.digest).await,
            _ => None,
        };
        (known, stored)
    };
    // Fresh: no upstream call at all.
    let fresh = |known: &Option<TagEntry>, stored: &Option<StoredManifest>| {
        let entry = known.as_ref()?;
        if !entry.is_fresh(hoard.config().tag_ttl) {
            return None;
        }
        match (head, stored) {
            (true, _) => Some(serve_tag_head(entry, CacheStatus::Hit)),
            (false, Some(manifest)) => Some(serve_manifest(
                manifest.clone(),
                &entry.digest,
                false,
                CacheStatus::Hit,
            )),
            (false, None) => None,
        }
    };
    let (known, stored) = lookup().await;
    if let Some(response) = fresh(&known, &stored) {
        return response;
    }
    // One request asks the upstream; the others wait and find its answer fresh.
    let _flight = hoard
        .flights
        .enter(format!("tag {}/{repo}:{tag}", target.authority))
        .await;
    let (known, stored) = lookup().await;
    if let Some(response) = fresh(&known, &stored) {
        return response;
    }
    let headers = upstream_headers(request.headers());

    // Never seen (for this Accept) and a GET: one upstream GET does it all.
    let Some(entry) = known else {
        if head {
            return head_unknown_tag(hoard, target, repo, tag, tag_uri, headers).await;
        }
        return match fetch_manifest(hoard, target, tag_uri, headers, None).await {
            Ok((manifest, digest)) => {
                record_tag(hoard, target, repo, tag, &digest, &manifest).await;
                serve_manifest(manifest, &digest, false, CacheStatus::Miss)
            }
            Err(response) => response,
        };
    };

    // Known but stale (or its bytes are gone): revalidate with a HEAD, which Docker Hub does not
    // count against the pull limit.
    let serve_stale = |why: &str| {
        tracing::info!(
            host = target.authority(),
            repo,
            tag,
            why,
            "serving stale tag"
        );
        match (head, stored.clone()) {
            (true, _) => Some(serve_tag_head(&entry, CacheStatus::Stale)),
            (false, Some(manifest)) => Some(serve_manifest(
                manifest,
                &entry.digest,
                false,
                CacheStatus::Stale,
            )),
            (false, None) => None,
        }
    };
    let response = match registry_send(
        hoard,
        target,
        Method::HEAD,
        tag_uri.clone(),
        without_range(headers.clone()),
    )
    .await
    {
        Ok(response) => response,
        Err(err) => return serve_stale(&err.to_string()).unwrap_or_else(|| upstream_error(&err)),
    };
    if unusable(response.status()) {
        let status = response.status();
        return serve_stale(status.as_str())
            .unwrap_or_else(|| pass_through(response, CacheStatus::Bypass));
    }
    if response.status() != StatusCode::OK {
        // 401, 404, …: the client must see them; nothing is cached.
        return pass_through(response, CacheStatus::Bypass);
    }
    let Some(fresh) = tag_entry_from(response.headers()) else {
        // A registry that does not say the digest: relay it and let the client GET by tag.
        return pass_through(response, CacheStatus::Bypass);
    };
    if let Err(err) = store.put_tag(&target.key, repo, tag, fresh.clone()).await {
        hoard.store.disk_warning("cannot record a tag", &err);
    }
    if head {
        let cache = if fresh.digest == entry.digest {
            CacheStatus::Revalidated
        } else {
            CacheStatus::Miss
        };
        return serve_tag_head(&fresh, cache);
    }
    if let Some(manifest) = store.manifest(&fresh.digest).await {
        return serve_manifest(manifest, &fresh.digest, false, CacheStatus::Revalidated);
    }
    let Some(digest_uri) = target.uri(&format!("/v2/{repo}/manifests/{}", fresh.digest)) else {
        return error(StatusCode::BAD_REQUEST, "request path is not a valid URI");
    };
    match fetch_manifest(
        hoard,
        target,
        digest_uri,
        headers,
        Some(fresh.digest.clone()),
    )
    .await
    {
        Ok((manifest, digest)) => serve_manifest(manifest, &digest, false, CacheStatus::Miss),
        Err(response) => response,
    }
}

/// A HEAD for a tag hoard has never seen: asked upstream as a HEAD, remembered if it says a digest.
async fn head_unknown_tag(
    hoard: &Hoard,
    target: &Target,
    repo: &str,
    tag: &str,
    uri: Uri,
    headers: HeaderMap,
) -> Response<Body> {
    let response = match registry_send(hoard, target, Method::HEAD, uri, headers).await {
        Ok(response) => response,
        Err(err) => return upstream_error(&err),
    };
    if response.status() == StatusCode::OK
        && let Some(entry) = tag_entry_from(response.headers())
    {
        if let Err(err) = hoard.store.put_tag(&target.key, repo, tag, entry).await {
            hoard.store.disk_warning("cannot record a tag", &err);
        }
        return pass_through(response, CacheStatus::Miss);
    }
    pass_through(response, CacheStatus::Bypass)
}

async fn record_tag(
    hoard: &Hoard,
    target: &Target,
    repo: &str,
    tag: &str,
    digest: &Digest,
    manifest: &StoredManifest,
) {
    let entry = TagEntry {
        digest: digest.clone(),
        size: manifest.bytes.len() as u64,
        media_type: manifest.media_type.clone(),
        fetched: SystemTime::now(),
    };
    if let Err(err) = hoard.store.put_tag(&target.key, repo, tag, entry).await {
        hoard.store.disk_warning("cannot record a tag", &err);
    }
}

fn tag_entry_from(headers: &HeaderMap) -> Option<TagEntry> {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let digest = Digest::parse(text(DOCKER_CONTENT_DIGEST)?)?;
    let size = text(CONTENT_LENGTH.as_str())?.parse().ok()?;
    let media_type = text(CONTENT_TYPE.as_str())?;
    let media_type = media_type
        .split(';')
        .next()
        .unwrap_or(media_type)
        .trim()
        .to_owned();
    Some(TagEntry {
        digest,
        size,
        media_type,
        fetched: SystemTime::now(),
    })
}

fn without_range(mut headers: HeaderMap) -> HeaderMap {
    headers.remove(RANGE);
    headers
}
