//! Test fixtures: a small registry over real TLS (certificate from a CA minted at test time),
//! a plain HTTP echo server, hoard started in-process, and reqwest clients through it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use sha2::Digest as _;
use tokio::net::TcpListener;

pub const REGISTRY: &str = "registry.test";
pub const CDN: &str = "cdn.test";
pub const DOCKER_V2: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

pub fn init() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("hoard=debug")),
        )
        .with_test_writer()
        .try_init();
}

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", const_hex::encode(sha2::Sha256::digest(bytes)))
}

/// Deterministic pseudo-random bytes (xorshift), so tests need no rand crate.
pub fn random_bytes(len: usize, seed: u64) -> Bytes {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out.into()
}

/// A port that was free a moment ago (hoard binds it with SO_REUSEADDR, so a restart can take
/// it again right after a kill).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A CA made for one test, and server certificates signed by it.
pub struct TestCa {
    pub pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    pub fn new() -> TestCa {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        TestCa {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    pub fn server_config(&self, names: &[&str]) -> rustls::ServerConfig {
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        config
    }
}

/// One request as the fixture registry saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub host: String,
    pub path: String,
    pub authorization: Option<String>,
    pub headers: http::HeaderMap,
}

/// How blob GETs are answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// 200 with the bytes.
    Direct,
    /// 307 to an absolute CDN URL, then 302 path-absolute, then 301 relative, then the bytes.
    Redirect,
    /// 503 for everything.
    Down,
    /// 429 for everything.
    RateLimited,
    /// Blobs come in `chunk`-byte pieces with `delay` between them.
    Slow { chunk: usize, delay: Duration },
    /// Blobs stop after `after` bytes; the connection stays open, silent.
    Stall { after: usize },
    /// Blobs stop after `after` bytes and the connection is cut.
    Truncate { after: usize },
    /// 307 to the CDN, which answers 401 with a Bearer challenge whose realm is on the CDN.
    RedirectToChallenge,
    /// 307 to `http://registry.test/plain/<digest>`: the same host, without TLS.
    RedirectToHttp,
}

#[derive(Default)]
struct State {
    blobs: HashMap<String, Bytes>,
    /// (repo, reference) → (media type, bytes); references are tags and digests.
    manifests: HashMap<(String, String), (String, Bytes)>,
    corrupt: HashSet<String>,
    private_repos: HashSet<String>,
    /// Repositories that need exactly this `Authorization` value.
    tokens: HashMap<String, String>,
    /// The body `GET /token` answers with, if any.
    token_body: Option<String>,
    seen: Vec<Seen>,
    /// Blob body bytes handed to the connection so far.
    sent: Arc<AtomicU64>,
}

