//! The store's entries in the index: read pins, which mark an entry used and keep it from
//! eviction while a response reads it, and admitting and forgetting entries.

use std::time::SystemTime;

use super::Store;
use super::evict::Reservation;
use super::key::Key;

/// Keeps an entry from eviction while a response reads it.
#[derive(Debug)]
pub(crate) struct ReadPin {
    store: Store,
    key: Key,
    id: u64,
}

impl Drop for ReadPin {
    fn drop(&mut self) {
        self.store.lock().index.unpin(&self.key, self.id);
    }
}

impl Store {
    /// Marks an entry used and pins it for reading. `None` if it is not stored.
    pub(super) fn pin(&self, key: &Key) -> Option<ReadPin> {
        let pinned = self.lock().index.pin(key)?;
        if pinned.touch {
            let path = self.path(key);
            tokio::task::spawn_blocking(move || {
                let _ = std::fs::File::options()
                    .write(true)
                    .open(path)
                    .and_then(|f| f.set_modified(SystemTime::now()));
            });
        }
        Some(ReadPin {
            store: self.clone(),
            key: key.clone(),
            id: pinned.id,
        })
    }

    /// Drops an entry whose file has gone (removed by `hoard cache prune`, say).
    pub(super) fn forget(&self, key: &Key) {
        self.lock().index.remove(key);
    }

    /// Records a new entry in the index as the most recently used, turning its reservation into
    /// stored bytes.
    pub(super) fn admit(&self, key: Key, size: u64, reservation: Reservation) {
        let mut state = self.lock();
        state.reserved -= reservation.take();
        state.index.insert(key, size);
    }
}
