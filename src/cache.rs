//! The registry cache: what hoard does with each OCI call on an intercepted host.
//!
//! - blobs and manifests by digest: served from the store, or filled from the upstream while
//!   streaming to the client and verified before they are kept;
//! - manifests by tag: the tag map, fresh for `cache.tag_ttl`, then revalidated with a HEAD;
//! - the `/v2/` ping: forwarded, or answered locally when the upstream is unusable;
//! - everything else: forwarded unchanged.

use std::io::SeekFrom;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use futures_util::TryStreamExt;
use http::header::{
    ACCEPT, ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, HeaderValue, RANGE,
};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use http_body::Frame;
use http_body_util::{BodyExt, Limited, StreamBody};
use hyper::body::Incoming;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::mpsc;

use crate::forward::{pass_through, strip_hop_by_hop, upstream_error};
use crate::front::error;
use crate::log::CacheStatus;
use crate::registry::{DOCKER_MANIFEST_V2, Digest, Reference, Route, accepts};
use crate::store::{BlobHit, HostKey, MAX_MANIFEST_SIZE, StoredManifest, TagEntry};
use crate::{Body, BoxError, Hoard, empty_body, full_body};

/// Read size for serving blobs from disk: 256 KiB keeps syscalls few and TLS records full.
const FILE_CHUNK: usize = 256 << 10;

/// Chunks buffered between a fill and its client (~16 × 16 KiB frames).
const FILL_CHANNEL: usize = 16;

const DOCKER_CONTENT_DIGEST: &str = "docker-content-digest";
const API_VERSION: (&str, &str) = ("docker-distribution-api-version", "registry/2.0");

/// The intercepted registry a connection talks to.
#[derive(Debug)]
pub struct Target {
    authority: String,
    base: String,
    key: HostKey,
}

impl Target {
    /// `None` when `host` is not a plain host name or IP address.
    pub fn new(host: &str, port: u16) -> Option<Target> {
        let key = HostKey::new(host, port)?;
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_ascii_lowercase()
        };
        let authority = if port == 443 {
            host
        } else {
            format!("{host}:{port}")
        };
        Some(Target {
            base: format!("https://{authority}"),
            authority,
            key,
        })
    }

    /// `host[:port]`, as the client named it.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    fn uri(&self, path_and_query: &str) -> Option<Uri> {
        format!("{}{path_and_query}", self.base).parse().ok()
    }
}

/// Answers one request on an intercepted connection.
pub async fn handle(request: Request<Incoming>, target: &Target, hoard: &Hoard) -> Response<Body> {
    let is_read = matches!(*request.method(), Method::GET | Method::HEAD);
    if !is_read {
        return forward(request, target, hoard).await;
    }
    match Route::parse(request.uri().path()) {
        Route::Ping => ping(request, target, hoard).await,
        Route::Blob { digest, .. } => blob(request, target, hoard, digest).await,
        Route::Manifest {
            reference: Reference::Digest(digest),
            ..
        } => manifest_by_digest(request, target, hoard, digest).await,
        Route::Manifest {
            repo,
            reference: Reference::Tag(tag),
        } => manifest_by_tag(request, target, hoard, &repo, &tag).await,
        Route::Other => forward(request, target, hoard).await,
    }
}

/// Whether an upstream answer means "use the cache instead": overloaded, rate-limited, broken.
fn unusable(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS
}

fn path_and_query(request: &Request<Incoming>) -> &str {
    request.uri().path_and_query().map_or("/", |p| p.as_str())
}

fn upstream_headers(client: &HeaderMap) -> HeaderMap {
    let mut headers = client.clone();
    strip_hop_by_hop(&mut headers);
    headers
}

/// Forwards a request unchanged, body streamed both ways, nothing cached.
async fn forward(request: Request<Incoming>, target: &Target, hoard: &Hoard) -> Response<Body> {
    let Some(uri) = target.uri(path_and_query(&request)) else {
        return error(StatusCode::BAD_REQUEST, "request path is not a valid URI");
    };
    let (mut parts, body) = request.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.uri = uri;
    let upstream = Request::from_parts(parts, body.map_err(Into::into).boxed());
    match hoard.upstream.send(upstream).await {
        Ok(response) => pass_through(response, CacheStatus::Bypass),
        Err(err) => upstream_error(&err),
    }
}

