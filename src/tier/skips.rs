//! The digests whose copy in the bucket was found corrupt lately: skipped for a while, so that the
//! requests that follow go to the owner or the registry even before the delete lands (or when it
//! fails). Bounded: past [`MAX_SKIPPED`] entries the one that ends first is forgotten.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::oci::Digest;

/// How long a digest found corrupt in the bucket is not read from it: long enough for the delete
/// and a good copy's upload to land, short enough that a bucket repaired by hand is used again.
pub(crate) const SKIP_FOR: Duration = Duration::from_secs(600);

/// Digests remembered at most: corrupt objects are rare, and each entry is ~100 bytes.
const MAX_SKIPPED: usize = 1024;

/// Digests not to read from the bucket until a time.
#[derive(Debug, Default)]
pub(crate) struct Skips(Mutex<HashMap<Digest, Instant>>);

impl Skips {
    /// Skips `digest` for [`SKIP_FOR`].
    pub(crate) fn skip(&self, digest: &Digest) {
        let Some(until) = Instant::now().checked_add(SKIP_FOR) else {
            return;
        };
        let mut skipped = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        skipped.retain(|_, until| *until > now);
        if skipped.len() >= MAX_SKIPPED
            && let Some(first) = skipped
                .iter()
                .min_by_key(|(_, u)| **u)
                .map(|(d, _)| d.clone())
        {
            skipped.remove(&first);
        }
        skipped.insert(digest.clone(), until);
    }

    /// Whether `digest` is skipped now.
    pub(crate) fn skipped(&self, digest: &Digest) -> bool {
        let skipped = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        skipped
            .get(digest)
            .is_some_and(|until| *until > Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_skipped_digest_is_skipped_and_the_map_stays_bounded() {
        let skips = Skips::default();
        let digest = Digest::sha256_of(b"corrupt");
        assert!(!skips.skipped(&digest));
        skips.skip(&digest);
        assert!(skips.skipped(&digest));
        assert!(!skips.skipped(&Digest::sha256_of(b"other")));
        for i in 0..MAX_SKIPPED * 2 {
            skips.skip(&Digest::sha256_of(&i.to_le_bytes()));
        }
        let len = skips.0.lock().map(|m| m.len()).unwrap_or_default();
        assert!(len <= MAX_SKIPPED, "{len}");
    }
}
