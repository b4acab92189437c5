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
//! .hoard-cache                 marks the folder as hoard's
//! ```
//! hoard opens only a folder that is empty, marked as its own, or laid out as above, and at start
//! removes only the files in `hoard-tmp/` (which carries a marker of its own): a `cache.dir` set
//! to `/` or to a folder of other files is refused, never cleaned.
//!
//! Every write goes to a temp file in `hoard-tmp/`, is fsynced and renamed into place (then the folder
//! is fsynced), so a reader sees a whole verified entry or none, whenever the process dies.
//! Paths are built only from parsed [`Digest`]s, validated repository names and tags, and checked
//! host names.
//!
//! In memory the store keeps an index of every entry in least-recently-used order, the bytes
//! they hold, the bytes reserved by fills in progress, and the fills themselves. `max_size` and
//! `min_free` are enforced when space is reserved: least-recently-used entries that nobody is
//! reading are deleted first, so the folder never holds more than the limit.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use lru::LruCache;
use tokio::sync::watch;

mod flight;

pub(crate) use flight::{Flight, FlightKey, Flights};

use crate::oci::{Algorithm, Digest, Hasher, valid_repository, valid_tag};

/// Manifests larger than this are not cached (registries themselves refuse above 4 MiB).
pub const MAX_MANIFEST_SIZE: usize = 4 << 20;

/// Bytes a fill writes at once. Followers see data in steps of this size; 256 KiB keeps the
/// syscalls few (4 per MiB) while a follower lags the upstream by at most ~1 ms at 250 MiB/s.
const WRITE_BATCH: usize = 256 << 10;

/// Buffers per `writev` (Linux's IOV_MAX). An upstream sending tiny frames gets its batch
/// written early rather than refused.
const MAX_SLICES: usize = 1024;

/// How often the modification time of an entry that is being served is refreshed. The mtime is
/// the "last used" time that survives restarts (LRU order at start, `cache prune --older-than`);
/// refreshing it at most every 10 minutes keeps hits free of metadata writes.
const TOUCH_INTERVAL: Duration = Duration::from_secs(600);

/// Origins kept per entry; past it the oldest is dropped. 32 lines of at most ~520 bytes (a
/// host name and a 255-byte repository name) keep an origins file under 17 KiB.
const MAX_ORIGINS: usize = 32;

/// Locks for the read-modify-write of origins files, striped by the digest's first byte so that
/// the origins of different entries are written in parallel.
static ORIGIN_LOCKS: [Mutex<()>; 16] = [const { Mutex::new(()) }; 16];

/// Disk errors are logged at most this often, with a count of those not logged.
const DISK_WARNING_INTERVAL: Duration = Duration::from_secs(60);

/// Store errors: all internal (disk) problems, or a full store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("content does not match digest {0}")]
    DigestMismatch(Digest),
    #[error("{0:?} is not a usable cache key")]
    BadKey(String),
    #[error("no room for {0} more bytes within the size limit")]
    Full(u64),
    #[error(
        "{path} is not hoard's cache folder ({why}); give cache.dir a folder of its own, \
         empty or made by hoard"
    )]
    NotOurs { path: PathBuf, why: String },
}

/// The temp folder of fills in progress, under the store's root.
pub const TMP_DIR: &str = "hoard-tmp";

/// The file that marks a folder as hoard's cache (top level) or temp folder (in [`TMP_DIR`]).
const CACHE_MARKER: &str = ".hoard-cache";
/// The marker in [`TMP_DIR`]: hoard removes files there only when it is present.
pub const TMP_MARKER: &str = ".hoard-tmp";

/// What may sit at the top of the store's root: hoard's own names, the `tmp/` of stores made
/// before [`TMP_DIR`], and a file system's `lost+found` (the root may be a mount point).
const OWN_NAMES: [&str; 8] = [
    "blobs",
    "manifests",
    "tags",
    "origins",
    TMP_DIR,
    CACHE_MARKER,
    "tmp",
    "lost+found",
];

/// Makes sure `root` is hoard's (or empty, then marks it), and empties its temp folder of the
/// leftovers of unfinished fills. Returns the temp folder.
fn claim_root(root: &Path) -> Result<PathBuf, StoreError> {
    let not_ours = |why: String| StoreError::NotOurs {
        path: root.to_owned(),
        why,
    };
    std::fs::create_dir_all(root).map_err(io_error("create", root))?;
    let canonical = root.canonicalize().map_err(io_error("resolve", root))?;
    if canonical.parent().is_none() {
        return Err(not_ours("it is the file system's root".into()));
    }
    let entries = std::fs::read_dir(root).map_err(io_error("list", root))?;
    for entry in entries {
        let name = entry.map_err(io_error("list", root))?.file_name();
        if !OWN_NAMES.iter().any(|own| name == *own) {
            return Err(not_ours(format!(
                "it holds {name:?}, which hoard did not make"
            )));
        }
    }
    let marker = root.join(CACHE_MARKER);
    if !marker.exists() {
        std::fs::write(&marker, b"hoard's cache folder\n").map_err(io_error("mark", &marker))?;
    }
    // Stores made before hoard-tmp/ kept fills in tmp/: those files are leftovers too.
    let legacy = root.join("tmp");
    if legacy.is_dir() {
        remove_files_in(&legacy, None)?;
        let _ = std::fs::remove_dir(&legacy);
    }
    let tmp = root.join(TMP_DIR);
    std::fs::create_dir_all(&tmp).map_err(io_error("create", &tmp))?;
    let tmp_marker = tmp.join(TMP_MARKER);
    if !tmp_marker.exists() {
        let holds_files = std::fs::read_dir(&tmp)
            .map_err(io_error("list", &tmp))?
            .next()
            .is_some();
        if holds_files {
            return Err(not_ours(format!(
                "{TMP_DIR}/ holds files but not hoard's marker"
            )));
        }
        std::fs::write(&tmp_marker, b"").map_err(io_error("mark", &tmp_marker))?;
    }
    // Whatever is in the temp folder was being written when hoard stopped: never verified.
    remove_files_in(&tmp, Some(TMP_MARKER))?;
    Ok(tmp)
}

/// Removes the regular files directly in `dir` (not `keep`); folders and links stay.
fn remove_files_in(dir: &Path, keep: Option<&str>) -> Result<(), StoreError> {
    for entry in std::fs::read_dir(dir).map_err(io_error("list", dir))? {
        let entry = entry.map_err(io_error("list", dir))?;
        if keep.is_some_and(|keep| entry.file_name() == keep) {
            continue;
        }
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            let path = entry.path();
            std::fs::remove_file(&path).map_err(io_error("remove", &path))?;
        }
    }
    Ok(())
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.to_owned();
    move |source| StoreError::Io {
        action,
        path,
        source,
    }
}

/// What the store may use of its disk.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The most bytes all entries and fills in progress may hold.
    pub max_size: u64,
    /// Free space to leave on the file system holding the store.
    pub min_free: u64,
}

/// An entry of the store: a blob or a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    Blob(Digest),
    Manifest(Digest),
}

#[derive(Debug)]
struct Entry {
    size: u64,
    /// Responses reading the entry right now; an entry with readers is never evicted.
    readers: Arc<AtomicUsize>,
    touched: Instant,
}

#[derive(Debug)]
struct State {
    /// Every entry, most recently used first.
    lru: LruCache<Key, Entry>,
    /// Sum of the entries' sizes.
    bytes: u64,
    /// Bytes promised to fills in progress (their temp files count against the limit).
    reserved: u64,
    /// Blob fills in progress, for followers to join.
    fills: HashMap<Digest, Arc<FillShared>>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    tmp: PathBuf,
    limits: Limits,
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
}

impl Store {
    /// Entries evicted since start.
    pub fn evictions(&self) -> u64 {
        self.inner.evictions.load(Ordering::Relaxed)
    }

    /// Whether a file can be created in the store's temp folder right now (for `/healthz`).
    pub fn writable(&self) -> bool {
        tempfile::Builder::new()
            .prefix("health-")
            .tempfile_in(&self.inner.tmp)
            .is_ok()
    }
}

