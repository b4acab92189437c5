//! Blobs by digest: served from the store (whole or by range), or filled from the upstream once
//! for everyone who asks. The first client is streamed the upstream's bytes as they arrive;
//! every request that comes while the fill runs reads the growing temp file. Nothing is kept
//! unless its digest matches, and no client of a corrupt fill sees a complete body.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{
    ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, HeaderValue, RANGE,
};
use http::{Method, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;
use tokio::sync::{mpsc, watch};

use super::{Target, path_and_query, registry_send};
use crate::access::{ClientAddr, FillSlot};
use crate::hoard::Hoard;
use crate::http::{
    Body, BoxError, CacheStatus, empty_body, error, insert_digest_headers, pass_through,
    upstream_headers,
};
use crate::oci::{Digest, Hasher, far_range, span};
use crate::store::{
    BlobHit, BlobLookup, BlobWriter, FileChunks, FillPermit, FillState, Joined, Progress, Store,
    chunk_len, read_at,
};
use crate::telemetry::{FillSkipped, Metrics};
use crate::upstream::upstream_error;

/// Read size for serving blobs from disk: 256 KiB keeps syscalls few and TLS records full.
const FILE_CHUNK: usize = 256 << 10;

/// Chunks buffered between a fill and its first client (4 × 128 KiB).
const FILL_CHANNEL: usize = 4;

/// Size of the pieces a fill hands its first client.
const CLIENT_CHUNK: usize = 128 << 10;

/// A range further than this beyond what a fill has written is fetched from the upstream
/// instead of waiting: at a typical 50 MiB/s, 64 MiB is over a second of waiting.
const RANGE_WAIT_AHEAD: u64 = 64 << 20;

/// A fill nobody reads goes on to the end when it is mostly done: half the blob is in, or at
/// most this much is left (so a blob up to 8 MiB is always finished).
const MOSTLY_DONE_TAIL: u64 = 4 << 20;

/// How often a fill that nobody reads looks for a new reader while it waits.
const READER_POLL: Duration = Duration::from_millis(20);

/// Answers `GET` or `HEAD` for `/v2/<name>/blobs/<digest>`.
pub async fn blob(
    request: Request<Incoming>,
    target: &Target,
    hoard: &Hoard,
    digest: Digest,
) -> Response<Body> {
    let range = request.headers().get(RANGE).cloned();
    if request.method() == Method::HEAD {
        return match hoard.store.blob_length(&digest) {
            Some(len) => head_response(&digest, len),
            None => crate::registry::forward(request, target, hoard).await,
        };
    }
    // A fill can end between looking and joining; a few rounds always settle it.
    for _ in 0..3 {
        match hoard.store.lookup_blob(&digest).await {
            BlobLookup::Hit(hit) => {
                return serve_stored(hit, &digest, range.as_ref(), CacheStatus::Hit).await;
            }
            BlobLookup::Filling(follower) => match follower.join().await {
                Joined::Reading {
                    file,
                    progress,
                    length,
                } => {
                    if let Some(response) =
                        serve_growing(file, progress, length, range.as_ref(), &digest).await
                    {
                        return response;
                    }
                    // Too far ahead to wait for: the range comes from the upstream.
                    return range_upstream(request, target, hoard).await;
                }
                Joined::LookAgain => continue,
                Joined::Failed => {
                    return error(
                        StatusCode::BAD_GATEWAY,
                        "the upstream download of this blob failed; try again",
                    );
                }
            },
            BlobLookup::Miss(permit) => {
                return miss(request, target, hoard, digest, permit).await;
            }
        }
    }
    crate::registry::forward(request, target, hoard).await
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
    tokio::spawn(follow(file, progress, start, end, tx));
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

/// A blob neither stored nor being filled. A range far into it goes upstream as a range; else
/// this request fills it, within the fill limits. Past a limit, a whole GET is still streamed
/// from the upstream and verified, but not kept: the upstream is read only as fast as the
/// client reads and stops when the client goes, so a busy client costs no more than it reads.
async fn miss(
    request: Request<Incoming>,
    target: &Target,
    hoard: &Hoard,
    digest: Digest,
    permit: FillPermit,
) -> Response<Body> {
    let range = request.headers().get(RANGE);
    let ranged = range.is_some();
    if range.is_some_and(far_range) {
        drop(permit); // requests that joined meanwhile look again
        hoard.metrics.fill_skipped(FillSkipped::FarRange);
        return range_upstream(request, target, hoard).await;
    }
    let config = hoard.config();
    // Counted as connections are: an IPv6 /64 is one client.
    let client = request
        .extensions()
        .get::<ClientAddr>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |c| {
            crate::access::limits::client_key(c.0)
        });
    match hoard
        .fill_slots
        .take(client, config.max_fills, config.max_fills_per_client)
    {
        Ok(slot) => fill(request, target, hoard, digest, Some((permit, slot))).await,
        Err(limit) => {
            drop(permit);
            hoard.metrics.fill_skipped(limit.into());
            tracing::debug!(%client, %digest, limit = limit.as_str(), "fill limit reached; passed through, not kept");
            if ranged {
                return range_upstream(request, target, hoard).await;
            }
            fill(request, target, hoard, digest, None).await
        }
    }
}

/// Asks the upstream for a blob range as that range and passes the answer on, not kept. As for
/// a fill, redirects are followed and hoard's credentials answer a challenge.
async fn range_upstream(
    request: Request<Incoming>,
    target: &Target,
    hoard: &Hoard,
) -> Response<Body> {
    let Some(uri) = target.uri(path_and_query(&request)) else {
        return error(StatusCode::BAD_REQUEST, "request path is not a valid URI");
    };
    let headers = upstream_headers(request.headers());
    match registry_send(hoard, target, Method::GET, uri, headers).await {
        Ok(response) => pass_through(response, CacheStatus::Bypass),
        Err(err) => upstream_error(&err),
    }
}

/// This request fills the blob: one upstream GET for the whole blob, streamed to this client
/// (unless it asked for a range) while everyone else follows the temp file. Without a permit
/// (past a fill limit) the blob is streamed and verified but not kept.
async fn fill(
    request: Request<Incoming>,
    target: &Target,
    hoard: &Hoard,
    digest: Digest,
    keep: Option<(FillPermit, FillSlot)>,
) -> Response<Body> {
    let Some(uri) = target.uri(path_and_query(&request)) else {
        return error(StatusCode::BAD_REQUEST, "request path is not a valid URI");
    };
    let range = request.headers().get(RANGE).cloned();
    let mut headers = upstream_headers(request.headers());
    headers.remove(RANGE);
    let response = match registry_send(hoard, target, Method::GET, uri, headers).await {
        Ok(response) => response,
        Err(err) => return upstream_error(&err), // the permit drops: followers ask again
    };
    if response.status() != StatusCode::OK {
        return pass_through(response, CacheStatus::Bypass);
    }
    let length = response
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let (writer, slot) = match keep {
        Some((permit, slot)) => match permit.start(length).await {
            Ok(writer) => (Some(writer), Some(slot)),
            Err(err) => {
                hoard.store.disk_warning("cannot cache a blob", &err);
                (None, Some(slot))
            }
        },
        None => (None, None),
    };
    // A blob streamed past a fill limit is not kept: to the logs, a bypass.
    let status = match slot {
        Some(_) => CacheStatus::Miss,
        None => CacheStatus::Bypass,
    };
    let config = hoard.config();
    let run = FillRun {
        digest: digest.clone(),
        length,
        store: hoard.store.clone(),
        metrics: hoard.metrics.clone(),
        read_timeout: config.read_timeout,
        abandon_after: (!config.finish_abandoned_fills).then_some(config.abandoned_fill_grace),
        _slot: slot,
    };

    if range.is_some() {
        // The fill runs for the store; this client reads its range from the growing file.
        if writer.is_none() {
            return crate::registry::forward(request, target, hoard).await;
        }
        // Joined before the fill starts, so the fill has its reader from the first byte.
        let joined = Box::pin(blob(request, target, hoard, digest)).await;
        tokio::spawn(run_fill(response.into_body(), writer, None, run));
        return joined;
    }

    let (tx, rx) = mpsc::channel(FILL_CHANNEL);
    tokio::spawn(run_fill(response.into_body(), writer, Some(tx), run));
    let mut out = Response::new(ChannelBody::new(rx, length).boxed());
    let headers = out.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Some(length) = length {
        headers.insert(CONTENT_LENGTH, HeaderValue::from(length));
    }
    insert_digest_headers(headers, &digest);
    out.extensions_mut().insert(status);
    out
}

/// Buffers handed to a client together.
type Piece = Vec<Bytes>;

type Chunk = Result<Piece, BoxError>;

/// What a fill needs besides its bytes, its writer and its first client.
struct FillRun {
    digest: Digest,
    /// The upstream's `Content-Length`.
    length: Option<u64>,
    store: Store,
    metrics: Arc<Metrics>,
    read_timeout: Duration,
    /// How long a fill nobody reads waits for a reader before it stops; `None`: it never stops
    /// (`cache.finish_abandoned_fills`).
    abandon_after: Option<Duration>,
    /// Counts the fill against the fill limits while it runs.
    _slot: Option<FillSlot>,
}

impl FillRun {
    /// Whether a fill that has `received` bytes is close enough to the end to finish unread.
    fn mostly_done(&self, received: u64) -> bool {
        self.length.is_some_and(|length| {
            received >= length / 2 || length.saturating_sub(received) <= MOSTLY_DONE_TAIL
        })
    }

    /// Called when nobody reads the fill: `true` to go on, `false` to stop it. Unless it is
    /// mostly done or told to finish, the fill stops taking bytes from the upstream and waits
    /// up to the grace period for a reader (a client resuming with a `Range`, say).
    async fn go_on_unread(&self, writer: &BlobWriter, received: u64) -> bool {
        let Some(grace) = self.abandon_after else {
            return true;
        };
        if self.mostly_done(received) {
            return true;
        }
        // A grace too long for the clock never ends.
        let deadline = Instant::now().checked_add(grace);
        loop {
            if !writer.unread() {
                return true;
            }
            if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                if !writer.abandon_if_unread() {
                    return true;
                }
                tracing::info!(digest = %self.digest, received, length = ?self.length, ?grace, "nobody reads this fill; stopped");
                self.metrics.fill_abandoned();
                return false;
            }
            tokio::time::sleep(READER_POLL.min(grace)).await;
        }
    }
}

