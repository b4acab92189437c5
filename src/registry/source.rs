//! Where bytes come from, decided in one place. A rule looks in the local store first, under the
//! single flight (`store::flight`); the request that leads a flight then asks [`Sources`], which
//! asks the shared tier (`[store.s3]`, `bucket.rs`), the fleet peer that owns the object
//! (`peer.rs`) and the registry, in that order, and says which one answered ([`Source`]). What
//! follows from where bytes came from is done here as well: what a registry gave is uploaded to
//! the tier, a corrupt copy in the tier is deleted there, a registry's yes records the repository
//! an object comes from (its origin, for `cache.auth_on_hit`), and a fill whose owner breaks off
//! goes on from the registry.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, Method, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use tracing::Instrument as _;

use super::bucket;
use super::peer::{self, Resume};
use super::target::Target;
use crate::access::HostSlot;
use crate::hoard::Hoard;
use crate::http::{Body, BoxError, CacheStatus, DOCKER_CONTENT_DIGEST, error, pass_through};
use crate::oci::{DOCKER_MANIFEST_V2, Digest, Reference, Route};
use crate::store::{Key, MAX_MANIFEST_SIZE, Store, StoredManifest, TagEntry};
use crate::telemetry::Metrics;
use crate::tier::S3Tier;
use crate::upstream::{UpstreamError, upstream_error};

/// How long a request follows another that asks the upstream the same thing before it takes its
/// place: the upstream's response timeout (20 s) and 5 s for the leader to read a manifest (4 MiB
/// at most) and store it. A leader that needs longer (a token round trip, a HEAD then a GET) is
/// not waited for past that.
pub(super) const FOLLOWER_WAIT: std::time::Duration =
    crate::upstream::RESPONSE_TIMEOUT.saturating_add(std::time::Duration::from_secs(5));

/// Which source gave an object's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    /// The shared tier's bucket: a copy that does not match is deleted there.
    Tier,
    /// The fleet peer that owns the object: it uploads to the tier itself.
    Owner,
    /// The registry: this node uploads what it verified.
    Registry,
}

impl Source {
    /// The name in logs and spans.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Source::Tier => "tier",
            Source::Owner => "owner",
            Source::Registry => "registry",
        }
    }
}

/// The sources of one request's object: its registry, parsed route and upstream URI.
pub(super) struct Sources<'a> {
    pub(super) hoard: &'a Hoard,
    pub(super) target: &'a Target,
    /// What the request asks for, parsed once.
    pub(super) route: Route,
    /// The request's path at the registry, with its query for a route that is not cached.
    uri: Uri,
}

/// A blob's body as a source sends it, and what its fill does with the source after.
pub(super) struct Fetched {
    pub(super) body: Body,
    /// The source's `Content-Length`.
    pub(super) length: Option<u64>,
    pub(super) provenance: Provenance,
}

