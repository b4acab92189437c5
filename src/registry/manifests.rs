//! Manifests by digest: served from the store, or fetched by one request for everyone who asks
//! (the store's single flight) from where `source.rs` finds it, checked against their digest, and
//! kept.

use std::ops::ControlFlow;

use bytes::Bytes;

use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response};
use hyper::body::Incoming;

use super::forward::forward;
use super::source::{FOLLOWER_WAIT, Sources};
use crate::http::{Body, CacheStatus, full_body};
use crate::http::{insert_digest_headers, upstream_headers};
use crate::oci::Digest;
use crate::store::{FlightKey, StoredManifest, Turn};
use crate::tier::Kind;

/// A stored manifest as the answer to a `GET` or `HEAD`.
pub(super) fn serve_manifest(
    manifest: StoredManifest,
    digest: &Digest,
    head: bool,
    cache: CacheStatus,
) -> Response<Body> {
    manifest_answer(&manifest, digest, head, cache).map(full_body)
}

/// [`serve_manifest`], its body whole.
pub(super) fn manifest_answer(
    manifest: &StoredManifest,
    digest: &Digest,
    head: bool,
    cache: CacheStatus,
) -> Response<Bytes> {
    let length = manifest.bytes.len() as u64;
    let body = if head {
        Bytes::new()
    } else {
        manifest.bytes.clone()
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
    sources: &Sources<'_>,
    digest: &Digest,
) -> Response<Body> {
    let hoard = sources.hoard;
    let store = &hoard.store;
    let look = || async move {
        match store.manifest(digest).await {
            Some(manifest) => ControlFlow::Break(manifest),
            None => ControlFlow::Continue(()),
        }
    };
    if request.method() == Method::HEAD {
        return match look().await {
            ControlFlow::Break(manifest) => {
                serve_manifest(manifest, digest, true, CacheStatus::Hit)
            }
            ControlFlow::Continue(()) => forward(request, sources.target, hoard).await,
        };
    }
    let key = FlightKey::Manifest(digest.clone());
    let permit = match store.single_flight(key, FOLLOWER_WAIT, look).await {
        Turn::Found(manifest) => {
            super::bucket::used(hoard, Kind::Manifest, digest);
            return serve_manifest(manifest, digest, false, CacheStatus::Hit);
        }
        Turn::Lead { permit, .. } => permit,
    };
    let headers = upstream_headers(request.headers());
    match sources.manifest(headers, Some(digest.clone())).await {
        Ok((manifest, digest)) => {
            permit.finish();
            serve_manifest(manifest, &digest, false, CacheStatus::Miss)
        }
        Err(response) => response,
    }
}
