//! h2 registry connections whose hits from memory are answered before hyper: a frame layer
//! ([`Front`]) between the TLS stream and hyper's h2 server. hyper's h2 server costs a task, a
//! request and a response of `http` types, and stream state per request; for a small hit that
//! is most of the work. The front reads the client's frames itself (`inbound.rs`): a request
//! that `quick.rs` answers (a plain `GET` or `HEAD`, whole in one header block that ends the
//! stream) is answered with frames written here, and hyper never sees the stream; every other
//! frame goes on to hyper, which serves the connection as it would without the front (its
//! SETTINGS, PINGs, flow control, GOAWAY and every other request).
//!
//! What the two writers share is kept apart:
//! - the HPACK tables: every header block the client sends is decoded here and the ones for
//!   hyper re-encoded without the table; hoard's own blocks leave the client's table alone, so
//!   hyper's encoder and the front's never disagree;
//! - the frame stream: the front's frames go out only between two of hyper's ([`Outbound`]);
//! - the connection's send window: see `window.rs`.
//!
//! The front stops answering once hyper sends GOAWAY (or the client shrinks the HPACK table
//! hyper's encoder uses), and does not answer a request whose answer would not fit the
//! client's windows whole: hyper answers those.

use std::io;
use std::mem::MaybeUninit;
use std::net::IpAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::quick::Quick;
pub(super) use frame::PREFACE;
use frame::{DATA, GOAWAY, HEAD_LEN, Head};
use inbound::{Inbound, OURS_MAX};

mod frame;
mod inbound;
mod window;

/// How much is read from the stream at once: a TLS record's plaintext, at most. The buffer is
/// on the stack only while a read is polled.
const READ_SIZE: usize = 16 * 1024;

/// An h2 connection's stream as hyper sees it: the client's frames, less the requests answered
/// here, and hyper's frames out with the front's own between them.
pub(super) struct Front<T, Q> {
    io: T,
    inbound: Inbound<Q>,
    outbound: Outbound,
}

impl<T, Q: Quick> Front<T, Q> {
    /// The front of `io`, a connection from `client` that opens with h2's preface; `quick`
    /// answers what it can; `max_header_size` is `proxy.max_header_size`.
    pub(super) fn new(io: T, quick: Q, client: IpAddr, max_header_size: usize) -> Self {
        Front {
            io,
            inbound: Inbound::new(quick, client, max_header_size),
            outbound: Outbound::default(),
        }
    }
}

impl<T: AsyncWrite + Unpin, Q> Front<T, Q> {
    /// Writes the front's frames when hyper is between two frames of its own (else hyper's next
    /// write or flush comes back here once it has finished its frame): pending only while the
    /// stream is.
    fn poll_ours(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.inbound.unwritten().is_empty() || !self.outbound.between_frames() {
            return Poll::Ready(Ok(()));
        }
        while !self.inbound.unwritten().is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, self.inbound.unwritten()))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.inbound.wrote(n);
        }
        Pin::new(&mut self.io).poll_flush(cx)
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin, Q: Quick + Unpin> AsyncRead for Front<T, Q> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            // Answers go out as soon as they are made; a write that waits wakes this task.
            if let Poll::Ready(Err(err)) = this.poll_ours(cx) {
                return Poll::Ready(Err(err));
            }
            let ready = this.inbound.for_hyper();
            if !ready.is_empty() {
                let n = ready.len().min(buf.remaining());
                buf.put_slice(&ready[..n]);
                this.inbound.gave(n);
                return Poll::Ready(Ok(()));
            }
            if this.inbound.unwritten().len() >= OURS_MAX {
                // The client is not reading its answers: nor is its next request read.
                return Poll::Pending;
            }
            let mut stack = [MaybeUninit::<u8>::uninit(); READ_SIZE];
            let mut read = ReadBuf::uninit(&mut stack);
            ready!(Pin::new(&mut this.io).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                return Poll::Ready(Ok(()));
            }
            this.inbound.feed(read.filled())?;
        }
    }
}

impl<T: AsyncWrite + Unpin, Q: Unpin> AsyncWrite for Front<T, Q> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_ours(cx))?;
        // hyper's bytes up to the end of its frame at most while the front has frames waiting,
        // so that they go next.
        let data = match this.inbound.unwritten().is_empty() {
            true => data,
            false => &data[..this.outbound.frame_end(data.len())],
        };
        let n = ready!(Pin::new(&mut this.io).poll_write(cx, data))?;
        let passed = this.outbound.pass(&data[..n]);
        this.inbound.hyper_sent(passed.data);
        if passed.goaway {
            this.inbound.hyper_only = true;
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_ours(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_ours(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

/// Where hyper's output stands: in which frame, so that the front's frames go between two
/// (and after its SETTINGS, which must be the first frame a server sends).
#[derive(Debug, Default)]
struct Outbound {
    /// hyper has begun its first frame.
    started: bool,
    /// Bytes of the current frame's payload still to come.
    left: usize,
    /// The start of the next frame's head.
    head: [u8; HEAD_LEN],
    have: usize,
}

impl Outbound {
    /// Whether hyper's last frame is out whole.
    fn between_frames(&self) -> bool {
        self.started && self.left == 0 && self.have == 0
    }

    /// Of `n` bytes hyper writes next, how many may go before the front's frames: up to the end
    /// of the frame it is in (all of them when its next head is not whole yet: at least one).
    fn frame_end(&self, n: usize) -> usize {
        if self.have == 0 && self.left > 0 {
            n.min(self.left)
        } else {
            n
        }
    }

    /// Follows `data`, written by hyper.
    fn pass(&mut self, mut data: &[u8]) -> Passed {
        let mut passed = Passed::default();
        while !data.is_empty() {
            if self.left > 0 {
                let n = self.left.min(data.len());
                self.left -= n;
                data = &data[n..];
                continue;
            }
            let n = (HEAD_LEN - self.have).min(data.len());
            self.head[self.have..self.have + n].copy_from_slice(&data[..n]);
            self.have += n;
            data = &data[n..];
            if let Some(head) = Head::parse(&self.head[..self.have]) {
                match head.kind {
                    GOAWAY => passed.goaway = true,
                    DATA => passed.data += head.len,
                    _ => {}
                }
                self.started = true;
                self.left = head.len;
                self.have = 0;
            }
        }
        passed
    }
}

/// What hyper wrote, as far as the front needs to know.
#[derive(Debug, Default, PartialEq, Eq)]
struct Passed {
    /// A GOAWAY frame began.
    goaway: bool,
    /// The payload bytes of the DATA frames that began.
    data: usize,
}

#[cfg(test)]
mod tests;
