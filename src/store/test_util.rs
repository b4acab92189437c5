//! Helpers shared by the store's tests.

use super::Store;
use super::key::Key;
use crate::oci::Digest;

pub(super) fn limits(max_size: u64) -> crate::config::CacheLimits {
    crate::config::CacheLimits {
        max_size,
        min_free: 0,
        memory: 0,
    }
}

/// A manifest of `size` bytes on disk (media type line included) and its digest.
pub(super) fn manifest_of(size: usize, fill: u8) -> (Digest, Vec<u8>) {
    let bytes = vec![fill; size - "t\n".len()];
    (Digest::sha256_of(&bytes), bytes)
}

pub(super) async fn put(store: &Store, size: usize, fill: u8) -> Digest {
    let (digest, bytes) = manifest_of(size, fill);
    store
        .put_manifest(&digest, "t", &bytes)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    digest
}

pub(super) fn stored(store: &Store, digest: &Digest) -> bool {
    store.path(&Key::Manifest(digest.clone())).exists()
}
