//! A blob fill: one upstream GET for the whole blob, streamed to the client that started it
//! (unless it asked for a range) and written to a temp file in the store that every other
//! request for the blob follows. The digest is checked before the store keeps the blob and before
//! the first client gets its last bytes. A fill counts against `cache.max_fills` and
//! `cache.max_fills_per_client`; past them a blob is streamed and verified but not kept.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, RANGE};
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::mpsc;
use tracing::Instrument as _;

use super::forward::pull_request;
use super::source::{Fetched, Provenance, Sources};

use crate::access::{ClientAddr, FillSlot};
use crate::http::{Body, ChannelBody, Chunk, Piece, insert_digest_headers, upstream_headers};
use crate::http::{BoxError, CacheStatus};
use crate::oci::{Digest, Hasher, far_range};
use crate::store::{BlobWriter, Follower, Permit, Store, StoreError};
use crate::telemetry::{FillSkipped, Metrics};

/// Chunks buffered between a fill and its first client (4 × 128 KiB).
const FILL_CHANNEL: usize = 4;

/// Size of the pieces a fill hands its first client.
const CLIENT_CHUNK: usize = 128 << 10;

/// A fill nobody reads goes on to the end when it is mostly done: half the blob is in, or at
/// most this much is left (so a blob up to 8 MiB is always finished).
const MOSTLY_DONE_TAIL: u64 = 4 << 20;

/// How often a fill that nobody reads looks for a new reader while it waits.
const READER_POLL: Duration = Duration::from_millis(20);

/// What the request that leads a blob's flight gets.
pub(super) enum Filled {
    /// Its response: the fill streamed to it, or an answer other than the blob.
    Response(Response<Body>),
    /// It asked for a range: the fill runs for the store, and it reads its range from the
    /// growing file like any follower.
    Follow(Follower),
}

/// A blob neither stored nor being filled, whose flight this request leads. A range far into it
/// goes upstream as a range; else this request fills it, within the fill limits. Past a limit, a
/// whole GET is still streamed from the upstream and verified, but not kept: the upstream is read
/// only as fast as the client reads and stops when the client goes, so a busy client costs no
/// more than it reads.
pub(super) async fn miss(
    request: &Request<Incoming>,
    sources: &Sources<'_>,
    digest: &Digest,
    permit: Permit,
) -> Filled {
    let hoard = sources.hoard;
    let range = request.headers().get(RANGE);
    if range.is_some_and(far_range) {
        drop(permit); // requests that joined meanwhile look again
        hoard.metrics.fill_skipped(FillSkipped::FarRange);
        return Filled::Response(pull_request(request, sources).await);
    }
    let config = hoard.config();
    // Counted as connections are: an IPv6 /64 is one client.
    let client = request
        .extensions()
        .get::<ClientAddr>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |c| {
            crate::access::limits::client_key(c.0)
        });
    match hoard.fill_slots.take(
        client,
        config.cache.fills.max,
        config.cache.fills.per_client,
    ) {
        Ok(slot) => fill(request, sources, digest, Some((permit, slot))).await,
        Err(limit) => {
            drop(permit);
            hoard.metrics.fill_skipped(limit.into());
            tracing::debug!(%client, %digest, limit = limit.as_str(), "fill limit reached; passed through, not kept");
            Filled::Response(alone(request, sources, digest).await)
        }
    }
}

/// A blob for this client alone, from the upstream, verified but not kept: a range as that
/// range, a whole blob streamed as a fill without a store writer.
pub(super) async fn alone(
    request: &Request<Incoming>,
    sources: &Sources<'_>,
    digest: &Digest,
) -> Response<Body> {
    if request.headers().contains_key(RANGE) {
        return pull_request(request, sources).await;
    }
    match fill(request, sources, digest, None).await {
        Filled::Response(response) => response,
        // Without a permit there is no fill to follow; a range never gets here.
        Filled::Follow(_) => pull_request(request, sources).await,
    }
}

