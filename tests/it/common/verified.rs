//! Reading a blob from the shared tier's bucket as a check of its digest (sha256), for tests that
//! look at what the bucket holds: the bytes are hashed as they pass, and the last piece is held
//! back until the hash and the length are checked, so a reader never sees a complete corrupt body
//! (the rule of the local fill, `registry/fill.rs`, which checks what hoard reads from the tier).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;

use hoard::oci::Digest;
use hoard::tier::{BlobStream, Kind, S3Tier, TierError};
use sha2::{Digest as _, Sha256};

/// As `S3Tier::get_blob`, the body checked against the digest on the way ([`verified`]): a
/// corrupt object ends in an error before its last piece. `None` if the bucket does not hold it.
pub(crate) async fn get_verified_blob(
    tier: &S3Tier,
    digest: &Digest,
) -> Result<Option<(u64, BlobStream)>, TierError> {
    let Some((length, inner)) = tier.get_blob(digest).await? else {
        return Ok(None);
    };
    let key = tier.key(Kind::Blob, digest);
    Ok(Some((
        length,
        Box::pin(verified(digest, &key, length, inner)),
    )))
}

/// `inner`, the body of the object `key` announced as `length` bytes, checked against `digest`:
/// each piece is passed on only once the next one has arrived; after the last, the length and
/// the digest are checked and the held piece is passed on only if both match, else the stream
/// ends with [`TierError::Corrupt`]. After an error nothing more is read.
pub(crate) fn verified<S>(digest: &Digest, key: &str, length: u64, inner: S) -> Verified<S>
where
    S: Stream<Item = Result<Bytes, TierError>> + Unpin,
{
    Verified {
        inner,
        digest: digest.clone(),
        key: key.to_owned(),
        length,
        hasher: Some(Sha256::new()),
        seen: 0,
        held: None,
        done: false,
    }
}

/// The stream [`verified`] returns.
pub(crate) struct Verified<S> {
    inner: S,
    digest: Digest,
    key: String,
    length: u64,
    /// `None` once the end was checked.
    hasher: Option<Sha256>,
    seen: u64,
    held: Option<Bytes>,
    done: bool,
}

impl<S> Verified<S> {
    fn corrupt(&mut self, why: String) -> Poll<Option<Result<Bytes, TierError>>> {
        self.done = true;
        self.held = None;
        Poll::Ready(Some(Err(TierError::Corrupt {
            key: std::mem::take(&mut self.key),
            why,
        })))
    }
}

impl<S> Stream for Verified<S>
where
    S: Stream<Item = Result<Bytes, TierError>> + Unpin,
{
    type Item = Result<Bytes, TierError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            let Some(hasher) = this.hasher.as_mut() else {
                // The end was checked and matched: the held piece, then the end.
                this.done = true;
                return Poll::Ready(this.held.take().map(Ok));
            };
            match Pin::new(&mut this.inner).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(err))) => {
                    this.done = true;
                    this.held = None;
                    return Poll::Ready(Some(Err(err)));
                }
                Poll::Ready(Some(Ok(piece))) => {
                    if piece.is_empty() {
                        continue; // holding it back as "the last piece" would release the real one
                    }
                    this.seen = this.seen.saturating_add(piece.len() as u64);
                    if this.seen > this.length {
                        let why = format!("longer than its {} bytes", this.length);
                        return this.corrupt(why);
                    }
                    hasher.update(&piece);
                    if let Some(previous) = this.held.replace(piece) {
                        return Poll::Ready(Some(Ok(previous)));
                    }
                }
                Poll::Ready(None) => {
                    let matches = this.hasher.take().is_some_and(|hasher| {
                        const_hex::encode(hasher.finalize()) == this.digest.hex()
                    });
                    if this.seen != this.length {
                        let why = format!("ended after {} of {} bytes", this.seen, this.length);
                        return this.corrupt(why);
                    }
                    if !matches {
                        let why = format!("its content does not hash to {}", this.digest);
                        return this.corrupt(why);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt as _;

    /// What a reader of `pieces` (announced as `length` bytes) verified against the digest of
    /// `content` gets: the pieces passed on, and the error if any.
    async fn read(content: &[u8], length: u64, pieces: &[&[u8]]) -> (Vec<Bytes>, Option<String>) {
        let digest = Digest::parse(&crate::common::sha256(content)).unwrap();
        let inner = futures_util::stream::iter(
            pieces
                .iter()
                .map(|p| Ok(Bytes::copy_from_slice(p)))
                .collect::<Vec<_>>(),
        );
        let mut stream = verified(&digest, "blobs/x", length, inner);
        let mut got = Vec::new();
        while let Some(item) = stream.next().await {
            match item {
                Ok(piece) => got.push(piece),
                Err(err) => {
                    assert!(stream.next().await.is_none(), "nothing after the error");
                    return (got, Some(err.to_string()));
                }
            }
        }
        (got, None)
    }

    #[tokio::test]
    async fn a_good_object_passes_whole() {
        let (got, err) = read(b"hello world", 11, &[b"hello", b"", b" ", b"world"]).await;
        assert_eq!(err, None);
        assert_eq!(got.concat(), b"hello world");
        let (got, err) = read(b"", 0, &[]).await;
        assert_eq!((got.len(), err), (0, None));
    }

    #[tokio::test]
    async fn a_corrupt_object_never_yields_its_last_piece() {
        // Same length, other bytes: everything but the last piece, then the error.
        let (got, err) = read(b"hello world", 11, &[b"hello", b" ", b"wurld"]).await;
        assert_eq!(got.concat(), b"hello ");
        assert!(err.is_some_and(|e| e.contains("does not hash")));
        // One piece only: nothing at all.
        let (got, err) = read(b"hello", 5, &[b"hullo"]).await;
        assert!(got.is_empty());
        assert!(err.is_some());
        // Short or long: the length gives it away before the hash.
        let (got, err) = read(b"hello world", 11, &[b"hello", b" wor"]).await;
        assert_eq!(got.concat(), b"hello");
        assert!(err.is_some_and(|e| e.contains("ended after 9 of 11 bytes")));
        let (got, err) = read(b"hello", 5, &[b"hel", b"lo", b"!"]).await;
        assert_eq!(got.concat(), b"hel");
        assert!(err.is_some_and(|e| e.contains("longer than its 5 bytes")));
    }
}