impl<'a> Sources<'a> {
    /// The sources of `route`, asked at `path_and_query`; `None` when that makes no URI (the
    /// client's error: [`invalid_path`](super::target::invalid_path)).
    pub(super) fn new(
        hoard: &'a Hoard,
        target: &'a Target,
        route: Route,
        path_and_query: &str,
    ) -> Option<Sources<'a>> {
        let uri = target.uri(path_and_query)?;
        Some(Sources {
            hoard,
            target,
            route,
            uri,
        })
    }

    /// The sources of the manifest `digest` of the same repository (a tag's, once a HEAD said
    /// which digest it names).
    pub(super) fn of_manifest(&self, digest: &Digest) -> Option<Sources<'a>> {
        let repo = self.route.repo().unwrap_or_default().to_owned();
        let path = format!("/v2/{repo}/manifests/{digest}");
        let route = Route::Manifest {
            repo,
            reference: Reference::Digest(digest.clone()),
        };
        Sources::new(self.hoard, self.target, route, &path)
    }

    /// A blob's whole body: from the tier, else the owner, else the registry. An answer other
    /// than 200 is the client's response, passed on.
    pub(super) async fn blob(
        &self,
        digest: &Digest,
        headers: HeaderMap,
    ) -> Result<Fetched, Response<Body>> {
        let provenance = |source, resume| Provenance {
            source,
            resume,
            tier: self.hoard.tier.clone(),
            metrics: self.hoard.metrics.clone(),
        };
        if let Some((length, body)) = bucket::blob(self.hoard, digest).await {
            let provenance = provenance(Source::Tier, None);
            return Ok(Fetched {
                body,
                length: Some(length),
                provenance,
            });
        }
        let slot = self.fill_slot().await;
        let (response, source) = self
            .send(Method::GET, headers.clone())
            .await
            .map_err(|err| upstream_error(&err, &self.target.host_port()))?;
        if response.status() != StatusCode::OK {
            return Err(pass_through(response, CacheStatus::Bypass));
        }
        let resume = match source {
            Source::Owner => Some(Resume::new(
                self.hoard,
                self.target,
                &self.route,
                self.uri.clone(),
                headers,
            )),
            _ => None,
        };
        let length = response
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let body = response.into_body().map_err(BoxError::from).boxed();
        let body = match source {
            Source::Registry => self.paced(body, slot),
            _ => body, // a peer's bytes are not the registry link's
        };
        let provenance = provenance(source, resume);
        Ok(Fetched {
            body,
            length,
            provenance,
        })
    }

    /// A manifest, by digest or by tag: from the tier (by digest), else the owner, else the
    /// registry; checked against `expected` (or the registry's `Docker-Content-Digest`, or the
    /// digest of its bytes), stored, and, if a registry gave it, uploaded to the tier. Any other
    /// outcome is the response the client gets.
    pub(super) async fn manifest(
        &self,
        headers: HeaderMap,
        expected: Option<Digest>,
    ) -> Result<(StoredManifest, Digest), Response<Body>> {
        let store = &self.hoard.store;
        if let Some(digest) = expected.as_ref()
            && let Some(manifest) = bucket::manifest(self.hoard, digest).await
        {
            keep_manifest(store, digest, &manifest).await;
            return Ok((manifest, digest.clone()));
        }
        let (response, source) = self
            .send(Method::GET, headers)
            .await
            .map_err(|err| upstream_error(&err, &self.target.host_port()))?;
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
        let announced = announced_digest(response.headers());
        let read_timeout = self.hoard.config().upstream.read_timeout;
        let bytes = read_manifest(response.into_body(), read_timeout).await?;
        let computed = expected.is_none() && announced.is_none();
        let digest = expected
            .or(announced)
            .unwrap_or_else(|| Digest::sha256_of(&bytes));
        let mut hasher = digest.hasher();
        hasher.update(&bytes);
        if !hasher.matches(&digest) {
            tracing::warn!(%digest, source = source.as_str(), "upstream manifest does not match its digest; discarded");
            return Err(error(
                StatusCode::BAD_GATEWAY,
                "upstream manifest does not match its digest",
            ));
        }
        if computed && matches!(self.route, Route::Manifest { .. }) {
            // `send` could not know the digest of this manifest by tag.
            self.note_origin(Key::Manifest(digest.clone()));
        }
        let manifest = StoredManifest { media_type, bytes };
        keep_manifest(store, &digest, &manifest).await;
        if source == Source::Registry {
            bucket::upload_manifest(self.hoard, &digest, &manifest);
        }
        Ok((manifest, digest))
    }

    /// A request with no body to keep (a tag's HEAD, a range, a tag list): to the owner of the
    /// object if a fleet peer owns it, else to the registry, with hoard's credentials for it when
    /// the client sent none. A success from the registry records the object's origin.
    pub(super) async fn send(
        &self,
        method: Method,
        headers: HeaderMap,
    ) -> Result<(Response<Incoming>, Source), UpstreamError> {
        if let Some(response) = peer::ask_owner(
            self.hoard,
            self.target,
            &self.route,
            &self.uri,
            &method,
            &headers,
        )
        .await
        {
            return Ok((response, Source::Owner));
        }
        let config = self.hoard.config();
        let credential = self.target.credential(&config);
        let span = tracing::debug_span!("upstream", host = self.target.authority(), %method, path = self.uri.path());
        let response = self
            .hoard
            .registry_auth
            .send_following(
                &self.hoard.upstream(),
                credential,
                method,
                self.uri.clone(),
                headers,
            )
            .instrument(span)
            .await?;
        if response.status().is_success() {
            let key = match &self.route {
                Route::Manifest {
                    reference: Reference::Tag(_),
                    ..
                } => announced_digest(response.headers()).map(Key::Manifest),
                route => stored_object(route).map(|(_, key)| key),
            };
            if let Some(key) = key {
                self.note_origin(key);
            }
        }
        Ok((response, Source::Registry))
    }

    /// A slot within the registry's `max_fills` (`[[upstream.limits]]`), waited for; `None`
    /// when it has no such limit.
    async fn fill_slot(&self) -> HostSlot {
        let host = self.target.key.as_str();
        let max = self
            .hoard
            .config()
            .upstream
            .shaping
            .limit_for(host)?
            .max_fills?;
        let (slot, waited) = self.hoard.host_slots.take(host, max).await;
        if !waited.is_zero() {
            tracing::debug!(host, ?waited, max_fills = max, "waited for a fill slot");
            self.hoard.metrics.fill_wait(host, waited);
        }
        slot
    }

    /// A registry's blob body (or its redirect target's) paced by `upstream.max_rate` and the
    /// registry's own `max_rate`; it holds the registry's fill slot until it ends.
    pub(super) fn paced(&self, body: Body, slot: HostSlot) -> Body {
        let host = self.target.key.as_str();
        let buckets = self
            .hoard
            .shaper
            .buckets(&self.hoard.config().upstream.shaping, host);
        if buckets.is_empty() && slot.is_none() {
            return body;
        }
        let (metrics, label) = (self.hoard.metrics.clone(), host.to_owned());
        let waited = move |waited| metrics.upstream_throttled(&label, waited);
        crate::upstream::shape::paced(body, buckets, waited, slot)
    }

    /// Records that the registry has `key` in this request's repository.
    pub(super) fn note_origin(&self, key: Key) {
        if let Some(repo) = self.route.repo() {
            self.hoard.store.note_origin(key, &self.target.key, repo);
        }
    }

    /// Records in the tier what the tag of this request names now, for the fleet to serve it
    /// stale when the registry cannot be asked.
    pub(super) fn record_tag(&self, tag: &str, digest: &Digest) {
        if let Some(repo) = self.route.repo() {
            bucket::record_tag(self.hoard, self.target, repo, tag, digest);
        }
    }

    /// A tag this node has never seen while the registry cannot be asked: what it named when a
    /// node of the fleet last asked, from the tier, with its manifest (from the store or the
    /// tier). It is recorded as fetched long ago, so the next request asks the registry again.
    pub(super) async fn stale_tag(&self, tag: &str) -> Option<(TagEntry, StoredManifest)> {
        let (hoard, target) = (self.hoard, self.target);
        let repo = self.route.repo()?;
        let digest = bucket::tag(hoard, target, repo, tag).await?;
        let manifest = match hoard.store.manifest(&digest).await {
            Some(manifest) => manifest,
            None => {
                let manifest = bucket::manifest(hoard, &digest).await?;
                keep_manifest(&hoard.store, &digest, &manifest).await;
                manifest
            }
        };
        let entry = TagEntry {
            digest,
            size: manifest.bytes.len() as u64,
            media_type: manifest.media_type.clone(),
            fetched: std::time::SystemTime::UNIX_EPOCH,
        };
        if let Err(err) = hoard
            .store
            .put_tag(&target.key, repo, tag, entry.clone())
            .await
        {
            hoard.store.disk_warning("cannot record a tag", &err);
        }
        tracing::info!(host = target.authority(), repo, tag, digest = %entry.digest, "registry unusable; serving the tag the shared tier recorded");
        Some((entry, manifest))
    }
}

