//! The content store on disk: blobs and manifests by digest, fills in progress, the size limit,
//! and the tag map.
//!
//! Layout under `cache.dir`:
//! ```text
//! blobs/sha256/ab/ab12…        blob bytes, exactly as the registry sent them
//! manifests/sha256/ab/ab12…    "<media type>\n" then the manifest bytes
//! tags/<host>/<repo>/_tags/<tag>  lines "<fetched unix ms> <digest> <size> <media type>"
//! origins/blobs/sha256/ab/ab12…      lines "<host> <repository>": where the registry had the entry
//! origins/manifests/sha256/ab/ab12…  (the same, for manifests)
//! origins/tmp/                 origins being rewritten; its files are removed at start
//! hoard-tmp/                   fills in progress; its files are removed at start
//! pins                         patterns `hoard cache pin` added, one a line
//! .hoard-cache                 marks the folder as hoard's
//! ```
//! hoard opens only a folder that is empty, marked as its own, or laid out as above, and at start
//! removes only the files in `hoard-tmp/` (which carries a marker of its own): a `cache.dir` set
//! to `/` or to a folder of other files is refused, never cleaned.
//!
//! Every write goes to a temp file in `hoard-tmp/`, is fsynced and renamed into place (then the folder
//! is fsynced), so a reader sees a whole verified entry or none, whenever the process dies.
//! Paths are built only from parsed [`Digest`](crate::oci::Digest)s, validated repository names and tags, and checked
//! host names.
//!
//! In memory the store keeps an index of every entry in least-recently-used order, the bytes
//! they hold, the bytes reserved by fills in progress, and the fills themselves. Entries are
//! blobs, manifests and tag records: a tag record counts its file's length, is marked used when
//! a tag is read or written, and goes like the rest (its empty folders stay). `max_size` and
//! `min_free` are enforced when space is reserved: least-recently-used entries that nobody is
//! reading are deleted first, so the folder never holds more than the limit.
//!
//! Where each job is done:
//! - `mod.rs` (here): [`Store`], its shared state and lock, opening, usage, disk warnings, and
//!   the paths and atomic writes of this store's folder.
//! - `key.rs`: what entries and tag folders are named by (`Key`: a digest for blobs and
//!   manifests, a shared path for tag records; [`HostKey`]).
//! - `error.rs`: [`StoreError`], and the blocking pool that disk work runs on.
//! - `layout.rs`: paths, claiming the folder at start, atomic writes, and the file formats that
//!   `hoard cache` reads too (tag lines, origin lines, manifest files).
//! - `index.rs`: the in-memory index in least-recently-used order, with each entry's readers.
//! - `hot.rs`: copies of small blobs and manifests in memory (`cache.memory`), each tied to the
//!   index entry it was read from.
//! - `pins.rs`: the read pins that keep an entry from eviction; serving and keeping the copies
//!   in memory; admitting and forgetting entries.
//! - `evict.rs`: reservations of room for new entries, and eviction.
//! - `scan.rs`: the scan of the folder (tag records sized from their metadata, never read), and
//!   the index it builds at start.
//! - `reconcile.rs`: the periodic reconcile of the index with the disk.
//! - `retain.rs`: the entries `cache.pin` and the pins file keep from eviction (a pinned tag's
//!   record, its manifests and their blobs).
//! - `manifests.rs`, `tags.rs`, `origins.rs`: reading and writing each kind of small file.
//! - `in_flight.rs`: the flights in progress as the store's table holds them: what each asks the
//!   upstream about, and the progress it publishes to its followers.
//! - `flight.rs`: the single flight for blobs, manifests and tags: one request asks the upstream,
//!   the others follow it, for a bounded time.
//! - `fills.rs`: blobs in the single flight: looking a blob up, starting its fill, and the
//!   followers that read it as it grows.
//! - `writer.rs`: writing a fill, verifying its digest, and committing it into the store.
//! - `read.rs`: reading stored files in chunks, from the page cache or the blocking pool.
//!
//! The files that opening the store and `State` need (`key.rs`, `error.rs`, `layout.rs`,
//! `index.rs`, `hot.rs`, `scan.rs`, `in_flight.rs`) never name `Store`; the ones that add its methods do, and
//! this file names none of them (`.ci/layers`: no import loops between files).
//!
//! Locking: one `std` mutex guards `State`. A critical section costs O(log entries) for each
//! entry it changes (an eviction, one per victim) and never touches a file: renames, opens,
//! unlinks and syncs happen before or after it, on the blocking pool. Reconcile, the one job that
//! looks at every entry, takes the lock once per batch of entries.

mod error;
mod evict;
mod fills;
mod flight;
mod hot;
mod in_flight;
mod index;
mod key;
mod layout;
mod manifests;
#[cfg(test)]
mod memory_tests;
mod origins;
mod pins;
mod read;
mod reconcile;
mod retain;
mod scan;
mod tags;
#[cfg(test)]
mod test_util;
mod writer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::config::CacheLimits;

