//! Manifests by tag: the tag map says which digest a tag named and when. Fresh for its TTL (the
//! first `[[cache.freshness]]` rule that matches, else `cache.tag_ttl`; never stale if the rule
//! says immutable), a tag is answered without asking the upstream; then one request revalidates
//! it with a HEAD (which Docker Hub does not count against the pull limit) for everyone asking,
//! and while the upstream is unusable the last known manifest is served stale (without asking a
//! registry that failed in the last 30 s again: `upstream/reach.rs`).

use std::ops::ControlFlow;
use std::time::SystemTime;

use bytes::Bytes;

use http::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, RANGE};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::manifests::{manifest_answer, serve_manifest};
use super::source::{FOLLOWER_WAIT, Sources};
use super::target::{Target, invalid_path, unusable};
use crate::hoard::Hoard;
use crate::http::{Body, CacheStatus, DOCKER_CONTENT_DIGEST, full_body, insert_digest_headers};
use crate::http::{pass_through, upstream_headers};
use crate::oci::{Digest, accepts};
use crate::store::{FlightKey, HostKey, StoredManifest, TagEntry, Turn};
use crate::tier::Kind;
use crate::upstream::upstream_error;

/// A HEAD answered from the tag map alone.
fn serve_tag_head(entry: &TagEntry, cache: CacheStatus) -> Response<Body> {
    tag_head(entry, cache).map(full_body)
}

/// [`serve_tag_head`], its (empty) body whole.
fn tag_head(entry: &TagEntry, cache: CacheStatus) -> Response<Bytes> {
    let mut response = Response::new(Bytes::new());
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&entry.media_type) {
        headers.insert(CONTENT_TYPE, value);
    }
    headers.insert(CONTENT_LENGTH, HeaderValue::from(entry.size));
    insert_digest_headers(headers, &entry.digest);
    response.extensions_mut().insert(cache);
    response
}

/// Of a tag's mappings, the one a request answers from: the latest of a media type its
/// `Accept` takes.
pub(super) fn pick<'a>(
    entries: Vec<TagEntry>,
    accept: impl Iterator<Item = &'a str> + Clone,
) -> Option<TagEntry> {
    entries
        .into_iter()
        .filter(|e| accepts(accept.clone(), &e.media_type))
        .max_by_key(|e| e.fetched)
}

/// The answer the mapping `entry` of `key`'s `repo:tag` gives without asking the upstream, if
/// it is fresh: a HEAD's from the tag map alone, a GET's with the manifest `stored` (`None`
/// when it is not at hand).
pub(super) fn fresh_hit(
    hoard: &Hoard,
    (key, repo, tag): (&HostKey, &str, &str),
    entry: &TagEntry,
    head: bool,
    stored: Option<&StoredManifest>,
) -> Option<Response<Bytes>> {
    let freshness = hoard
        .config()
        .cache
        .tag_freshness(key.as_str(), repo, Some(tag))
        .ttl;
    if !hoard.clock.is_fresh(entry.fetched, freshness) {
        return None;
    }
    if head {
        return Some(tag_head(entry, CacheStatus::Hit));
    }
    let manifest = stored?;
    super::bucket::used(hoard, Kind::Manifest, &entry.digest);
    Some(manifest_answer(
        manifest,
        &entry.digest,
        false,
        CacheStatus::Hit,
    ))
}