/// The `/v2/` version check: forwarded (it carries the auth challenge), answered by hoard when the
/// upstream is unusable so that pulls of cached images go on.
async fn ping(request: Request<Incoming>, target: &Target, hoard: &Hoard) -> Response<Body> {
    let Some(uri) = target.uri(path_and_query(&request)) else {
        return error(StatusCode::BAD_REQUEST, "request path is not a valid URI");
    };
    let method = request.method().clone();
    let headers = upstream_headers(request.headers());
    let result = hoard.upstream.send_following(method, uri, headers).await;
    match result {
        Ok(response) if !unusable(response.status()) => pass_through(response, CacheStatus::Bypass),
        Ok(response) => {
            tracing::info!(host = target.authority(), status = %response.status(), "upstream unusable; answering /v2/ locally");
            local_ping()
        }
        Err(err) => {
            tracing::info!(host = target.authority(), error = %err, "upstream unreachable; answering /v2/ locally");
            local_ping()
        }
    }
}

fn local_ping() -> Response<Body> {
    let mut response = Response::new(full_body("{}"));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(API_VERSION.0, HeaderValue::from_static(API_VERSION.1));
    response.extensions_mut().insert(CacheStatus::Stale);
    response
}

// ---------------------------------------------------------------------------------------------
// Blobs

async fn blob(
    request: Request<Incoming>,
    target: &Target,
    hoard: &Hoard,
    digest: Digest,
) -> Response<Body> {
    let head = request.method() == Method::HEAD;
    let range = request.headers().get(RANGE).cloned();
    if let Some(hit) = hoard.store.blob(&digest).await {
        return serve_blob(hit, &digest, range.as_ref(), head, CacheStatus::Hit).await;
    }
    let Some(uri) = target.uri(path_and_query(&request)) else {
        return error(StatusCode::BAD_REQUEST, "request path is not a valid URI");
    };
    let method = request.method().clone();
    let headers = upstream_headers(request.headers());
    let result = hoard.upstream.send_following(method, uri, headers).await;
    let response = match result {
        Ok(response) => response,
        Err(err) => return upstream_error(&err),
    };
    // Only a whole GET is worth keeping; a HEAD or a Range miss is relayed as it is.
    if head || range.is_some() || response.status() != StatusCode::OK {
        return pass_through(response, CacheStatus::Bypass);
    }
    fill_blob(response, digest, hoard).await
}

