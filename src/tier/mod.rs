//! The shared tier: an S3-API bucket (AWS S3, Ceph RGW, SeaweedFS, MinIO …) that the hoards of a
//! fleet share behind each one's disk, configured by `[store.s3]`. Made for the fill path: a node
//! that misses on its disk asks the bucket before the registry, and uploads what it filled and
//! verified.
//!
//! Blobs and manifests are kept by digest ([`keys`]), so they are immutable: an upload is a
//! conditional create (`If-None-Match: *`), and a second node uploading the same digest gets
//! [`Put::AlreadyThere`] instead of writing it again. The bucket is trusted no more than a
//! registry: whoever can write to it could put anything under a digest's key, so a reader checks
//! what it reads ([`verify`]; [`S3Tier::get_verified_blob`] does it) and manifests are checked
//! whole before they are returned. A manifest's media type is the object's `Content-Type`.
//!
//! The requests are signed (SigV4) by the `object_store` crate, path-style when an endpoint is
//! configured. Failures are quick (two retries within 10 s): a slow tier must not hold a pull
//! that the registry could serve.

pub mod keys;
pub mod verify;

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::{Stream, TryStreamExt as _};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as Key;
use object_store::{
    Attribute, Attributes, ClientOptions, GetOptions, ObjectStore, ObjectStoreExt as _, PutMode,
    PutOptions, PutPayload, RetryConfig,
};
use tokio::io::AsyncReadExt as _;

pub use keys::Kind;
pub use verify::{Verified, verified};

use crate::config::S3Config;
use crate::error::{Classify, Side};
use crate::oci::Digest;

/// Blobs up to this size are uploaded in one conditional PUT, read into memory whole; bigger ones
/// in parts of this size, one part in memory at a time. 16 MiB: most layers in one request, and
/// a bounded buffer per upload (S3 wants parts of at least 5 MiB, except the last).
pub const PART_SIZE: usize = 16 << 20;

/// The smallest part S3 takes in a multipart upload, but for the last (AWS, SeaweedFS and Ceph
/// refuse the upload's completion otherwise).
pub const MIN_PART_SIZE: usize = 5 << 20;

/// The largest manifest read from or written to the bucket: 4 MiB, what registries accept.
pub const MANIFEST_MAX: u64 = 4 << 20;

/// A body read from the bucket, piece by piece.
pub type BlobStream = Pin<Box<dyn Stream<Item = Result<Bytes, TierError>> + Send>>;

/// The shared S3-API tier.
#[derive(Debug, Clone)]
pub struct S3Tier {
    store: Arc<AmazonS3>,
    prefix: String,
    part_size: usize,
}

/// What an upload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    /// The object was written.
    Created,
    /// The bucket already held an object under that key (another node uploaded it): nothing was
    /// written.
    AlreadyThere,
}

impl Put {
    /// A word for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Put::Created => "created",
            Put::AlreadyThere => "already_there",
        }
    }
}

/// Part of a blob, read for a `Range` request: not verifiable on its own.
pub struct BlobPart {
    /// The bytes of the blob this is.
    pub range: Range<u64>,
    /// The whole blob's length.
    pub total: u64,
    /// The bytes of `range`, unchecked.
    pub body: BlobStream,
}

/// A manifest read from the bucket, checked against its digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// Its media type, from the object's `Content-Type`.
    pub media_type: String,
    /// The manifest byte for byte.
    pub bytes: Bytes,
}

/// An object listed in the bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierObject {
    /// Blob or manifest.
    pub kind: Kind,
    /// The digest its key names (not checked against its content).
    pub digest: Digest,
    /// Its length in bytes.
    pub size: u64,
    /// When it was uploaded (S3's `Last-Modified`; reads do not change it).
    pub last_modified: SystemTime,
}

/// What went wrong with the tier.
#[derive(Debug, thiserror::Error)]
pub enum TierError {
    /// The client could not be made from the config.
    #[error("cannot set up the S3 client for bucket {bucket}")]
    Setup {
        bucket: String,
        #[source]
        source: object_store::Error,
    },
    /// A request to the bucket failed.
    #[error("S3 {action} {key}")]
    Request {
        action: &'static str,
        key: String,
        #[source]
        source: object_store::Error,
    },
    /// An object in the bucket is not what its key says.
    #[error("{key} in the bucket is corrupt: {why}")]
    Corrupt { key: String, why: String },
    /// The local file to upload could not be read.
    #[error("cannot read {path}")]
    Local {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The local file or the bytes to upload do not hash to the digest given: nothing was
    /// uploaded.
    #[error("{what} does not match {digest}: not uploaded")]
    Mismatch { what: String, digest: Digest },
    /// A manifest to upload is not one hoard keeps: too big, or its media type is no header value.
    #[error("manifest {digest}: {why}")]
    BadManifest { digest: Digest, why: String },
}

/// The bucket is a remote service like a registry: its failures and its corrupt objects are the
/// upstream's side; a client that cannot be set up is the config's; a local file or a bad
/// argument is hoard's own.
impl Classify for TierError {
    fn side(&self) -> Side {
        match self {
            TierError::Setup { .. } => Side::Client,
            TierError::Request { .. } | TierError::Corrupt { .. } => Side::Upstream,
            TierError::Local { .. }
            | TierError::Mismatch { .. }
            | TierError::BadManifest { .. } => Side::Internal,
        }
    }
}

impl S3Tier {
    /// A client for the bucket of `config`. Makes no request: a wrong key or a missing bucket
    /// shows at the first one.
    pub fn new(config: &S3Config) -> Result<S3Tier, TierError> {
        let client = ClientOptions::new()
            .with_allow_http(config.allow_http)
            .with_connect_timeout(Duration::from_secs(5))
            // A whole blob may take minutes; a stall may not.
            .with_timeout_disabled()
            .with_read_timeout(Duration::from_secs(30))
            .with_user_agent(http::HeaderValue::from_static(concat!(
                "hoard/",
                env!("CARGO_PKG_VERSION")
            )));
        let retry = RetryConfig {
            max_retries: 2,
            retry_timeout: Duration::from_secs(10),
            ..RetryConfig::default()
        };
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_allow_http(config.allow_http)
            .with_client_options(client)
            .with_retry(retry);
        if let Some(endpoint) = &config.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_virtual_hosted_style_request(false);
        }
        if let Some(credentials) = &config.credentials {
            builder = builder
                .with_access_key_id(&credentials.access_key_id)
                .with_secret_access_key(&credentials.secret_access_key);
            if let Some(token) = &credentials.session_token {
                builder = builder.with_token(token);
            }
        }
        let store = builder.build().map_err(|source| TierError::Setup {
            bucket: config.bucket.clone(),
            source,
        })?;
        Ok(S3Tier {
            store: Arc::new(store),
            prefix: config.prefix.clone(),
            part_size: PART_SIZE,
        })
    }

