//! Blobs by digest: served from the store (whole or by range), or from a fill in progress
//! (`fill.rs`) that every request for the blob follows: the first client is streamed the
//! upstream's bytes as they arrive, and every request that comes while the fill runs reads the
//! growing temp file. No client of a corrupt fill sees a complete body.

use std::ops::Range;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::{StreamExt as _, stream};
use http::header::{
    ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue,
    RANGE,
};
use http::{Method, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::Instrument as _;

use super::fill::{Filled, alone, miss};
use super::forward::{forward, pull_request};
use super::source::{FOLLOWER_WAIT, Sources};

use crate::http::insert_digest_headers;
use crate::http::{Body, BoxError, CacheStatus, ChannelBody, Chunk, Multipart, error, full_body};
use crate::oci::{Digest, Ranges, ranges};
use crate::store::{
    BlobHit, FileChunks, FlightState, Joined, Lookup, Progress, ReadPin, Stored, chunk_len, read_at,
};
use crate::tier::Kind;

/// The `Content-Type` of every blob hoard serves, and of each part of several ranges of one.
const BLOB_TYPE: &str = "application/octet-stream";

/// Read size for serving blobs from disk: 256 KiB keeps syscalls few and TLS records full.
const FILE_CHUNK: usize = 256 << 10;

/// A range further than this beyond what a fill has written is fetched from the upstream
/// instead of waiting: at a typical 50 MiB/s, 64 MiB is over a second of waiting.
const RANGE_WAIT_AHEAD: u64 = 64 << 20;

/// Fills a request follows before it fetches the blob alone: a fill that never starts is taken
/// over, and so may be the one that took its place.
const FOLLOW_ROUNDS: usize = 3;

/// Answers `GET` or `HEAD` for `/v2/<name>/blobs/<digest>`: from the store, from a fill in
/// progress, or by leading the blob's flight and filling it. A follower whose fill has not
/// started within [`FOLLOWER_WAIT`] takes the fill over.
pub(super) async fn blob(
    request: Request<Incoming>,
    sources: &Sources<'_>,
    digest: &Digest,
) -> Response<Body> {
    let hoard = sources.hoard;
    let range = request.headers().get(RANGE).cloned();
    if request.method() == Method::HEAD {
        return match hoard.store.blob_length(digest) {
            Some(len) => head_response(digest, len),
            None => forward(request, sources.target, hoard).await,
        };
    }
    for _ in 0..FOLLOW_ROUNDS {
        let follower = match hoard.store.lookup_blob(digest).await {
            Lookup::Hit(hit) => {
                super::bucket::used(hoard, Kind::Blob, digest);
                return serve_stored(hit, digest, range.as_ref(), CacheStatus::Hit).await;
            }
            Lookup::Lead { permit, .. } => match miss(&request, sources, digest, permit).await {
                Filled::Response(response) => return response,
                Filled::Follow(follower) => follower,
            },
            Lookup::Follow(follower) => follower,
        };
        let (file, progress, length) = match follower.join(Instant::now() + FOLLOWER_WAIT).await {
            Joined::Reading {
                file,
                progress,
                length,
            } => (file, progress, length),
            Joined::LookAgain => continue,
            Joined::Failed => {
                return error(
                    StatusCode::BAD_GATEWAY,
                    "the upstream download of this blob failed; try again",
                );
            }
            Joined::Stalled(follower) => match hoard.store.take_over(follower) {
                Some(permit) => match miss(&request, sources, digest, permit).await {
                    Filled::Response(response) => return response,
                    Filled::Follow(follower) => match follower.join(Instant::now()).await {
                        Joined::Reading {
                            file,
                            progress,
                            length,
                        } => (file, progress, length),
                        _ => continue,
                    },
                },
                None => continue,
            },
        };
        if let Some(response) = serve_growing(file, progress, length, range.as_ref(), digest).await
        {
            return response;
        }
        // Too far ahead to wait for: the range comes from the upstream.
        return pull_request(&request, sources).await;
    }
    tracing::info!(%digest, "no fill of this blob started in time; fetched alone, not kept");
    alone(&request, sources, digest).await
}

fn head_response(digest: &Digest, len: u64) -> Response<Body> {
    whole(digest, len, Bytes::new(), CacheStatus::Hit).map(full_body)
}

/// A blob asked for without a range: `data` is all of it (or nothing, for a `HEAD`), `len`
/// bytes long.
pub(super) fn whole(digest: &Digest, len: u64, data: Bytes, cache: CacheStatus) -> Response<Bytes> {
    let mut response = Response::new(data);
    blob_headers(response.headers_mut(), digest, len);
    response.extensions_mut().insert(cache);
    response
}

fn blob_headers(headers: &mut HeaderMap, digest: &Digest, len: u64) {
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(BLOB_TYPE));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
    headers.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    insert_digest_headers(headers, digest);
}

