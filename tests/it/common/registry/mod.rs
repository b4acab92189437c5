//! The fixture registry: a small OCI registry over real TLS, with a CDN host for redirects, that
//! records every request so tests can assert on what the upstream saw.

mod answer;

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use super::tls::TestCa;
use super::{CDN, DOCKER_V2, REGISTRY, sha256};

/// One request as the fixture registry saw it.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub method: String,
    pub host: String,
    pub path: String,
    /// The query string, if the request had one.
    pub query: Option<String>,
    pub authorization: Option<String>,
    pub headers: http::HeaderMap,
}

/// An image [`Registry::add_image`] added: its layers, their digests and its manifest.
pub(crate) struct Image {
    pub layers: Vec<Bytes>,
    pub digests: Vec<String>,
    pub manifest: Bytes,
}

/// How blob GETs are answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
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
    /// Manifest GETs get their headers, then nothing: the connection stays open, silent.
    StallManifests,
    /// Blobs come whole, without a `Content-Length` (chunked on HTTP/1.1).
    NoLength,
    /// Blobs never end: random bytes without a `Content-Length`, until the reader goes.
    Endless,
    /// Blobs come whole under a `Content-Length` `short` bytes less than the blob.
    TooLong { short: usize },
}

#[derive(Default)]
struct State {
    blobs: HashMap<String, Bytes>,
    /// (repo, reference) → (media type, bytes); references are tags and digests.
    manifests: HashMap<(String, String), (String, Bytes)>,
    corrupt: HashSet<String>,
    /// (repo, subject digest) → the referrers index; an empty index for any other subject.
    referrers: HashMap<(String, String), Bytes>,
    private_repos: HashSet<String>,
    /// Repositories that need exactly this `Authorization` value.
    tokens: HashMap<String, String>,
    /// The body `GET /token` answers with, if any.
    token_body: Option<String>,
    /// When set, only a token request with this `Authorization` gets `token_body`; one without
    /// any gets an anonymous token that opens no required repository, one with another 401.
    token_account: Option<String>,
    /// (Entra token expected, refresh token given) for `POST /oauth2/exchange`.
    exchange: Option<(String, String)>,
    seen: Vec<Seen>,
    /// Blob body bytes handed to the connection so far.
    sent: Arc<AtomicU64>,
}

/// A small OCI registry over TLS that counts what it is asked.
pub(crate) struct Registry {
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
    pub(crate) async fn start() -> Registry {
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
                            let with_body = match *req.method() {
                                http::Method::PUT => req.uri().path().contains("/manifests/"),
                                http::Method::POST => req.uri().path() == "/oauth2/exchange",
                                _ => false,
                            };
                            if with_body {
                                return Ok::<_, Infallible>(answer::with_body(req, &s).await);
                            }
                            Ok::<_, Infallible>(answer::answer(req, &s, &m))
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
    pub(crate) fn stop(&self) {
        self.task.abort();
    }

    pub(crate) fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    /// Adds a blob and returns its digest.
    pub(crate) fn add_blob(&self, bytes: Bytes) -> String {
        let digest = sha256(&bytes);
        self.state
            .lock()
            .unwrap()
            .blobs
            .insert(digest.clone(), bytes);
        digest
    }

    /// Serves other bytes than the digest says for this blob.
    pub(crate) fn corrupt(&self, digest: &str) {
        self.state.lock().unwrap().corrupt.insert(digest.to_owned());
    }

    /// Answers 401 for this repository unless a request carries exactly `authorization`.
    pub(crate) fn require(&self, repo: &str, authorization: &str) {
        self.state
            .lock()
            .unwrap()
            .tokens
            .insert(repo.to_owned(), authorization.to_owned());
    }

    /// Answers 401 for this repository unless a request carries `Authorization`.
    pub(crate) fn make_private(&self, repo: &str) {
        self.state
            .lock()
            .unwrap()
            .private_repos
            .insert(repo.to_owned());
    }

    /// Adds a manifest under its digest and `tag`; returns the digest.
    pub(crate) fn add_manifest(
        &self,
        repo: &str,
        tag: &str,
        media_type: &str,
        bytes: Bytes,
    ) -> String {
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

    /// Adds an image of `count` random layers of `size` bytes under `repo:tag` (a Docker v2
    /// manifest naming them, `marker` in it).
    pub(crate) fn add_image(
        &self,
        repo: &str,
        tag: &str,
        count: usize,
        size: usize,
        marker: &str,
    ) -> Image {
        let layers: Vec<Bytes> = (0..count).map(|_| super::fresh_blob(size)).collect();
        let digests: Vec<String> = layers.iter().map(|l| self.add_blob(l.clone())).collect();
        let sizes: Vec<_> = digests.iter().map(|d| (d.as_str(), size)).collect();
        let manifest = Registry::manifest_json(&sizes, marker);
        self.add_manifest(repo, tag, DOCKER_V2, manifest.clone());
        Image {
            layers,
            digests,
            manifest,
        }
    }

    /// A manifest JSON naming `layers`, with a marker to make digests differ.
    pub(crate) fn manifest_json(layers: &[(&str, usize)], marker: &str) -> Bytes {
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

    /// Answers `/v2/<repo>/referrers/<subject>` with this index.
    pub(crate) fn set_referrers(&self, repo: &str, subject: &str, index: &str) {
        self.state.lock().unwrap().referrers.insert(
            (repo.to_owned(), subject.to_owned()),
            Bytes::from(index.to_owned()),
        );
    }

    /// Answers `GET /token` with this JSON body (a Docker token service).
    pub(crate) fn serve_token(&self, body: &str) {
        self.state.lock().unwrap().token_body = Some(body.to_owned());
    }

    /// The `Authorization` of each token request seen, in order (`None`: asked anonymously).
    pub(crate) fn token_logins(&self) -> Vec<Option<String>> {
        self.seen()
            .into_iter()
            .filter(|s| s.path.starts_with("/token"))
            .map(|s| s.authorization)
            .collect()
    }

    /// Answers `GET /token` with this JSON body only to a request logged in with
    /// `authorization` (an account's `Basic …`); another login gets 401, none an anonymous
    /// token.
    pub(crate) fn serve_token_to(&self, authorization: &str, body: &str) {
        let mut state = self.state.lock().unwrap();
        state.token_body = Some(body.to_owned());
        state.token_account = Some(authorization.to_owned());
    }

    /// Answers ACR's `POST /oauth2/exchange` with `refresh_token` for a form that offers
    /// `entra_token` for this registry; anything else gets 401.
    pub(crate) fn serve_exchange(&self, entra_token: &str, refresh_token: &str) {
        self.state.lock().unwrap().exchange =
            Some((entra_token.to_owned(), refresh_token.to_owned()));
    }

    /// Blob body bytes sent so far (handed to the connection; a cancelled transfer stops).
    pub(crate) fn sent(&self) -> u64 {
        self.state.lock().unwrap().sent.load(Ordering::Relaxed)
    }

    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    /// How many requests with `method` had a path containing `fragment`.
    pub(crate) fn count(&self, method: &str, fragment: &str) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.method == method && s.path.contains(fragment))
            .count()
    }

    pub(crate) fn forget(&self) {
        self.state.lock().unwrap().seen.clear();
    }
}