    /// The same tier, uploading blobs bigger than `bytes` in parts of `bytes` (default
    /// [`PART_SIZE`]; at least [`MIN_PART_SIZE`]).
    pub fn with_part_size(mut self, bytes: usize) -> S3Tier {
        self.part_size = bytes.max(MIN_PART_SIZE);
        self
    }

    /// The key of `digest`'s object of `kind` in the bucket.
    pub fn key(&self, kind: Kind, digest: &Digest) -> String {
        keys::key(&self.prefix, kind, digest)
    }

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
    /// hashes and compares (as the store's writer does on a fill), or uses
    /// [`S3Tier::get_verified_blob`]. `None` if the bucket does not hold it.
    pub async fn get_blob(&self, digest: &Digest) -> Result<Option<(u64, BlobStream)>, TierError> {
        let key = self.key(Kind::Blob, digest);
        let Some(result) = self.get(&key, GetOptions::default()).await? else {
            return Ok(None);
        };
        let length = result.meta.size;
        Ok(Some((length, body(key, result))))
    }

    /// As [`S3Tier::get_blob`], the body checked against the digest on the way ([`verified`]):
    /// a corrupt object ends in an error before its last piece.
    pub async fn get_verified_blob(
        &self,
        digest: &Digest,
    ) -> Result<Option<(u64, BlobStream)>, TierError> {
        let Some((length, inner)) = self.get_blob(digest).await? else {
            return Ok(None);
        };
        let key = self.key(Kind::Blob, digest);
        Ok(Some((
            length,
            Box::pin(verified(digest, &key, length, inner)),
        )))
    }

    /// The bytes `range` of the blob (cut to its end), unchecked: a part cannot be checked
    /// against the digest of the whole. `None` if the bucket does not hold it.
    pub async fn get_blob_range(
        &self,
        digest: &Digest,
        range: Range<u64>,
    ) -> Result<Option<BlobPart>, TierError> {
        let key = self.key(Kind::Blob, digest);
        let options = GetOptions::default().with_range(Some(range));
        let Some(result) = self.get(&key, options).await? else {
            return Ok(None);
        };
        Ok(Some(BlobPart {
            range: result.range.clone(),
            total: result.meta.size,
            body: body(key, result),
        }))
    }

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
        if length <= self.part_size as u64 {
            let bytes = read_up_to(&mut file, self.part_size).await.map_err(local)?;
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
                let part = read_up_to(&mut file, self.part_size).await.map_err(local)?;
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

    /// Every object of `kind` in the layout, in the bucket's order (keys that are not in the
    /// layout are left out). Listing pages through the bucket as the stream is read.
    pub fn list(&self, kind: Kind) -> impl Stream<Item = Result<TierObject, TierError>> + use<> {
        let folder = keys::folder(&self.prefix, kind);
        let prefix = self.prefix.clone();
        self.store
            .list(Some(&Key::from(folder.as_str())))
            .map_err(move |source| request("LIST", folder.clone(), source))
            .try_filter_map(move |meta| {
                let object =
                    keys::parse(&prefix, kind, meta.location.as_ref()).map(|digest| TierObject {
                        kind,
                        digest,
                        size: meta.size,
                        last_modified: meta.last_modified.into(),
                    });
                std::future::ready(Ok(object))
            })
    }

    /// Every blob in the layout (see [`S3Tier::list`]).
    pub fn list_blobs(&self) -> impl Stream<Item = Result<TierObject, TierError>> + use<> {
        self.list(Kind::Blob)
    }

    /// Deletes `digest`'s object of `kind`; one that is not there is no error.
    pub async fn delete(&self, kind: Kind, digest: &Digest) -> Result<(), TierError> {
        let key = self.key(kind, digest);
        match self.store.delete(&Key::from(key.as_str())).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(request("DELETE", key, source)),
        }
    }

    /// Deletes the blob (see [`S3Tier::delete`]).
    pub async fn delete_blob(&self, digest: &Digest) -> Result<(), TierError> {
        self.delete(Kind::Blob, digest).await
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

fn request(action: &'static str, key: String, source: object_store::Error) -> TierError {
    TierError::Request {
        action,
        key,
        source,
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

fn matches_digest(digest: &Digest, bytes: &[u8]) -> bool {
    let mut hasher = digest.hasher();
    hasher.update(bytes);
    hasher.matches(digest)
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