fn unsatisfiable(reason: &str, len: u64) -> Response<Body> {
    let mut response = error(StatusCode::RANGE_NOT_SATISFIABLE, reason);
    if let Ok(value) = HeaderValue::from_str(&format!("bytes */{len}")) {
        response.headers_mut().insert(CONTENT_RANGE, value);
    }
    response
}

/// A response's body as spans of the blob, each after framing bytes (a multipart head, or none),
/// then closing bytes; with the status and headers that say so.
struct Plan {
    status: StatusCode,
    parts: Vec<(Bytes, Range<u64>)>,
    tail: Bytes,
    /// The body's length.
    length: u64,
    /// `Content-Range` of a single range, or the `Content-Type` of several.
    header: Option<(HeaderName, String)>,
}

impl Plan {
    /// The body for what a request asks of a blob of `len` bytes.
    fn new(wanted: Ranges, len: u64) -> Plan {
        let one = |status, span: Range<u64>, header| Plan {
            status,
            length: span.end - span.start,
            parts: vec![(Bytes::new(), span)],
            tail: Bytes::new(),
            header,
        };
        match wanted {
            Ranges::Whole => one(StatusCode::OK, 0..len, None),
            Ranges::One(span) => {
                let range = format!("bytes {}-{}/{len}", span.start, span.end - 1);
                one(
                    StatusCode::PARTIAL_CONTENT,
                    span,
                    Some((CONTENT_RANGE, range)),
                )
            }
            Ranges::Many(spans) => {
                let frame = Multipart::new(spans, len, BLOB_TYPE);
                let parts = (frame.spans().iter().enumerate())
                    .map(|(i, span)| (frame.head(i), span.clone()))
                    .collect();
                Plan {
                    status: StatusCode::PARTIAL_CONTENT,
                    parts,
                    tail: frame.tail(),
                    length: frame.content_length(),
                    header: Some((CONTENT_TYPE, frame.content_type())),
                }
            }
        }
    }

    /// Where the first span starts.
    fn start(&self) -> u64 {
        self.parts.first().map_or(0, |(_, span)| span.start)
    }

    fn response(&self, body: Body, digest: &Digest, cache: CacheStatus) -> Response<Body> {
        let mut response = Response::new(body);
        *response.status_mut() = self.status;
        blob_headers(response.headers_mut(), digest, self.length);
        if let Some((name, value)) = &self.header
            && let Ok(value) = HeaderValue::from_str(value)
        {
            response.headers_mut().insert(name, value);
        }
        response.extensions_mut().insert(cache);
        response
    }
}

/// Serves a stored blob: whole, one byte range, or several as `multipart/byteranges`.
async fn serve_stored(
    hit: BlobHit,
    digest: &Digest,
    range: Option<&HeaderValue>,
    cache: CacheStatus,
) -> Response<Body> {
    let BlobHit { len, stored } = hit;
    let plan = match ranges(range, len) {
        Ok(wanted) => Plan::new(wanted, len),
        Err(reason) => return unsatisfiable(reason, len),
    };
    let body = match stored {
        Stored::Memory(data) => from_memory(&plan, &data),
        Stored::File(file, pin) => from_file(&plan, file, pin),
    };
    plan.response(body, digest, cache)
}

/// A planned body from a blob's bytes in memory: one frame.
fn from_memory(plan: &Plan, data: &Bytes) -> Body {
    let slice = |span: &Range<u64>| {
        let (start, end) = (span.start as usize, span.end as usize);
        data.slice(start.min(data.len())..end.min(data.len()))
    };
    let body = match plan.parts.as_slice() {
        [(head, span)] if head.is_empty() && plan.tail.is_empty() => slice(span),
        parts => {
            let mut body = BytesMut::with_capacity(usize::try_from(plan.length).unwrap_or(0));
            for (head, span) in parts {
                body.extend_from_slice(head);
                body.extend_from_slice(&slice(span));
            }
            body.extend_from_slice(&plan.tail);
            body.freeze()
        }
    };
    Full::new(body).map_err(BoxError::from).boxed()
}