/// Serves a stored blob, whole or one byte range of it.
async fn serve_blob(
    hit: BlobHit,
    digest: &Digest,
    range: Option<&HeaderValue>,
    head: bool,
    cache: CacheStatus,
) -> Response<Body> {
    let BlobHit { mut file, len } = hit;
    let (status, start, end) = match range.map(|r| parse_range(r, len)) {
        None => (StatusCode::OK, 0, len),
        Some(Ok((start, end))) => (StatusCode::PARTIAL_CONTENT, start, end + 1),
        Some(Err(reason)) => {
            let mut response = error(StatusCode::RANGE_NOT_SATISFIABLE, reason);
            if let Ok(value) = HeaderValue::from_str(&format!("bytes */{len}")) {
                response.headers_mut().insert(CONTENT_RANGE, value);
            }
            return response;
        }
    };
    let body = if head {
        empty_body()
    } else {
        if start > 0
            && let Err(err) = file.seek(SeekFrom::Start(start)).await
        {
            tracing::warn!(%digest, error = %err, "cannot seek in stored blob");
            return error(StatusCode::INTERNAL_SERVER_ERROR, "cannot read stored blob");
        }
        let stream =
            tokio_util::io::ReaderStream::with_capacity(file.take(end - start), FILE_CHUNK);
        StreamBody::new(stream.map_ok(Frame::data).map_err(BoxError::from)).boxed()
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(CONTENT_LENGTH, HeaderValue::from(end - start));
    headers.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(value) = HeaderValue::from_str(&format!("bytes {start}-{}/{len}", end - 1))
    {
        headers.insert(CONTENT_RANGE, value);
    }
    insert_digest_headers(headers, digest);
    response.extensions_mut().insert(cache);
    response
}

fn insert_digest_headers(headers: &mut HeaderMap, digest: &Digest) {
    if let Ok(value) = HeaderValue::from_str(&digest.to_string()) {
        headers.insert(DOCKER_CONTENT_DIGEST, value);
    }
    if let Ok(value) = HeaderValue::from_str(&format!("\"{digest}\"")) {
        headers.insert(ETAG, value);
    }
    headers.insert(API_VERSION.0, HeaderValue::from_static(API_VERSION.1));
}

/// Parses a single `bytes=` range into an inclusive `(first, last)` within `len`.
pub fn parse_range(value: &HeaderValue, len: u64) -> Result<(u64, u64), &'static str> {
    let text = value.to_str().map_err(|_| "Range header is not text")?;
    let spec = text
        .trim()
        .strip_prefix("bytes=")
        .ok_or("Range must be bytes=first-last")?;
    if spec.contains(',') {
        return Err("only a single byte range is supported");
    }
    let (first, last) = spec
        .split_once('-')
        .ok_or("Range must be bytes=first-last")?;
    let number = |s: &str| {
        s.trim()
            .parse::<u64>()
            .map_err(|_| "Range bounds must be numbers")
    };
    let (first, last) = match (first.trim().is_empty(), last.trim().is_empty()) {
        (true, true) => return Err("Range must be bytes=first-last"),
        (true, false) => {
            let suffix = number(last)?;
            if suffix == 0 || len == 0 {
                return Err("Range is not satisfiable");
            }
            (len - suffix.min(len), len - 1)
        }
        (false, true) => (number(first)?, len.saturating_sub(1)),
        (false, false) => {
            let (first, last) = (number(first)?, number(last)?);
            if last < first {
                return Err("Range ends before it starts");
            }
            (first, last.min(len.saturating_sub(1)))
        }
    };
    if first >= len {
        return Err("Range is not satisfiable");
    }
    Ok((first, last))
}

/// Streams an upstream blob to the client while writing and hashing it. The last chunk is held
/// back until the digest is checked, so a client of a corrupt blob never sees a complete body.
async fn fill_blob(response: Response<Incoming>, digest: Digest, hoard: &Hoard) -> Response<Body> {
    let length = response
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let writer = match hoard.store.begin_blob(&digest).await {
        Ok(writer) => Some(writer),
        Err(err) => {
            tracing::warn!(%digest, error = %err, "cannot cache blob; serving it uncached");
            None
        }
    };
    let (tx, rx) = mpsc::channel(FILL_CHANNEL);
    tokio::spawn(run_fill(response.into_body(), digest.clone(), writer, tx));

    let mut out = Response::new(ChannelBody { rx, length }.boxed());
    let headers = out.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Some(length) = length {
        headers.insert(CONTENT_LENGTH, HeaderValue::from(length));
    }
    insert_digest_headers(headers, &digest);
    out.extensions_mut().insert(CacheStatus::Miss);
    out
}

type Chunk = Result<Bytes, BoxError>;

/// The fill itself, in its own task: it goes on to the end (and into the store) even when the
/// client goes away.
async fn run_fill(
    mut body: Incoming,
    digest: Digest,
    mut writer: Option<crate::store::BlobWriter>,
    tx: mpsc::Sender<Chunk>,
) {
    let mut client = Some(tx);
    let mut hasher = digest.hasher();
    let mut held: Option<Bytes> = None;
    loop {
        let frame = match body.frame().await {
            Some(Ok(frame)) => frame,
            Some(Err(err)) => {
                tracing::warn!(%digest, error = %err, "upstream body failed during fill");
                send(&mut client, Err(format!("upstream failed: {err}").into())).await;
                return;
            }
            None => break,
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers carry nothing we keep
        };
        hasher.update(&data);
        if let Some(w) = writer.as_mut()
            && let Err(err) = w.write(&data).await
        {
            tracing::warn!(%digest, error = %err, "cannot write blob; finishing uncached");
            writer = None;
        }
        if let Some(previous) = held.replace(data) {
            send(&mut client, Ok(previous)).await;
        }
    }
    if !hasher.matches(&digest) {
        tracing::warn!(%digest, "upstream blob does not match its digest; discarded");
        send(
            &mut client,
            Err("upstream content does not match its digest".into()),
        )
        .await;
        return;
    }
    if let Some(writer) = writer {
        let written = writer.written();
        match writer.commit().await {
            Ok(()) => tracing::debug!(%digest, bytes = written, "blob stored"),
            Err(err) => tracing::warn!(%digest, error = %err, "cannot store blob"),
        }
    }
    if let Some(last) = held {
        send(&mut client, Ok(last)).await;
    }
}

