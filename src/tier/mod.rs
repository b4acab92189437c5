//! The shared tier: an S3-API bucket (AWS S3, Ceph RGW, SeaweedFS, MinIO …) that the hoards of a
//! fleet share behind each one's disk, configured by `[store.s3]`. Made for the fill path: a node
//! that misses on its disk asks the bucket before the registry, and uploads what it filled and
//! verified.
//!
//! Blobs and manifests are kept by digest ([`keys`]), so they are immutable: an upload is a
//! conditional create (`If-None-Match: *`), and a second node uploading the same digest gets
//! [`Put::AlreadyThere`] instead of writing it again. The bucket is trusted no more than a
//! registry: whoever can write to it could put anything under a digest's key, so a reader checks
//! what it reads: a blob by the fill that stores it (the store's writer hashes it as it writes), a
//! manifest here, whole, before it is returned. A manifest's media type is the object's
//! `Content-Type`. Reads are in `reads.rs`, uploads and deletes in `writes.rs`.
//!
//! The bucket learns what the fleet uses: each object has a use record, an empty object at the
//! same path under `<prefix>/used/` whose `Last-Modified` is the last time a node served the
//! object (written in the background, at most once a day per node and object: `uses.rs`); an
//! upload counts as a use by itself. `hoard cache prune --s3` removes what neither was renewed
//! in.
//!
//! The requests are signed (SigV4) by the `object_store` crate, path-style when an endpoint is
//! configured. Failures are quick (two retries within 10 s): a slow tier must not hold a pull
//! that the registry could serve.

pub mod keys;
mod reads;
mod skips;
mod uses;
mod writes;

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::Stream;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::{ClientOptions, RetryConfig};

pub use keys::Kind;

use crate::config::S3Config;
use crate::error::{Classify, Side};
use crate::oci::Digest;

/// Blobs up to this size are uploaded in one conditional PUT, read into memory whole; bigger ones
/// in parts of this size, one part in memory at a time. 16 MiB: most layers in one request, and
/// a bounded buffer per upload (S3 wants parts of at least 5 MiB, except the last).
pub const PART_SIZE: usize = 16 << 20;

/// The largest manifest read from or written to the bucket: 4 MiB, what registries accept.
pub const MANIFEST_MAX: u64 = 4 << 20;

/// A body read from the bucket, piece by piece.
pub type BlobStream = Pin<Box<dyn Stream<Item = Result<Bytes, TierError>> + Send>>;

/// The shared S3-API tier.
#[derive(Debug, Clone)]
pub struct S3Tier {
    store: Arc<AmazonS3>,
    prefix: String,
    /// Digests found corrupt here lately, not read for a while.
    skips: Arc<skips::Skips>,
    /// The use records this node wrote lately.
    uses: Arc<uses::Uses>,
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
    /// When it was uploaded (S3's `Last-Modified`; reads do not change it), or for a use
    /// record, when it was last renewed.
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
            skips: Arc::default(),
            uses: Arc::default(),
        })
    }

    /// Not to read `digest` from the bucket for a while ([`skips::SKIP_FOR`]): its copy there
    /// was found corrupt.
    pub(crate) fn skip(&self, digest: &Digest) {
        self.skips.skip(digest);
    }

    /// Whether `digest` is not to be read from the bucket now (found corrupt lately).
    pub(crate) fn skipped(&self, digest: &Digest) -> bool {
        self.skips.skipped(digest)
    }

    /// Whether this node is to renew the use record of `digest`'s object of `kind` now (it has
    /// not within a day); if so, it counts as renewed.
    pub(crate) fn use_due(&self, kind: Kind, digest: &Digest) -> bool {
        self.uses.due(kind, digest)
    }

    /// Notes that this node uploads `digest`'s object of `kind`: the upload is its use for the
    /// day, no record needed.
    pub(crate) fn uploaded(&self, kind: Kind, digest: &Digest) {
        self.uses.note(kind, digest);
    }

    /// The key of `digest`'s object of `kind` in the bucket.
    pub fn key(&self, kind: Kind, digest: &Digest) -> String {
        keys::key(&self.prefix, kind, digest)
    }

    /// The key of the use record of `digest`'s object of `kind`.
    pub fn used_key(&self, kind: Kind, digest: &Digest) -> String {
        keys::used_key(&self.prefix, kind, digest)
    }
}

fn request(action: &'static str, key: String, source: object_store::Error) -> TierError {
    TierError::Request {
        action,
        key,
        source,
    }
}

fn matches_digest(digest: &Digest, bytes: &[u8]) -> bool {
    let mut hasher = digest.hasher();
    hasher.update(bytes);
    hasher.matches(digest)
}
