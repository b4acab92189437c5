//! The shared S3 tier's bucket (`[store.s3]`) as a source of bytes (`source.rs` decides when it
//! is asked): a local miss asks the bucket before the fleet's owner or the registry, and what this
//! node fetched from a registry and verified is uploaded after, in the background (a conditional
//! create: the first node's upload wins, the others find it there). The bucket is trusted no more
//! than a registry: a small blob read from it is checked whole before a byte is sent (a big one
//! by the fill, like any other), and one that does not match its digest is deleted from the
//! bucket and not read from it for a while (`tier::S3Tier::skip`), so that this request, if
//! nothing was sent yet, and the next ones fetch it elsewhere. Tags are recorded there too, for a
//! node that must serve a tag while the registry cannot be asked.
//!
//! What this node serves, from the bucket or its disk, renews the object's use record there
//! ([`used`]), so that `hoard cache prune --s3` keeps what the fleet uses: at most once a day per
//! object, in the background, never failing a pull.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::TryStreamExt as _;
use http_body_util::BodyExt as _;
use http_body_util::channel::Channel;

use crate::hoard::Hoard;
use crate::http::{Body, BoxError};
use crate::oci::Digest;
use crate::store::{Key, Store, StoredManifest};
use crate::telemetry::{Metrics, TierRead, TierWrite};
use crate::tier::{Kind, S3Tier, TierError};

use super::target::Target;

/// Pieces of a blob read from the bucket ahead of the fill.
const TIER_CHANNEL: usize = 4;

/// Blobs up to this size are read whole from the bucket and checked before a byte goes to the
/// client, so that a corrupt copy costs the request nothing: it goes to the owner or the registry
/// instead. A bigger blob streams, checked by its fill at the end, when its client has most of it
/// already. 4 MiB, a manifest's bound (`store::MAX_MANIFEST_SIZE`): the memory a request may hold.
const CHECKED_WHOLE: u64 = 4 << 20;

/// Uploads a blob fetched from a registry, verified and stored, in the background.
pub(super) fn upload_blob(
    tier: &Arc<S3Tier>,
    metrics: &Arc<Metrics>,
    digest: &Digest,
    store: &Store,
) {
    let path = store.path(&Key::Blob(digest.clone()));
    tier.uploaded(Kind::Blob, digest);
    let (tier, metrics, digest) = (tier.clone(), metrics.clone(), digest.clone());
    tokio::spawn(async move {
        let result = tier.put_blob(&digest, &path).await;
        written(&tier, &metrics, Kind::Blob, &digest, result).await;
    });
}

/// Renews the bucket's use record of `digest`'s object of `kind`, which this node is serving, in
/// the background, unless it did (or uploaded the object) within a day. A failure costs only
/// that record: counted, logged at debug, not tried again that day.
pub(super) fn used(hoard: &Hoard, kind: Kind, digest: &Digest) {
    if let Some(tier) = &hoard.tier {
        renew(tier, &hoard.metrics, kind, digest);
    }
}

/// [`used`] for a node whose tier is at hand.
pub(super) fn renew(tier: &Arc<S3Tier>, metrics: &Arc<Metrics>, kind: Kind, digest: &Digest) {
    if !tier.use_due(kind, digest) {
        return;
    }
    let (tier, metrics, digest) = (tier.clone(), metrics.clone(), digest.clone());
    tokio::spawn(async move { record_use(&tier, &metrics, kind, &digest).await });
}

/// Writes the use record, counts it, logs a failure at debug.
async fn record_use(tier: &S3Tier, metrics: &Metrics, kind: Kind, digest: &Digest) {
    match tier.put_used(kind, digest).await {
        Ok(()) => metrics.tier_use_record(TierWrite::Created),
        Err(error) => {
            metrics.tier_use_record(TierWrite::Error);
            tracing::debug!(%digest, error = %error_chain(&error), "cannot renew a use record in the shared tier");
        }
    }
}