/// Sends to the client unless it has gone; a gone client is forgotten, the fill goes on.
async fn send(client: &mut Option<mpsc::Sender<Chunk>>, chunk: Chunk) {
    if let Some(tx) = client
        && tx.send(chunk).await.is_err()
    {
        *client = None;
    }
}

/// A response body fed by a fill task.
struct ChannelBody {
    rx: mpsc::Receiver<Chunk>,
    length: Option<u64>,
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.rx
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| c.map(Frame::data)))
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self.length {
            Some(length) => http_body::SizeHint::with_exact(length),
            None => http_body::SizeHint::default(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Manifests

fn serve_manifest(
    manifest: StoredManifest,
    digest: &Digest,
    head: bool,
    cache: CacheStatus,
) -> Response<Body> {
    let length = manifest.bytes.len() as u64;
    let body = if head {
        empty_body()
    } else {
        full_body(manifest.bytes)
    };
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&manifest.media_type) {
        headers.insert(CONTENT_TYPE, value);
    }
    headers.insert(CONTENT_LENGTH, HeaderValue::from(length));
    insert_digest_headers(headers, digest);
    response.extensions_mut().insert(cache);
    response
}

/// A HEAD answered from the tag map alone.
fn serve_tag_head(entry: &TagEntry, cache: CacheStatus) -> Response<Body> {
    let mut response = Response::new(empty_body());
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&entry.media_type) {
        headers.insert(CONTENT_TYPE, value);
    }
    headers.insert(CONTENT_LENGTH, HeaderValue::from(entry.size));
    insert_digest_headers(headers, &entry.digest);
    response.extensions_mut().insert(cache);
    response
}

async fn manifest_by_digest(
    request: Request<Incoming>,
    target: &Target,
    hoard: &Hoard,
    digest: Digest,
) -> Response<Body> {
    let head = request.method() == Method::HEAD;
    if let Some(manifest) = hoard.store.manifest(&digest).await {
        return serve_manifest(manifest, &digest, head, CacheStatus::Hit);
    }
    if head {
        return forward(request, target, hoard).await;
    }
    let Some(uri) = target.uri(path_and_query(&request)) else {
        return error(StatusCode::BAD_REQUEST, "request path is not a valid URI");
    };
    fetch_manifest(
        hoard,
        uri,
        upstream_headers(request.headers()),
        Some(digest),
    )
    .await
    .map_or_else(
        |response| response,
        |(manifest, digest)| serve_manifest(manifest, &digest, false, CacheStatus::Miss),
    )
}