/// A stored blob, open for reading. The entry is not evicted while this (or the [`ReadPin`]
/// taken from it) lives.
#[derive(Debug)]
pub struct BlobHit {
    pub file: std::fs::File,
    pub len: u64,
    pub pin: ReadPin,
}

/// Keeps an entry from eviction while a response reads it.
#[derive(Debug)]
pub struct ReadPin(Arc<AtomicUsize>);

impl Drop for ReadPin {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A manifest found in the store.
#[derive(Debug, Clone)]
pub struct StoredManifest {
    pub media_type: String,
    pub bytes: Bytes,
}

/// One tag → digest mapping, as learned from the upstream at `fetched`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagEntry {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    pub fetched: SystemTime,
}

impl TagEntry {
    /// Whether the mapping may still be served without asking the upstream.
    pub fn is_fresh(&self, ttl: Duration) -> bool {
        SystemTime::now()
            .duration_since(self.fetched)
            .is_ok_and(|age| age < ttl)
    }
}

/// A registry host as used in tag paths: a DNS name or IP literal, with a port unless 443.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostKey(String);

impl HostKey {
    /// The folder name under `tags/`: `host`, or `host:port` unless the port is 443.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Builds the key from a CONNECT authority's parts; `None` for anything not a plain host.
    pub fn new(host: &str, port: u16) -> Option<HostKey> {
        let host = host.to_ascii_lowercase();
        let valid = crate::net::is_dns_name(&host) || host.parse::<std::net::IpAddr>().is_ok();
        if !valid || host.contains('/') {
            return None;
        }
        Some(HostKey(if port == 443 {
            host
        } else {
            format!("{host}:{port}")
        }))
    }
}

/// What the store knows of a blob.
#[derive(Debug)]
pub enum BlobLookup {
    /// Stored: serve it.
    Hit(BlobHit),
    /// Being filled: follow the fill.
    Filling(Follower),
    /// Neither: the caller is now the one to fill it (or to drop the permit).
    Miss(FillPermit),
}

