//! A client stream lent to one HTTP/1.1 connection at a time (`registry::h1`): bytes read ahead
//! of it are handed out first, and a [`Watch`] notes whether its reader last found nothing to
//! read and whether everything written has been flushed, which is what tells that the
//! connection can be set down between requests.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What the connection last did with a [`Replay`].
#[derive(Debug, Default)]
pub(crate) struct Watch {
    /// The last read found nothing to read (it is waiting for the client).
    blocked: AtomicBool,
    /// Bytes were written since the last completed flush.
    unflushed: AtomicBool,
}

impl Watch {
    /// Whether the reader waits for the client with everything it wrote flushed.
    pub(crate) fn quiet(&self) -> bool {
        self.blocked.load(Ordering::Relaxed) && !self.unflushed.load(Ordering::Relaxed)
    }
}

/// A stream with bytes read ahead of it, handed out before the stream's own.
#[derive(Debug)]
pub(crate) struct Replay<'w, I> {
    io: I,
    ahead: Vec<u8>,
    at: usize,
    watch: Option<&'w Watch>,
}

impl<'w, I> Replay<'w, I> {
    /// `io`, with `ahead` read first; `watch`, if any, notes the reads and writes.
    pub(crate) fn new(io: I, ahead: Vec<u8>, watch: Option<&'w Watch>) -> Replay<'w, I> {
        Replay {
            io,
            ahead,
            at: 0,
            watch,
        }
    }

    /// The bytes read ahead that were not handed out yet.
    pub(crate) fn into_ahead(mut self) -> Vec<u8> {
        self.ahead.drain(..self.at);
        self.ahead
    }

    fn note(&self, flag: fn(&Watch) -> &AtomicBool, value: bool) {
        if let Some(watch) = self.watch {
            flag(watch).store(value, Ordering::Relaxed);
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Replay<'_, I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.at < this.ahead.len() {
            let n = buf.remaining().min(this.ahead.len() - this.at);
            buf.put_slice(&this.ahead[this.at..this.at + n]);
            this.at += n;
            if this.at == this.ahead.len() {
                (this.ahead, this.at) = (Vec::new(), 0);
            }
            this.note(|w| &w.blocked, false);
            return Poll::Ready(Ok(()));
        }
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        this.note(|w| &w.blocked, polled.is_pending());
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Replay<'_, I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.note(|w| &w.unflushed, true);
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.note(|w| &w.unflushed, true);
        Pin::new(&mut this.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_flush(cx);
        if matches!(polled, Poll::Ready(Ok(()))) {
            this.note(|w| &w.unflushed, false);
        }
        polled
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn bytes_ahead_come_first_and_the_watch_sees_a_blocked_flushed_reader() {
        let (near, mut far) = tokio::io::duplex(64);
        let watch = Watch::default();
        let mut replay = Replay::new(near, b"GET / HT".to_vec(), Some(&watch));
        far.write_all(b"TP/1.1\r\n").await.ok();
        let mut buf = [0u8; 4];
        assert_eq!(replay.read(&mut buf).await.ok(), Some(4));
        assert_eq!(&buf, b"GET ");
        assert_eq!(replay.read(&mut buf).await.ok(), Some(4));
        assert_eq!(&buf, b"/ HT");
        let mut rest = [0u8; 16];
        assert_eq!(replay.read(&mut rest).await.ok(), Some(8));
        assert!(!watch.quiet());
        replay.write_all(b"HTTP/1.1 200 OK").await.ok();
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut unfilled = ReadBuf::new(&mut rest);
        assert!(
            Pin::new(&mut replay)
                .poll_read(&mut cx, &mut unfilled)
                .is_pending()
        );
        assert!(!watch.quiet(), "written but not flushed");
        replay.flush().await.ok();
        assert!(watch.quiet());
    }

    #[test]
    fn the_bytes_not_handed_out_are_given_back() {
        let mut replay = Replay::new(tokio::io::empty(), b"abcdef".to_vec(), None);
        let mut buf = [0u8; 2];
        let waker = std::task::Waker::noop();
        let mut read = ReadBuf::new(&mut buf);
        let polled = Pin::new(&mut replay).poll_read(&mut Context::from_waker(waker), &mut read);
        assert!(polled.is_ready());
        assert_eq!(replay.into_ahead(), b"cdef");
    }
}