/// A planned body read from a blob's file in chunks; `pin` keeps the entry from eviction until
/// the body is done.
fn from_file(plan: &Plan, file: std::fs::File, pin: ReadPin) -> Body {
    let file = Arc::new(file);
    let framing = |bytes: Bytes| (!bytes.is_empty()).then_some(Ok(bytes));
    let parts = plan.parts.clone();
    let tail = framing(plan.tail.clone());
    let stream = stream::iter(parts)
        .flat_map(move |(head, span)| {
            let chunks = FileChunks::new(file.clone(), span.start, span.end, FILE_CHUNK);
            stream::iter(framing(head)).chain(chunks)
        })
        .chain(stream::iter(tail))
        .map(move |read| {
            let _ = &pin;
            read.map(Frame::data).map_err(BoxError::from)
        });
    BodyExt::boxed(StreamBody::new(stream))
}

/// Serves a blob from a fill in progress, each span as its bytes arrive. `None` when the first
/// span is too far ahead to wait for, or the blob's length is unknown (so a range cannot be
/// answered).
async fn serve_growing(
    file: std::fs::File,
    progress: watch::Receiver<Progress>,
    length: Option<u64>,
    range: Option<&HeaderValue>,
    digest: &Digest,
) -> Option<Response<Body>> {
    let visible = progress.borrow().visible;
    let plan = match length {
        Some(len) => match ranges(range, len) {
            Ok(wanted) => Plan::new(wanted, len),
            Err(reason) => return Some(unsatisfiable(reason, len)),
        },
        None if range.is_none() => Plan::new(Ranges::Whole, u64::MAX),
        None => return None,
    };
    if plan.start() > visible.saturating_add(RANGE_WAIT_AHEAD) {
        return None;
    }
    let (tx, rx) = mpsc::channel(4);
    let (parts, tail) = (plan.parts.clone(), plan.tail.clone());
    tokio::spawn(follow_parts(Arc::new(file), progress, parts, tail, tx).in_current_span());
    let known = length.map(|_| plan.length);
    let body = ChannelBody::new(rx, known).boxed();
    let mut response = plan.response(body, digest, CacheStatus::Hit);
    if length.is_none() {
        response.headers_mut().remove(CONTENT_LENGTH);
    }
    Some(response)
}

/// Sends each part of a body from a growing file: its framing, then its span as the fill makes
/// it visible; then the closing framing.
async fn follow_parts(
    file: Arc<std::fs::File>,
    mut progress: watch::Receiver<Progress>,
    parts: Vec<(Bytes, Range<u64>)>,
    tail: Bytes,
    tx: mpsc::Sender<Chunk>,
) {
    for (head, span) in parts {
        if !head.is_empty() && tx.send(Ok(vec![head])).await.is_err() {
            return; // the client went away
        }
        if !follow(&file, &mut progress, span, &tx).await {
            return;
        }
    }
    if !tail.is_empty() {
        let _ = tx.send(Ok(vec![tail])).await;
    }
}

/// Reads `span` of a growing file as the fill makes it visible: `false` if the body ended
/// short (an error sent, or the client gone).
async fn follow(
    file: &Arc<std::fs::File>,
    progress: &mut watch::Receiver<Progress>,
    Range { start, end }: Range<u64>,
    tx: &mpsc::Sender<Chunk>,
) -> bool {
    let mut pos = start;
    loop {
        let (state, visible) = {
            let p = progress.borrow_and_update();
            (p.state, p.visible)
        };
        if state == FlightState::Failed {
            let _ = tx
                .send(Err("the upstream download of this blob failed".into()))
                .await;
            return false;
        }
        let limit = visible.min(end);
        while pos < limit {
            let want = chunk_len(limit - pos, FILE_CHUNK);
            let bytes = match read_at(file.clone(), pos, want).await {
                Ok(bytes) if !bytes.is_empty() => bytes,
                _ => {
                    let _ = tx
                        .send(Err("cannot read the blob being filled".into()))
                        .await;
                    return false;
                }
            };
            pos += bytes.len() as u64;
            if tx.send(Ok(vec![bytes])).await.is_err() {
                return false; // the client went away
            }
        }
        if pos >= end || (state == FlightState::Done && pos >= visible) {
            return true;
        }
        if progress.changed().await.is_err() {
            let _ = tx
                .send(Err("the blob's fill ended unexpectedly".into()))
                .await;
            return false;
        }
    }
}