impl Store {
    /// Opens (creating if needed) the store at `root`, removes leftovers of unfinished fills, and
    /// builds the index from what is on disk, oldest modification time least recently used.
    pub fn open(root: &Path, limits: Limits) -> Result<Store, StoreError> {
        let tmp = claim_root(root)?;
        for dir in [
            root.join("blobs"),
            root.join("manifests"),
            root.join("tags"),
        ] {
            std::fs::create_dir_all(&dir).map_err(io_error("create", &dir))?;
        }
        // Origins that were being rewritten when hoard stopped: leftovers, like unfinished fills.
        let origins_tmp = root.join("origins").join("tmp");
        if origins_tmp.is_dir() {
            remove_files_in(&origins_tmp, None)?;
        }

        let mut found = scan(root);
        found.sort_by_key(|f| f.modified);
        let mut lru = LruCache::unbounded();
        let mut bytes = 0;
        for file in found {
            bytes += file.size;
            lru.put(file.key, new_entry(file.size));
        }
        let store = Store {
            inner: Arc::new(Inner {
                root: root.to_owned(),
                tmp,
                limits,
                state: Mutex::new(State {
                    lru,
                    bytes,
                    reserved: 0,
                    fills: HashMap::new(),
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
            entries: state.lru.len(),
            bytes: state.bytes,
            reserved: state.reserved,
            fills: state.fills.len(),
        }
    }

    /// The size limit in force.
    pub fn limits(&self) -> Limits {
        self.inner.limits
    }

    /// Path of an entry's file.
    pub fn path(&self, key: &Key) -> PathBuf {
        match key {
            Key::Blob(d) => content_path(&self.inner.root.join("blobs"), d),
            Key::Manifest(d) => content_path(&self.inner.root.join("manifests"), d),
        }
    }

    /// Path of the file listing where an entry came from.
    fn origin_path(&self, key: &Key) -> PathBuf {
        let origins = self.inner.root.join("origins");
        match key {
            Key::Blob(d) => content_path(&origins.join("blobs"), d),
            Key::Manifest(d) => content_path(&origins.join("manifests"), d),
        }
    }

    fn tag_path(&self, host: &HostKey, repo: &str, tag: &str) -> Result<PathBuf, StoreError> {
        // Checked again here so no caller can build a path from an unchecked name.
        if !valid_repository(repo) || !valid_tag(tag) {
            return Err(StoreError::BadKey(format!("{repo}:{tag}")));
        }
        Ok(self
            .inner
            .root
            .join("tags")
            .join(&host.0)
            .join(repo)
            .join("_tags")
            .join(tag))
    }

    /// Logs a disk problem, at most once a minute.
    pub fn disk_warning(&self, what: &str, err: &dyn std::fmt::Display) {
        self.inner.disk_warnings.warn(what, err);
    }

    /// Marks an entry used and pins it for reading. `None` if it is not stored.
    fn pin(&self, key: &Key) -> Option<ReadPin> {
        let mut state = self.lock();
        let entry = state.lru.get_mut(key)?;
        entry.readers.fetch_add(1, Ordering::AcqRel);
        let pin = ReadPin(entry.readers.clone());
        if entry.touched.elapsed() >= TOUCH_INTERVAL {
            entry.touched = Instant::now();
            let path = self.path(key);
            tokio::task::spawn_blocking(move || {
                let _ = std::fs::File::options()
                    .write(true)
                    .open(path)
                    .and_then(|f| f.set_modified(SystemTime::now()));
            });
        }
        Some(pin)
    }

    /// Drops an entry whose file has gone (removed by `hoard cache prune`, say).
    fn forget(&self, key: &Key) {
        let mut state = self.lock();
        if let Some(entry) = state.lru.pop(key) {
            state.bytes -= entry.size;
        }
    }

    /// Looks a blob up: stored, being filled, or to be filled by the caller.
    pub async fn lookup_blob(&self, digest: &Digest) -> BlobLookup {
        let key = Key::Blob(digest.clone());
        for _ in 0..2 {
            if let Some(pin) = self.pin(&key) {
                match open_sized(&self.path(&key)).await {
                    Ok((file, len)) => return BlobLookup::Hit(BlobHit { file, len, pin }),
                    Err(_) => self.forget(&key),
                }
                continue;
            }
            let mut state = self.lock();
            if state.lru.contains(&key) {
                continue; // a fill finished in between
            }
            if let Some(shared) = state.fills.get(digest) {
                return BlobLookup::Filling(Follower {
                    store: self.clone(),
                    shared: shared.clone(),
                });
            }
            let shared = Arc::new(FillShared::new(digest.clone()));
            state.fills.insert(digest.clone(), shared.clone());
            return BlobLookup::Miss(FillPermit {
                store: self.clone(),
                shared,
                done: false,
            });
        }
        // The file vanished twice under our feet: fill without followers.
        BlobLookup::Miss(FillPermit {
            store: self.clone(),
            shared: Arc::new(FillShared::new(digest.clone())),
            done: false,
        })
    }

    /// The length of a blob if it is stored or being filled with a known length.
    pub fn blob_length(&self, digest: &Digest) -> Option<u64> {
        let state = self.lock();
        if let Some(entry) = state.lru.peek(&Key::Blob(digest.clone())) {
            return Some(entry.size);
        }
        let fill = state.fills.get(digest)?;
        let progress = fill.progress.borrow();
        match progress.state {
            FillState::Running => progress.length,
            _ => None,
        }
    }

    /// Reads a stored manifest.
    pub async fn manifest(&self, digest: &Digest) -> Option<StoredManifest> {
        let key = Key::Manifest(digest.clone());
        let _pin = self.pin(&key)?;
        let Ok(data) = tokio::fs::read(self.path(&key)).await else {
            self.forget(&key);
            return None;
        };
        let newline = data.iter().position(|b| *b == b'\n')?;
        let media_type = std::str::from_utf8(&data[..newline]).ok()?.to_owned();
        let mut bytes = Bytes::from(data);
        Some(StoredManifest {
            media_type,
            bytes: bytes.split_off(newline + 1),
        })
    }

    /// Stores a manifest after checking it against `digest`.
    pub async fn put_manifest(
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
        if media_type.contains('\n') {
            return Err(StoreError::BadKey(media_type.to_owned()));
        }
        let mut data = Vec::with_capacity(media_type.len() + 1 + bytes.len());
        data.extend_from_slice(media_type.as_bytes());
        data.push(b'\n');
        data.extend_from_slice(bytes);
        let size = data.len() as u64;
        let reservation = self.reserve(size).await?;
        let key = Key::Manifest(digest.clone());
        self.write_atomically(&self.path(&key), data).await?;
        self.admit(key, size, reservation);
        Ok(())
    }

    /// Records a new entry in the index, turning its reservation into stored bytes.
    fn admit(&self, key: Key, size: u64, reservation: Reservation) {
        let mut state = self.lock();
        state.reserved -= reservation.take();
        if let Some(old) = state.lru.put(key, new_entry(size)) {
            state.bytes -= old.size;
        }
        state.bytes += size;
    }

    /// The known mappings of a tag (one per media type).
    pub async fn tag(&self, host: &HostKey, repo: &str, tag: &str) -> Vec<TagEntry> {
        let Ok(path) = self.tag_path(host, repo, tag) else {
            return Vec::new();
        };
        match tokio::fs::read_to_string(&path).await {
            Ok(text) => text.lines().filter_map(parse_tag_line).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Records a mapping, replacing an earlier one of the same media type.
    pub async fn put_tag(
        &self,
        host: &HostKey,
        repo: &str,
        tag: &str,
        entry: TagEntry,
    ) -> Result<(), StoreError> {
        let path = self.tag_path(host, repo, tag)?;
        if entry.media_type.contains(char::is_whitespace) {
            return Err(StoreError::BadKey(entry.media_type));
        }
        let mut entries = self.tag(host, repo, tag).await;
        entries.retain(|e| e.media_type != entry.media_type);
        entries.push(entry);
        let text: String = entries.iter().map(format_tag_line).collect();
        self.write_atomically(&path, text.into_bytes()).await
    }

    /// Forgets a tag altogether (its upstream mapping changed through hoard, so the next pull
    /// must ask the upstream).
    pub async fn drop_tag(&self, host: &HostKey, repo: &str, tag: &str) -> Result<(), StoreError> {
        let path = self.tag_path(host, repo, tag)?;
        match tokio::fs::remove_file(&path).await {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                Err(io_error("remove", &path)(err))
            }
            _ => Ok(()),
        }
    }

    /// Where the registry had an entry: `(host, repository)` pairs, oldest first. Empty when
    /// nothing is known, as for entries stored by a hoard that did not record origins.
    pub async fn origins(&self, key: &Key) -> Vec<(String, String)> {
        match tokio::fs::read_to_string(self.origin_path(key)).await {
            Ok(text) => text.lines().filter_map(parse_origin_line).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Records, in the background, that the registry `host` has the entry `key` in repository
    /// `repo` (it served it or confirmed it there). Kept next to the entry, at most
    /// [`MAX_ORIGINS`] of them, and removed with it when it is evicted.
    pub fn note_origin(&self, key: Key, host: &HostKey, repo: &str) {
        if !valid_repository(repo) {
            return;
        }
        let line = format!("{} {repo}", host.as_str());
        let (store, path) = (self.clone(), self.origin_path(&key));
        // Their own temp folder: the store's is for content, and a test (or an operator) that
        // finds it empty after a fill should not see an origins file being rewritten.
        let tmp = self.inner.root.join("origins").join("tmp");
        let stripe = match &key {
            Key::Blob(d) | Key::Manifest(d) => {
                usize::from(d.hex().bytes().next().unwrap_or(0)) % ORIGIN_LOCKS.len()
            }
        };
        tokio::spawn(async move {
            let written = blocking(move || {
                let _serial = ORIGIN_LOCKS[stripe]
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                std::fs::create_dir_all(&tmp).map_err(io_error("create", &tmp))?;
                add_origin_line(&tmp, &path, &line)
            })
            .await;
            if let Err(err) = written {
                store.disk_warning("cannot record where an entry came from", &err);
            }
        });
    }

    async fn write_atomically(&self, dest: &Path, data: Vec<u8>) -> Result<(), StoreError> {
        let tmp = self.inner.tmp.clone();
        let dest = dest.to_owned();
        blocking(move || write_file_atomically(&tmp, &dest, &data)).await
    }

    /// Promises `need` bytes to a new entry, deleting least-recently-used entries if the limit
    /// or the free-space floor requires it. Fails, deleting nothing, when even that is not enough.
    pub async fn reserve(&self, need: u64) -> Result<Reservation, StoreError> {
        let victims = self.evict_for(need)?;
        let reservation = Reservation {
            store: self.clone(),
            amount: need,
        };
        if !victims.is_empty() {
            let store = self.clone();
            blocking(move || {
                store.delete(&victims);
                Ok(())
            })
            .await?;
        }
        Ok(reservation)
    }

    /// Chooses entries to evict so that `need` more bytes fit, takes them out of the index and
    /// adds `need` to the reservations. Returns the files to delete.
    fn evict_for(&self, need: u64) -> Result<Vec<PathBuf>, StoreError> {
        let available = available_space(&self.inner.root);
        let limits = self.inner.limits;
        let mut state = self.lock();
        // Checked: `need` comes from a Content-Length, and a sum that wrapped would fit anything.
        let (Some(total), Some(floor)) = (
            [state.bytes, state.reserved, need]
                .into_iter()
                .try_fold(0u64, u64::checked_add),
            [need, state.reserved, limits.min_free]
                .into_iter()
                .try_fold(0u64, u64::checked_add),
        ) else {
            return Err(StoreError::Full(need));
        };
        let over_limit = total.saturating_sub(limits.max_size);
        let under_floor = available.map_or(0, |available| floor.saturating_sub(available));
        let mut to_free = over_limit.max(under_floor);
        if to_free > 0 {
            let evictable: u64 = state
                .lru
                .iter()
                .filter(|(_, e)| e.readers.load(Ordering::Acquire) == 0)
                .map(|(_, e)| e.size)
                .sum();
            if evictable < to_free {
                return Err(StoreError::Full(need));
            }
        }
        let mut victims = Vec::new();
        while to_free > 0 {
            // Least recently used first, skipping entries being read.
            let Some(key) = state
                .lru
                .iter()
                .rev()
                .find(|(_, e)| e.readers.load(Ordering::Acquire) == 0)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(entry) = state.lru.pop(&key) {
                state.bytes -= entry.size;
                to_free = to_free.saturating_sub(entry.size);
                victims.push(self.path(&key));
                victims.push(self.origin_path(&key));
                self.inner.evictions.fetch_add(1, Ordering::Relaxed);
            }
        }
        state.reserved += need;
        Ok(victims)
    }

    fn delete(&self, victims: &[PathBuf]) {
        for path in victims {
            tracing::debug!(path = %path.display(), "evicting");
            if let Err(err) = std::fs::remove_file(path)
                && err.kind() != std::io::ErrorKind::NotFound
            {
                self.disk_warning("cannot evict", &err);
            }
        }
    }

    /// Brings the index in line with the disk: entries removed by `hoard cache` commands are
    /// dropped, files that appeared are added. Run now and then; costs one directory scan.
    pub async fn reconcile(&self) {
        let root = self.inner.root.clone();
        let scan_started = Instant::now();
        let Ok(found) = tokio::task::spawn_blocking(move || scan(&root)).await else {
            return;
        };
        let on_disk: HashMap<Key, u64> = found.into_iter().map(|f| (f.key, f.size)).collect();
        let mut state = self.lock();
        // Entries admitted while the scan ran may have been missed by it: they stay.
        let gone: Vec<Key> = state
            .lru
            .iter()
            .filter(|(k, e)| !on_disk.contains_key(*k) && e.touched < scan_started)
            .map(|(k, _)| k.clone())
            .collect();
        for key in gone {
            if let Some(entry) = state.lru.pop(&key) {
                state.bytes -= entry.size;
            }
        }
        for (key, size) in on_disk {
            if !state.lru.contains(&key) {
                // Unknown until now: least recently used.
                state.lru.push(key.clone(), new_entry(size));
                state.lru.demote(&key);
                state.bytes += size;
            }
        }
    }
}

/// Writes `data` to `dest` through a synced temp file in `tmp`, then syncs `dest`'s folder.
fn write_file_atomically(tmp: &Path, dest: &Path, data: &[u8]) -> Result<(), StoreError> {
    use std::io::Write;
    let mut temp = tempfile::Builder::new()
        .prefix("put-")
        .tempfile_in(tmp)
        .map_err(io_error("create temp file in", tmp))?;
    temp.write_all(data)
        .and_then(|()| temp.as_file().sync_all())
        .map_err(io_error("write", temp.path()))?;
    let parent = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io_error("create", parent))?;
    temp.into_temp_path()
        .persist(dest)
        .map_err(|e| io_error("rename into", dest)(e.error))?;
    sync_dir(parent)
}

/// Adds `line` to the origins file at `path` unless it is there, dropping the oldest lines past
/// [`MAX_ORIGINS`]. The caller holds the file's lock.
fn add_origin_line(tmp: &Path, path: &Path, line: &str) -> Result<(), StoreError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(err) => return Err(io_error("read", path)(err)),
    };
    let mut lines: Vec<&str> = text
        .lines()
        .filter(|l| parse_origin_line(l).is_some())
        .collect();
    if lines.contains(&line) {
        return Ok(());
    }
    if lines.len() >= MAX_ORIGINS {
        lines.drain(..=lines.len() - MAX_ORIGINS);
    }
    lines.push(line);
    let mut data = lines.join("\n");
    data.push('\n');
    write_file_atomically(tmp, path, data.as_bytes())
}

/// One line of an origins file, `<host> <repository>`: a host key's characters (name or address,
/// `:port`) and a valid repository name. Anything else is `None`, and ignored.
pub fn parse_origin_line(line: &str) -> Option<(String, String)> {
    let (host, repo) = line.split_once(' ')?;
    let host_ok = !host.is_empty()
        && host.len() <= 300
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
    (host_ok && valid_repository(repo)).then(|| (host.to_owned(), repo.to_owned()))
}

fn new_entry(size: u64) -> Entry {
    Entry {
        size,
        readers: Arc::new(AtomicUsize::new(0)),
        touched: Instant::now(),
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| StoreError::Io {
            action: "finish a disk task for",
            path: PathBuf::new(),
            source: std::io::Error::other(e),
        })?
}

/// Writes every buffer, in order, with as few `writev` calls as the kernel allows.
fn write_all_vectored(mut file: &std::fs::File, buffers: &[Bytes]) -> std::io::Result<()> {
    let mut slices: Vec<std::io::IoSlice<'_>> =
        buffers.iter().map(|b| std::io::IoSlice::new(b)).collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        let some = rest.len().min(MAX_SLICES);
        match std::io::Write::write_vectored(&mut file, &rest[..some]) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => std::io::IoSlice::advance_slices(&mut rest, n),
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

async fn open_sized(path: &Path) -> std::io::Result<(std::fs::File, u64)> {
    let path = path.to_owned();
    let opened = tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(path)?;
        let len = file.metadata()?.len();
        Ok((file, len))
    });
    opened.await.map_err(std::io::Error::other)?
}

/// Reads up to `len` bytes of `file` at `offset`, straight into the buffer it returns: no
/// zeroing, and no copy through a second buffer as `tokio::fs::File` makes. Shorter than `len`
/// only at the end of the file. It may wait for the disk: run it on the blocking pool unless
/// [`in_page_cache`] said the range is in memory.
fn pread_exact(file: &std::fs::File, offset: u64, len: usize) -> std::io::Result<Bytes> {
    let mut buf = Vec::with_capacity(len);
    while buf.len() < len {
        let at = offset + buf.len() as u64;
        match rustix::io::pread(file, rustix::buffer::spare_capacity(&mut buf), at) {
            Ok(0) => break,
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => {}
            Err(err) => return Err(err.into()),
        }
    }
    buf.truncate(len);
    Ok(Bytes::from(buf))
}

/// [`pread_exact`] started on the blocking pool.
fn spawn_pread(
    file: Arc<std::fs::File>,
    offset: u64,
    len: usize,
) -> tokio::task::JoinHandle<std::io::Result<Bytes>> {
    tokio::task::spawn_blocking(move || pread_exact(&file, offset, len))
}

/// [`pread_exact`] on the blocking pool.
pub async fn read_at(file: Arc<std::fs::File>, offset: u64, len: usize) -> std::io::Result<Bytes> {
    spawn_pread(file, offset, len)
        .await
        .map_err(std::io::Error::other)?
}

/// Whether the page cache holds the last byte of `[offset, offset + len)`, asked with a
/// one-byte `RWF_NOWAIT` read (false too where the kernel or file system cannot say). A file read
/// in order is then cached up to there, but for pages evicted one by one, which are rare.
fn in_page_cache(file: &std::fs::File, offset: u64, len: usize) -> bool {
    let Some(last) = (offset + len as u64).checked_sub(1) else {
        return false;
    };
    let mut byte = [0u8; 1];
    let mut slices = [std::io::IoSliceMut::new(&mut byte)];
    let flags = rustix::io::ReadWriteFlags::NOWAIT;
    matches!(rustix::io::preadv2(file, &mut slices, last, flags), Ok(1))
}

/// The size of the next read when `remaining` bytes are left: at most `chunk`.
pub fn chunk_len(remaining: u64, chunk: usize) -> usize {
    usize::try_from(remaining).map_or(chunk, |n| n.min(chunk))
}

/// `[start, end)` of a file as chunks of at most `chunk` bytes. A chunk in the page cache is
/// read at once on the task's thread: a copy from memory, with no hand-off to another thread
/// and back (on a hit over h1 that saved a tenth of hoard's CPU time per GiB, and 16 parallel
/// hits a sixth). Any other chunk is read on the blocking pool.
pub struct FileChunks {
    file: Arc<std::fs::File>,
    /// Where the next read starts.
    next: u64,
    end: u64,
    chunk: usize,
    reading: Option<tokio::task::JoinHandle<std::io::Result<Bytes>>>,
}

impl FileChunks {
    pub fn new(file: std::fs::File, start: u64, end: u64, chunk: usize) -> FileChunks {
        FileChunks {
            file: Arc::new(file),
            next: start,
            end,
            chunk,
            reading: None,
        }
    }

    /// A chunk as read: an empty one means the file ended before `end`. After an error the
    /// stream ends.
    fn checked(&mut self, read: std::io::Result<Bytes>) -> std::io::Result<Bytes> {
        let read = match read {
            Ok(bytes) if bytes.is_empty() => Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the file is shorter than its entry",
            )),
            other => other,
        };
        if read.is_err() {
            self.next = self.end;
        }
        read
    }
}

impl futures_util::Stream for FileChunks {
    type Item = std::io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let reading = match self.reading.as_mut() {
            Some(reading) => reading,
            None => {
                if self.next >= self.end {
                    return Poll::Ready(None);
                }
                let (at, len) = (self.next, chunk_len(self.end - self.next, self.chunk));
                self.next += len as u64;
                if in_page_cache(&self.file, at, len) {
                    let read = pread_exact(&self.file, at, len);
                    return Poll::Ready(Some(self.checked(read)));
                }
                let reading = spawn_pread(self.file.clone(), at, len);
                self.reading.insert(reading)
            }
        };
        let read = ready!(Pin::new(reading).poll(cx));
        self.reading = None;
        let read = read.map_err(std::io::Error::other).and_then(|r| r);
        Poll::Ready(Some(self.checked(read)))
    }
}

