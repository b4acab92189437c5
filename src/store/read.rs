//! Reading stored files: opening an entry, and reading a span of it in chunks, at once from the
//! kernel's caches or on the blocking pool from the disk.

use std::io::Read as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use rustix::fs::{Mode, OFlags, ResolveFlags};

/// The largest file [`read_whole`] reads on the task's thread: 256 KiB, a copy of well under a
/// millisecond; a larger manifest is read on the blocking pool.
const INLINE_READ_MAX: u64 = 256 << 10;

/// Opens a file at once on the task's thread when the kernel can do it from its caches alone
/// (`openat2` with `RESOLVE_CACHED`, Linux 5.12), as a hit's file mostly is: no hand-off to the
/// blocking pool and back, which cost a 4 KiB blob hit a third of hoard's CPU time (issue 25).
/// `None` when it cannot (a dentry or inode not in memory, an older kernel, or any error): the
/// caller opens it on the blocking pool, which may wait for the disk.
fn open_cached(path: &Path) -> Option<std::fs::File> {
    let flags = OFlags::RDONLY | OFlags::CLOEXEC;
    rustix::fs::openat2(
        rustix::fs::CWD,
        path,
        flags,
        Mode::empty(),
        ResolveFlags::CACHED,
    )
    .ok()
    .map(std::fs::File::from)
}

/// Opens a file and takes its length: at once when the kernel has it cached, else on the
/// blocking pool.
pub(super) async fn open_sized(path: &Path) -> std::io::Result<(std::fs::File, u64)> {
    if let Some(file) = open_cached(path) {
        let len = file.metadata()?.len();
        return Ok((file, len));
    }
    let path = path.to_owned();
    let opened = tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(path)?;
        let len = file.metadata()?.len();
        Ok((file, len))
    });
    opened.await.map_err(std::io::Error::other)?
}

/// A whole small file as read, and its inode number (a stored file is replaced by a rename,
/// which gives it a new inode).
pub(super) struct Whole {
    pub(super) data: Vec<u8>,
    pub(super) inode: u64,
}

/// Reads a whole small file (a manifest, a tag's record): at once when the kernel has its path
/// and its pages cached ([`open_cached`], then `RWF_NOWAIT` reads), else on the blocking pool.
pub(super) async fn read_whole(path: &Path) -> std::io::Result<Whole> {
    if let Some(file) = open_cached(path)
        && let Ok(meta) = file.metadata()
        && let Some(data) = read_cached_len(&file, meta.len())
    {
        return Ok(Whole {
            data,
            inode: meta.ino(),
        });
    }
    let path = path.to_owned();
    let read = tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::open(path)?;
        let inode = file.metadata()?.ino();
        let mut data = Vec::new();
        file.read_to_end(&mut data)?;
        Ok(Whole { data, inode })
    });
    read.await.map_err(std::io::Error::other)?
}

/// The inode number of the file at `path` now.
pub(super) fn inode_of(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|meta| meta.ino())
}

/// All of a file of `len` bytes (at most [`INLINE_READ_MAX`]) if the page cache holds it, else
/// `None`; fewer bytes if it ends first.
/// Stored files are replaced by rename, never changed in place: the length is the content's.
pub(super) fn read_cached_len(file: &std::fs::File, len: u64) -> Option<Vec<u8>> {
    if len > INLINE_READ_MAX {
        return None;
    }
    let mut buf = vec![0; usize::try_from(len).ok()?];
    let mut got = 0;
    while got < buf.len() {
        let mut slices = [std::io::IoSliceMut::new(&mut buf[got..])];
        let flags = rustix::io::ReadWriteFlags::NOWAIT;
        match rustix::io::preadv2(file, &mut slices, got as u64, flags) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => return None,
        }
    }
    buf.truncate(got);
    Some(buf)
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

    #[tokio::test]
    async fn cached_small_files_open_and_read_at_once_others_on_the_pool() -> std::io::Result<()> {
        use futures_util::FutureExt as _;
        let dir = tempfile::tempdir()?;
        let small = dir.path().join("manifest");
        std::fs::write(&small, b"{\"schemaVersion\":2}")?;

        // Just written, so its path and pages are cached: ready on the first poll.
        let read = read_whole(&small)
            .now_or_never()
            .ok_or_else(|| std::io::Error::other("a cached file must read at once"))??;
        assert_eq!(read.data, b"{\"schemaVersion\":2}");
        assert_eq!(Some(read.inode), inode_of(&small));
        let (_, len) = open_sized(&small)
            .now_or_never()
            .ok_or_else(|| std::io::Error::other("a cached file must open at once"))??;
        assert_eq!(len, 19);

        // Past the inline limit: still read whole, on the blocking pool.
        let big = dir.path().join("big");
        let data = vec![5u8; INLINE_READ_MAX as usize + 1];
        std::fs::write(&big, &data)?;
        assert!(read_whole(&big).now_or_never().is_none());
        assert_eq!(read_whole(&big).await?.data, data);

        let missing = read_whole(&dir.path().join("missing")).await;
        assert_eq!(
            missing.map_err(|e| e.kind()).err(),
            Some(std::io::ErrorKind::NotFound)
        );
        Ok(())
    }
}