/// This request fills the blob: one upstream GET for the whole blob, from where `source.rs`
/// finds it, streamed to this client (unless it asked for a range) while everyone else follows
/// the temp file. Without a permit (past a fill limit) the blob is streamed and verified but not
/// kept.
async fn fill(
    request: &Request<Incoming>,
    sources: &Sources<'_>,
    digest: &Digest,
    keep: Option<(Permit, FillSlot)>,
) -> Filled {
    let hoard = sources.hoard;
    let range = request.headers().get(RANGE).cloned();
    let mut headers = upstream_headers(request.headers());
    headers.remove(RANGE);
    // The permit drops on failure: followers ask again.
    let Fetched {
        body,
        length,
        provenance,
    } = match sources.blob(digest, headers).await {
        Ok(fetched) => fetched,
        Err(response) => return Filled::Response(response),
    };
    let config = hoard.config();
    // A blob of unknown or too great a length is not kept, and reserves nothing: the permit
    // drops, so requests that joined look again and get the same.
    let keep = keep.filter(|_| match bounded(length, config.cache.fills.max_blob_size) {
        Ok(()) => true,
        Err(reason) => {
            hoard.metrics.fill_skipped(reason);
            tracing::debug!(%digest, ?length, reason = reason.as_str(), "blob streamed, not kept");
            false
        }
    });
    let (writer, slot) = match keep {
        Some((permit, slot)) => match permit.start(length).await {
            Ok(writer) => (Some(writer), Some(slot)),
            Err(StoreError::Superseded(_)) => (None, Some(slot)),
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
    let span = tracing::info_span!("fill", %digest, source = provenance.source().as_str());
    let run = FillRun {
        digest: digest.clone(),
        length,
        store: hoard.store.clone(),
        metrics: hoard.metrics.clone(),
        read_timeout: config.upstream.read_timeout,
        abandon_after: (!config.cache.fills.finish_abandoned)
            .then_some(config.cache.fills.abandoned_grace),
        provenance,
        _slot: slot,
    };

    if range.is_some() {
        // The fill runs for the store; this client reads its range from the growing file.
        let Some(writer) = writer else {
            return Filled::Response(pull_request(request, sources).await);
        };
        // Joined before the fill starts, so the fill has its reader from the first byte.
        let follower = writer.follower();
        tokio::spawn(run_fill(body, Some(writer), None, run).instrument(span));
        return Filled::Follow(follower);
    }

    let (tx, rx) = mpsc::channel(FILL_CHANNEL);
    tokio::spawn(run_fill(body, writer, Some(tx), run).instrument(span));
    let mut out = Response::new(ChannelBody::new(rx, length).boxed());
    let headers = out.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Some(length) = length {
        headers.insert(CONTENT_LENGTH, HeaderValue::from(length));
    }
    insert_digest_headers(headers, digest);
    out.extensions_mut().insert(status);
    Filled::Response(out)
}

/// Whether a blob of this upstream `Content-Length` may be kept: it must have one, within
/// `cache.max_blob_size`.
fn bounded(length: Option<u64>, max_blob_size: u64) -> Result<(), FillSkipped> {
    match length {
        None => Err(FillSkipped::NoLength),
        Some(length) if length > max_blob_size => Err(FillSkipped::TooBig),
        Some(_) => Ok(()),
    }
}

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
    /// Where the bytes come from, and what follows from it (uploads, deletes, resuming).
    provenance: Provenance,
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
    mut body: Body,
    writer: Option<BlobWriter>,
    tx: Option<mpsc::Sender<Chunk>>,
    mut run: FillRun,
) {
    let mut resume = run.provenance.take_resume();
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
    // Bytes a resumed source sends again (it ignored the range) and the fill has already.
    let mut skip: u64 = 0;
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
            Ok(Some(Err(_))) | Err(_) if resume.is_some() => {
                let Some(from) = resume.take() else { continue };
                tracing::warn!(%digest, received, owner = from.owner(), "the owner's answer broke off; the rest comes from the registry");
                match from.from(received).await {
                    Ok((next, again)) => {
                        (body, skip) = (next.map_err(BoxError::from).boxed(), again);
                        continue;
                    }
                    Err(err) => {
                        tracing::warn!(%digest, error = %err, "cannot resume the fill from the registry");
                        send(
                            &mut client,
                            Err(format!("the fleet peer failed and the registry: {err}").into()),
                        )
                        .await;
                        return;
                    }
                }
            }
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
        let Ok(mut data) = frame.into_data() else {
            continue; // trailers carry nothing we keep
        };
        if skip > 0 {
            let drop = usize::try_from(skip).unwrap_or(usize::MAX).min(data.len());
            let _ = data.split_to(drop);
            skip -= drop as u64;
        }
        if run
            .length
            .is_some_and(|length| received + data.len() as u64 > length)
        {
            // Cut at the Content-Length and not kept: the writer, dropped, deletes its file.
            tracing::warn!(%digest, length = ?run.length, "upstream sent more than its Content-Length; cut there, not kept");
            let cut = "upstream sent more than its Content-Length";
            send(&mut client, Err(cut.into())).await;
            return;
        }
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
        run.provenance.mismatched(digest);
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
            Ok(bytes) => {
                tracing::debug!(%digest, bytes, "blob stored");
                run.provenance.stored(digest, store);
            }
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
