//! Room for new entries: bytes reserved for entries being written, and eviction of the least
//! recently used entries that nobody reads when the size limit or the free-space floor needs it.
//! This is the only place entries are evicted.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use super::Store;
use super::error::{StoreError, blocking};

impl Store {
    /// Promises `need` bytes to a new entry, deleting least-recently-used entries if the limit
    /// or the free-space floor requires it. Fails, deleting nothing, when even that is not enough.
    pub(crate) async fn reserve(&self, need: u64) -> Result<Reservation, StoreError> {
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
    /// adds `need` to the reservations. Returns the files to delete. Under the lock: O(1) to
    /// decide, then O(log entries) per victim.
    pub(super) fn evict_for(&self, need: u64) -> Result<Vec<PathBuf>, StoreError> {
        let available = available_space(&self.inner.root);
        let limits = self.inner.limits;
        let victims = {
            let mut state = self.lock();
            // Checked: `need` comes from a Content-Length, and a sum that wrapped would fit
            // anything.
            let (Some(total), Some(floor)) = (
                [state.index.bytes(), state.reserved, need]
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
            let to_free = over_limit.max(under_floor);
            if to_free > state.index.evictable_bytes() {
                return Err(StoreError::Full(need));
            }
            let victims = state.index.evict(to_free);
            state.reserved += need;
            victims
        };
        self.inner
            .evictions
            .fetch_add(victims.len() as u64, Ordering::Relaxed);
        Ok(victims
            .iter()
            .flat_map(|key| std::iter::once(self.path(key)).chain(self.origin_path(key)))
            .collect())
    }

    /// For `benches/store_startup.rs` only: makes room for `need` more bytes as [`Store::reserve`]
    /// does, on this thread, deleting the victims' files before it returns. The bytes stay
    /// reserved, as by a fill that never ends. Returns how many entries were evicted.
    #[doc(hidden)]
    pub fn make_room_for_bench(&self, need: u64) -> Result<u64, StoreError> {
        let before = self.evictions();
        let victims = self.evict_for(need)?;
        self.delete(&victims);
        Ok(self.evictions() - before)
    }

    /// Deletes the files of evicted entries. Blocking: not on a runtime thread.
    pub(super) fn delete(&self, victims: &[PathBuf]) {
        for path in victims {
            tracing::debug!(path = %path.display(), "evicting");
            if let Err(err) = std::fs::remove_file(path)
                && err.kind() != std::io::ErrorKind::NotFound
            {
                self.disk_warning("cannot evict", &err);
            }
        }
    }
}

/// Bytes available to an unprivileged writer on the file system of `path`.
fn available_space(path: &Path) -> Option<u64> {
    let stat = rustix::fs::statvfs(path).ok()?;
    Some(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// Bytes promised to an entry being written. Dropping it gives them back.
#[derive(Debug)]
pub(crate) struct Reservation {
    store: Store,
    /// Bytes promised; the writer hands them to the index when it commits.
    pub(super) amount: u64,
}

impl Reservation {
    /// Asks for `more` bytes on top of what is reserved.
    pub(super) async fn grow(&mut self, more: u64) -> Result<(), StoreError> {
        let extra = self.store.reserve(more).await?;
        self.amount = self.amount.saturating_add(extra.take());
        Ok(())
    }

    /// Hands the amount over (to the index, on admission); nothing is given back on drop.
    pub(super) fn take(mut self) -> u64 {
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

#[cfg(test)]
#[path = "evict_tests.rs"]
mod tests;