/// GETs a manifest from the upstream, checks it against `expected` (or the upstream's
/// `Docker-Content-Digest`, or computes it), stores it, and returns it. Any other outcome is
/// the response to give the client.
async fn fetch_manifest(
    hoard: &Hoard,
    uri: Uri,
    headers: HeaderMap,
    expected: Option<Digest>,
) -> Result<(StoredManifest, Digest), Response<Body>> {
    let response = hoard
        .upstream
        .send_following(Method::GET, uri, headers)
        .await
        .map_err(|err| upstream_error(&err))?;
    if response.status() != StatusCode::OK {
        return Err(pass_through(response, CacheStatus::Bypass));
    }
    let media_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map_or(DOCKER_MANIFEST_V2, |v| {
            v.split(';').next().unwrap_or(v).trim()
        })
        .to_owned();
    let announced = response
        .headers()
        .get(DOCKER_CONTENT_DIGEST)
        .and_then(|v| v.to_str().ok())
        .and_then(Digest::parse);
    let bytes = Limited::new(response.into_body(), MAX_MANIFEST_SIZE)
        .collect()
        .await
        .map_err(|err| {
            error(
                StatusCode::BAD_GATEWAY,
                &format!("reading upstream manifest: {err}"),
            )
        })?
        .to_bytes();
    let digest = expected
        .or(announced)
        .unwrap_or_else(|| Digest::sha256_of(&bytes));
    let mut hasher = digest.hasher();
    hasher.update(&bytes);
    if !hasher.matches(&digest) {
        tracing::warn!(%digest, "upstream manifest does not match its digest; discarded");
        return Err(error(
            StatusCode::BAD_GATEWAY,
            "upstream manifest does not match its digest",
        ));
    }
    if let Err(err) = hoard.store.put_manifest(&digest, &media_type, &bytes).await {
        tracing::warn!(%digest, error = %err, "cannot store manifest");
    }
    Ok((StoredManifest { media_type, bytes }, digest))
}

async fn manifest_by_tag(
    request: Request<Incoming>,
    target: &Target,
    hoard: &Hoard,
    repo: &str,
    tag: &str,
) -> Response<Body> {
    let head = request.method() == Method::HEAD;
    let Some(tag_uri) = target.uri(path_and_query(&request)) else {
        return error(StatusCode::BAD_REQUEST, "request path is not a valid URI");
    };
    let store = &hoard.store;
    let accept: Vec<String> = request
        .headers()
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect();
    let known = store
        .tag(&target.key, repo, tag)
        .await
        .into_iter()
        .filter(|e| accepts(accept.iter().map(String::as_str), &e.media_type))
        .max_by_key(|e| e.fetched);
    let stored = match &known {
        Some(entry) if !head => store.manifest(&entry.digest).await,
        _ => None,
    };
    let headers = upstream_headers(request.headers());

    // Fresh: no upstream call at all.
    if let Some(entry) = &known
        && entry.is_fresh(hoard.config.tag_ttl)
    {
        if head {
            return serve_tag_head(entry, CacheStatus::Hit);
        }
        if let Some(manifest) = stored.clone() {
            return serve_manifest(manifest, &entry.digest, false, CacheStatus::Hit);
        }
    }

    // Never seen (for this Accept) and a GET: one upstream GET does it all.
    let Some(entry) = known else {
        if head {
            return head_unknown_tag(hoard, target, repo, tag, tag_uri, headers).await;
        }
        return match fetch_manifest(hoard, tag_uri, headers, None).await {
            Ok((manifest, digest)) => {
                record_tag(hoard, target, repo, tag, &digest, &manifest).await;
                serve_manifest(manifest, &digest, false, CacheStatus::Miss)
            }
            Err(response) => response,
        };
    };

    // Known but stale (or its bytes are gone): revalidate with a HEAD, which Docker Hub does not
    // count against the pull limit.
    let serve_stale = |why: &str| {
        tracing::info!(
            host = target.authority(),
            repo,
            tag,
            why,
            "serving stale tag"
        );
        match (head, stored.clone()) {
            (true, _) => Some(serve_tag_head(&entry, CacheStatus::Stale)),
            (false, Some(manifest)) => Some(serve_manifest(
                manifest,
                &entry.digest,
                false,
                CacheStatus::Stale,
            )),
            (false, None) => None,
        }
    };
    let response = match hoard
        .upstream
        .send_following(
            Method::HEAD,
            tag_uri.clone(),
            without_range(headers.clone()),
        )
        .await
    {
        Ok(response) => response,
        Err(err) => return serve_stale(&err.to_string()).unwrap_or_else(|| upstream_error(&err)),
    };
    if unusable(response.status()) {
        let status = response.status();
        return serve_stale(status.as_str())
            .unwrap_or_else(|| pass_through(response, CacheStatus::Bypass));
    }
    if response.status() != StatusCode::OK {
        // 401, 404, …: the client must see them; nothing is cached.
        return pass_through(response, CacheStatus::Bypass);
    }
    let Some(fresh) = tag_entry_from(response.headers()) else {
        // A registry that does not say the digest: relay it and let the client GET by tag.
        return pass_through(response, CacheStatus::Bypass);
    };
    if let Err(err) = store.put_tag(&target.key, repo, tag, fresh.clone()).await {
        tracing::warn!(error = %err, "cannot record tag");
    }
    if head {
        let cache = if fresh.digest == entry.digest {
            CacheStatus::Revalidated
        } else {
            CacheStatus::Miss
        };
        return serve_tag_head(&fresh, cache);
    }
    if let Some(manifest) = store.manifest(&fresh.digest).await {
        return serve_manifest(manifest, &fresh.digest, false, CacheStatus::Revalidated);
    }
    let Some(digest_uri) = target.uri(&format!("/v2/{repo}/manifests/{}", fresh.digest)) else {
        return error(StatusCode::BAD_REQUEST, "request path is not a valid URI");
    };
    match fetch_manifest(hoard, digest_uri, headers, Some(fresh.digest.clone())).await {
        Ok((manifest, digest)) => serve_manifest(manifest, &digest, false, CacheStatus::Miss),
        Err(response) => response,
    }
}

