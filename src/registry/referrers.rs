//! The referrers API (`/v2/<name>/referrers/<digest>`, which `cosign verify` and `oras discover`
//! ask): cached like a tag. The index the registry answers is kept as a manifest under its own
//! digest, and the tag map names it under `<algorithm>-<hex>.referrers` (no real tag has a `.`
//! there and that length). Fresh for the TTL of the first `[[cache.freshness]]` rule without a
//! `:tag` part that matches the repository (never an immutable one: anyone may attach a
//! signature to an image), else `cache.tag_ttl`; then one request asks again with a GET (a
//! referrers answer has no digest a HEAD could compare), and while the registry is unusable the
//! last answer is served stale. A filtered request (`?artifactType=`) is passed on uncached, and
//! so is every request with `cache.auth_on_hit = "upstream"`: the registry decides who sees
//! what.

use std::ops::ControlFlow;

use http::{Method, Request, Response};
use hyper::body::Incoming;

use super::manifests::serve_manifest;
use super::source::{FOLLOWER_WAIT, Sources};
use super::tags::record_tag;
use super::target::unusable;
use crate::config::AuthOnHit;
use crate::http::{Body, CacheStatus, upstream_headers};
use crate::oci::Digest;
use crate::store::{FlightKey, Turn};

/// Answers `GET` or `HEAD` for `/v2/<name>/referrers/<digest>`.
pub(super) async fn referrers(
    request: Request<Incoming>,
    sources: &Sources<'_>,
    subject: &Digest,
) -> Response<Body> {
    let (hoard, target) = (sources.hoard, sources.target);
    let repo = sources.route.repo().unwrap_or_default();
    let filtered = request.uri().query().is_some_and(|q| !q.is_empty());
    if filtered || hoard.config().cache.auth_on_hit == AuthOnHit::Upstream {
        return super::forward::uncached(request, sources).await;
    }
    let head = request.method() == Method::HEAD;
    let tag = format!(
        "{}-{}.referrers",
        subject.algorithm().as_str(),
        subject.hex()
    );
    let store = &hoard.store;
    let look = || async {
        let known = store
            .tag(&target.key, repo, &tag)
            .await
            .into_iter()
            .max_by_key(|e| e.fetched);
        let stored = match &known {
            Some(entry) => store.manifest(&entry.digest).await,
            None => None,
        };
        let config = hoard.config();
        let freshness = config.cache.tag_freshness(target.key.as_str(), repo, None);
        if let (Some(entry), Some(index)) = (&known, &stored)
            && hoard.clock.is_fresh(entry.fetched, freshness.ttl)
        {
            let hit = serve_manifest(index.clone(), &entry.digest, head, CacheStatus::Hit);
            return ControlFlow::Break(hit);
        }
        ControlFlow::Continue(known.zip(stored))
    };
    let key = FlightKey::Tag(target.key.clone(), repo.to_owned(), tag.clone());
    let (_permit, known) = match store.single_flight(key, FOLLOWER_WAIT, look).await {
        Turn::Found(response) => return response,
        Turn::Lead { permit, seen } => (permit, seen),
    };
    let headers = upstream_headers(request.headers());
    match sources.manifest(headers, None).await {
        Ok((index, digest)) => {
            record_tag(hoard, target, repo, &tag, &digest, &index).await;
            let cache = match &known {
                Some((entry, _)) if entry.digest == digest => CacheStatus::Revalidated,
                _ => CacheStatus::Miss,
            };
            serve_manifest(index, &digest, head, cache)
        }
        Err(response) if unusable(response.status()) => match known {
            Some((entry, index)) => {
                tracing::info!(host = target.authority(), repo, %subject, status = %response.status(), "serving stale referrers");
                serve_manifest(index, &entry.digest, head, CacheStatus::Stale)
            }
            None => response,
        },
        Err(response) => response,
    }
}