impl Drop for FileChunks {
    fn drop(&mut self) {
        if let Some(reading) = self.reading.take() {
            reading.abort();
        }
    }
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error("sync", dir))
}

/// Bytes available to an unprivileged writer on the file system of `path`.
fn available_space(path: &Path) -> Option<u64> {
    let stat = rustix::fs::statvfs(path).ok()?;
    Some(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// `dir/<algorithm>/<first two hex>/<hex>`
pub fn content_path(dir: &Path, digest: &Digest) -> PathBuf {
    let hex = digest.hex();
    dir.join(digest.algorithm().as_str())
        .join(&hex[..2])
        .join(hex)
}

/// A file of the store found by a scan.
#[derive(Debug)]
pub struct Found {
    pub key: Key,
    pub size: u64,
    pub modified: SystemTime,
}

/// Folders listed at once when scanning. With a cold page cache, a scan waits on one metadata
/// read per entry; 16 in flight let the disk work in parallel (100,000 entries: ~0.8 s cold
/// instead of ~1.9 s one by one, measured by `cargo bench --bench store_startup`).
const SCAN_THREADS: usize = 16;

/// Lists every entry file under `root` (blobs and manifests), ignoring anything whose name is
/// not a digest in its right folder.
pub fn scan(root: &Path) -> Vec<Found> {
    // The prefix folders (`blobs/sha256/ab`), each listed by one of the scanning threads.
    let mut folders = Vec::new();
    let kinds: [(KeyOf, PathBuf); 2] = [
        (Key::Blob, root.join("blobs")),
        (Key::Manifest, root.join("manifests")),
    ];
    for (kind, dir) in kinds {
        for algorithm in [Algorithm::Sha256, Algorithm::Sha512] {
            let Ok(prefixes) = std::fs::read_dir(dir.join(algorithm.as_str())) else {
                continue;
            };
            for prefix in prefixes.flatten() {
                if let Some(name) = prefix.file_name().to_str() {
                    folders.push((kind, algorithm, name.to_owned(), prefix.path()));
                }
            }
        }
    }
    let next = AtomicUsize::new(0);
    let found = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..SCAN_THREADS.min(folders.len()) {
            scope.spawn(|| {
                let mut mine = Vec::new();
                while let Some((kind, algorithm, prefix, path)) =
                    folders.get(next.fetch_add(1, Ordering::Relaxed))
                {
                    scan_folder(*kind, *algorithm, prefix, path, &mut mine);
                }
                lock_found(&found).append(&mut mine);
            });
        }
    });
    found.into_inner().unwrap_or_else(|e| e.into_inner())
}

