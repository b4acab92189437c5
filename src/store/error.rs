//! The store's errors, and the blocking pool that disk work runs on.

use std::path::{Path, PathBuf};

use crate::error::{Classify, Side};
use crate::oci::Digest;

/// Store errors: all internal (disk) problems, or a full store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot {action} {path}: {error}")]
    Io {
        action: &'static str,
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("content does not match digest {0}")]
    DigestMismatch(Digest),
    #[error("{0:?} is not a usable cache key")]
    BadKey(String),
    #[error("no room for {0} more bytes within the size limit")]
    Full(u64),
    #[error("another request took over the fill of {0}")]
    Superseded(Digest),
    #[error(
        "{path} is not hoard's cache folder ({why}); give cache.dir a folder of its own, \
         empty or made by hoard"
    )]
    NotOurs { path: PathBuf, why: String },
}

/// The disk is hoard's own business; a folder that is not hoard's is the operator's mistake.
impl Classify for StoreError {
    fn side(&self) -> Side {
        match self {
            StoreError::NotOurs { .. } => Side::Client,
            _ => Side::Internal,
        }
    }

    fn status(&self) -> http::StatusCode {
        match self {
            StoreError::Full(_) => http::StatusCode::INSUFFICIENT_STORAGE,
            _ => http::StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

pub(super) fn io_error(
    action: &'static str,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.to_owned();
    move |error| StoreError::Io {
        action,
        path,
        error,
    }
}

/// Runs disk work on the blocking pool.
pub(super) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| StoreError::Io {
            action: "finish a disk task for",
            path: PathBuf::new(),
            error: std::io::Error::other(e),
        })?
}
