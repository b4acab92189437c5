//! The in-memory index: every entry's size, its place in least-recently-used order, and its
//! readers (the store's read pins, `pins.rs`, count them here).
//!
//! Every use of an entry gives it a new stamp from a counter, so stamps order entries by last
//! use. Entries nobody reads sit in `idle`, ordered by stamp: eviction takes the coldest with one
//! `pop_first`, O(log entries), and never meets an entry being read, however many there are.
//! An entry being read sits in `reading` instead, and goes back into `idle` under the stamp it
//! has when its last reader leaves: its place among the others is where its last use put it.
//! An entry kept by `cache.pin` ([`Index::keep`]) holds one reader of its own for as long as it
//! is kept, so eviction never meets it either.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashSet};
use std::hash::{Hash, Hasher};
use std::ops::{Bound, Deref};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use super::key::Key;

/// How often the modification time of an entry that is being served is refreshed. The mtime is
/// the "last used" time that survives restarts (LRU order at start, `cache prune --older-than`);
/// refreshing it at most every 10 minutes keeps hits free of metadata writes.
const TOUCH_INTERVAL: Duration = Duration::from_secs(600);

/// Stamps of uses count up from here; entries added as least recently used (found on disk by a
/// reconcile) count down from just below it, so they sort before every entry used since start.
/// Neither counter can run out: 2^63 uses at a billion a second take 292 years.
const FIRST_USE: u64 = 1 << 63;

/// Every entry of the store, in least-recently-used order.
///
/// Memory: each entry is one allocation ([`Node`], 80 bytes with its key), its digest's hex (64
/// bytes for sha256), one pointer in `entries` and one stamp and pointer in `idle` or `reading`:
/// under 200 bytes an entry at a million entries (`cargo bench --bench store_startup`).
#[derive(Debug)]
pub(super) struct Index {
    /// Every entry, found by its key.
    entries: HashSet<Shared, foldhash::fast::RandomState>,
    /// Entries nobody reads, by stamp: least recently used first. The eviction order.
    idle: BTreeMap<u64, Shared>,
    /// Entries being read, by stamp.
    reading: BTreeMap<u64, Shared>,
    /// Sum of the entries' sizes.
    bytes: u64,
    /// Sum of the sizes of the entries in `reading`.
    reading_bytes: u64,
    next_use: u64,
    next_cold: u64,
    /// Keys kept from eviction (`cache.pin`); those in the index hold one reader each.
    kept: HashSet<Key>,
    /// What [`Node::touched`] counts from.
    epoch: Instant,
}

/// An entry, shared by `entries` and the order it sits in. Its fields that change are atomics
/// only so that the index may move between threads: every access is under the store's lock.
#[derive(Debug)]
struct Node {
    key: Key,
    size: u64,
    /// Its first stamp, which no other entry ever has: tells a pin of this entry from a pin of
    /// an earlier entry of the same key.
    id: u64,
    /// The stamp of its last use: its key in `idle` or `reading`.
    stamp: AtomicU64,
    /// When it was admitted or its mtime last refreshed, in seconds since the index's epoch
    /// (4 bytes: the node then fits 80 bytes with its `Arc`'s counts).
    touched: AtomicU32,
    /// Responses reading it now; an entry with readers is never evicted.
    readers: AtomicU32,
}

impl Node {
    fn stamp(&self) -> u64 {
        self.stamp.load(Relaxed)
    }

    fn readers(&self) -> u32 {
        self.readers.load(Relaxed)
    }
}

/// A handle on a [`Node`] that hashes and compares as its key, so that `entries` is a set of
/// pointers looked up by [`Key`].
#[derive(Debug, Clone)]
struct Shared(Arc<Node>);

impl Deref for Shared {
    type Target = Node;

    fn deref(&self) -> &Node {
        &self.0
    }
}

impl Borrow<Key> for Shared {
    fn borrow(&self) -> &Key {
        &self.0.key
    }
}

impl PartialEq for Shared {
    fn eq(&self, other: &Shared) -> bool {
        self.0.key == other.0.key
    }
}

impl Eq for Shared {}

impl Hash for Shared {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.key.hash(state);
    }
}

/// A pin taken by [`Index::pin`].
#[derive(Debug)]
pub(super) struct Pinned {
    pub(super) id: u64,
    /// Whether the caller should refresh the file's mtime.
    pub(super) touch: bool,
}

/// Where a [`Index::sweep`] goes on: first through the idle entries, then the ones being read.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Sweep {
    in_reading: bool,
    after: Option<u64>,
}