/// Counts a corrupt object and deletes it from the bucket, in the background.
pub(super) fn corrupt(tier: &Arc<S3Tier>, metrics: &Metrics, kind: Kind, digest: &Digest) {
    metrics.tier_read(TierRead::Corrupt);
    // Skipped at once: the requests that follow go elsewhere even before the delete lands.
    tier.skip(digest);
    let (tier, digest) = (tier.clone(), digest.clone());
    tokio::spawn(async move {
        tracing::warn!(%digest, kind = kind.as_str(), "the shared tier's copy does not match its digest; deleted there");
        if let Err(error) = tier.delete(kind, &digest).await {
            tracing::warn!(%digest, error = %error_chain(&error), "cannot delete a corrupt object from the shared tier");
        }
    });
}

/// The blob's length and body from the bucket, unchecked (the fill checks it); `None` when the
/// bucket is off, does not hold it, cannot be asked, or its copy was found corrupt lately.
pub(super) async fn blob(hoard: &Hoard, digest: &Digest) -> Option<(u64, Body)> {
    let tier = hoard.tier.as_ref().filter(|tier| !tier.skipped(digest))?;
    match tier.get_blob(digest).await {
        Ok(Some((length, mut stream))) => {
            hoard.metrics.tier_read(TierRead::Hit);
            // The bucket's stream is not Sync, a response body must be: a task hands its pieces
            // over a channel, and stops when the fill drops the body.
            let (mut tx, body) = Channel::<Bytes, BoxError>::new(TIER_CHANNEL);
            tokio::spawn(async move {
                loop {
                    match stream.try_next().await {
                        Ok(Some(bytes)) => {
                            if tx.send_data(bytes).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => return,
                        Err(error) => {
                            tx.abort(BoxError::from(error_chain(&error)));
                            return;
                        }
                    }
                }
            });
            if length <= CHECKED_WHOLE {
                return checked_whole(tier, &hoard.metrics, digest, length, body.boxed()).await;
            }
            Some((length, body.boxed()))
        }
        Ok(None) => {
            hoard.metrics.tier_read(TierRead::Miss);
            None
        }
        Err(error) => {
            hoard.metrics.tier_read(TierRead::Error);
            tracing::warn!(%digest, error = %error_chain(&error), "the shared tier cannot be read; asking elsewhere");
            None
        }
    }
}

/// The manifest from the bucket, checked; `None` when the bucket is off, does not hold it, holds
/// a corrupt copy (deleted, and skipped for a while) or cannot be asked.
pub(super) async fn manifest(hoard: &Hoard, digest: &Digest) -> Option<StoredManifest> {
    let tier = hoard.tier.as_ref().filter(|tier| !tier.skipped(digest))?;
    match tier.get_manifest(digest).await {
        Ok(Some(manifest)) => {
            hoard.metrics.tier_read(TierRead::Hit);
            renew(tier, &hoard.metrics, Kind::Manifest, digest);
            Some(StoredManifest {
                media_type: manifest.media_type,
                bytes: manifest.bytes,
            })
        }
        Ok(None) => {
            hoard.metrics.tier_read(TierRead::Miss);
            None
        }
        Err(TierError::Corrupt { .. }) => {
            corrupt(tier, &hoard.metrics, Kind::Manifest, digest);
            None
        }
        Err(error) => {
            hoard.metrics.tier_read(TierRead::Error);
            tracing::warn!(%digest, error = %error_chain(&error), "the shared tier cannot be read; asking elsewhere");
            None
        }
    }
}

/// Uploads a manifest fetched from a registry and verified, in the background.
pub(super) fn upload_manifest(hoard: &Hoard, digest: &Digest, manifest: &StoredManifest) {
    let Some(tier) = hoard.tier.clone() else {
        return;
    };
    let metrics = hoard.metrics.clone();
    tier.uploaded(Kind::Manifest, digest);
    let (digest, manifest) = (digest.clone(), manifest.clone());
    tokio::spawn(async move {
        let result = tier
            .put_manifest(&digest, &manifest.media_type, manifest.bytes)
            .await;
        written(&tier, &metrics, Kind::Manifest, &digest, result).await;
    });
}

/// The digest a tag named when a node last asked the registry, for serving it stale.
pub(super) async fn tag(hoard: &Hoard, target: &Target, repo: &str, tag: &str) -> Option<Digest> {
    let tier = hoard.tier.as_ref()?;
    match tier.get_tag(target.key.as_str(), repo, tag).await {
        Ok(found) => {
            let result = if found.is_some() {
                TierRead::Hit
            } else {
                TierRead::Miss
            };
            hoard.metrics.tier_read(result);
            found
        }
        Err(error) => {
            hoard.metrics.tier_read(TierRead::Error);
            tracing::warn!(repo, tag, error = %error_chain(&error), "the shared tier cannot be read");
            None
        }
    }
}

/// Records in the bucket what a tag names now, in the background.
pub(super) fn record_tag(hoard: &Hoard, target: &Target, repo: &str, tag: &str, digest: &Digest) {
    let Some(tier) = hoard.tier.clone() else {
        return;
    };
    let metrics = hoard.metrics.clone();
    let (registry, repo, tag, digest) = (
        target.key.as_str().to_owned(),
        repo.to_owned(),
        tag.to_owned(),
        digest.clone(),
    );
    tokio::spawn(async move {
        let result = tier.put_tag(&registry, &repo, &tag, &digest).await;
        if let Err(error) = result {
            metrics.tier_write(TierWrite::Error);
            tracing::warn!(repo, tag, error = %error_chain(&error), "cannot record a tag in the shared tier");
        }
    });
}

/// Counts an upload's outcome and logs a failure. An upload is the object's use for the day (the
/// caller noted it as it began); one that found the object there (uploaded by another node, maybe
/// long ago) writes its use record instead.
async fn written(
    tier: &S3Tier,
    metrics: &Metrics,
    kind: Kind,
    digest: &Digest,
    result: Result<crate::tier::Put, TierError>,
) {
    match result {
        Ok(crate::tier::Put::Created) => {
            metrics.tier_write(TierWrite::Created);
            tracing::debug!(%digest, "uploaded to the shared tier");
        }
        Ok(crate::tier::Put::AlreadyThere) => {
            metrics.tier_write(TierWrite::AlreadyThere);
            record_use(tier, metrics, kind, digest).await;
        }
        Err(error) => {
            metrics.tier_write(TierWrite::Error);
            tracing::warn!(%digest, error = %error_chain(&error), "cannot upload to the shared tier");
        }
    }
}

/// An error and its causes on one line (object_store's detail is in the sources).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A small blob from the bucket, read whole and checked: `None` (and the copy deleted there and
/// skipped) when it does not match `digest`, `None` too when the read fails.
async fn checked_whole(
    tier: &Arc<S3Tier>,
    metrics: &Metrics,
    digest: &Digest,
    length: u64,
    body: Body,
) -> Option<(u64, Body)> {
    let mut body = body;
    let mut bytes = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(error) => {
                tracing::warn!(%digest, %error, "the shared tier's blob cannot be read; asking elsewhere");
                return None;
            }
        };
        if let Ok(data) = frame.into_data() {
            if bytes.len() as u64 + data.len() as u64 > length {
                break; // longer than the bucket said: not the blob
            }
            bytes.extend_from_slice(&data);
        }
    }
    let bytes = bytes.freeze();
    let mut hasher = digest.hasher();
    hasher.update(&bytes);
    if bytes.len() as u64 != length || !hasher.matches(digest) {
        corrupt(tier, metrics, Kind::Blob, digest);
        return None;
    }
    Some((length, crate::http::full_body(bytes)))
}
