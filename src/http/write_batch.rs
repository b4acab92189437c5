//! Write coalescing for h2 over TLS.
//!
//! hyper's h2 writes every DATA frame on its own: a 9-byte header and a payload of at most
//! 16 KiB (the client's frame size), then a flush. Straight onto TLS that is one socket write and
//! two TLS records (16,384 bytes and 9) per frame, which costs both ends far more than the
//! bytes do. [`Coalesce`] gathers those writes into one buffer and hands TLS a batch at a time,
//! so records are full and the socket sees one write per batch.
//!
//! h2 flushes after each frame, so a flush cannot simply mean "write now". A flush that follows
//! new writes is deferred once: the task is woken and returns here, and h2 either adds more
//! frames (they join the batch) or flushes again with nothing new, which writes the batch. No
//! byte waits longer than one more turn of the connection's task.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes gathered before they are written without waiting for a flush.
const BATCH: usize = 256 * 1024;

pub(crate) struct Coalesce<T> {
    io: T,
    buf: Vec<u8>,
    /// How much of `buf` the inner stream has taken.
    written: usize,
    /// A flush was deferred and nothing has been written since.
    deferred: bool,
}

impl<T: AsyncWrite + Unpin> Coalesce<T> {
    pub(crate) fn new(io: T) -> Self {
        Coalesce {
            io,
            buf: Vec::new(),
            written: 0,
            deferred: false,
        }
    }

    /// Writes all of `buf` to the inner stream.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.buf.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.buf[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.buf.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalesce<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(data)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.buf.len() >= BATCH {
            ready!(this.poll_drain(cx))?;
        }
        if this.buf.capacity() == 0 {
            this.buf.reserve_exact(BATCH);
        }
        let mut room = BATCH - this.buf.len();
        let mut taken = 0;
        for data in bufs {
            let n = data.len().min(room);
            this.buf.extend_from_slice(&data[..n]);
            taken += n;
            room -= n;
            if room == 0 {
                break;
            }
        }
        this.deferred = false;
        Poll::Ready(Ok(taken))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.buf.is_empty() {
            if this.buf.len() < BATCH && !this.deferred {
                this.deferred = true;
                cx.waker().wake_by_ref();
                return Poll::Ready(Ok(()));
            }
            ready!(this.poll_drain(cx))?;
            // The batch's memory goes with it, so an idle connection keeps none.
            this.buf = Vec::new();
        }
        this.deferred = false;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Coalesce<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Wake, Waker};
    use tokio::io::AsyncWriteExt;

    /// The stream under the batch: keeps what it is given and counts the writes.
    #[derive(Default)]
    struct Sink {
        data: Vec<u8>,
        writes: usize,
    }

    impl AsyncWrite for Sink {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.writes += 1;
            self.data.extend_from_slice(data);
            Poll::Ready(Ok(data.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[derive(Default)]
    struct CountWakes(AtomicUsize);

    impl Wake for CountWakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// h2's pattern: a 9-byte header and a 16 KiB payload, then a flush, frame after frame.
    #[tokio::test]
    async fn frames_flushed_one_by_one_reach_the_stream_in_batches() -> io::Result<()> {
        let mut batch = Coalesce::new(Sink::default());
        let mut sent = Vec::new();
        for i in 0..64u32 {
            let header = [i as u8; 9];
            let payload = vec![(i * 7) as u8; 16 * 1024];
            batch.write_all(&header).await?;
            batch.write_all(&payload).await?;
            batch.flush().await?;
            sent.extend_from_slice(&header);
            sent.extend_from_slice(&payload);
        }
        // Two flushes with nothing between: the end of h2's turn.
        batch.flush().await?;
        assert_eq!(batch.io.data, sent, "every byte, in order");
        assert!(batch.io.writes <= 5, "1 MiB in {} writes", batch.io.writes);
        Ok(())
    }

    #[test]
    fn a_flush_after_new_writes_wakes_the_task_and_the_next_one_writes() {
        let wakes = Arc::new(CountWakes::default());
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let mut batch = Coalesce::new(Sink::default());

        let written = Pin::new(&mut batch).poll_write(&mut cx, b"HEADERS");
        assert!(matches!(written, Poll::Ready(Ok(7))));
        assert!(Pin::new(&mut batch).poll_flush(&mut cx).is_ready());
        assert_eq!(
            wakes.0.load(Ordering::SeqCst),
            1,
            "a deferred flush must wake the task"
        );
        assert!(batch.io.data.is_empty(), "deferred once");

        assert!(Pin::new(&mut batch).poll_flush(&mut cx).is_ready());
        assert_eq!(batch.io.data, b"HEADERS");
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        assert_eq!(batch.buf.capacity(), 0, "an idle connection keeps no batch");
    }

    #[tokio::test]
    async fn shutdown_writes_what_is_gathered() -> io::Result<()> {
        let mut batch = Coalesce::new(Sink::default());
        batch.write_all(b"GOAWAY").await?;
        batch.shutdown().await?;
        assert_eq!(batch.io.data, b"GOAWAY");
        Ok(())
    }
}