/// A HEAD for a tag hoard has never seen: asked upstream as a HEAD, remembered if it says a digest.
async fn head_unknown_tag(
    hoard: &Hoard,
    target: &Target,
    repo: &str,
    tag: &str,
    uri: Uri,
    headers: HeaderMap,
) -> Response<Body> {
    let response = match hoard
        .upstream
        .send_following(Method::HEAD, uri, headers)
        .await
    {
        Ok(response) => response,
        Err(err) => return upstream_error(&err),
    };
    if response.status() == StatusCode::OK
        && let Some(entry) = tag_entry_from(response.headers())
    {
        if let Err(err) = hoard.store.put_tag(&target.key, repo, tag, entry).await {
            tracing::warn!(error = %err, "cannot record tag");
        }
        return pass_through(response, CacheStatus::Miss);
    }
    pass_through(response, CacheStatus::Bypass)
}

async fn record_tag(
    hoard: &Hoard,
    target: &Target,
    repo: &str,
    tag: &str,
    digest: &Digest,
    manifest: &StoredManifest,
) {
    let entry = TagEntry {
        digest: digest.clone(),
        size: manifest.bytes.len() as u64,
        media_type: manifest.media_type.clone(),
        fetched: SystemTime::now(),
    };
    if let Err(err) = hoard.store.put_tag(&target.key, repo, tag, entry).await {
        tracing::warn!(error = %err, "cannot record tag");
    }
}

fn tag_entry_from(headers: &HeaderMap) -> Option<TagEntry> {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let digest = Digest::parse(text(DOCKER_CONTENT_DIGEST)?)?;
    let size = text(CONTENT_LENGTH.as_str())?.parse().ok()?;
    let media_type = text(CONTENT_TYPE.as_str())?;
    let media_type = media_type
        .split(';')
        .next()
        .unwrap_or(media_type)
        .trim()
        .to_owned();
    Some(TagEntry {
        digest,
        size,
        media_type,
        fetched: SystemTime::now(),
    })
}

fn without_range(mut headers: HeaderMap) -> HeaderMap {
    headers.remove(RANGE);
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_within_the_length() {
        let r = |s: &'static str, len| parse_range(&HeaderValue::from_static(s), len);
        assert_eq!(r("bytes=0-9", 100), Ok((0, 9)));
        assert_eq!(r("bytes=90-", 100), Ok((90, 99)));
        assert_eq!(r("bytes=-10", 100), Ok((90, 99)));
        assert_eq!(r("bytes=-1000", 100), Ok((0, 99)));
        assert_eq!(r("bytes=50-1000", 100), Ok((50, 99)));
        assert!(r("bytes=100-", 100).is_err());
        assert!(r("bytes=9-0", 100).is_err());
        assert!(r("bytes=0-1,5-6", 100).is_err());
        assert!(r("items=0-1", 100).is_err());
        assert!(r("bytes=-0", 100).is_err());
        assert!(r("bytes=x-y", 100).is_err());
    }
}
