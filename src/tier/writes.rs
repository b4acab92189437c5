//! Writing the bucket: blob and manifest uploads (conditional creates, checked against their
//! digest first), tag records, use records, and deletes.

use std::path::Path;

use bytes::Bytes;
use object_store::path::Path as Key;
use object_store::{
    Attribute, Attributes, ObjectStore, ObjectStoreExt as _, PutMode, PutOptions, PutPayload,
};
use tokio::io::AsyncReadExt as _;

use super::keys::{self, Kind};
use super::{MANIFEST_MAX, PART_SIZE, Put, S3Tier, TierError};
use super::{matches_digest, request};
use crate::oci::Digest;

impl S3Tier {
    /// Uploads the blob at `path` (a verified file of the local store) unless the bucket holds it.
    /// The file is hashed again on the way and nothing is kept in the bucket unless it matches
    /// `digest`. Up to the part size, one PUT with `If-None-Match: *`; above it, a HEAD and a
    /// multipart upload (object_store has no conditional multipart: two nodes racing past the
    /// HEAD both upload, and the later one rewrites the same verified bytes).
    pub async fn put_blob(&self, digest: &Digest, path: &Path) -> Result<Put, TierError> {
        let local = |source| TierError::Local {
            path: path.to_owned(),
            source,
        };
        let mut file = tokio::fs::File::open(path).await.map_err(local)?;
        let length = file.metadata().await.map_err(local)?.len();
        let key = self.key(Kind::Blob, digest);
        let mismatch = || TierError::Mismatch {
            what: path.display().to_string(),
            digest: digest.clone(),
        };
        if length <= PART_SIZE as u64 {
            let bytes = read_up_to(&mut file, PART_SIZE).await.map_err(local)?;
            if !matches_digest(digest, &bytes) {
                return Err(mismatch());
            }
            return self
                .create(key, PutPayload::from(bytes), Attributes::new())
                .await;
        }
        if self.has_blob(digest).await? {
            return Ok(Put::AlreadyThere);
        }
        let location = Key::from(key.as_str());
        let mut upload = self
            .store
            .put_multipart(&location)
            .await
            .map_err(|source| request("start upload of", key.clone(), source))?;
        let mut hasher = digest.hasher();
        let outcome = async {
            loop {
                let part = read_up_to(&mut file, PART_SIZE).await.map_err(local)?;
                if part.is_empty() {
                    break;
                }
                hasher.update(&part);
                upload
                    .put_part(PutPayload::from(part))
                    .await
                    .map_err(|source| request("upload part of", key.clone(), source))?;
            }
            if !hasher.matches(digest) {
                return Err(mismatch());
            }
            upload
                .complete()
                .await
                .map_err(|source| request("complete upload of", key.clone(), source))
        }
        .await;
        if outcome.is_err() {
            // Best effort: a bucket lifecycle rule for incomplete uploads catches what this misses.
            let _ = upload.abort().await;
        }
        outcome.map(|_| Put::Created)
    }

    /// Uploads a manifest with its media type unless the bucket holds it (`If-None-Match: *`).
    /// `bytes` must hash to `digest`.
    pub async fn put_manifest(
        &self,
        digest: &Digest,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<Put, TierError> {
        let bad = |why: String| TierError::BadManifest {
            digest: digest.clone(),
            why,
        };
        if bytes.len() as u64 > MANIFEST_MAX {
            return Err(bad(format!(
                "{} bytes is more than hoard keeps",
                bytes.len()
            )));
        }
        if media_type.is_empty() || http::HeaderValue::from_str(media_type).is_err() {
            return Err(bad(format!("{media_type:?} is not a media type")));
        }
        if !matches_digest(digest, &bytes) {
            return Err(TierError::Mismatch {
                what: "the manifest".into(),
                digest: digest.clone(),
            });
        }
        let mut attributes = Attributes::new();
        attributes.insert(Attribute::ContentType, media_type.to_owned().into());
        let key = self.key(Kind::Manifest, digest);
        self.create(key, PutPayload::from(bytes), attributes).await
    }

    /// Records that `tag` of `repo` at `registry` names `digest` now (overwriting what was
    /// recorded: a tag moves).
    pub async fn put_tag(
        &self,
        registry: &str,
        repo: &str,
        tag: &str,
        digest: &Digest,
    ) -> Result<(), TierError> {
        let key = keys::tag_key(&self.prefix, registry, repo, tag);
        let payload = PutPayload::from(digest.to_string().into_bytes());
        match self.store.put(&Key::from(key.as_str()), payload).await {
            Ok(_) => Ok(()),
            Err(source) => Err(request("PUT", key, source)),
        }
    }

    /// Renews the use record of `digest`'s object of `kind`: an empty object, written whether
    /// or not there is one (its `Last-Modified` is what counts).
    pub async fn put_used(&self, kind: Kind, digest: &Digest) -> Result<(), TierError> {
        let key = self.used_key(kind, digest);
        match self
            .store
            .put(&Key::from(key.as_str()), PutPayload::new())
            .await
        {
            Ok(_) => Ok(()),
            Err(source) => Err(request("PUT", key, source)),
        }
    }

    /// Deletes `digest`'s object of `kind`; one that is not there is no error.
    pub async fn delete(&self, kind: Kind, digest: &Digest) -> Result<(), TierError> {
        self.delete_key(self.key(kind, digest)).await
    }

    /// Deletes the use record of `digest`'s object of `kind`; none is no error.
    pub async fn delete_used(&self, kind: Kind, digest: &Digest) -> Result<(), TierError> {
        self.delete_key(self.used_key(kind, digest)).await
    }

    async fn delete_key(&self, key: String) -> Result<(), TierError> {
        match self.store.delete(&Key::from(key.as_str())).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(request("DELETE", key, source)),
        }
    }

    /// A conditional create: `If-None-Match: *`.
    async fn create(
        &self,
        key: String,
        payload: PutPayload,
        attributes: Attributes,
    ) -> Result<Put, TierError> {
        let options = PutOptions {
            mode: PutMode::Create,
            attributes,
            ..PutOptions::default()
        };
        match self
            .store
            .put_opts(&Key::from(key.as_str()), payload, options)
            .await
        {
            Ok(_) => Ok(Put::Created),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(Put::AlreadyThere),
            Err(source) => Err(request("PUT", key, source)),
        }
    }
}

/// Up to `limit` bytes from `file`, fewer only at its end.
async fn read_up_to(file: &mut tokio::fs::File, limit: usize) -> std::io::Result<Vec<u8>> {
    let mut buffer = Vec::with_capacity(limit.min(1 << 20));
    (&mut *file)
        .take(limit as u64)
        .read_to_end(&mut buffer)
        .await?;
    Ok(buffer)
}
