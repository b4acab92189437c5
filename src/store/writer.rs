//! Writing a blob fill: its bytes are hashed and written on the blocking pool, verified against
//! the digest, and only then committed (synced and renamed) into the store.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use super::Store;
use super::error::{StoreError, blocking, io_error};
use super::evict::Reservation;
use super::flight::{Follower, end_flight};
use super::in_flight::{Flight, FlightState, listed};
use super::key::Key;
use super::layout::sync_dir;
use crate::oci::{Digest, Hasher};

/// Bytes a fill writes at once. Followers see data in steps of this size; 256 KiB keeps the
/// syscalls few (4 per MiB) while a follower lags the upstream by at most ~1 ms at 250 MiB/s.
const WRITE_BATCH: usize = 256 << 10;

/// Buffers per `writev` (Linux's IOV_MAX). An upstream sending tiny frames gets its batch
/// written early rather than refused.
const MAX_SLICES: usize = 1024;

/// A blob being written and hashed. Followers read what it has written; nothing enters the store
/// until [`commit`](VerifiedBlob::commit) after [`verify`](BlobWriter::verify) has checked the
/// digest. Dropping it unfinished deletes the temp file and fails the followers.
///
/// Hashing and writing both run on the blocking pool, one batch at a time, so a fill's two
/// heaviest steps (~0.7 s/GiB for SHA-256, ~0.4 s/GiB for the page cache) overlap with the
/// runtime threads receiving and sending the next bytes.
#[derive(Debug)]
pub(crate) struct BlobWriter {
    store: Store,
    shared: Arc<Flight>,
    digest: Digest,
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
    pub(super) fn new(
        store: Store,
        shared: Arc<Flight>,
        digest: Digest,
        file: Arc<std::fs::File>,
        temp: tempfile::TempPath,
        reservation: Reservation,
    ) -> BlobWriter {
        let hasher = Some(digest.hasher());
        BlobWriter {
            store,
            shared,
            digest,
            file,
            temp: Some(temp),
            batch: Vec::new(),
            batch_len: 0,
            hasher,
            in_flight: None,
            written: 0,
            reservation,
            finished: false,
        }
    }

    /// Appends bytes (hashed and written in batches). The buffer is kept, not copied. After an
    /// error nothing more can be written; [`into_hasher`](BlobWriter::into_hasher) still
    /// verifies what was passed.
    pub(crate) async fn write(&mut self, bytes: Bytes) -> Result<(), StoreError> {
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
    /// ([`verify`](BlobWriter::verify)), so a follower of a corrupt fill never reads a complete
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

    /// A follower of this fill, made before the fill runs: the fill has its reader from the
    /// first byte.
    pub(crate) fn follower(&self) -> Follower {
        Follower {
            flight: self.shared.clone(),
        }
    }

    /// Whether no request reads this fill or is about to (a follower joining, or reading the
    /// growing file). A hint, without the lock: [`abandon_if_unread`](Self::abandon_if_unread)
    /// decides.
    pub(crate) fn unread(&self) -> bool {
        self.shared.progress.receiver_count() == 0 && Arc::strong_count(&self.shared) <= 2
    }

    /// Takes the fill out of the store's map if nobody reads it, so that no request joins it
    /// from now on; the caller then drops the writer. `false` when a reader came after all.
    pub(crate) fn abandon_if_unread(&self) -> bool {
        let mut state = self.store.lock();
        let listed = listed(&state.flights, &self.shared);
        // Holders of the shared state: this writer, the map, and each follower.
        let holders = 1 + usize::from(listed);
        if self.shared.progress.receiver_count() > 0 || Arc::strong_count(&self.shared) > holders {
            return false;
        }
        if listed {
            state.flights.remove(&self.shared.key);
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
    pub(crate) async fn into_hasher(mut self) -> Option<Hasher> {
        let _ = self.wait_in_flight().await;
        let mut hasher = self.hasher.take()?;
        self.batch.iter().for_each(|b| hasher.update(b));
        Some(hasher)
    }

    /// Checks the digest of everything written. The blob is not yet in the store: that takes
    /// [`VerifiedBlob::commit`], which may come after the client has its last bytes.
    /// [`StoreError::DigestMismatch`] means the content is wrong, or could not be checked (a
    /// blocking task was lost); the temp file is then deleted.
    pub(crate) async fn verify(mut self) -> Result<VerifiedBlob, StoreError> {
        let digest = self.digest.clone();
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
        .map_err(|_| StoreError::DigestMismatch(self.digest.clone()))?;
        if !matches {
            return Err(StoreError::DigestMismatch(self.digest.clone()));
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
pub(crate) struct VerifiedBlob {
    writer: BlobWriter,
    /// A write that failed before the check: the content was right but cannot be kept.
    earlier: Option<StoreError>,
}

impl VerifiedBlob {
    /// Syncs the blob and renames it into the store.
    pub(crate) async fn commit(self) -> Result<u64, StoreError> {
        let VerifiedBlob {
            writer: mut this,
            earlier,
        } = self;
        if let Some(err) = earlier {
            return Err(err);
        }
        let Some(temp) = this.temp.take() else {
            return Err(StoreError::BadKey("fill without a temp file".into()));
        };
        let key = Key::Blob(this.digest.clone());
        let dest = this.store.path(&key);
        let parent = dest.parent().unwrap_or(Path::new(".")).to_owned();
        let file = this.file.clone();
        let folder = parent.clone();
        // Synced and renamed off the store's lock. Until the entry is admitted below, a request
        // finds the fill and follows it, reading the same file by its descriptor.
        blocking(move || {
            file.sync_all().map_err(io_error("sync", &temp))?;
            std::fs::create_dir_all(&folder).map_err(io_error("create", &folder))?;
            temp.persist(&dest)
                .map_err(|e| io_error("rename into", &dest)(e.error))
        })
        .await?;
        // Admitted and taken out of the fills at once, so a request sees the fill or the entry.
        let size = this.written;
        {
            let mut state = this.store.lock();
            state.reserved -= std::mem::take(&mut this.reservation.amount);
            state.index.insert(key, size);
            if listed(&state.flights, &this.shared) {
                state.flights.remove(&this.shared.key);
            }
        }
        this.finished = true;
        this.shared.publish(|p| {
            p.visible = size;
            p.state = FlightState::Done;
        });
        blocking(move || sync_dir(&parent)).await?;
        Ok(size)
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if !self.finished {
            // The temp file deletes itself (TempPath); followers learn the fill failed.
            end_flight(&self.store, &self.shared, FlightState::Failed);
        }
    }
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
