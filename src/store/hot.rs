//! Small entries in memory (`cache.memory`): the bytes of the blobs and manifests of 64 KiB or
//! less that were read lately, so that a hit on one touches no file. Most requests of a pull are
//! for such entries (manifests, configs, small layers), and opening, reading and closing a file
//! cost a 4 KiB blob hit half of hoard's system calls (issue 25).
//!
//! Each copy names the index entry it was read from (its id): a copy whose entry has gone, or
//! was replaced, is never served, whichever way the entry left the index (eviction, a reconcile,
//! a forgotten file). A blob's or manifest's bytes never change (they were verified against
//! their digest before they were stored); a tag record's may, behind hoard's back (`hoard cache
//! rm`), so its copy also names the file's inode, which the caller checks against the file's
//! (at most once a [`RECHECK`]).

use std::time::{Duration, Instant};

use bytes::Bytes;
use lru::LruCache;

use super::key::Key;

/// The largest entry kept in memory.
pub(crate) const HOT_MAX: u64 = 64 << 10;

/// How long a tag record's copy is served after its file was last found in place, before the
/// file is looked at again: `hoard cache rm` of a tag takes effect within this. (A `statx` of
/// the record's path was the largest single cost of a tag hit.)
pub(super) const RECHECK: Duration = Duration::from_secs(1);

/// Whether an entry of `len` bytes is kept within a budget of `budget` bytes.
pub(super) fn takes(len: u64, budget: u64) -> bool {
    len <= HOT_MAX && len <= budget
}

/// The copies, least recently used first, within a budget of bytes.
#[derive(Debug)]
pub(super) struct Hot {
    copies: LruCache<Key, Copy>,
    /// Bytes of the copies held.
    bytes: u64,
    /// `cache.memory`.
    budget: u64,
}

#[derive(Debug)]
struct Copy {
    /// The id of the index entry the bytes were read from.
    id: u64,
    data: Bytes,
    /// The file they were read from, where the caller checks it.
    inode: Option<Inode>,
}

/// The file a tag record's copy was read from: its inode number, and when the file at the
/// record's path was last found to be that one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Inode {
    pub number: u64,
    pub checked: Instant,
}

impl Hot {
    pub(super) fn new(budget: u64) -> Hot {
        Hot {
            copies: LruCache::unbounded(),
            bytes: 0,
            budget,
        }
    }

    /// The copy of entry `id` of `key`, marked used; one of another entry is dropped.
    pub(super) fn get(&mut self, key: &Key, id: u64) -> Option<(Bytes, Option<Inode>)> {
        let copy = self.copies.get(key)?;
        if copy.id == id {
            return Some((copy.data.clone(), copy.inode));
        }
        self.remove(key);
        None
    }

    /// Notes that the file of `key`'s copy (of entry `id`) was found in place at `at`.
    pub(super) fn checked(&mut self, key: &Key, id: u64, at: Instant) {
        if let Some(copy) = self.copies.peek_mut(key)
            && copy.id == id
            && let Some(inode) = &mut copy.inode
        {
            inode.checked = at;
        }
    }

    /// Keeps a copy of entry `id` of `key`, dropping the least recently used copies it needs
    /// room from.
    pub(super) fn put(&mut self, key: Key, id: u64, data: Bytes, inode: Option<Inode>) {
        let len = data.len() as u64;
        if !takes(len, self.budget) {
            return;
        }
        self.remove(&key);
        while self.bytes + len > self.budget {
            match self.copies.pop_lru() {
                Some((_, old)) => self.bytes -= old.data.len() as u64,
                None => break,
            }
        }
        self.bytes += len;
        self.copies.push(key, Copy { id, data, inode });
    }

    fn remove(&mut self, key: &Key) {
        if let Some(old) = self.copies.pop(key) {
            self.bytes -= old.data.len() as u64;
        }
    }

    /// Bytes of the copies held.
    pub(super) fn bytes(&self) -> u64 {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::Digest;

    fn key(n: u8) -> Key {
        Key::Blob(Digest::sha256_of(&[n]))
    }

    #[test]
    fn copies_stay_within_the_budget_least_recently_used_out_first() {
        let mut hot = Hot::new(10);
        hot.put(key(1), 1, Bytes::from_static(b"aaaa"), None);
        hot.put(key(2), 2, Bytes::from_static(b"bbbb"), None);
        assert!(
            hot.get(&key(1), 1).is_some(),
            "1 is now the most recently used"
        );
        hot.put(key(3), 3, Bytes::from_static(b"cccc"), None);
        assert_eq!(hot.bytes(), 8);
        assert!(hot.get(&key(2), 2).is_none(), "2 made room");
        assert_eq!(
            hot.get(&key(1), 1),
            Some((Bytes::from_static(b"aaaa"), None))
        );
        assert_eq!(
            hot.get(&key(3), 3),
            Some((Bytes::from_static(b"cccc"), None))
        );

        // Larger than the budget, or than HOT_MAX: not kept, and nothing made room for it.
        hot.put(key(4), 4, Bytes::from(vec![0; 11]), None);
        assert!(hot.get(&key(4), 4).is_none());
        assert_eq!(hot.bytes(), 8);
        let mut big = Hot::new(1 << 30);
        assert!(!takes(HOT_MAX + 1, 1 << 30) && takes(HOT_MAX, 1 << 30));
        big.put(key(5), 5, Bytes::from(vec![0; HOT_MAX as usize + 1]), None);
        assert_eq!(big.bytes(), 0);
        assert!(!takes(1, 0), "cache.memory = 0 keeps nothing");
    }

    #[test]
    fn a_copy_of_another_entry_of_the_key_is_never_served() {
        let mut hot = Hot::new(100);
        hot.put(key(1), 7, Bytes::from_static(b"old"), None);
        assert!(hot.get(&key(1), 8).is_none(), "entry 8 replaced entry 7");
        assert_eq!(hot.bytes(), 0, "and the stale copy is gone");
        hot.put(key(1), 8, Bytes::from_static(b"new"), None);
        hot.put(key(1), 8, Bytes::from_static(b"new"), None);
        assert_eq!(hot.bytes(), 3, "kept once");
    }
}
