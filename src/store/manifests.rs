//! Manifests by digest: read whole (they are small), written only after their digest matched.

use bytes::Bytes;

use super::Store;
use super::error::StoreError;
use super::key::Key;
use super::layout::{manifest_file, split_manifest_file};
use super::read::read_whole;
use crate::oci::Digest;

/// Manifests larger than this are not cached (registries themselves refuse above 4 MiB).
pub const MAX_MANIFEST_SIZE: usize = 4 << 20;

/// A manifest found in the store.
#[derive(Debug, Clone)]
pub struct StoredManifest {
    pub media_type: String,
    pub bytes: Bytes,
}

impl Store {
    /// Reads a stored manifest: from memory if a copy is there, else from its file (keeping a
    /// copy of a small one).
    pub async fn manifest(&self, digest: &Digest) -> Option<StoredManifest> {
        let key = Key::Manifest(digest.clone());
        let data = match self.in_memory(&key) {
            Some(data) => data,
            None => {
                let pin = self.pin(&key)?;
                let Ok(data) = read_whole(&self.path(&key)).await else {
                    self.forget(&key);
                    return None;
                };
                let data = Bytes::from(data.data);
                self.remember(&key, pin.id(), &data, None);
                data
            }
        };
        stored_manifest(&data)
    }

    /// A stored manifest from memory alone (`cache.memory`), marked used; `None` when memory
    /// holds no copy of it.
    pub(crate) fn manifest_in_memory(&self, digest: &Digest) -> Option<StoredManifest> {
        stored_manifest(&self.in_memory(&Key::Manifest(digest.clone()))?)
    }

    /// Stores a manifest after checking it against `digest`.
    pub(crate) async fn put_manifest(
        &self,
        digest: &Digest,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        let mut hasher = digest.hasher();
        hasher.update(bytes);
        if !hasher.matches(digest) {
            return Err(StoreError::DigestMismatch(digest.clone()));
        }
        let data = manifest_file(media_type, bytes)?;
        let size = data.len() as u64;
        let reservation = self.reserve(size).await?;
        let key = Key::Manifest(digest.clone());
        self.write_atomically(&self.path(&key), data).await?;
        self.admit(key, size, reservation);
        Ok(())
    }
}

/// A manifest file's bytes, taken apart.
fn stored_manifest(data: &Bytes) -> Option<StoredManifest> {
    let (media_type, start) = split_manifest_file(data)?;
    Some(StoredManifest {
        media_type: media_type.to_owned(),
        bytes: data.slice(start..),
    })
}