/// A small OCI registry over TLS that counts what it is asked.
pub struct Registry {
    pub addr: SocketAddr,
    pub ca: TestCa,
    state: Arc<Mutex<State>>,
    mode: Arc<Mutex<Mode>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Registry {
    pub async fn start() -> Registry {
        let ca = TestCa::new();
        let config = Arc::new(ca.server_config(&[REGISTRY, CDN, "127.0.0.1"]));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state: Arc<Mutex<State>> = Arc::default();
        let mode = Arc::new(Mutex::new(Mode::Direct));
        let (s, m) = (state.clone(), mode.clone());
        let task = tokio::spawn(async move {
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            // Connections live in this set, so stopping the fixture closes them all.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, s, m) = (acceptor.clone(), s.clone(), m.clone());
                connections.spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (s, m) = (s.clone(), m.clone());
                        async move {
                            if req.method() == http::Method::PUT
                                && req.uri().path().contains("/manifests/")
                            {
                                return Ok::<_, Infallible>(put_manifest(req, &s).await);
                            }
                            Ok::<_, Infallible>(answer(req, &s, &m))
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Registry {
            addr,
            ca,
            state,
            mode,
            task,
        }
    }

    /// Stops listening and closes every connection: the registry is gone.
    pub fn stop(&self) {
        self.task.abort();
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    /// Adds a blob and returns its digest.
    pub fn add_blob(&self, bytes: Bytes) -> String {
        let digest = sha256(&bytes);
        self.state
            .lock()
            .unwrap()
            .blobs
            .insert(digest.clone(), bytes);
        digest
    }

    /// Serves other bytes than the digest says for this blob.
    pub fn corrupt(&self, digest: &str) {
        self.state.lock().unwrap().corrupt.insert(digest.to_owned());
    }

    /// Answers 401 for this repository unless a request carries exactly `authorization`.
    pub fn require(&self, repo: &str, authorization: &str) {
        self.state
            .lock()
            .unwrap()
            .tokens
            .insert(repo.to_owned(), authorization.to_owned());
    }

    /// Answers 401 for this repository unless a request carries `Authorization`.
    pub fn make_private(&self, repo: &str) {
        self.state
            .lock()
            .unwrap()
            .private_repos
            .insert(repo.to_owned());
    }

    /// Adds a manifest under its digest and `tag`; returns the digest.
    pub fn add_manifest(&self, repo: &str, tag: &str, media_type: &str, bytes: Bytes) -> String {
        let digest = sha256(&bytes);
        let mut state = self.state.lock().unwrap();
        for reference in [tag, digest.as_str()] {
            state.manifests.insert(
                (repo.to_owned(), reference.to_owned()),
                (media_type.to_owned(), bytes.clone()),
            );
        }
        digest
    }

    /// A manifest JSON naming `layers`, with a marker to make digests differ.
    pub fn manifest_json(layers: &[(&str, usize)], marker: &str) -> Bytes {
        let layers: Vec<String> = layers
            .iter()
            .map(|(d, size)| {
                format!(
                    r#"{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":{size},"digest":"{d}"}}"#
                )
            })
            .collect();
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_V2}","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","size":2,"digest":"{}"}},"layers":[{}],"annotations":{{"marker":"{marker}"}}}}"#,
            sha256(b"{}"),
            layers.join(",")
        )
        .into()
    }

    /// Answers `GET /token` with this JSON body (a Docker token service).
    pub fn serve_token(&self, body: &str) {
        self.state.lock().unwrap().token_body = Some(body.to_owned());
    }

    /// Blob body bytes sent so far (handed to the connection; a cancelled transfer stops).
    pub fn sent(&self) -> u64 {
        self.state.lock().unwrap().sent.load(Ordering::Relaxed)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    /// How many requests with `method` had a path containing `fragment`.
    pub fn count(&self, method: &str, fragment: &str) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.method == method && s.path.contains(fragment))
            .count()
    }

    pub fn forget(&self) {
        self.state.lock().unwrap().seen.clear();
    }
}

type FixtureBody = BoxBody<Bytes, std::io::Error>;

fn respond(status: StatusCode, body: impl Into<Bytes>) -> Response<FixtureBody> {
    let mut response = Response::new(
        Full::new(body.into())
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response
}

fn redirect(status: StatusCode, location: &str) -> Response<FixtureBody> {
    let mut response = respond(status, "");
    response
        .headers_mut()
        .insert("location", location.parse().unwrap());
    response
}

/// `PUT /v2/<repo>/manifests/<tag>`: stored under the tag and its digest, 201 with the digest.
async fn put_manifest(req: Request<Incoming>, state: &Mutex<State>) -> Response<FixtureBody> {
    let (parts, body) = req.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let path = parts.uri.path().to_owned();
    let authorization = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut state = state.lock().unwrap();
    state.seen.push(Seen {
        method: parts.method.to_string(),
        host: parts.uri.host().unwrap_or(REGISTRY).to_owned(),
        path: path.clone(),
        authorization: authorization.clone(),
        headers: parts.headers.clone(),
    });
    let Some((repo, tag)) = path
        .strip_prefix("/v2/")
        .and_then(|rest| rest.rsplit_once("/manifests/"))
    else {
        return respond(StatusCode::NOT_FOUND, "unknown path");
    };
    if denied(&state, repo, authorization.as_deref()) {
        return unauthorized();
    }
    let media_type = parts
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or(DOCKER_V2)
        .to_owned();
    let digest = sha256(&bytes);
    for reference in [tag, digest.as_str()] {
        state.manifests.insert(
            (repo.to_owned(), reference.to_owned()),
            (media_type.clone(), bytes.clone()),
        );
    }
    let mut response = respond(StatusCode::CREATED, "");
    response
        .headers_mut()
        .insert("docker-content-digest", digest.parse().unwrap());
    response
}

fn answer(
    req: Request<Incoming>,
    state: &Mutex<State>,
    mode: &Mutex<Mode>,
) -> Response<FixtureBody> {
    let host = req
        .uri()
        .host()
        .map(str::to_owned)
        .or_else(|| {
            req.headers()
                .get("host")
                .and_then(|h| h.to_str().ok())
                .map(|h| h.split(':').next().unwrap_or(h).to_owned())
        })
        .unwrap_or_default();
    let path = req.uri().path().to_owned();
    let authorization = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut state = state.lock().unwrap();
    state.seen.push(Seen {
        method: req.method().to_string(),
        host: host.clone(),
        path: path.clone(),
        authorization: authorization.clone(),
        headers: req.headers().clone(),
    });
    let mode = *mode.lock().unwrap();
    match mode {
        Mode::Down => return respond(StatusCode::SERVICE_UNAVAILABLE, "down"),
        Mode::RateLimited => return respond(StatusCode::TOO_MANY_REQUESTS, "slow down"),
        _ => {}
    }
    let head = req.method() == http::Method::HEAD;
    let range = req
        .headers()
        .get("range")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let range = range.as_deref();

    if host == CDN {
        if path.starts_with("/cdn/locked/") {
            let mut response = respond(StatusCode::UNAUTHORIZED, "");
            response.headers_mut().insert(
                "www-authenticate",
                format!(r#"Bearer realm="https://{CDN}/token",service="{CDN}""#)
                    .parse()
                    .unwrap(),
            );
            return response;
        }
        // Hops 2 and 3 of a redirect chain, then the bytes.
        if let Some(digest) = path.strip_prefix("/cdn/a/") {
            return redirect(StatusCode::FOUND, &format!("/cdn/b/{digest}"));
        }
        if let Some(digest) = path.strip_prefix("/cdn/b/final-") {
            return blob_bytes(&state, digest, head, range);
        }
        if let Some(digest) = path.strip_prefix("/cdn/b/") {
            return redirect(StatusCode::MOVED_PERMANENTLY, &format!("final-{digest}"));
        }
        return respond(StatusCode::NOT_FOUND, "no such CDN object");
    }

    if path == "/token"
        && let Some(body) = state.token_body.clone()
    {
        return respond(StatusCode::OK, body);
    }
    if path == "/v2/" {
        let mut response = respond(StatusCode::OK, "{}");
        response.headers_mut().insert(
            "docker-distribution-api-version",
            "registry/2.0".parse().unwrap(),
        );
        return response;
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return respond(StatusCode::NOT_FOUND, "not a registry path");
    };
    if let Some((repo, _)) = rest.split_once("/blobs/uploads") {
        // Uploads: echo how many body bytes arrived (the body is read by hyper before we see
        // it only if we ask; the length header is what the client announced).
        let len = req
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("0")
            .to_owned();
        return respond(StatusCode::ACCEPTED, format!("upload to {repo}: {len}"));
    }
    if let Some((repo, digest)) = rest.rsplit_once("/blobs/") {
        if denied(&state, repo, authorization.as_deref()) {
            return unauthorized();
        }
        let location = match mode {
            Mode::Redirect => Some(format!("https://{CDN}/cdn/a/{digest}?sig=abc")),
            Mode::RedirectToChallenge => Some(format!("https://{CDN}/cdn/locked/{digest}")),
            Mode::RedirectToHttp => Some(format!("http://{REGISTRY}/plain/{digest}")),
            _ => None,
        };
        if let Some(location) = location {
            return redirect(StatusCode::TEMPORARY_REDIRECT, &location);
        }
        return match mode {
            Mode::Slow { chunk, delay } => streamed(&state, digest, chunk, delay, None, range),
            Mode::Stall { after } => {
                streamed(&state, digest, after, Duration::ZERO, Some(false), range)
            }
            Mode::Truncate { after } => {
                streamed(&state, digest, after, Duration::ZERO, Some(true), range)
            }
            _ => blob_bytes(&state, digest, head, range),
        };
    }
    if let Some((repo, reference)) = rest.rsplit_once("/manifests/") {
        if denied(&state, repo, authorization.as_deref()) {
            return unauthorized();
        }
        let Some((media_type, bytes)) = state
            .manifests
            .get(&(repo.to_owned(), reference.to_owned()))
            .cloned()
        else {
            return respond(
                StatusCode::NOT_FOUND,
                r#"{"errors":[{"code":"MANIFEST_UNKNOWN"}]}"#,
            );
        };
        let len = bytes.len();
        let mut response = respond(
            StatusCode::OK,
            if head { Bytes::new() } else { bytes.clone() },
        );
        let headers = response.headers_mut();
        headers.insert("content-type", media_type.parse().unwrap());
        headers.insert("docker-content-digest", sha256(&bytes).parse().unwrap());
        headers.insert("content-length", len.into());
        return response;
    }
    if rest.ends_with("/tags/list") {
        return respond(StatusCode::OK, r#"{"tags":["latest"]}"#);
    }
    respond(StatusCode::NOT_FOUND, "unknown path")
}

fn denied(state: &State, repo: &str, authorization: Option<&str>) -> bool {
    if let Some(required) = state.tokens.get(repo) {
        return authorization != Some(required.as_str());
    }
    state.private_repos.contains(repo) && authorization.is_none()
}

fn unauthorized() -> Response<FixtureBody> {
    let mut response = respond(
        StatusCode::UNAUTHORIZED,
        r#"{"errors":[{"code":"UNAUTHORIZED"}]}"#,
    );
    response.headers_mut().insert(
        "www-authenticate",
        format!(r#"Bearer realm="https://{REGISTRY}/token",service="{REGISTRY}""#)
            .parse()
            .unwrap(),
    );
    response
}

/// The span `[start, end)` a `Range: bytes=…` asks of `len` bytes (one range, no checks beyond
/// what the tests send).
fn span_of(range: &str, len: usize) -> (usize, usize) {
    let spec = range.trim().strip_prefix("bytes=").unwrap();
    let (first, last) = spec.split_once('-').unwrap();
    match (first.parse::<usize>(), last.parse::<usize>()) {
        (Ok(first), Ok(last)) => (first, (last + 1).min(len)),
        (Ok(first), Err(_)) => (first, len),
        (Err(_), Ok(suffix)) => (len - suffix.min(len), len),
        _ => panic!("bad range {range}"),
    }
}

/// Makes `response` a 206 for `[start, end)` of `len` bytes.
fn partial(response: &mut Response<FixtureBody>, (start, end): (usize, usize), len: usize) {
    *response.status_mut() = StatusCode::PARTIAL_CONTENT;
    let value = format!("bytes {start}-{}/{len}", end - 1);
    response
        .headers_mut()
        .insert("content-range", value.parse().unwrap());
}

fn blob_bytes(
    state: &State,
    digest: &str,
    head: bool,
    range: Option<&str>,
) -> Response<FixtureBody> {
    let Some(bytes) = state.blobs.get(digest) else {
        return respond(
            StatusCode::NOT_FOUND,
            r#"{"errors":[{"code":"BLOB_UNKNOWN"}]}"#,
        );
    };
    let mut bytes = bytes.to_vec();
    if state.corrupt.contains(digest)
        && let Some(b) = bytes.last_mut()
    {
        *b ^= 0xff;
    }
    let total = bytes.len();
    let span = range.map_or((0, total), |r| span_of(r, total));
    let body = if head {
        Vec::new()
    } else {
        bytes[span.0..span.1].to_vec()
    };
    state.sent.fetch_add(body.len() as u64, Ordering::Relaxed);
    let mut response = respond(StatusCode::OK, body);
    response
        .headers_mut()
        .insert("content-length", (span.1 - span.0).into());
    if range.is_some() {
        partial(&mut response, span, total);
    }
    response
}

/// A blob sent in pieces of `chunk` bytes with `delay` between them. With `end`, only the first
/// piece is sent, then the body stalls (`Some(false)`) or fails (`Some(true)`).
fn streamed(
    state: &State,
    digest: &str,
    chunk: usize,
    delay: Duration,
    end: Option<bool>,
    range: Option<&str>,
) -> Response<FixtureBody> {
    let Some(whole) = state.blobs.get(digest).cloned() else {
        return respond(
            StatusCode::NOT_FOUND,
            r#"{"errors":[{"code":"BLOB_UNKNOWN"}]}"#,
        );
    };
    let total = whole.len();
    let span = range.map_or((0, total), |r| span_of(r, total));
    let bytes = whole.slice(span.0..span.1);
    let len = bytes.len();
    let sent = state.sent.clone();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, std::io::Error>>(1);
    tokio::spawn(async move {
        let mut offset = 0;
        while offset < len {
            let next = (offset + chunk.max(1)).min(len);
            if tx
                .send(Ok(http_body::Frame::data(bytes.slice(offset..next))))
                .await
                .is_err()
            {
                return;
            }
            sent.fetch_add((next - offset) as u64, Ordering::Relaxed);
            offset = next;
            match end {
                Some(false) => {
                    // Hold the connection open and say nothing more.
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    return;
                }
                Some(true) => {
                    let _ = tx.send(Err(std::io::Error::other("cut"))).await;
                    return;
                }
                None => tokio::time::sleep(delay).await,
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let mut response = Response::new(StreamBody::new(stream).boxed());
    response.headers_mut().insert("content-length", len.into());
    if range.is_some() {
        partial(&mut response, span, total);
    }
    response
}

/// A plain HTTP server that answers with the request headers it got, as JSON-ish text.
pub async fn echo_server() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    let mut text = format!("{} {}\n", req.method(), req.uri());
                    for (name, value) in req.headers() {
                        text.push_str(&format!("{name}: {}\n", value.to_str().unwrap_or("?")));
                    }
                    let body = req.into_body().collect().await.map(|b| b.to_bytes());
                    text.push_str(&format!("body: {}\n", body.map(|b| b.len()).unwrap_or(0)));
                    let mut response = Response::new(Full::new(Bytes::from(text)));
                    response
                        .headers_mut()
                        .insert("connection", "x-secret".parse().unwrap());
                    response
                        .headers_mut()
                        .insert("x-secret", "hop".parse().unwrap());
                    Ok::<_, Infallible>(response)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (addr, task)
}

/// Extra TOML lines for each section of a test config.
#[derive(Debug, Default, Clone, Copy)]
pub struct Extra<'a> {
    pub proxy: &'a str,
    pub ca: &'a str,
    pub cache: &'a str,
    pub upstream: &'a str,
    /// `intercept.hosts` instead of `["registry.test"]`.
    pub intercept: Option<&'a str>,
    /// `upstream.resolve` instead of the registry and CDN names pinned to the fixture; `"{}"`
    /// leaves hoard no way to the fixture but a parent proxy.
    pub resolve: Option<&'a str>,
}

/// hoard started in-process against a fixture registry.
pub struct Proxy {
    pub server: hoard::Server,
    pub dir: tempfile::TempDir,
    pub ca_pem: String,
}

impl Proxy {
    /// Starts hoard intercepting `registry.test` (resolved to the fixture) with `extra` TOML
    /// appended to the `[cache]` section (e.g. `tag_ttl = "1s"`).
    pub async fn start(registry: &Registry, cache_extra: &str) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        Proxy::start_in(dir, registry, cache_extra).await
    }

    pub async fn start_in(dir: tempfile::TempDir, registry: &Registry, cache_extra: &str) -> Proxy {
        Proxy::start_with(dir, registry, cache_extra, "").await
    }

    /// Writes the config hoard would run with (see [`Proxy::start_with`]) and returns its path.
    pub fn write_config(
        dir: &std::path::Path,
        registry: &Registry,
        listen: &str,
        cache_extra: &str,
        upstream_extra: &str,
    ) -> PathBuf {
        let extra = Extra {
            cache: cache_extra,
            upstream: upstream_extra,
            ..Extra::default()
        };
        Proxy::write_config_with(dir, registry, listen, &extra)
    }

    /// Writes a config with extra TOML lines in each section and returns its path.
    pub fn write_config_with(
        dir: &std::path::Path,
        registry: &Registry,
        listen: &str,
        extra: &Extra,
    ) -> PathBuf {
        let upstream_ca = dir.join("upstream-ca.crt");
        std::fs::write(&upstream_ca, &registry.ca.pem).unwrap();
        let pinned = format!(
            r#"{{ "{REGISTRY}" = "{addr}", "{CDN}" = "{addr}" }}"#,
            addr = registry.addr
        );
        let text = format!(
            r#"
[proxy]
listen = "{listen}"
{proxy_extra}
[ca]
dir = "{ca}"
{ca_extra}
[cache]
dir = "{cache}"
{cache_extra}
[intercept]
hosts = {intercept}
[upstream]
extra_ca_files = ["{upstream_ca}"]
resolve = {resolve}
connect_timeout = "2s"
{upstream_extra}
[admin]
listen = "127.0.0.1:0"
"#,
            proxy_extra = extra.proxy,
            ca_extra = extra.ca,
            cache_extra = extra.cache,
            upstream_extra = extra.upstream,
            intercept = extra.intercept.unwrap_or(&format!(r#"["{REGISTRY}"]"#)),
            resolve = extra.resolve.unwrap_or(&pinned),
            ca = dir.join("ca").display(),
            cache = dir.join("cache").display(),
            upstream_ca = upstream_ca.display(),
        );
        let path = dir.join("config.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Starts hoard with extra TOML lines in any section.
    pub async fn start_extra(registry: &Registry, extra: Extra<'_>) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        let path = Proxy::write_config_with(dir.path(), registry, "127.0.0.1:0", &extra);
        Proxy::start_from(dir, &path).await
    }

    async fn start_from(dir: tempfile::TempDir, path: &std::path::Path) -> Proxy {
        let config = hoard::Config::load(Some(path), Default::default()).unwrap();
        let server = hoard::Server::start(config).await.unwrap();
        let ca_pem = std::fs::read_to_string(dir.path().join("ca/ca.crt")).unwrap();
        Proxy {
            server,
            dir,
            ca_pem,
        }
    }

    /// Starts hoard with extra TOML lines in its `[cache]` and `[upstream]` sections.
    pub async fn start_with(
        dir: tempfile::TempDir,
        registry: &Registry,
        cache_extra: &str,
        upstream_extra: &str,
    ) -> Proxy {
        let path = Proxy::write_config(
            dir.path(),
            registry,
            "127.0.0.1:0",
            cache_extra,
            upstream_extra,
        );
        Proxy::start_from(dir, &path).await
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.server.local_addr())
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    /// Waits until no fill is in progress: a client has a blob's last bytes a moment before the
    /// blob is synced and in the store.
    pub async fn settled(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while self.server.fills_in_progress() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "fills still in progress after 10 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    /// Path of a stored blob.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.cache_dir()
            .join("blobs/sha256")
            .join(&hex[..2])
            .join(hex)
    }

    /// A client through hoard trusting only hoard's CA; `h2` picks the protocol by ALPN.
    pub fn client(&self, h2: bool) -> reqwest::Client {
        client_via(&self.url(), &self.ca_pem, h2)
    }
}

/// A client through the proxy at `proxy_url`, trusting only `ca_pem`.
pub fn client_via(proxy_url: &str, ca_pem: &str, h2: bool) -> reqwest::Client {
    let builder = reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(proxy_url).unwrap())
        .tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap()]);
    let builder = if h2 { builder } else { builder.http1_only() };
    builder.build().unwrap()
}

/// Total size of the files under `dir`, recursively.
pub fn disk_usage(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => disk_usage(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

pub fn url(path: &str) -> String {
    format!("https://{REGISTRY}{path}")
}

static SEED: AtomicU16 = AtomicU16::new(1);

/// Random bytes that differ between calls.
pub fn fresh_blob(len: usize) -> Bytes {
    random_bytes(len, u64::from(SEED.fetch_add(1, Ordering::Relaxed)) * 7919)
}

/// Sends `request` to hoard as raw bytes and returns the start of the answer.
pub async fn raw(proxy: &Proxy, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(proxy.server.local_addr())
        .await
        .unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}