/// The fill itself, in its own task: it goes on when the client goes away, so the others
/// following it get their bytes, and stops when nobody at all reads it (see
/// [`FillRun::go_on_unread`]). The first client's last piece is held back until the digest is
/// checked (by the store's writer, next to the disk writes, or here when the blob is not kept);
/// the sync into the store comes after it.
async fn run_fill(
    mut body: Incoming,
    writer: Option<BlobWriter>,
    tx: Option<mpsc::Sender<Chunk>>,
    run: FillRun,
) {
    let FillRun {
        ref digest,
        ref store,
        read_timeout,
        ..
    } = run;
    let mut client = tx;
    let mut check = match writer {
        Some(writer) => Check::Store(writer),
        None => Check::Inline(digest.hasher()),
    };
    // The client is sent pieces of about CLIENT_CHUNK bytes, each a list of the upstream's
    // own buffers (shared with the writer, never copied).
    let mut held: Option<Piece> = None;
    let mut pending = Piece::new();
    let mut pending_len = 0;
    let mut received: u64 = 0;
    loop {
        if client.is_none()
            && let Check::Store(writer) = &check
            && writer.unread()
            && !run.go_on_unread(writer, received).await
        {
            return; // the writer deletes the temp file; dropping the body ends the download
        }
        let frame = match tokio::time::timeout(read_timeout, body.frame()).await {
            Ok(Some(Ok(frame))) => frame,
            Ok(Some(Err(err))) => {
                tracing::warn!(%digest, error = %err, "upstream body failed during fill");
                send(&mut client, Err(format!("upstream failed: {err}").into())).await;
                return;
            }
            Ok(None) => break,
            Err(_) => {
                tracing::warn!(%digest, ?read_timeout, "upstream went silent during fill");
                send(&mut client, Err("upstream went silent".into())).await;
                return;
            }
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers carry nothing we keep
        };
        if data.is_empty() {
            // h2 ends streams with an empty DATA frame: holding it back as "the last chunk"
            // would release the real last bytes before the digest is checked.
            continue;
        }
        received += data.len() as u64;
        if let Check::Inline(hasher) = &mut check {
            hasher.update(&data);
        }
        if client.is_some() {
            // Upstream frames are about one TLS record (16 KiB); handing them over in pieces
            // of 128 KiB saves seven in eight channel hand-offs and wake-ups.
            pending_len += data.len();
            pending.push(data.clone());
            if pending_len >= CLIENT_CHUNK {
                pending_len = 0;
                if let Some(previous) = held.replace(std::mem::take(&mut pending)) {
                    send(&mut client, Ok(previous)).await;
                }
            }
        }
        let failed = match &mut check {
            Check::Store(writer) => writer.write(data).await.err(),
            Check::Inline(_) => None,
        };
        if let Some(err) = failed {
            // The blob goes on to the client uncached, still checked.
            store.disk_warning("cannot write a blob", &err);
            let stopped = std::mem::replace(&mut check, Check::Inline(digest.hasher()));
            if let Check::Store(writer) = stopped {
                let Some(hasher) = writer.into_hasher().await else {
                    send(&mut client, Err("the blob's hash was lost".into())).await;
                    return;
                };
                check = Check::Inline(hasher);
            }
        }
        if client.is_none() && matches!(check, Check::Inline(_)) {
            return; // nobody left to serve
        }
    }
    if !pending.is_empty()
        && let Some(previous) = held.replace(pending)
    {
        send(&mut client, Ok(previous)).await;
    }
    let (verified, stored) = match check {
        Check::Store(writer) => match writer.verify().await {
            Ok(blob) => (true, Some(blob)),
            Err(_) => (false, None),
        },
        Check::Inline(hasher) => (hasher.matches(digest), None),
    };
    if !verified {
        tracing::warn!(%digest, "upstream blob does not match its digest; discarded");
        send(
            &mut client,
            Err("upstream content does not match its digest".into()),
        )
        .await;
        return;
    }
    if let Some(last) = held {
        send(&mut client, Ok(last)).await;
    }
    // The client's body ends here; syncing a large blob to disk can take a while.
    drop(client);
    if let Some(blob) = stored {
        match blob.commit().await {
            Ok(bytes) => tracing::debug!(%digest, bytes, "blob stored"),
            Err(err) => store.disk_warning("cannot store a blob", &err),
        }
    }
}

/// Who checks a fill's digest: the store's writer, on the blocking pool next to the disk writes,
/// or the fill's own task when the blob is not being kept.
enum Check {
    Store(BlobWriter),
    Inline(Hasher),
}

/// Sends to the client unless it has gone; a gone client is forgotten, the fill goes on.
async fn send(client: &mut Option<mpsc::Sender<Chunk>>, chunk: Chunk) {
    if let Some(tx) = client
        && tx.send(chunk).await.is_err()
    {
        *client = None;
    }
}

/// A response body fed by a task, piece by piece.
struct ChannelBody {
    rx: mpsc::Receiver<Chunk>,
    piece: std::vec::IntoIter<Bytes>,
    length: Option<u64>,
}

impl ChannelBody {
    fn new(rx: mpsc::Receiver<Chunk>, length: Option<u64>) -> ChannelBody {
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
