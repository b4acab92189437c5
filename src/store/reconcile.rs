//! The reconcile: while hoard runs, the index is brought in line with the disk, where `hoard
//! cache` commands (or another hoard) remove and add files behind the store's back, and the
//! entries `cache.pin` keeps from eviction are worked out again (`retain.rs`).

use std::collections::HashMap;

use super::Store;
use super::in_flight::FlightKey;
use super::index::Sweep;
use super::key::Key;
use super::retain::{kept_keys, read_pins};
use super::scan::scan;
use crate::oci::RepoPattern;

/// Entries looked at per hold of the store's lock when reconciling: ~1,000 hash look-ups keep
/// each hold in the tens of microseconds, however large the index.
const RECONCILE_BATCH: usize = 1024;

impl Store {
    /// Works out the entries that `pins` (`cache.pin`) and the pins file keep from eviction, and
    /// keeps them until the next call: a read of the pinned images' tags and manifests on the
    /// blocking pool, no scan of the store. Done at start, and by each reconcile.
    pub(crate) async fn retain(&self, pins: &[RepoPattern]) {
        let root = self.inner.root.clone();
        let mut pins = pins.to_vec();
        let kept = tokio::task::spawn_blocking(move || {
            pins.extend(read_pins(&root));
            kept_keys(&root, &pins)
        });
        if let Ok(kept) = kept.await {
            self.lock().index.keep(kept);
        }
    }

    /// Brings the index in line with the disk: entries removed by `hoard cache` commands are
    /// dropped, files that appeared are added, and the images that `pins` (`cache.pin`) or the
    /// pins file match are kept from eviction until the next reconcile. Run now and then; costs
    /// one directory scan and a read of the pinned images' tags and manifests, on the blocking
    /// pool, and takes the lock once per [`RECONCILE_BATCH`] entries.
    pub(crate) async fn reconcile(&self, pins: &[RepoPattern]) {
        self.retain(pins).await;
        let root = self.inner.root.clone();
        // Entries admitted from here on have ids at least this.
        let scan_started = self.lock().index.next_stamp();
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
            sweep = self.lock().index.sweep(at, RECONCILE_BATCH, |key, id| {
                !on_disk.contains_key(key) && id < scan_started
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

#[cfg(test)]
mod tests {
    use super::super::Usage;
    use super::super::test_util::{limits, put, stored};
    use super::*;

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
        store.reconcile(&[]).await;
        assert_eq!(
            store.usage(),
            Usage {
                entries: 0,
                bytes: 0,
                reserved: 0,
                fills: 0,
                memory: 0,
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
        store.reconcile(&[]).await;
        assert_eq!((store.usage().entries, store.usage().bytes), (2, 600));
        let _c = put(&store, 600, b'c').await;
        assert!(!stored(&store, &b), "the file found later went first");
        assert!(stored(&store, &a));
    }
}