/// Where a fill's bytes came from, and what follows from it once the fill ends. Owned, for the
/// fill's own task.
pub(super) struct Provenance {
    source: Source,
    /// For a fill from the owner: how to get the rest from the registry if it breaks off.
    resume: Option<Resume>,
    tier: Option<Arc<S3Tier>>,
    metrics: Arc<Metrics>,
}

impl Provenance {
    /// Which source the bytes come from.
    pub(super) fn source(&self) -> Source {
        self.source
    }

    /// The way to go on from the registry, once: a fill from the owner whose answer broke off.
    pub(super) fn take_resume(&mut self) -> Option<Resume> {
        self.resume.take()
    }

    /// After the blob was verified and stored: what came from a registry goes up to the tier,
    /// what came from the tier renews its use there.
    pub(super) fn stored(&self, digest: &Digest, store: &Store) {
        match (self.source, &self.tier) {
            (Source::Registry, Some(tier)) => {
                bucket::upload_blob(tier, &self.metrics, digest, store);
            }
            (Source::Tier, Some(tier)) => {
                bucket::renew(tier, &self.metrics, crate::tier::Kind::Blob, digest);
            }
            _ => {}
        }
    }

    /// After the blob did not match its digest: a copy from the tier is deleted there.
    pub(super) fn mismatched(&self, digest: &Digest) {
        if let (Source::Tier, Some(tier)) = (self.source, &self.tier) {
            bucket::corrupt(tier, &self.metrics, crate::tier::Kind::Blob, digest);
        }
    }
}

/// Stores a verified manifest; a disk problem only costs the caching.
async fn keep_manifest(store: &Store, digest: &Digest, manifest: &StoredManifest) {
    if let Err(err) = store
        .put_manifest(digest, &manifest.media_type, &manifest.bytes)
        .await
    {
        store.disk_warning("cannot store a manifest", &err);
    }
}

/// The digest a registry's answer names in `Docker-Content-Digest`.
fn announced_digest(headers: &HeaderMap) -> Option<Digest> {
    headers
        .get(DOCKER_CONTENT_DIGEST)
        .and_then(|v| v.to_str().ok())
        .and_then(Digest::parse)
}

/// The repository and store entry of a blob or manifest by digest; `None` for any other route.
pub(super) fn stored_object(route: &Route) -> Option<(&str, Key)> {
    match route {
        Route::Blob { repo, digest } => Some((repo, Key::Blob(digest.clone()))),
        Route::Manifest {
            repo,
            reference: Reference::Digest(digest),
        } => Some((repo, Key::Manifest(digest.clone()))),
        _ => None,
    }
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
