//! What this node recorded as used in the bucket lately, so that it writes an object's use record
//! at most once per [`RENEW_EVERY`]: a hit renews the record only when this node has not renewed
//! it (or uploaded the object) within that time. In memory only: a restart writes each record
//! once more. Bounded: past [`MAX_REMEMBERED`] keys the stale ones are forgotten, and if that
//! frees too little, all of them (each forgotten key costs one more empty PUT, no more).
//!
//! A key is remembered by the first 64 bits of its digest and its kind, 8 bytes instead of a
//! 71-byte string: two digests sharing them (a 2^-64 chance, and no one can aim at a sha256
//! prefix) only cost one of them a renewal that day.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::keys::Kind;
use crate::oci::Digest;

/// How often a node renews an object's use record at most: a day, the unit retention is set in
/// (`store.s3.retention`, `--unused-for`): an object read today is never pruned as unused for a
/// day or more.
pub(super) const RENEW_EVERY: Duration = Duration::from_secs(24 * 3600);

/// Keys remembered at most: more distinct objects than most nodes serve in a day. A slot is 25
/// bytes (an 8-byte key, a 16-byte `Instant`, a control byte), and 100,000 keys take 131,072
/// slots at the map's 7/8 load: ~3.3 MiB.
const MAX_REMEMBERED: usize = 100_000;

/// When this node last recorded a use of each key.
#[derive(Debug, Default)]
pub(crate) struct Uses(Mutex<HashMap<u64, Instant>>);

impl Uses {
    /// Whether a use of `digest`'s object of `kind` is to be written now; if so, it counts as
    /// written, and the same key is not due again for [`RENEW_EVERY`].
    pub(crate) fn due(&self, kind: Kind, digest: &Digest) -> bool {
        self.due_at(short(kind, digest), Instant::now())
    }

    /// Notes a use recorded otherwise (an upload: the object's own `Last-Modified`).
    pub(crate) fn note(&self, kind: Kind, digest: &Digest) {
        self.due_at(short(kind, digest), Instant::now());
    }

    fn due_at(&self, key: u64, now: Instant) -> bool {
        let mut uses = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if uses
            .get(&key)
            .is_some_and(|last| now.saturating_duration_since(*last) < RENEW_EVERY)
        {
            return false;
        }
        if uses.len() >= MAX_REMEMBERED {
            uses.retain(|_, last| now.saturating_duration_since(*last) < RENEW_EVERY);
            // Half full still: forget everything rather than scan again at the next insert.
            if uses.len() >= MAX_REMEMBERED / 2 {
                uses.clear();
            }
        }
        uses.insert(key, now);
        true
    }
}

/// The first 64 bits of the digest, the last bit saying which kind.
fn short(kind: Kind, digest: &Digest) -> u64 {
    let hex = digest.hex().get(..16).unwrap_or_default();
    let bits = u64::from_str_radix(hex, 16).unwrap_or_default();
    match kind {
        Kind::Blob => bits & !1,
        Kind::Manifest => bits | 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_due_once_a_day_and_the_record_stays_bounded() {
        let uses = Uses::default();
        let digest = Digest::sha256_of(b"layer");
        assert!(uses.due(Kind::Blob, &digest), "first use");
        assert!(!uses.due(Kind::Blob, &digest), "second use the same day");
        assert!(uses.due(Kind::Manifest, &digest), "another kind");
        let other = Digest::sha256_of(b"uploaded");
        uses.note(Kind::Blob, &other);
        assert!(!uses.due(Kind::Blob, &other), "an upload is a use");

        let key = short(Kind::Blob, &digest);
        let now = Instant::now();
        let Some(tomorrow) = now.checked_add(RENEW_EVERY) else {
            return;
        };
        assert!(!uses.due_at(key, now));
        assert!(uses.due_at(key, tomorrow), "due again a day later");
        assert!(!uses.due_at(key, tomorrow));

        for i in 0..MAX_REMEMBERED as u64 * 2 {
            uses.due_at(i << 1, now);
        }
        let len = uses.0.lock().map(|m| m.len()).unwrap_or_default();
        assert!(len <= MAX_REMEMBERED, "{len}");
    }
}
