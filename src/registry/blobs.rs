//! Blobs by digest: served from the store (whole or by range), or from a fill in progress
//! (`fill.rs`) that every request for the blob follows: the first client is streamed the
//! upstream's bytes as they arrive, and every request that comes while the fill runs reads the
//! growing temp file. No client of a corrupt fill sees a complete body.

use std::ops::ControlFlow;
use std::sync::Arc;

use http::header::{
    ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, HeaderValue, RANGE,
};
use http::{Method, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;
use tokio::sync::{mpsc, watch};
use tokio::time::timeout_at;
use tracing::Instrument as _;

use super::Target;
use super::fill::{ChannelBody, Chunk, alone, miss};
use super::forward::{forward, pull};

use crate::hoard::Hoard;
use crate::http::{Body, BoxError, CacheStatus, empty_body, error, insert_digest_headers};
use crate::oci::{Digest, span};
use crate::store::{
    BlobHit, BlobLookup, FileChunks, FillState, Flight, FlightKey, Joined, Progress, chunk_len,
    read_at,
};

/// Read size for serving blobs from disk: 256 KiB keeps syscalls few and TLS records full.
const FILE_CHUNK: usize = 256 << 10;

/// A range further than this beyond what a fill has written is fetched from the upstream
/// instead of waiting: at a typical 50 MiB/s, 64 MiB is over a second of waiting.
const RANGE_WAIT_AHEAD: u64 = 64 << 20;

/// Answers `GET` or `HEAD` for `/v2/<name>/blobs/<digest>`. A request that finds the blob being
/// filled follows the fill; one that waits longer than a flight's follower for the fill to start
/// gets the blob from the upstream alone.
pub(super) async fn blob(
    request: Request<Incoming>,
    target: &Target,
    hoard: &Hoard,
    digest: Digest,
) -> Response<Body> {
    let range = request.headers().get(RANGE).cloned();
    if request.method() == Method::HEAD {
        return match hoard.store.blob_length(&digest) {
            Some(len) => head_response(&digest, len),
            None => forward(request, target, hoard).await,
        };
    }
    let deadline = tokio::time::Instant::now() + hoard.flights.wait();
    // A fill can end between looking and joining; a few rounds always settle it.
    for _ in 0..3 {
        let key = FlightKey::Blob(digest.clone());
        let look = || async {
            match hoard.store.find_blob(&digest).await {
                Some(found) => ControlFlow::Break(found),
                None => ControlFlow::Continue(()),
            }
        };
        let found = match hoard.flights.join(key, look).await {
            Flight::Found(found) => found,
            // The leader: its fill is registered before the guard drops, so the requests that
            // followed it find the fill when they look again.
            Flight::Ask {
                guard: Some(_leading),
                ..
            } => match hoard.store.begin_fill(&digest) {
                Some(permit) => BlobLookup::Miss(permit),
                None => continue,
            },
            Flight::Ask { guard: None, .. } => {
                tracing::info!(%digest, "no fill of this blob started in time; fetched alone, not kept");
                return alone(request, target, hoard, digest).await;
            }
        };
        match found {
            BlobLookup::Hit(hit) => {
                return serve_stored(hit, &digest, range.as_ref(), CacheStatus::Hit).await;
            }
            BlobLookup::Filling(follower) => {
                let Ok(joined) = timeout_at(deadline, follower.join()).await else {
                    tracing::info!(%digest, "the fill of this blob has not started in time; fetched alone, not kept");
                    return alone(request, target, hoard, digest).await;
                };
                let (file, progress, length) = match joined {
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
                };
                if let Some(response) =
                    serve_growing(file, progress, length, range.as_ref(), &digest).await
                {
                    return response;
                }
                // Too far ahead to wait for: the range comes from the upstream.
                return pull(request, target, hoard).await;
            }
            BlobLookup::Miss(permit) => {
                return miss(request, target, hoard, digest, permit).await;
            }
        }
    }
    forward(request, target, hoard).await
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
        if state == FillState::Failed {
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
        if pos >= end || (state == FillState::Done && pos >= visible) {
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
