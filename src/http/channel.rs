//! A response body fed by a task, piece by piece: a fill hands its first client the upstream's
//! own buffers, and a follower the pieces it reads from the growing file.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::Frame;
use tokio::sync::mpsc;

use super::BoxError;

/// Buffers handed to a client together.
pub(crate) type Piece = Vec<Bytes>;

/// What a task sends: a piece, or the error that cuts the body short.
pub(crate) type Chunk = Result<Piece, BoxError>;

/// A response body fed by a task, piece by piece.
pub(crate) struct ChannelBody {
    rx: mpsc::Receiver<Chunk>,
    piece: std::vec::IntoIter<Bytes>,
    length: Option<u64>,
}

impl ChannelBody {
    pub(crate) fn new(rx: mpsc::Receiver<Chunk>, length: Option<u64>) -> ChannelBody {
        ChannelBody {
            rx,
            piece: Vec::new().into_iter(),
            length,
        }
    }
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            if let Some(bytes) = self.piece.next() {
                return Poll::Ready(Some(Ok(Frame::data(bytes))));
            }
            match std::task::ready!(self.rx.poll_recv(cx)) {
                Some(Ok(piece)) => self.piece = piece.into_iter(),
                Some(Err(err)) => return Poll::Ready(Some(Err(err))),
                None => return Poll::Ready(None),
            }
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self.length {
            Some(length) => http_body::SizeHint::with_exact(length),
            None => http_body::SizeHint::default(),
        }
    }
}
