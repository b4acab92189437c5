//! Manifests by digest: served from the store, or fetched from the upstream by one request for
//! everyone who asks (the store's single flight), checked against their digest, and kept.

use std::ops::ControlFlow;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use super::forward::{forward, registry_send};
use super::shared;
use super::{Target, invalid_path, path_and_query};
use crate::fleet::FromOwner;
use crate::hoard::Hoard;
use crate::http::{Body, CacheStatus, DOCKER_CONTENT_DIGEST, empty_body, error, full_body};
use crate::http::{insert_digest_headers, pass_through, upstream_headers};
use crate::oci::{DOCKER_MANIFEST_V2, Digest, Route};
use crate::store::{Flight, FlightKey, Key, MAX_MANIFEST_SIZE, StoredManifest};
use crate::upstream::upstream_error;

/// A stored manifest as the answer to a `GET` or `HEAD`.
pub(super) fn serve_manifest(
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

/// Answers `GET` or `HEAD` for `/v2/<name>/manifests/<digest>`. A `HEAD` hoard cannot answer
/// is forwarded; a `GET` fetches the manifest once for everyone asking for it.
pub(super) async fn by_digest(
    request: Request<Incoming>,
    target: &Target,
    hoard: &Hoard,
    digest: Digest,
) -> Response<Body> {
    let head = request.method() == Method::HEAD;
    let (store, wanted) = (&hoard.store, &digest);
    let look = || async move {
        match store.manifest(wanted).await {
            Some(manifest) => ControlFlow::Break(manifest),
            None => ControlFlow::Continue(()),
        }
    };
    if head {
        return match look().await {
            ControlFlow::Break(manifest) => {
                serve_manifest(manifest, &digest, true, CacheStatus::Hit)
            }
            ControlFlow::Continue(()) => forward(request, target, hoard).await,
        };
    }
    let key = FlightKey::Manifest(digest.clone());
    let _flight = match hoard.flights.join(key, look).await {
        Flight::Found(manifest) => {
            return serve_manifest(manifest, &digest, false, CacheStatus::Hit);
        }
        Flight::Ask { guard, .. } => guard,
    };
    let Some(uri) = target.uri(path_and_query(&request)) else {
        return invalid_path();
    };
    let headers = upstream_headers(request.headers());
    match fetch_manifest(hoard, target, uri, headers, Some(digest)).await {
        Ok((manifest, digest)) => serve_manifest(manifest, &digest, false, CacheStatus::Miss),
        Err(response) => response,
    }
}

/// A manifest by digest comes from the shared tier if it has it. Else:
/// GETs a manifest from the upstream, checks it against `expected` (or the upstream's
/// `Docker-Content-Digest`, or computes it), stores it, and returns it. Any other outcome is
/// the response to give the client.
pub(super) async fn fetch_manifest(
    hoard: &Hoard,
    target: &Target,
    uri: Uri,
    headers: HeaderMap,
    expected: Option<Digest>,
) -> Result<(StoredManifest, Digest), Response<Body>> {
    if let Some(digest) = expected.as_ref()
        && let Some(manifest) = shared::manifest(hoard, digest).await
    {
        if let Err(err) = hoard
            .store
            .put_manifest(digest, &manifest.media_type, &manifest.bytes)
            .await
        {
            hoard.store.disk_warning("cannot store a manifest", &err);
        }
        return Ok((manifest, digest.clone()));
    }
    let route = Route::parse(uri.path());
    let response = registry_send(hoard, target, Method::GET, uri, headers)
        .await
        .map_err(|err| upstream_error(&err))?;
    if response.status() != StatusCode::OK {
        return Err(pass_through(response, CacheStatus::Bypass));
    }
    let from_registry = response.extensions().get::<FromOwner>().is_none();
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
    let bytes = read_manifest(response.into_body(), hoard.config().upstream.read_timeout).await?;
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
    let manifest = StoredManifest { media_type, bytes };
    if from_registry {
        shared::upload_manifest(hoard, &digest, &manifest);
    }
    Ok((manifest, digest))
}

/// Reads a manifest body whole, up to [`MAX_MANIFEST_SIZE`]. An upstream silent for
/// `read_timeout` fails it (504), so that a request waiting on this one is not held forever.
async fn read_manifest(body: Incoming, read_timeout: Duration) -> Result<Bytes, Response<Body>> {
    let failed = |err: &dyn std::fmt::Display| {
        error(
            StatusCode::BAD_GATEWAY,
            &format!("reading upstream manifest: {err}"),
        )
    };
    let mut body = Limited::new(body, MAX_MANIFEST_SIZE);
    let mut bytes = BytesMut::new();
    loop {
        let frame = match tokio::time::timeout(read_timeout, body.frame()).await {
            Ok(Some(frame)) => frame.map_err(|err| failed(&err))?,
            Ok(None) => return Ok(bytes.freeze()),
            Err(_) => {
                tracing::warn!(
                    ?read_timeout,
                    "upstream went silent while sending a manifest"
                );
                return Err(error(
                    StatusCode::GATEWAY_TIMEOUT,
                    "upstream went silent while sending the manifest",
                ));
            }
        };
        if let Ok(data) = frame.into_data() {
            bytes.extend_from_slice(&data);
        }
    }
}
