//! The store's entries in the index: read pins, which mark an entry used and keep it from
//! eviction while a response reads it, copies of small entries served from memory (`hot.rs`),
//! and admitting and forgetting entries.

use std::time::{Instant, SystemTime};

use bytes::Bytes;

use super::Store;
use super::evict::Reservation;
use super::hot::{Inode, RECHECK};
use super::key::Key;
use super::read::inode_of;

/// Keeps an entry from eviction while a response reads it.
#[derive(Debug)]
pub(crate) struct ReadPin {
    store: Store,
    key: Key,
    id: u64,
}

impl ReadPin {
    /// The id of the index entry pinned.
    pub(super) fn id(&self) -> u64 {
        self.id
    }
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
            self.touch(key);
        }
        Some(ReadPin {
            store: self.clone(),
            key: key.clone(),
            id: pinned.id,
        })
    }

    /// A blob's or manifest's bytes from memory, marked used as a read from its file would
    /// (refreshing the file's mtime when due). `None` when memory holds no copy of the entry
    /// the index has.
    pub(super) fn in_memory(&self, key: &Key) -> Option<Bytes> {
        self.copy_of(key).map(|(data, _, _)| data)
    }

    /// A tag record's bytes from memory, as [`Store::in_memory`], if its file is still the
    /// one they were read from (looked at again once the last look is [`RECHECK`] old).
    pub(super) fn record_in_memory(&self, key: &Key) -> Option<Bytes> {
        let (data, id, inode) = self.copy_of(key)?;
        let inode = inode?;
        if inode.checked.elapsed() < RECHECK {
            return Some(data);
        }
        if inode_of(&self.path(key)) != Some(inode.number) {
            return None;
        }
        self.lock().hot.checked(key, id, Instant::now());
        Some(data)
    }

    /// Marks the entry used (a read from its file that follows marks it again) and gives the
    /// copy memory holds of it, if any, with the entry's id.
    fn copy_of(&self, key: &Key) -> Option<(Bytes, u64, Option<Inode>)> {
        let mut state = self.lock();
        let used = state.index.used(key)?;
        let copy = state.hot.get(key, used.id);
        drop(state);
        if used.touch {
            self.touch(key);
        }
        copy.map(|(data, inode)| (data, used.id, inode))
    }

    /// Keeps a copy of `data`, read from entry `id` of `key` (from the file of `inode`, for a
    /// tag record), if that entry is still the index's and the copy fits.
    pub(super) fn remember(&self, key: &Key, id: u64, data: &Bytes, inode: Option<u64>) {
        if !self.memory_takes(data.len() as u64) {
            return;
        }
        let inode = inode.map(|number| Inode {
            number,
            checked: Instant::now(),
        });
        let mut state = self.lock();
        if state.index.id_of(key) == Some(id) {
            state.hot.put(key.clone(), id, data.clone(), inode);
        }
    }

    /// Whether an entry of `len` bytes would be kept in memory.
    pub(super) fn memory_takes(&self, len: u64) -> bool {
        super::hot::takes(len, self.inner.limits.memory)
    }

    /// Refreshes an entry's mtime, its last use that survives restarts, on the blocking pool.
    fn touch(&self, key: &Key) {
        let path = self.path(key);
        tokio::task::spawn_blocking(move || {
            let _ = std::fs::File::options()
                .write(true)
                .open(path)
                .and_then(|f| f.set_modified(SystemTime::now()));
        });
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
