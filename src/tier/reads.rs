//! Reading the bucket: whether it holds a blob, a blob's body (unchecked: the fill that stores it
//! checks it), a manifest (checked whole here), a tag's last digest, and listings.

use futures_util::{Stream, TryStreamExt as _};
use object_store::path::Path as Key;
use object_store::{Attribute, GetOptions, ObjectStore, ObjectStoreExt as _};

use super::keys::{self, Kind};
use super::{BlobStream, MANIFEST_MAX, Manifest, S3Tier, TierError, TierObject};
use super::{matches_digest, request};
use crate::oci::Digest;

impl S3Tier {
    /// Whether the bucket holds the blob (a HEAD).
    pub async fn has_blob(&self, digest: &Digest) -> Result<bool, TierError> {
        let key = self.key(Kind::Blob, digest);
        match self.store.head(&Key::from(key.as_str())).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(source) => Err(request("HEAD", key, source)),
        }
    }

    /// The blob's length and body as the bucket holds it, streamed, **not checked**: the caller
    /// hashes and compares (as the store's writer does on a fill). `None` if the bucket does not hold it.
    pub async fn get_blob(&self, digest: &Digest) -> Result<Option<(u64, BlobStream)>, TierError> {
        let key = self.key(Kind::Blob, digest);
        let Some(result) = self.get(&key, GetOptions::default()).await? else {
            return Ok(None);
        };
        let length = result.meta.size;
        Ok(Some((length, body(key, result))))
    }

    /// The manifest and its media type; `None` if the bucket does not hold it. It is read whole
    /// (at most [`MANIFEST_MAX`]) and checked against `digest`.
    pub async fn get_manifest(&self, digest: &Digest) -> Result<Option<Manifest>, TierError> {
        let key = self.key(Kind::Manifest, digest);
        let Some(result) = self.get(&key, GetOptions::default()).await? else {
            return Ok(None);
        };
        let corrupt = |why: String| TierError::Corrupt {
            key: key.clone(),
            why,
        };
        if result.meta.size > MANIFEST_MAX {
            return Err(corrupt(format!(
                "{} bytes, more than a manifest may have",
                result.meta.size
            )));
        }
        let media_type = match result.attributes.get(&Attribute::ContentType) {
            Some(value) if !value.is_empty() => value.to_string(),
            _ => return Err(corrupt("it has no Content-Type".into())),
        };
        let bytes = result
            .bytes()
            .await
            .map_err(|source| request("GET", key.clone(), source))?;
        if !matches_digest(digest, &bytes) {
            return Err(corrupt(format!("its content does not hash to {digest}")));
        }
        Ok(Some(Manifest { media_type, bytes }))
    }

    /// The digest `tag` of `repo` at `registry` named when a node of the fleet last asked the
    /// registry; `None` if no node has recorded it. Only a fallback for when the registry cannot
    /// be asked (a stale tag): unlike blobs and manifests, a tag is not checked by its content.
    pub async fn get_tag(
        &self,
        registry: &str,
        repo: &str,
        tag: &str,
    ) -> Result<Option<Digest>, TierError> {
        let key = keys::tag_key(&self.prefix, registry, repo, tag);
        let Some(result) = self.get(&key, GetOptions::default()).await? else {
            return Ok(None);
        };
        if result.meta.size > 256 {
            return Err(TierError::Corrupt {
                key,
                why: "too long for a digest".into(),
            });
        }
        let bytes = result
            .bytes()
            .await
            .map_err(|source| request("GET", key.clone(), source))?;
        let digest = std::str::from_utf8(&bytes)
            .ok()
            .and_then(|t| Digest::parse(t.trim()));
        match digest {
            Some(digest) => Ok(Some(digest)),
            None => Err(TierError::Corrupt {
                key,
                why: "not a digest".into(),
            }),
        }
    }

    /// Every object of `kind` in the layout, in the bucket's order (keys that are not in the
    /// layout are left out). Listing pages through the bucket as the stream is read.
    pub fn list(&self, kind: Kind) -> impl Stream<Item = Result<TierObject, TierError>> + use<> {
        self.list_in(keys::folder(&self.prefix, kind), kind)
    }

    /// Every use record of objects of `kind`: the digest it is for, and when it was last renewed.
    pub fn list_used(
        &self,
        kind: Kind,
    ) -> impl Stream<Item = Result<TierObject, TierError>> + use<> {
        self.list_in(keys::used_folder(&self.prefix, kind), kind)
    }

    fn list_in(
        &self,
        folder: String,
        kind: Kind,
    ) -> impl Stream<Item = Result<TierObject, TierError>> + use<> {
        let listed = folder.clone();
        self.store
            .list(Some(&Key::from(folder.as_str())))
            .map_err(move |source| request("LIST", listed.clone(), source))
            .try_filter_map(move |meta| {
                let object =
                    keys::parse_in(&folder, meta.location.as_ref()).map(|digest| TierObject {
                        kind,
                        digest,
                        size: meta.size,
                        last_modified: meta.last_modified.into(),
                    });
                std::future::ready(Ok(object))
            })
    }

    /// When the use record of `digest`'s object of `kind` was last renewed (a HEAD); `None`
    /// when it has none.
    pub async fn used_at(
        &self,
        kind: Kind,
        digest: &Digest,
    ) -> Result<Option<std::time::SystemTime>, TierError> {
        let key = self.used_key(kind, digest);
        match self.store.head(&Key::from(key.as_str())).await {
            Ok(meta) => Ok(Some(meta.last_modified.into())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(source) => Err(request("HEAD", key, source)),
        }
    }

    /// A GET; `None` for an object that is not there.
    async fn get(
        &self,
        key: &str,
        options: GetOptions,
    ) -> Result<Option<object_store::GetResult>, TierError> {
        match self.store.get_opts(&Key::from(key), options).await {
            Ok(result) => Ok(Some(result)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(source) => Err(request("GET", key.to_owned(), source)),
        }
    }
}

/// The body of a GET, its errors tagged with the key.
fn body(key: String, result: object_store::GetResult) -> BlobStream {
    Box::pin(
        result
            .into_stream()
            .map_err(move |source| request("read of", key.clone(), source)),
    )
}