fn lock_found(found: &Mutex<Vec<Found>>) -> MutexGuard<'_, Vec<Found>> {
    found.lock().unwrap_or_else(|e| e.into_inner())
}

/// Makes the key of an entry found in a folder: `Key::Blob` or `Key::Manifest`.
type KeyOf = fn(Digest) -> Key;

fn scan_folder(kind: KeyOf, algorithm: Algorithm, prefix: &str, path: &Path, out: &mut Vec<Found>) {
    let Ok(files) = std::fs::read_dir(path) else {
        return;
    };
    for file in files.flatten() {
        let name = file.file_name();
        let Some(digest) = name
            .to_str()
            .and_then(|hex| Digest::parse(&format!("{}:{hex}", algorithm.as_str())))
        else {
            continue;
        };
        if digest.hex()[..2] != *prefix {
            continue;
        }
        let Ok(meta) = file.metadata() else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        out.push(Found {
            key: kind(digest),
            size: meta.len(),
            modified: meta.modified().unwrap_or(UNIX_EPOCH),
        });
    }
}

/// Parses one line of a tag file: `<fetched unix ms> <digest> <size> <media type>`.
pub fn parse_tag_line(line: &str) -> Option<TagEntry> {
    let mut parts = line.split(' ');
    let fetched: u64 = parts.next()?.parse().ok()?;
    let digest = Digest::parse(parts.next()?)?;
    let size: u64 = parts.next()?.parse().ok()?;
    let media_type = parts.next()?.to_owned();
    Some(TagEntry {
        digest,
        size,
        media_type,
        fetched: UNIX_EPOCH + Duration::from_millis(fetched),
    })
}

fn format_tag_line(entry: &TagEntry) -> String {
    let millis = entry
        .fetched
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!(
        "{millis} {} {} {}\n",
        entry.digest, entry.size, entry.media_type
    )
}

// ---------------------------------------------------------------------------------------------
// Reservations

/// Bytes promised to an entry being written. Dropping it gives them back.
#[derive(Debug)]
pub struct Reservation {
    store: Store,
    amount: u64,
}

impl Reservation {
    /// Asks for `more` bytes on top of what is reserved.
    async fn grow(&mut self, more: u64) -> Result<(), StoreError> {
        let extra = self.store.reserve(more).await?;
        self.amount = self.amount.saturating_add(extra.take());
        Ok(())
    }