impl Index {
    pub(super) fn new() -> Index {
        Index {
            entries: HashSet::default(),
            idle: BTreeMap::new(),
            reading: BTreeMap::new(),
            bytes: 0,
            reading_bytes: 0,
            next_use: FIRST_USE,
            next_cold: FIRST_USE - 1,
            kept: HashSet::new(),
            epoch: Instant::now(),
        }
    }

    /// The index of `files`, least recently used first, as a scan finds them at start. Built in
    /// one go: the eviction order's nodes come out full (inserted one by one in order, they
    /// would be half full, ~15 bytes an entry more).
    #[expect(
        clippy::mutable_key_type,
        reason = "a Shared hashes and compares by its key, which never changes"
    )]
    pub(super) fn of_files(files: impl ExactSizeIterator<Item = (Key, u64)>) -> Index {
        let mut index = Index::new();
        let mut entries = HashSet::with_capacity_and_hasher(files.len(), Default::default());
        let mut idle = Vec::with_capacity(files.len());
        for (key, size) in files {
            let stamp = index.next_use;
            index.next_use += 1;
            let node = index.node(key, size, stamp);
            index.bytes += size;
            if let Some(replaced) = entries.replace(node.clone()) {
                // The same key twice: the later one stays.
                index.bytes -= replaced.size;
                idle.retain(|(s, _)| *s != replaced.stamp());
            }
            idle.push((stamp, node));
        }
        index.entries = entries;
        index.idle = idle.into_iter().collect();
        index
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Sum of the entries' sizes.
    pub(super) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Bytes that eviction could free now: those of the entries nobody reads.
    pub(super) fn evictable_bytes(&self) -> u64 {
        self.bytes - self.reading_bytes
    }

    pub(super) fn contains(&self, key: &Key) -> bool {
        self.entries.contains(key)
    }

    pub(super) fn size_of(&self, key: &Key) -> Option<u64> {
        self.entries.get(key).map(|e| e.size)
    }

    /// Adds an entry as the most recently used, replacing one of the same key (whose pins then
    /// no longer count).
    pub(super) fn insert(&mut self, key: Key, size: u64) {
        self.remove(&key);
        let stamp = self.next_use;
        self.next_use += 1;
        self.add(key, size, stamp);
    }

    /// Adds an entry as the least recently used, unless its key is known. Whether it was added.
    pub(super) fn insert_cold(&mut self, key: Key, size: u64) -> bool {
        if self.entries.contains(&key) {
            return false;
        }
        let stamp = self.next_cold;
        self.next_cold -= 1;
        self.add(key, size, stamp);
        true
    }

    /// Seconds from the index's epoch to now.
    fn now(&self) -> u32 {
        u32::try_from(self.epoch.elapsed().as_secs()).unwrap_or(u32::MAX)
    }

    /// The stamp the next use will get: every entry admitted from now on has an id at least
    /// this (see [`Index::sweep`]).
    pub(super) fn next_stamp(&self) -> u64 {
        self.next_use
    }

    fn node(&self, key: Key, size: u64, stamp: u64) -> Shared {
        Shared(Arc::new(Node {
            key,
            size,
            id: stamp,
            stamp: AtomicU64::new(stamp),
            touched: AtomicU32::new(self.now()),
            readers: AtomicU32::new(0),
        }))
    }

    fn add(&mut self, key: Key, size: u64, stamp: u64) {
        let kept = self.kept.contains(&key);
        let node = self.node(key, size, stamp);
        self.idle.insert(stamp, node.clone());
        self.entries.insert(node.clone());
        self.bytes += size;
        if kept {
            self.hold(&node.key);
        }
    }

    /// Keeps exactly `keys` from eviction from now on (those not in the index yet, once they
    /// are added): each newly kept entry gains a reader, each no longer kept loses its own.
    /// O(keys that changed).
    pub(super) fn keep(&mut self, keys: HashSet<Key>) {
        let old = std::mem::replace(&mut self.kept, keys);
        let gone: Vec<Key> = old.difference(&self.kept).cloned().collect();
        for key in gone {
            if let Some(id) = self.entries.get(&key).map(|e| e.id) {
                self.unpin(&key, id);
            }
        }
        let new: Vec<Key> = self.kept.difference(&old).cloned().collect();
        for key in new {
            self.hold(&key);
        }
    }

    /// Adds a reader to an entry without marking it used. `None` if it is not there.
    fn hold(&mut self, key: &Key) -> Option<()> {
        let entry = self.entries.get(key)?;
        if entry.readers() == 0 {
            let shared = self.idle.remove(&entry.stamp())?;
            self.reading.insert(entry.stamp(), shared);
            self.reading_bytes += entry.size;
        }
        entry.readers.fetch_add(1, Relaxed);
        Some(())
    }

    /// Takes an entry out, read or not. Its size, if it was there.
    pub(super) fn remove(&mut self, key: &Key) -> Option<u64> {
        let entry = self.entries.take(key)?;
        if entry.readers() == 0 {
            self.idle.remove(&entry.stamp());
        } else {
            self.reading.remove(&entry.stamp());
            self.reading_bytes -= entry.size;
        }
        self.bytes -= entry.size;
        Some(entry.size)
    }

    /// Marks an entry used now and adds a reader. `None` if it is not there.
    pub(super) fn pin(&mut self, key: &Key) -> Option<Pinned> {
        self.hold(key)?;
        self.used(key)
    }

    /// Marks an entry used now, reader or not: it moves to the end of the order it sits in.
    /// `None` if it is not there.
    pub(super) fn used(&mut self, key: &Key) -> Option<Pinned> {
        let now = self.now();
        let entry = self.entries.get(key)?;
        let order = if entry.readers() == 0 {
            &mut self.idle
        } else {
            &mut self.reading
        };
        let shared = order.remove(&entry.stamp())?;
        entry.stamp.store(self.next_use, Relaxed);
        self.next_use += 1;
        order.insert(entry.stamp(), shared);
        let touched = entry.touched.load(Relaxed);
        let touch = u64::from(now.saturating_sub(touched)) >= TOUCH_INTERVAL.as_secs();
        if touch {
            entry.touched.store(now, Relaxed);
        }
        Some(Pinned {
            id: entry.id,
            touch,
        })
    }

    /// The id of an entry (its first stamp): tells it from an earlier entry of the same key.
    pub(super) fn id_of(&self, key: &Key) -> Option<u64> {
        self.entries.get(key).map(|e| e.id)
    }

    /// Takes a reader away (if the entry is still the one pinned); without readers the entry
    /// goes back to its place in the eviction order.
    pub(super) fn unpin(&mut self, key: &Key, id: u64) {
        let Some(entry) = self.entries.get(key) else {
            return;
        };
        if entry.id != id || entry.readers() == 0 {
            return;
        }
        if entry.readers.fetch_sub(1, Relaxed) == 1 {
            if let Some(shared) = self.reading.remove(&entry.stamp()) {
                self.idle.insert(entry.stamp(), shared);
            }
            self.reading_bytes -= entry.size;
        }
    }

    /// Takes out the least recently used entries nobody reads until `to_free` bytes are freed
    /// (or none is left). One `pop_first` per victim: entries being read are not in the way.
    pub(super) fn evict(&mut self, mut to_free: u64) -> Vec<Key> {
        let mut victims = Vec::new();
        while to_free > 0 {
            let Some((_, node)) = self.idle.pop_first() else {
                break;
            };
            if self.entries.remove(&node.key) {
                self.bytes -= node.size;
                to_free = to_free.saturating_sub(node.size);
            }
            // The last handle, once out of `entries`: the key moves out, no copy.
            victims.push(match Arc::try_unwrap(node.0) {
                Ok(node) => node.key,
                Err(shared) => shared.key.clone(),
            });
        }
        victims
    }

    /// Looks at up to `batch` entries from `at` on and removes those `gone` says are (it is given
    /// each entry's key and id: the stamp it was admitted with), then says
    /// where to go on (`None`: every entry was looked at). Entries used while a sweep goes on
    /// may be looked at twice or not at all; the next sweep looks again.
    pub(super) fn sweep(
        &mut self,
        at: Sweep,
        batch: usize,
        gone: impl Fn(&Key, u64) -> bool,
    ) -> Option<Sweep> {
        let order = if at.in_reading {
            &self.reading
        } else {
            &self.idle
        };
        let from = at.after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut last = None;
        let mut doomed = Vec::new();
        for (&stamp, node) in order.range((from, Bound::Unbounded)).take(batch) {
            last = Some(stamp);
            if gone(&node.key, node.id) {
                doomed.push(node.key.clone());
            }
        }
        for key in doomed {
            self.remove(&key);
        }
        match (last, at.in_reading) {
            (Some(after), in_reading) => Some(Sweep {
                in_reading,
                after: Some(after),
            }),
            (None, false) => Some(Sweep {
                in_reading: true,
                after: None,
            }),
            (None, true) => None,
        }
    }
}

#[cfg(test)]
#[path = "index_tests.rs"]
mod tests;
