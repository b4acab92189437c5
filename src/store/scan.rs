//! The store's files as found on disk: the scan that builds the index at start, and the
//! reconcile that brings the index in line with the disk while hoard runs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::index::{Index, Sweep};
use super::{FlightKey, Key, Store};
use crate::oci::{Algorithm, Digest};

/// Folders listed at once when scanning. With a cold page cache, a scan waits on one metadata
/// read per entry; 16 in flight let the disk work in parallel (100,000 entries: ~0.8 s cold
/// instead of ~1.9 s one by one, measured by `cargo bench --bench store_startup`).
const SCAN_THREADS: usize = 16;

/// Entries looked at per hold of the store's lock when reconciling: ~1,000 hash look-ups keep
/// each hold in the tens of microseconds, however large the index.
const RECONCILE_BATCH: usize = 1024;

/// A file of the store found by a scan.
#[derive(Debug)]
pub(crate) struct Found {
    pub key: Key,
    pub size: u64,
    pub modified: SystemTime,
}

/// The index of what is on disk at start: oldest modification time least recently used.
pub(super) fn index_at_start(root: &Path) -> Index {
    let mut found = scan(root);
    found.sort_by_key(|f| f.modified);
    let mut index = Index::new();
    for file in found {
        index.insert(file.key, file.size);
    }
    index
}

impl Store {
    /// Brings the index in line with the disk: entries removed by `hoard cache` commands are
    /// dropped, files that appeared are added. Run now and then; costs one directory scan, on
    /// the blocking pool, and takes the lock once per [`RECONCILE_BATCH`] entries.
    pub(crate) async fn reconcile(&self) {
        let root = self.inner.root.clone();
        let scan_started = Instant::now();
        let scanned = tokio::task::spawn_blocking(move || {
            scan(&root)
                .into_iter()
                .map(|f| (f.key, f.size))
                .collect::<HashMap<Key, u64>>()
        });
        let Ok(on_disk) = scanned.await else {
            return;
        };
        // Entries admitted while the scan ran may have been missed by it: they stay.
        let mut sweep = Some(Sweep::default());
        while let Some(at) = sweep {
            sweep = self
                .lock()
                .index
                .sweep(at, RECONCILE_BATCH, |key, touched| {
                    !on_disk.contains_key(key) && touched < scan_started
                });
        }
        let on_disk: Vec<(Key, u64)> = on_disk.into_iter().collect();
        for batch in on_disk.chunks(RECONCILE_BATCH) {
            let mut state = self.lock();
            for (key, size) in batch {
                // A blob whose fill is being committed: the fill admits it.
                let filling = matches!(key, Key::Blob(d) if state.flights.contains_key(&FlightKey::Blob(d.clone())));
                if !filling {
                    // Unknown until now: least recently used.
                    state.index.insert_cold(key.clone(), *size);
                }
            }
        }
    }
}

/// Lists every entry file under `root` (blobs and manifests), ignoring anything whose name is
/// not a digest in its right folder.
pub(crate) fn scan(root: &Path) -> Vec<Found> {
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::test_util::{limits, put, stored};
    use super::super::{TMP_DIR, TMP_MARKER, Usage};
    use super::*;

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
    async fn files_that_appear_are_added_as_least_recently_used() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = Store::open(dir.path(), limits(1000)).unwrap_or_else(|e| panic!("{e}"));
        let a = put(&store, 300, b'a').await;
        // Written by another hoard, say, behind this one's back.
        let other = Store::open(dir.path(), limits(1000)).unwrap_or_else(|e| panic!("{e}"));
        let b = put(&other, 300, b'b').await;
        store.reconcile().await;
        assert_eq!((store.usage().entries, store.usage().bytes), (2, 600));
        let _c = put(&store, 600, b'c').await;
        assert!(!stored(&store, &b), "the file found later went first");
        assert!(stored(&store, &a));
    }
}