    /// Hands the amount over (to the index, on admission); nothing is given back on drop.
    fn take(mut self) -> u64 {
        std::mem::take(&mut self.amount)
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.amount > 0 {
            let mut state = self.store.lock();
            state.reserved -= self.amount;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Fills

/// Where a fill is, as followers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FillState {
    /// Waiting for the upstream's response headers.
    Starting,
    /// Writing; `visible` bytes of the temp file may be read.
    Running,
    /// Verified and stored.
    Done,
    /// Failed: the content is not coming.
    Failed,
    /// The upstream did not give the blob (an error, a redirect to nowhere…): ask again.
    Abandoned,
}

/// The progress of a fill, published to followers.
#[derive(Debug, Clone)]
pub struct Progress {
    pub state: FillState,
    /// Bytes of the temp file that are written and may be read.
    pub visible: u64,
    /// The blob's length, when the upstream said it.
    pub length: Option<u64>,
    temp: Option<PathBuf>,
}

#[derive(Debug)]
struct FillShared {
    digest: Digest,
    progress: watch::Sender<Progress>,
}

impl FillShared {
    fn new(digest: Digest) -> FillShared {
        FillShared {
            digest,
            progress: watch::Sender::new(Progress {
                state: FillState::Starting,
                visible: 0,
                length: None,
                temp: None,
            }),
        }
    }

    fn publish(&self, change: impl FnOnce(&mut Progress)) {
        self.progress.send_modify(change);
    }
}

/// The right to fill a blob. Dropping it unused tells followers to ask again.
#[derive(Debug)]
pub struct FillPermit {
    store: Store,
    shared: Arc<FillShared>,
    done: bool,
}

impl FillPermit {
    /// Reserves room for `length` bytes (if known) and creates the temp file followers will read.
    pub async fn start(mut self, length: Option<u64>) -> Result<BlobWriter, StoreError> {
        let reservation = self.store.reserve(length.unwrap_or(0)).await?;
        let tmp = self.store.inner.tmp.clone();
        let (file, temp) = blocking(move || {
            let temp = tempfile::Builder::new()
                .prefix("fill-")
                .tempfile_in(&tmp)
                .map_err(io_error("create temp file in", &tmp))?;
            Ok(temp.into_parts())
        })
        .await?;
        self.done = true;
        let path = temp.to_path_buf();
        self.shared.publish(|p| {
            p.state = FillState::Running;
            p.length = length;
            p.temp = Some(path);
        });
        Ok(BlobWriter {
            store: self.store.clone(),
            shared: self.shared.clone(),
            file: Arc::new(file),
            temp: Some(temp),
            batch: Vec::new(),
            batch_len: 0,
            hasher: Some(self.shared.digest.hasher()),
            in_flight: None,
            written: 0,
            reservation,
            finished: false,
        })
    }
}

impl Drop for FillPermit {
    fn drop(&mut self) {
        if !self.done {
            end_fill(&self.store, &self.shared, FillState::Abandoned);
        }
    }
}

/// Takes a fill out of the map (if it is still the one there) and publishes how it ended.
fn end_fill(store: &Store, shared: &Arc<FillShared>, state: FillState) {
    let mut guard = store.lock();
    if guard
        .fills
        .get(&shared.digest)
        .is_some_and(|f| Arc::ptr_eq(f, shared))
    {
        guard.fills.remove(&shared.digest);
    }
    drop(guard);
    shared.publish(|p| p.state = state);
}

/// A blob being written and hashed. Followers read what it has written; nothing enters the store
/// until [`commit`](BlobWriter::commit) has checked the digest. Dropping it unfinished deletes the
/// temp file and fails the followers.
///
/// Hashing and writing both run on the blocking pool, one batch at a time, so a fill's two
/// heaviest steps (~0.7 s/GiB for SHA-256, ~0.4 s/GiB for the page cache) overlap with the
/// runtime threads receiving and sending the next bytes.
#[derive(Debug)]
pub struct BlobWriter {
    store: Store,
    shared: Arc<FillShared>,
    file: Arc<std::fs::File>,
    temp: Option<tempfile::TempPath>,
    /// The upstream's buffers themselves, not copies: hashed, then written with one `writev`.
    batch: Vec<Bytes>,
    batch_len: usize,
    /// Everything before `batch`, except while the batch before it is in flight (the hasher
    /// travels with it).
    hasher: Option<Hasher>,
    /// The previous batch, being hashed and written on the blocking pool while the next one
    /// fills.
    in_flight: Option<tokio::task::JoinHandle<(Hasher, std::io::Result<()>)>>,
    /// Bytes handed to writes (done or in flight).
    written: u64,
    reservation: Reservation,
    finished: bool,
}

impl BlobWriter {
    /// Appends bytes (hashed and written in batches). The buffer is kept, not copied. After an
    /// error nothing more can be written; [`into_hasher`](BlobWriter::into_hasher) still
    /// verifies what was passed.
    pub async fn write(&mut self, bytes: Bytes) -> Result<(), StoreError> {
        self.batch_len += bytes.len();
        self.batch.push(bytes);
        if self.batch_len >= WRITE_BATCH || self.batch.len() >= MAX_SLICES {
            self.flush_batch().await?;
        }
        Ok(())
    }

    /// Hands the batch to the blocking pool, after the previous one is done: the disk and the
    /// hash work while the next batch arrives. Followers are shown what is written except the
    /// batch in flight, and the final bytes only once the whole blob is verified
    /// ([`commit`](BlobWriter::commit)), so a follower of a corrupt fill never reads a complete
    /// body.
    async fn flush_batch(&mut self) -> Result<(), StoreError> {
        let confirmed = self.written;
        self.wait_in_flight().await?;
        self.shared.publish(|p| p.visible = confirmed);
        let len = self.batch_len as u64;
        if self.written + len > self.reservation.amount {
            let more = self.written + len - self.reservation.amount;
            self.reservation.grow(more).await?;
        }
        let Some(mut hasher) = self.hasher.take() else {
            // Only a write that failed before can have taken it; the writer is done.
            let lost = std::io::Error::other("a fill's earlier write task was lost");
            return Err(io_error("hash", &self.temp_path())(lost));
        };
        self.batch_len = 0;
        let batch = std::mem::take(&mut self.batch);
        let file = self.file.clone();
        self.in_flight = Some(tokio::task::spawn_blocking(move || {
            batch.iter().for_each(|b| hasher.update(b));
            let written = write_all_vectored(&file, &batch);
            (hasher, written)
        }));
        self.written += len;
        Ok(())
    }

    /// Waits for the batch in flight and takes its hasher back, whether or not it was written.
    async fn wait_in_flight(&mut self) -> Result<(), StoreError> {
        let Some(work) = self.in_flight.take() else {
            return Ok(());
        };
        let path = self.temp_path();
        match work.await {
            Ok((hasher, written)) => {
                self.hasher = Some(hasher);
                written.map_err(io_error("write", &path))
            }
            // The task panicked or was cancelled: the hasher is lost with it.
            Err(err) => Err(io_error("write", &path)(std::io::Error::other(err))),
        }
    }

    /// Whether no request reads this fill or is about to (a follower joining, or reading the
    /// growing file). A hint, without the lock: [`abandon_if_unread`](Self::abandon_if_unread)
    /// decides.
    pub fn unread(&self) -> bool {
        self.shared.progress.receiver_count() == 0 && Arc::strong_count(&self.shared) <= 2
    }

    /// Takes the fill out of the store's map if nobody reads it, so that no request joins it
    /// from now on; the caller then drops the writer. `false` when a reader came after all.
    pub fn abandon_if_unread(&self) -> bool {
        let mut state = self.store.lock();
        let digest = &self.shared.digest;
        let listed = state
            .fills
            .get(digest)
            .is_some_and(|f| Arc::ptr_eq(f, &self.shared));
        // Holders of the shared state: this writer, the map, and each follower.
        let holders = 1 + usize::from(listed);
        if self.shared.progress.receiver_count() > 0 || Arc::strong_count(&self.shared) > holders {
            return false;
        }
        if listed {
            state.fills.remove(digest);
        }
        true
    }

    fn temp_path(&self) -> PathBuf {
        self.temp
            .as_ref()
            .map(|t| t.to_path_buf())
            .unwrap_or_default()
    }

    /// Gives up writing and returns the hash of everything passed to
    /// [`write`](BlobWriter::write), for a fill that goes on without the store. `None` only if
    /// a blocking task was lost. The temp file is deleted and followers are failed.
    pub async fn into_hasher(mut self) -> Option<Hasher> {
        let _ = self.wait_in_flight().await;
        let mut hasher = self.hasher.take()?;
        self.batch.iter().for_each(|b| hasher.update(b));
        Some(hasher)
    }

    /// Checks the digest of everything written. The blob is not yet in the store: that takes
    /// [`VerifiedBlob::commit`], which may come after the client has its last bytes.
    /// [`StoreError::DigestMismatch`] means the content is wrong, or could not be checked (a
    /// blocking task was lost); the temp file is then deleted.
    pub async fn verify(mut self) -> Result<VerifiedBlob, StoreError> {
        let digest = self.shared.digest.clone();
        let mut earlier = self.wait_in_flight().await.err();
        let Some(mut hasher) = self.hasher.take() else {
            return Err(StoreError::DigestMismatch(digest));
        };
        let batch = std::mem::take(&mut self.batch);
        let len = std::mem::take(&mut self.batch_len) as u64;
        if earlier.is_none() && self.written + len > self.reservation.amount {
            let more = self.written + len - self.reservation.amount;
            earlier = self.reservation.grow(more).await.err();
        }
        // The last batch is hashed before it is written, and shown to followers only once it
        // matched: a follower of a corrupt fill never reads a complete body.
        let write = earlier.is_none();
        let file = self.file.clone();
        let (matches, written) = blocking(move || {
            batch.iter().for_each(|b| hasher.update(b));
            if !hasher.matches(&digest) {
                return Ok((false, Ok(())));
            }
            Ok((
                true,
                if write {
                    write_all_vectored(&file, &batch)
                } else {
                    Ok(())
                },
            ))
        })
        .await
        .map_err(|_| StoreError::DigestMismatch(self.shared.digest.clone()))?;
        if !matches {
            return Err(StoreError::DigestMismatch(self.shared.digest.clone()));
        }
        let path = self.temp_path();
        let earlier = earlier.or_else(|| written.map_err(io_error("write", &path)).err());
        self.written += len;
        if earlier.is_none() {
            let visible = self.written;
            self.shared.publish(|p| p.visible = visible);
        }
        Ok(VerifiedBlob {
            writer: self,
            earlier,
        })
    }
}

/// A fill whose content matched its digest, not yet in the store. Dropping it deletes the temp
/// file and fails the followers, as for an unfinished [`BlobWriter`].
#[derive(Debug)]
pub struct VerifiedBlob {
    writer: BlobWriter,
    /// A write that failed before the check: the content was right but cannot be kept.
    earlier: Option<StoreError>,
}

impl VerifiedBlob {
    /// Syncs the blob and renames it into the store.
    pub async fn commit(self) -> Result<u64, StoreError> {
        let VerifiedBlob {
            writer: mut this,
            earlier,
        } = self;
        if let Some(err) = earlier {
            return Err(err);
        }
        let key = Key::Blob(this.shared.digest.clone());
        let dest = this.store.path(&key);
        let parent = dest.parent().unwrap_or(Path::new(".")).to_owned();
        let temp_path = this.temp_path();
        let file = this.file.clone();
        let folder = parent.clone();
        blocking(move || {
            file.sync_all().map_err(io_error("sync", &temp_path))?;
            std::fs::create_dir_all(&folder).map_err(io_error("create", &folder))
        })
        .await?;
        let Some(temp) = this.temp.take() else {
            return Err(StoreError::BadKey("fill without a temp file".into()));
        };
        // Rename and admit under the lock, so a request sees either the fill or the entry.
        let size = this.written;
        {
            let mut state = this.store.lock();
            temp.persist(&dest)
                .map_err(|e| io_error("rename into", &dest)(e.error))?;
            state.reserved -= std::mem::take(&mut this.reservation.amount);
            if let Some(old) = state.lru.put(key, new_entry(size)) {
                state.bytes -= old.size;
            }
            state.bytes += size;
            if state
                .fills
                .get(&this.shared.digest)
                .is_some_and(|f| Arc::ptr_eq(f, &this.shared))
            {
                state.fills.remove(&this.shared.digest);
            }
        }
        this.finished = true;
        this.shared.publish(|p| {
            p.visible = size;
            p.state = FillState::Done;
        });
        blocking(move || sync_dir(&parent)).await?;
        Ok(size)
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if !self.finished {
            // The temp file deletes itself (TempPath); followers learn the fill failed.
            end_fill(&self.store, &self.shared, FillState::Failed);
        }
    }
}

/// A request joining a fill in progress.
#[derive(Debug)]
pub struct Follower {
    store: Store,
    shared: Arc<FillShared>,
}

/// What a follower gets once the fill is under way.
#[derive(Debug)]
pub enum Joined {
    /// Read the growing file; `progress` says how far it may be read.
    Reading {
        file: std::fs::File,
        progress: watch::Receiver<Progress>,
        length: Option<u64>,
    },
    /// The fill finished before the follower could open it, or never started: look again.
    LookAgain,
    /// The fill failed.
    Failed,
}

impl Follower {
    /// Waits for the upstream's answer, then opens the temp file.
    pub async fn join(self) -> Joined {
        let mut progress = self.shared.progress.subscribe();
        let state = match progress.wait_for(|p| p.state != FillState::Starting).await {
            Ok(p) => p.state,
            Err(_) => FillState::Failed,
        };
        match state {
            FillState::Running => {}
            FillState::Failed => return Joined::Failed,
            _ => return Joined::LookAgain,
        }
        // Open under the lock: the temp file is renamed only under it, after which the fill is
        // no longer in the map and the entry is.
        let opened = {
            let state = self.store.lock();
            let current = state
                .fills
                .get(&self.shared.digest)
                .is_some_and(|f| Arc::ptr_eq(f, &self.shared));
            let temp = self.shared.progress.borrow().temp.clone();
            match (current, temp) {
                (true, Some(temp)) => std::fs::File::open(temp).ok(),
                _ => None,
            }
        };
        let Some(file) = opened else {
            return Joined::LookAgain;
        };
        let length = self.shared.progress.borrow().length;
        Joined::Reading {
            file,
            progress,
            length,
        }
    }
}

// ---------------------------------------------------------------------------------------------

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

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    #[tokio::test]
    async fn file_chunks_read_the_span_in_order_and_fail_on_a_short_file() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("blob");
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 31 % 251) as u8).collect();
        std::fs::write(&path, &data)?;

        let mut chunks = FileChunks::new(std::fs::File::open(&path)?, 3, 997, 64);
        let mut read = Vec::new();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk?;
            assert!(chunk.len() <= 64);
            read.extend_from_slice(&chunk);
        }
        assert_eq!(read, &data[3..997]);

        // An entry that says 2000 bytes for a file of 1000.
        let mut chunks = FileChunks::new(std::fs::File::open(&path)?, 900, 2000, 64);
        let mut got = 0;
        let error = loop {
            match chunks.next().await {
                Some(Ok(chunk)) => got += chunk.len(),
                Some(Err(error)) => break error,
                None => panic!("a short file must end in an error, not quietly"),
            }
        };
        assert_eq!(got, 100);
        assert_eq!(error.kind(), std::io::ErrorKind::UnexpectedEof);
        assert!(chunks.next().await.is_none(), "nothing after the error");
        Ok(())
    }

    #[tokio::test]
    async fn file_chunks_in_the_page_cache_are_ready_at_once() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("blob");
        std::fs::write(&path, vec![7u8; 300])?;

        // Just written, so cached: every chunk comes on the first poll, not from the pool.
        let mut chunks = FileChunks::new(std::fs::File::open(&path)?, 0, 300, 128);
        let mut lens = Vec::new();
        while let Some(chunk) = futures_util::FutureExt::now_or_never(chunks.next()) {
            match chunk {
                Some(chunk) => lens.push(chunk?.len()),
                None => break,
            }
        }
        assert_eq!(lens, [128, 128, 44]);
        Ok(())
    }

    #[test]
    fn tag_lines_round_trip() {
        let entry = TagEntry {
            digest: Digest::sha256_of(b"x"),
            size: 42,
            media_type: "application/vnd.oci.image.index.v1+json".into(),
            fetched: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
        };
        assert_eq!(
            parse_tag_line(format_tag_line(&entry).trim_end()),
            Some(entry)
        );
        assert_eq!(parse_tag_line("garbage"), None);
        assert_eq!(parse_tag_line("1 sha256:../../x 1 a/b"), None);
    }

    fn limits(max_size: u64) -> Limits {
        Limits {
            max_size,
            min_free: 0,
        }
    }

    /// A manifest of `size` bytes on disk (media type line included) and its digest.
    fn manifest_of(size: usize, fill: u8) -> (Digest, Vec<u8>) {
        let bytes = vec![fill; size - "t\n".len()];
        (Digest::sha256_of(&bytes), bytes)
    }

    async fn put(store: &Store, size: usize, fill: u8) -> Digest {
        let (digest, bytes) = manifest_of(size, fill);
        store
            .put_manifest(&digest, "t", &bytes)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        digest
    }

    fn stored(store: &Store, digest: &Digest) -> bool {
        store.path(&Key::Manifest(digest.clone())).exists()
    }

    #[tokio::test]
    async fn eviction_is_least_recently_used_first_and_spares_entries_being_read() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = Store::open(dir.path(), limits(1000)).unwrap_or_else(|e| panic!("{e}"));
        let a = put(&store, 300, b'a').await;
        let b = put(&store, 300, b'b').await;
        let c = put(&store, 300, b'c').await;
        assert_eq!(store.usage().bytes, 900);
        let pin = store.pin(&Key::Manifest(a.clone())); // a is being read…
        assert!(store.manifest(&b).await.is_some());
        assert!(store.manifest(&c).await.is_some()); // …and is the least recently used
        let d = put(&store, 300, b'd').await;
        assert!(stored(&store, &a), "a is being read");
        assert!(
            !stored(&store, &b),
            "b was the least recently used entry not being read"
        );
        assert!(stored(&store, &c) && stored(&store, &d));
        assert_eq!(store.usage().bytes, 900);
        drop(pin);
        let e = put(&store, 300, b'e').await;
        assert!(!stored(&store, &a), "a went once nobody read it");
        assert!(stored(&store, &c) && stored(&store, &d) && stored(&store, &e));
    }

    #[tokio::test]
    async fn a_reservation_that_cannot_fit_deletes_nothing() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = Store::open(dir.path(), limits(1000)).unwrap_or_else(|e| panic!("{e}"));
        let a = put(&store, 400, b'a').await;
        let b = put(&store, 400, b'b').await;
        let _pin = store.pin(&Key::Manifest(a.clone()));
        assert!(matches!(
            store.reserve(700).await,
            Err(StoreError::Full(700))
        ));
        assert!(stored(&store, &a) && stored(&store, &b));
        // Fills in progress count: with 500 reserved, 200 more need b to go.
        let held = store.reserve(500).await.unwrap_or_else(|e| panic!("{e}"));
        assert!(!stored(&store, &b));
        assert_eq!(store.usage().reserved, 500);
        assert!(matches!(
            store.reserve(200).await,
            Err(StoreError::Full(200))
        ));
        drop(held);
        assert_eq!(store.usage().reserved, 0);
    }

    #[tokio::test]
    async fn a_reservation_near_u64_max_is_refused_not_wrapped() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = Store::open(dir.path(), limits(1000)).unwrap_or_else(|e| panic!("{e}"));
        let a = put(&store, 400, b'a').await;
        let held = store.reserve(300).await.unwrap_or_else(|e| panic!("{e}"));
        // 400 stored + 300 reserved + this wraps to 99 in u64 arithmetic.
        let huge = u64::MAX - 600;
        assert!(matches!(store.reserve(huge).await, Err(StoreError::Full(n)) if n == huge));
        assert!(matches!(
            store.reserve(u64::MAX).await,
            Err(StoreError::Full(u64::MAX))
        ));
        assert_eq!(
            store.usage().reserved,
            300,
            "nothing reserved by the refusals"
        );
        assert!(stored(&store, &a), "and nothing evicted");
        drop(held);

        // The free-space floor is summed with the need too.
        let floor = Limits {
            max_size: u64::MAX,
            min_free: u64::MAX - 10,
        };
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = Store::open(dir.path(), floor).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            store.reserve(100).await,
            Err(StoreError::Full(100))
        ));
        assert_eq!(store.usage().reserved, 0);
    }

    #[tokio::test]
    async fn a_restart_rebuilds_the_index_in_mtime_order_and_clears_tmp() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (old, new) = {
            let store = Store::open(dir.path(), limits(1000)).unwrap_or_else(|e| panic!("{e}"));
            let new = put(&store, 300, b'n').await;
            let old = put(&store, 300, b'o').await;
            let path = store.path(&Key::Manifest(old.clone()));
            let file = std::fs::File::options().write(true).open(path);
            let past = SystemTime::now() - Duration::from_secs(86_400);
            file.and_then(|f| f.set_modified(past))
                .unwrap_or_else(|e| panic!("{e}"));
            (old, new)
        };
        std::fs::write(
            dir.path().join(TMP_DIR).join("fill-leftover"),
            b"half a blob",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.path().join("blobs/not-a-digest"), b"junk")
            .unwrap_or_else(|e| panic!("{e}"));

        let store = Store::open(dir.path(), limits(1000)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(store.usage().entries, 2);
        assert_eq!(store.usage().bytes, 600);
        let left: Vec<_> = std::fs::read_dir(dir.path().join(TMP_DIR))
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert_eq!(left, [TMP_MARKER], "only the marker stays");
        let _third = put(&store, 600, b't').await;
        assert!(
            !stored(&store, &old),
            "the entry unused for a day went first"
        );
        assert!(stored(&store, &new));
    }

    #[test]
    fn a_folder_of_other_files_or_the_root_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let home = dir.path().join("home");
        std::fs::create_dir_all(home.join("tmp")).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(home.join("notes.txt"), b"mine").unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(home.join("tmp/work"), b"mine too").unwrap_or_else(|e| panic!("{e}"));
        let refused = Store::open(&home, limits(1000))
            .err()
            .map(|e| e.to_string());
        assert!(
            refused.as_deref().is_some_and(|e| e.contains("notes.txt")),
            "{refused:?}"
        );
        assert!(home.join("tmp/work").exists() && home.join("notes.txt").exists());
        assert!(!home.join(CACHE_MARKER).exists() && !home.join(TMP_DIR).exists());

        let root = Store::open(Path::new("/"), limits(1000))
            .err()
            .map(|e| e.to_string());
        assert!(
            root.as_deref().is_some_and(|e| e.contains("root")),
            "{root:?}"
        );

        // A temp folder without hoard's marker is not emptied either.
        let odd = dir.path().join("odd");
        std::fs::create_dir_all(odd.join(TMP_DIR)).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(odd.join(TMP_DIR).join("x"), b"?").unwrap_or_else(|e| panic!("{e}"));
        assert!(Store::open(&odd, limits(1000)).is_err());
        assert!(odd.join(TMP_DIR).join("x").exists());
    }

    #[test]
    fn a_store_from_before_hoard_tmp_opens_and_its_leftovers_go() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        for folder in ["blobs", "manifests", "tags", "tmp"] {
            std::fs::create_dir_all(dir.path().join(folder)).unwrap_or_else(|e| panic!("{e}"));
        }
        std::fs::write(dir.path().join("tmp/.tmpAbc"), b"half").unwrap_or_else(|e| panic!("{e}"));
        let store = Store::open(dir.path(), limits(1000));
        assert!(store.is_ok(), "{:?}", store.err());
        assert!(!dir.path().join("tmp").exists());
        assert!(dir.path().join(CACHE_MARKER).exists());
        // Opened again: marked now, so it opens as hoard's.
        assert!(Store::open(dir.path(), limits(1000)).is_ok());
    }

    #[tokio::test]
    async fn entries_removed_behind_the_stores_back_are_forgotten() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = Store::open(dir.path(), limits(1000)).unwrap_or_else(|e| panic!("{e}"));
        let a = put(&store, 300, b'a').await;
        let b = put(&store, 300, b'b').await;
        std::fs::remove_file(store.path(&Key::Manifest(a.clone())))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(store.manifest(&a).await.is_none());
        assert_eq!(store.usage().bytes, 300);
        std::fs::remove_file(store.path(&Key::Manifest(b.clone())))
            .unwrap_or_else(|e| panic!("{e}"));
        store.reconcile().await;
        assert_eq!(
            store.usage(),
            Usage {
                entries: 0,
                bytes: 0,
                reserved: 0,
                fills: 0
            }
        );
    }

    #[tokio::test]
    async fn origins_are_bounded_survive_a_restart_and_go_with_their_entry() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let host = HostKey::new("gcr.io", 443).unwrap_or_else(|| panic!("host key"));
        let (a, b) = {
            let store = Store::open(dir.path(), limits(1000)).unwrap_or_else(|e| panic!("{e}"));
            let a = put(&store, 300, b'a').await;
            let b = put(&store, 300, b'b').await;
            let key = Key::Manifest(a.clone());
            assert!(store.origins(&key).await.is_empty(), "nothing known yet");
            let path = store.origin_path(&key);
            let tmp = store.inner.tmp.clone();
            for i in 0..MAX_ORIGINS + 3 {
                add_origin_line(&tmp, &path, &format!("gcr.io team/repo{i}"))
                    .unwrap_or_else(|e| panic!("{e}"));
            }
            // Again: not twice. And what is not an origin line is dropped on the next write.
            add_origin_line(&tmp, &path, "gcr.io team/repo5").unwrap_or_else(|e| panic!("{e}"));
            store.note_origin(Key::Manifest(b.clone()), &host, "../../etc");
            store.note_origin(Key::Manifest(b.clone()), &host, "team/b");
            let deadline = Instant::now() + Duration::from_secs(10);
            while store.origins(&Key::Manifest(b.clone())).await.is_empty() {
                assert!(Instant::now() < deadline, "note_origin wrote nothing");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let past = SystemTime::now() - Duration::from_secs(86_400);
            std::fs::File::options()
                .write(true)
                .open(store.path(&Key::Manifest(a.clone())))
                .and_then(|f| f.set_modified(past))
                .unwrap_or_else(|e| panic!("{e}"));
            (a, b)
        };
        let store = Store::open(dir.path(), limits(1000)).unwrap_or_else(|e| panic!("{e}"));
        let origins = store.origins(&Key::Manifest(a.clone())).await;
        assert_eq!(origins.len(), MAX_ORIGINS, "bounded");
        assert_eq!(
            origins[0],
            ("gcr.io".into(), "team/repo3".into()),
            "oldest dropped"
        );
        assert_eq!(
            origins.last(),
            Some(&("gcr.io".into(), format!("team/repo{}", MAX_ORIGINS + 2)))
        );
        assert_eq!(
            store.origins(&Key::Manifest(b.clone())).await,
            [("gcr.io".to_owned(), "team/b".to_owned())],
            "an invalid repository is never recorded"
        );
        assert!(
            store.origins(&Key::Blob(a.clone())).await.is_empty(),
            "kinds apart"
        );
        // Evicting a (least recently used) takes its origins along.
        let _c = put(&store, 600, b'c').await;
        assert!(!stored(&store, &a));
        assert!(!store.origin_path(&Key::Manifest(a.clone())).exists());
        assert!(store.origin_path(&Key::Manifest(b.clone())).exists());
        assert_eq!(parse_origin_line("gcr.io a b"), None);
        assert_eq!(parse_origin_line("gcr.io/x a"), None);
        assert_eq!(
            parse_origin_line("localhost:5000 a/b"),
            Some(("localhost:5000".into(), "a/b".into()))
        );
    }

    #[test]
    fn host_keys_reject_paths() {
        assert!(HostKey::new("gcr.io", 443).is_some());
        assert_eq!(
            HostKey::new("localhost", 5000).map(|h| h.0),
            Some("localhost:5000".into())
        );
        assert!(HostKey::new("../etc", 443).is_none());
        assert!(HostKey::new("a/b", 443).is_none());
    }
}