/// Answers `GET` or `HEAD` for `/v2/<name>/manifests/<tag>`.
pub(super) async fn by_tag(
    request: Request<Incoming>,
    sources: &Sources<'_>,
    tag: &str,
) -> Response<Body> {
    let (hoard, target) = (sources.hoard, sources.target);
    let repo = sources.route.repo().unwrap_or_default();
    let head = request.method() == Method::HEAD;
    let store = &hoard.store;
    let accept: &[String] = &request
        .headers()
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect::<Vec<_>>();
    // Fresh: no upstream call at all. Else what is known of the tag, for revalidation.
    let look = || async move {
        let accept = accept.iter().map(String::as_str);
        let known = pick(store.tag(&target.key, repo, tag).await, accept);
        let stored = match &known {
            Some(entry) if !head => store.manifest(&entry.digest).await,
            _ => None,
        };
        let named = (&target.key, repo, tag);
        if let Some(entry) = &known
            && let Some(hit) = fresh_hit(hoard, named, entry, head, stored.as_ref())
        {
            return ControlFlow::Break(hit.map(full_body));
        }
        ControlFlow::Continue((known, stored))
    };
    // One request asks the upstream; the others wait and find its answer fresh.
    let key = FlightKey::Tag(target.key.clone(), repo.to_owned(), tag.to_owned());
    let (_permit, (known, stored)) = match store.single_flight(key, FOLLOWER_WAIT, look).await {
        Turn::Found(response) => return response,
        Turn::Lead { permit, seen } => (permit, seen),
    };
    let headers = upstream_headers(request.headers());

    // Never seen (for this Accept) and a GET: one upstream GET does it all.
    let Some(entry) = known else {
        if head {
            return head_unknown_tag(sources, tag, headers).await;
        }
        return match sources.manifest(headers, None).await {
            Ok((manifest, digest)) => {
                record_tag(hoard, target, repo, tag, &digest, &manifest).await;
                sources.record_tag(tag, &digest);
                serve_manifest(manifest, &digest, false, CacheStatus::Miss)
            }
            Err(response) if unusable(response.status()) => match sources.stale_tag(tag).await {
                Some((entry, manifest)) => {
                    serve_manifest(manifest, &entry.digest, false, CacheStatus::Stale)
                }
                None => response,
            },
            Err(response) => response,
        };
    };

    // Known but stale (or its bytes are gone): revalidate with a HEAD.
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
    // A registry that failed moments ago is not asked again for each request.
    let down = target
        .uri("/v2/")
        .and_then(|uri| hoard.upstream().down_for(&uri));
    if let Some(age) = down
        && let Some(stale) = serve_stale(&format!("the registry failed {} s ago", age.as_secs()))
    {
        return stale;
    }
    let response = match sources
        .send(Method::HEAD, without_range(headers.clone()))
        .await
    {
        Ok((response, _)) => response,
        Err(err) => {
            return serve_stale(&err.to_string())
                .unwrap_or_else(|| upstream_error(&err, &target.host_port()));
        }
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
    let Some(fresh) = tag_entry_from(response.headers(), hoard.clock.now()) else {
        // A registry that does not say the digest: relay it and let the client GET by tag.
        return pass_through(response, CacheStatus::Bypass);
    };
    if let Err(err) = store.put_tag(&target.key, repo, tag, fresh.clone()).await {
        hoard.store.disk_warning("cannot record a tag", &err);
    }
    if fresh.digest != entry.digest {
        sources.record_tag(tag, &fresh.digest);
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
        super::bucket::used(hoard, Kind::Manifest, &fresh.digest);
        return serve_manifest(manifest, &fresh.digest, false, CacheStatus::Revalidated);
    }
    let Some(by_digest) = sources.of_manifest(&fresh.digest) else {
        return invalid_path();
    };
    match by_digest
        .manifest(headers, Some(fresh.digest.clone()))
        .await
    {
        Ok((manifest, digest)) => serve_manifest(manifest, &digest, false, CacheStatus::Miss),
        Err(response) => response,
    }
}

/// A HEAD for a tag hoard has never seen: asked upstream as a HEAD, remembered if it says a digest.
async fn head_unknown_tag(sources: &Sources<'_>, tag: &str, headers: HeaderMap) -> Response<Body> {
    let (hoard, target) = (sources.hoard, sources.target);
    let repo = sources.route.repo().unwrap_or_default();
    let response = match sources.send(Method::HEAD, headers).await {
        Ok((response, _)) if !unusable(response.status()) => response,
        failed => {
            if let Some((entry, _)) = sources.stale_tag(tag).await {
                return serve_tag_head(&entry, CacheStatus::Stale);
            }
            return match failed {
                Ok((response, _)) => pass_through(response, CacheStatus::Bypass),
                Err(err) => upstream_error(&err, &target.host_port()),
            };
        }
    };
    if response.status() == StatusCode::OK
        && let Some(entry) = tag_entry_from(response.headers(), hoard.clock.now())
    {
        if let Err(err) = hoard.store.put_tag(&target.key, repo, tag, entry).await {
            hoard.store.disk_warning("cannot record a tag", &err);
        }
        return pass_through(response, CacheStatus::Miss);
    }
    pass_through(response, CacheStatus::Bypass)
}

/// Records that `tag` names `digest` now, after a GET by tag.
pub(super) async fn record_tag(
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
        fetched: hoard.clock.now(),
    };
    if let Err(err) = hoard.store.put_tag(&target.key, repo, tag, entry).await {
        hoard.store.disk_warning("cannot record a tag", &err);
    }
}

/// The tag map entry, fetched at `fetched`, an upstream's answer to a HEAD by tag makes, if it
/// says all of it.
fn tag_entry_from(headers: &HeaderMap, fetched: SystemTime) -> Option<TagEntry> {
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
        fetched,
    })
}

fn without_range(mut headers: HeaderMap) -> HeaderMap {
    headers.remove(RANGE);
    headers
}
