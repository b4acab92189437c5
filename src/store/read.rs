//! Reading stored files: opening an entry, and reading a span of it in chunks, at once from the
//! page cache or on the blocking pool from the disk.

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;

/// Opens a file and takes its length, on the blocking pool.
pub(super) async fn open_sized(path: &Path) -> std::io::Result<(std::fs::File, u64)> {
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
pub(crate) async fn read_at(
    file: Arc<std::fs::File>,
    offset: u64,
    len: usize,
) -> std::io::Result<Bytes> {
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
pub(crate) fn chunk_len(remaining: u64, chunk: usize) -> usize {
    usize::try_from(remaining).map_or(chunk, |n| n.min(chunk))
}

/// `[start, end)` of a file as chunks of at most `chunk` bytes. A chunk in the page cache is
/// read at once on the task's thread: a copy from memory, with no hand-off to another thread
/// and back (on a hit over h1 that saved a tenth of hoard's CPU time per GiB, and 16 parallel
/// hits a sixth). Any other chunk is read on the blocking pool.
pub(crate) struct FileChunks {
    file: Arc<std::fs::File>,
    /// Where the next read starts.
    next: u64,
    end: u64,
    chunk: usize,
    reading: Option<tokio::task::JoinHandle<std::io::Result<Bytes>>>,
}

impl FileChunks {
    pub(crate) fn new(
        file: impl Into<Arc<std::fs::File>>,
        start: u64,
        end: u64,
        chunk: usize,
    ) -> FileChunks {
        FileChunks {
            file: file.into(),
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

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;

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
}
