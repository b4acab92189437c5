//! Blobs by digest: served from the store (whole or by range), or from a fill in progress
//! (`fill.rs`) that every request for the blob follows: the first client is streamed the
//! upstream's bytes as they arrive, and every request that comes while the fill runs reads the
//! growing temp file. No client of a corrupt fill sees a complete body.

use std::sync::Arc;

use http::header::{
    ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, HeaderValue, RANGE,
};
use http::{Method, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::Instrument as _;

use super::fill::{Filled, alone, miss};
use super::forward::{forward, pull_request};
use super::source::{FOLLOWER_WAIT, Sources};

use crate::http::insert_digest_headers;
use crate::http::{Body, BoxError, CacheStatus, ChannelBody, Chunk, empty_body, error};
use crate::oci::{Digest, span};
use crate::store::{
    BlobHit, FileChunks, FlightState, Joined, Lookup, Progress, chunk_len, read_at,
};

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
    let mut response = Response::new(empty_body());
    blob_headers(&mut response, digest, len);
    response.extensions_mut().insert(CacheStatus::Hit);
    response
}

fn blob_headers(response: &mut Response<Body>, digest: &Digest, len: u64) {
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
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

fn span_response(
    body: Body,
    digest: &Digest,
    status: StatusCode,
    (start, end, len): (u64, u64, u64),
    cache: CacheStatus,
) -> Response<Body> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    blob_headers(&mut response, digest, end - start);
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(value) = HeaderValue::from_str(&format!("bytes {start}-{}/{len}", end - 1))
    {
        response.headers_mut().insert(CONTENT_RANGE, value);
    }
    response.extensions_mut().insert(cache);
    response
}

/// Serves a stored blob, whole or one byte range of it.
async fn serve_stored(
    hit: BlobHit,
    digest: &Digest,
    range: Option<&HeaderValue>,
    cache: CacheStatus,
) -> Response<Body> {
    let BlobHit { file, len, pin } = hit;
    let (status, start, end) = match span(range, len) {
        Ok(span) => span,
        Err(reason) => return unsatisfiable(reason, len),
    };
    let stream =
        futures_util::StreamExt::map(FileChunks::new(file, start, end, FILE_CHUNK), move |read| {
            // The pin keeps the entry from eviction until the body is done.
            let _ = &pin;
            read.map(Frame::data).map_err(BoxError::from)
        });
    let body = StreamBody::new(stream).boxed();
    span_response(body, digest, status, (start, end, len), cache)
}

/// Serves a blob from a fill in progress. `None` when the range is too far ahead to wait for,
/// or the blob's length is unknown (so a range cannot be answered).
async fn serve_growing(
    file: std::fs::File,
    progress: watch::Receiver<Progress>,
    length: Option<u64>,
    range: Option<&HeaderValue>,
    digest: &Digest,
) -> Option<Response<Body>> {
    let visible = progress.borrow().visible;
    let (status, start, end) = match length {
        Some(len) => match span(range, len) {
            Ok(span) => span,
            Err(reason) => return Some(unsatisfiable(reason, len)),
        },
        None if range.is_none() => (StatusCode::OK, 0, u64::MAX),
        None => return None,
    };
    if start > visible.saturating_add(RANGE_WAIT_AHEAD) {
        return None;
    }
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(follow(file, progress, start, end, tx).in_current_span());
    let known = length.map(|_| end - start);
    let body = ChannelBody::new(rx, known).boxed();
    let len = length.unwrap_or(0);
    let mut response = span_response(body, digest, status, (start, end, len), CacheStatus::Hit);
    if length.is_none() {
        response.headers_mut().remove(CONTENT_LENGTH);
    }
    Some(response)
}

/// Reads `[start, end)` of a growing file as the fill makes it visible.
async fn follow(
    file: std::fs::File,
    mut progress: watch::Receiver<Progress>,
    start: u64,
    end: u64,
    tx: mpsc::Sender<Chunk>,
) {
    let file = Arc::new(file);
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
            return;
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
                    return;
                }
            };
            pos += bytes.len() as u64;
            if tx.send(Ok(vec![bytes])).await.is_err() {
                return; // the client went away
            }
        }
        if pos >= end || (state == FlightState::Done && pos >= visible) {
            return;
        }
        if progress.changed().await.is_err() {
            let _ = tx
                .send(Err("the blob's fill ended unexpectedly".into()))
                .await;
            return;
        }
    }
}
