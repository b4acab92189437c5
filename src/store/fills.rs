//! One fill per blob: looking a blob up gives a stored hit, a fill in progress to follow, or the
//! permit to fill it; the followers that join a fill read its file as it grows.

use std::sync::Arc;

use tokio::sync::watch;

use super::read::open_sized;
use super::{BlobWriter, Key, ReadPin, Store, StoreError, blocking, io_error};
use crate::oci::Digest;

/// A stored blob, open for reading. The entry is not evicted while this (or the [`ReadPin`]
/// taken from it) lives.
#[derive(Debug)]
pub(crate) struct BlobHit {
    pub file: std::fs::File,
    pub len: u64,
    pub pin: ReadPin,
}

/// What the store knows of a blob.
#[derive(Debug)]
pub(crate) enum BlobLookup {
    /// Stored: serve it.
    Hit(BlobHit),
    /// Being filled: follow the fill.
    Filling(Follower),
    /// Neither: the caller is now the one to fill it (or to drop the permit).
    Miss(FillPermit),
}

impl Store {
    /// Looks a blob up: stored, being filled, or to be filled by the caller. The request that
    /// gets the permit is chosen here, under the store's lock; the registry chooses it in its
    /// flight table instead, with [`Store::find_blob`] and [`Store::begin_fill`].
    #[cfg(test)]
    pub(crate) async fn lookup_blob(&self, digest: &Digest) -> BlobLookup {
        for _ in 0..2 {
            if let Some(found) = self.find_blob(digest).await {
                return found;
            }
            if let Some(permit) = self.begin_fill(digest) {
                return BlobLookup::Miss(permit);
            }
        }
        // The file vanished twice under our feet: fill without followers.
        BlobLookup::Miss(FillPermit {
            store: self.clone(),
            shared: Arc::new(FillShared::new(digest.clone())),
            done: false,
        })
    }

    /// A blob that is stored ([`BlobLookup::Hit`]) or being filled ([`BlobLookup::Filling`]),
    /// or `None` when it is neither.
    pub(crate) async fn find_blob(&self, digest: &Digest) -> Option<BlobLookup> {
        let key = Key::Blob(digest.clone());
        for _ in 0..2 {
            if let Some(pin) = self.pin(&key) {
                match open_sized(&self.path(&key)).await {
                    Ok((file, len)) => return Some(BlobLookup::Hit(BlobHit { file, len, pin })),
                    Err(_) => self.forget(&key),
                }
                continue;
            }
            let state = self.lock();
            if state.index.contains(&key) {
                continue; // a fill finished in between
            }
            return state.fills.get(digest).map(|shared| {
                BlobLookup::Filling(Follower {
                    shared: shared.clone(),
                })
            });
        }
        None
    }

    /// The permit to fill a blob, registered so that requests looking it up from now on follow
    /// the fill; `None` when the blob was stored or a fill began since it was looked up.
    pub(crate) fn begin_fill(&self, digest: &Digest) -> Option<FillPermit> {
        let mut state = self.lock();
        if state.index.contains(&Key::Blob(digest.clone())) || state.fills.contains_key(digest) {
            return None;
        }
        let shared = Arc::new(FillShared::new(digest.clone()));
        state.fills.insert(digest.clone(), shared.clone());
        Some(FillPermit {
            store: self.clone(),
            shared,
            done: false,
        })
    }

    /// The length of a blob if it is stored or being filled with a known length.
    pub(crate) fn blob_length(&self, digest: &Digest) -> Option<u64> {
        let state = self.lock();
        if let Some(size) = state.index.size_of(&Key::Blob(digest.clone())) {
            return Some(size);
        }
        let fill = state.fills.get(digest)?;
        let progress = fill.progress.borrow();
        match progress.state {
            FillState::Running => progress.length,
            _ => None,
        }
    }
}

/// Where a fill is, as followers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FillState {
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
pub(crate) struct Progress {
    pub state: FillState,
    /// Bytes of the temp file that are written and may be read.
    pub visible: u64,
    /// The blob's length, when the upstream said it.
    pub length: Option<u64>,
    /// The file being written, for followers to read by descriptor: it stays the same file
    /// when the fill is renamed into the store.
    file: Option<Arc<std::fs::File>>,
}

/// A fill in progress, shared by its writer, the store's map of fills, and its followers.
#[derive(Debug)]
pub(super) struct FillShared {
    pub(super) digest: Digest,
    pub(super) progress: watch::Sender<Progress>,
}

impl FillShared {
    fn new(digest: Digest) -> FillShared {
        FillShared {
            digest,
            progress: watch::Sender::new(Progress {
                state: FillState::Starting,
                visible: 0,
                length: None,
                file: None,
            }),
        }
    }

    pub(super) fn publish(&self, change: impl FnOnce(&mut Progress)) {
        self.progress.send_modify(change);
    }
}

/// The right to fill a blob. Dropping it unused tells followers to ask again.
#[derive(Debug)]
pub(crate) struct FillPermit {
    store: Store,
    shared: Arc<FillShared>,
    done: bool,
}

impl FillPermit {
    /// Reserves room for `length` bytes (if known) and creates the temp file followers will read.
    pub(crate) async fn start(mut self, length: Option<u64>) -> Result<BlobWriter, StoreError> {
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
        let file = Arc::new(file);
        let shown = file.clone();
        self.shared.publish(|p| {
            p.state = FillState::Running;
            p.length = length;
            p.file = Some(shown);
        });
        Ok(BlobWriter::new(
            self.store.clone(),
            self.shared.clone(),
            file,
            temp,
            reservation,
        ))
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
pub(super) fn end_fill(store: &Store, shared: &Arc<FillShared>, state: FillState) {
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

/// A request joining a fill in progress.
#[derive(Debug)]
pub(crate) struct Follower {
    shared: Arc<FillShared>,
}

/// What a follower gets once the fill is under way.
#[derive(Debug)]
pub(crate) enum Joined {
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
    /// Waits for the upstream's answer, then takes a descriptor of the file being written.
    pub(crate) async fn join(self) -> Joined {
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
        // The writer's own file, duplicated: no path is opened and the store's lock is not
        // needed. If the fill is committed meanwhile, this is the stored blob, whole and
        // verified; if it fails, `progress` says so.
        let (file, length) = {
            let progress = self.shared.progress.borrow();
            (progress.file.clone(), progress.length)
        };
        let Some(file) = file.and_then(|f| f.try_clone().ok()) else {
            return Joined::LookAgain;
        };
        // A fill that ended badly since the wait above is not read: look again, as for one
        // that ended before.
        if !matches!(
            self.shared.progress.borrow().state,
            FillState::Running | FillState::Done
        ) {
            return Joined::LookAgain;
        }
        Joined::Reading {
            file,
            progress,
            length,
        }
    }
}

#[cfg(test)]
#[path = "fills_tests.rs"]
mod tests;
