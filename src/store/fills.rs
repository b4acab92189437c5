//! Blobs in the single flight (`flight.rs`): looking a blob up gives a stored hit, a fill in
//! progress to follow, or the permit to fill it; the permit starts the writer, and the followers
//! that join a fill read its file as it grows.

use std::ops::ControlFlow;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::watch;
use tokio::time::Instant;

use super::Store;
use super::error::{StoreError, blocking, io_error};
use super::flight::{Follower, Lookup, Permit, Waited};
use super::in_flight::{FlightKey, FlightState, Progress};
use super::key::Key;
use super::pins::ReadPin;
use super::read::{open_sized, read_cached_len};
use super::writer::BlobWriter;
use crate::oci::Digest;

/// A stored blob: its length, and its bytes from memory or its file open for reading.
#[derive(Debug)]
pub(crate) struct BlobHit {
    pub len: u64,
    pub stored: Stored,
}

/// Where a hit's bytes are.
#[derive(Debug)]
pub(crate) enum Stored {
    /// A small blob's bytes, from memory (`cache.memory`).
    Memory(Bytes),
    /// The blob's file. The entry is not evicted while the [`ReadPin`] lives.
    File(std::fs::File, ReadPin),
}

impl Store {
    /// Looks a blob up: stored, being filled, or to be filled by the caller, in the one flight
    /// table.
    pub(crate) async fn lookup_blob(&self, digest: &Digest) -> Lookup<BlobHit> {
        let key = Key::Blob(digest.clone());
        let look = || async {
            if let Some(data) = self.blob_in_memory(digest) {
                let len = data.len() as u64;
                return ControlFlow::Break(BlobHit {
                    len,
                    stored: Stored::Memory(data),
                });
            }
            let Some(pin) = self.pin(&key) else {
                return ControlFlow::Continue(());
            };
            match open_sized(&self.path(&key)).await {
                Ok((file, len)) => ControlFlow::Break(self.opened(&key, file, len, pin)),
                Err(_) => {
                    self.forget(&key);
                    ControlFlow::Continue(())
                }
            }
        };
        self.lookup(FlightKey::Blob(digest.clone()), look).await
    }

    /// A blob's bytes from memory alone (`cache.memory`), marked used; `None` when memory holds
    /// no copy of it.
    pub(crate) fn blob_in_memory(&self, digest: &Digest) -> Option<Bytes> {
        self.in_memory(&Key::Blob(digest.clone()))
    }

    /// A hit on a blob's opened file: a small one is read into memory now if the page cache
    /// holds it, and kept there for the hits after it.
    fn opened(&self, key: &Key, file: std::fs::File, len: u64, pin: ReadPin) -> BlobHit {
        if self.memory_takes(len)
            && let Some(data) = read_cached_len(&file, len).filter(|data| data.len() as u64 == len)
        {
            let data = Bytes::from(data);
            self.remember(key, pin.id(), &data, None);
            return BlobHit {
                len,
                stored: Stored::Memory(data),
            };
        }
        BlobHit {
            len,
            stored: Stored::File(file, pin),
        }
    }

    /// The length of a blob if it is stored or being filled with a known length.
    pub(crate) fn blob_length(&self, digest: &Digest) -> Option<u64> {
        let state = self.lock();
        if let Some(size) = state.index.size_of(&Key::Blob(digest.clone())) {
            return Some(size);
        }
        let fill = state.flights.get(&FlightKey::Blob(digest.clone()))?;
        let progress = fill.progress.borrow();
        match progress.state {
            FlightState::Running => progress.length,
            _ => None,
        }
    }
}

impl Permit {
    /// Starts filling the blob this permit leads: reserves room for `length` bytes (if known)
    /// and creates the temp file followers will read. Refused when a follower took this
    /// permit's place (it stalled): the blob is then not kept by this request.
    pub(crate) async fn start(mut self, length: Option<u64>) -> Result<BlobWriter, StoreError> {
        let FlightKey::Blob(digest) = &self.flight.key else {
            return Err(StoreError::BadKey(format!(
                "{:?} is not a blob",
                self.flight.key
            )));
        };
        let digest = digest.clone();
        if !self.listed() {
            return Err(StoreError::Superseded(digest));
        }
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
        // From here the writer ends the flight, on commit or on drop.
        self.done = true;
        let file = Arc::new(file);
        let shown = file.clone();
        self.flight.publish(|p| {
            p.state = FlightState::Running;
            p.length = length;
            p.file = Some(shown);
        });
        Ok(BlobWriter::new(
            self.store.clone(),
            self.flight.clone(),
            digest,
            file,
            temp,
            reservation,
        ))
    }
}

/// What a blob's follower gets once the fill is under way.
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
    /// The fill has not started by the deadline: [`Store::take_over`] it.
    Stalled(Follower),
}

impl Follower {
    /// Waits (until `deadline`) for the upstream's answer, then takes a descriptor of the file
    /// being written.
    pub(crate) async fn join(self, deadline: Instant) -> Joined {
        match self.wait(deadline).await {
            Waited::Moved(FlightState::Running) => {}
            Waited::Moved(FlightState::Failed) => return Joined::Failed,
            Waited::Moved(_) => return Joined::LookAgain,
            Waited::Stalled => return Joined::Stalled(self),
        }
        let progress = self.flight.progress.subscribe();
        // The writer's own file, duplicated: no path is opened and the store's lock is not
        // needed. If the fill is committed meanwhile, this is the stored blob, whole and
        // verified; if it fails, `progress` says so.
        let (file, length) = {
            let progress = self.flight.progress.borrow();
            (progress.file.clone(), progress.length)
        };
        let Some(file) = file.and_then(|f| f.try_clone().ok()) else {
            return Joined::LookAgain;
        };
        // A fill that ended badly since the wait above is not read: look again, as for one
        // that ended before.
        if !matches!(
            self.flight.progress.borrow().state,
            FlightState::Running | FlightState::Done
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