pub use error::StoreError;
use error::blocking;
pub(crate) use fills::{BlobHit, Joined, Stored};
pub(crate) use flight::{Follower, Lookup, Permit, Turn};
pub(crate) use hot::HOT_MAX as MEMORY_OBJECT_MAX;
use hot::Hot;
use in_flight::Flights;
pub(crate) use in_flight::{FlightKey, FlightState, Progress};
use index::Index;
pub use key::HostKey;
pub(crate) use key::Key;
pub use layout::{
    ADDRESSES_FILE, Origin, TMP_DIR, TMP_MARKER, TagEntry, content_path, parse_origin_line,
    parse_tag_line,
};
pub(crate) use layout::{
    CACHE_MARKER, format_tag_line, split_manifest_file, write_file_atomically,
};
pub use manifests::{MAX_MANIFEST_SIZE, StoredManifest};
pub(crate) use origins::add_origin;
pub(crate) use pins::ReadPin;
pub(crate) use read::{FileChunks, chunk_len, read_at};
pub(crate) use retain::kept_keys as pinned_keys;
pub use retain::{PINS_FILE, read_pins};
pub(crate) use writer::BlobWriter;

/// Disk errors are logged at most this often, with a count of those not logged.
const DISK_WARNING_INTERVAL: Duration = Duration::from_secs(60);

/// What the store's lock guards.
#[derive(Debug)]
struct State {
    /// Every entry, with its size and place in least-recently-used order.
    index: Index,
    /// Copies of small entries in memory.
    hot: Hot,
    /// Bytes promised to fills in progress (their temp files count against the limit).
    reserved: u64,
    /// The single flight: blob fills, manifest and tag fetches in progress, for followers to
    /// join.
    flights: Flights,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    tmp: PathBuf,
    limits: CacheLimits,
    state: Mutex<State>,
    disk_warnings: Throttle,
    evictions: AtomicU64,
}

/// The on-disk store. Cloning gives another handle to the same store.
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

/// How much the store holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub entries: usize,
    pub bytes: u64,
    pub reserved: u64,
    pub fills: usize,
    /// Bytes of the copies of small entries in memory.
    pub memory: u64,
}

impl Store {
    /// Opens (creating if needed) the store at `root`, removes leftovers of unfinished fills, and
    /// builds the index from what is on disk, oldest modification time least recently used.
    pub fn open(root: &Path, limits: CacheLimits) -> Result<Store, StoreError> {
        let tmp = layout::claim_root(root)?;
        let index = scan::index_at_start(root);
        let store = Store {
            inner: Arc::new(Inner {
                root: root.to_owned(),
                tmp,
                limits,
                state: Mutex::new(State {
                    index,
                    hot: Hot::new(limits.memory),
                    reserved: 0,
                    flights: HashMap::new(),
                }),
                disk_warnings: Throttle::default(),
                evictions: AtomicU64::new(0),
            }),
        };
        // A lowered limit applies at once.
        let victims = store.evict_for(0).unwrap_or_default();
        store.delete(&victims);
        Ok(store)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves State consistent before anything that could panic.
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How much the store holds now.
    pub fn usage(&self) -> Usage {
        let state = self.lock();
        Usage {
            entries: state.index.len(),
            bytes: state.index.bytes(),
            reserved: state.reserved,
            fills: state
                .flights
                .keys()
                .filter(|key| matches!(key, FlightKey::Blob(_)))
                .count(),
            memory: state.hot.bytes(),
        }
    }

    /// Path of an entry's file.
    pub(crate) fn path(&self, key: &Key) -> PathBuf {
        layout::entry_path(&self.inner.root, key)
    }

    /// Path of the file listing where an entry came from; tag records have none.
    fn origin_path(&self, key: &Key) -> Option<PathBuf> {
        layout::origin_path(&self.inner.root, key)
    }

    /// Writes `data` to `dest` atomically, on the blocking pool.
    async fn write_atomically(&self, dest: &Path, data: Vec<u8>) -> Result<(), StoreError> {
        let tmp = self.inner.tmp.clone();
        let dest = dest.to_owned();
        blocking(move || layout::write_file_atomically(&tmp, &dest, &data)).await
    }

    /// The size limit in force.
    pub(crate) fn limits(&self) -> CacheLimits {
        self.inner.limits
    }

    /// Entries evicted since start.
    pub(crate) fn evictions(&self) -> u64 {
        self.inner.evictions.load(Ordering::Relaxed)
    }

    /// Whether a file can be created in the store's temp folder right now (for `/healthz`).
    pub(crate) fn writable(&self) -> bool {
        tempfile::Builder::new()
            .prefix("health-")
            .tempfile_in(&self.inner.tmp)
            .is_ok()
    }

    /// Logs a disk problem, at most once a minute.
    pub(crate) fn disk_warning(&self, what: &str, err: &dyn std::fmt::Display) {
        self.inner.disk_warnings.warn(what, err);
    }
}

/// Logs a recurring problem at most once per interval, counting the ones it kept quiet.
#[derive(Debug, Default)]
struct Throttle {
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl Throttle {
    fn warn(&self, what: &str, err: &dyn std::fmt::Display) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|t| t.elapsed() < DISK_WARNING_INTERVAL) {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        *last = Some(Instant::now());
        let suppressed = self.suppressed.swap(0, Ordering::Relaxed);
        tracing::warn!(
            error = %err,
            suppressed,
            "{what}; caching is off for the affected responses"
        );
    }
}
