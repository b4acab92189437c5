//! A small registry client that pulls through a running hoard, shared by `hoard warm` and
//! `hoard cache export`: the `/v2/` ping and anonymous bearer tokens, manifests with the usual
//! `Accept` list checked against their digest, and blobs streamed a few at once, each checked
//! against its digest and, when asked, kept in a file.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use tokio::io::AsyncWriteExt as _;

use crate::config::Config;
use crate::oci::{Challenge, DOCKER_MANIFEST_V2, Digest, Reference};
use crate::ops::imageref::ImageRef;
use crate::ops::install_crypto_provider;
use crate::ops::manifest::{ACCEPT as MANIFEST_TYPES, Manifest};
use crate::ops::running::proxy_address;
use crate::ops::warm_error::{WarmError, ensure_ok, read_bounded};

/// Layers fetched at once, as dockerd does by default.
const PARALLEL_BLOBS: usize = 3;

/// Longest silence while reading an answer: a cold layer of a slow registry still trickles.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A client through the proxy (`proxy`, else the running hoard [`proxy_address`] finds),
/// trusting hoard's CA, the configured extra CAs, the webpki roots and the system's.
pub(crate) async fn client(
    config: &Config,
    proxy: Option<&str>,
) -> Result<reqwest::Client, WarmError> {
    install_crypto_provider();
    let setup = |e: &dyn std::fmt::Display| WarmError::Setup(e.to_string());
    let proxy = match proxy {
        Some(url) => url.to_owned(),
        None => format!(
            "http://{}",
            proxy_address(config.proxy.listen, &config.cache.dir).await
        ),
    };
    let mut trusted = vec![config.ca.dir.join("ca.crt")];
    trusted.extend(config.upstream.clients.extra_ca_files.iter().cloned());
    let roots = crate::tls::root_store(&trusted).map_err(|e| setup(&e))?;
    let mut tls = rustls::ClientConfig::builder_with_provider(crate::crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| setup(&e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(&proxy).map_err(|e| setup(&format!("proxy {proxy:?}: {e}")))?)
        .tls_backend_preconfigured(tls)
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .build()
        .map_err(|e| setup(&e))
}

/// A manifest as fetched.
pub(crate) struct Fetched {
    pub digest: Digest,
    pub media_type: String,
    pub doc: Manifest,
    /// The manifest as the registry sent it.
    pub bytes: Vec<u8>,
}

/// One image's pull: the registry session (with its token) and the progress bars.
pub(crate) struct Puller<'a> {
    client: &'a reqwest::Client,
    image: &'a ImageRef,
    bars: &'a MultiProgress,
    token: Option<String>,
    tried_token: bool,
}

impl<'a> Puller<'a> {
    pub(crate) fn new(
        client: &'a reqwest::Client,
        image: &'a ImageRef,
        bars: &'a MultiProgress,
    ) -> Self {
        Puller {
            client,
            image,
            bars,
            token: None,
            tried_token: false,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("https://{}/v2/{path}", self.image.registry)
    }

    /// Pings the registry's `/v2/` through hoard, fetching a token if it asks for one.
    pub(crate) async fn ping(&mut self) -> Result<(), WarmError> {
        let ping = self.url("");
        let response = self.get(&ping, None).await?;
        ensure_ok(&ping, response).await?;
        Ok(())
    }

    /// GETs `url` with the session's token; on a 401 with a bearer challenge, fetches an
    /// anonymous pull token once and tries again.
    async fn get(
        &mut self,
        url: &str,
        accept: Option<&str>,
    ) -> Result<reqwest::Response, WarmError> {
        let response = self.send(url, accept).await?;
        if response.status() != StatusCode::UNAUTHORIZED || self.tried_token {
            return Ok(response);
        }
        self.tried_token = true;
        let challenge = response
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let auth = |reason: String| WarmError::Auth {
            url: url.to_owned(),
            reason,
        };
        let Some(Challenge::Bearer { realm, service, .. }) = Challenge::parse(challenge) else {
            return Err(auth(format!(
                "the registry wants credentials ({challenge:?}); warm pulls anonymously"
            )));
        };
        self.token = Some(self.token(&realm, service.as_deref()).await?);
        self.send(url, accept).await
    }

    async fn send(&self, url: &str, accept: Option<&str>) -> Result<reqwest::Response, WarmError> {
        let mut request = self.client.get(url);
        if let Some(accept) = accept {
            request = request.header(ACCEPT, accept);
        }
        if let Some(token) = &self.token {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        request.send().await.map_err(|source| WarmError::Request {
            url: url.to_owned(),
            source,
        })
    }

    /// An anonymous token for pulling this repository from the challenge's realm.
    async fn token(&self, realm: &str, service: Option<&str>) -> Result<String, WarmError> {
        let auth = |reason: String| WarmError::Auth {
            url: realm.to_owned(),
            reason,
        };
        let mut url = reqwest::Url::parse(realm)
            .ok()
            .filter(|u| u.scheme() == "https" || u.scheme() == "http")
            .ok_or_else(|| auth("the token realm is not an http(s) URL".to_owned()))?;
        {
            let mut query = url.query_pairs_mut();
            if let Some(service) = service {
                query.append_pair("service", service);
            }
            query.append_pair(
                "scope",
                &format!("repository:{}:pull", self.image.repository),
            );
        }
        let url = url.to_string();
        let response = self.send_plain(&url).await?;
        let response = ensure_ok(&url, response).await?;
        let body = read_bounded(&url, response).await?;
        #[derive(serde::Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let token: Token = serde_json::from_slice(&body)
            .map_err(|e| auth(format!("the token answer is not JSON: {e}")))?;
        token
            .token
            .or(token.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| auth("the token answer has no token".to_owned()))
    }

    /// A GET without the registry token (it must not go to the token server's host).
    async fn send_plain(&self, url: &str) -> Result<reqwest::Response, WarmError> {
        self.client
            .get(url)
            .send()
            .await
            .map_err(|source| WarmError::Request {
                url: url.to_owned(),
                source,
            })
    }

    /// GETs a manifest and checks it against its digest (the one asked for, else the one the
    /// registry names, else its sha256).
    pub(crate) async fn manifest(&mut self, reference: &Reference) -> Result<Fetched, WarmError> {
        let reference_text = match reference {
            Reference::Tag(tag) => tag.clone(),
            Reference::Digest(digest) => digest.to_string(),
        };
        let url = self.url(&format!(
            "{}/manifests/{reference_text}",
            self.image.repository
        ));
        let response = self.get(&url, Some(&MANIFEST_TYPES.join(", "))).await?;
        let response = ensure_ok(&url, response).await?;
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let named = header("docker-content-digest").and_then(|d| Digest::parse(&d));
        let content_type = header(CONTENT_TYPE.as_str())
            .and_then(|t| t.split(';').next().map(|t| t.trim().to_owned()));
        let body = read_bounded(&url, response).await?;
        let digest = match reference {
            Reference::Digest(digest) => digest.clone(),
            Reference::Tag(_) => named.unwrap_or_else(|| Digest::sha256_of(&body)),
        };
        let mut hasher = digest.hasher();
        hasher.update(&body);
        if !hasher.matches(&digest) {
            return Err(WarmError::Mismatch { url, digest });
        }
        let doc = Manifest::parse(&body).ok_or_else(|| WarmError::Manifest {
            url: url.clone(),
            reason: "not a manifest".to_owned(),
        })?;
        let media_type = content_type
            .filter(|t| MANIFEST_TYPES.contains(&t.as_str()))
            .or_else(|| doc.media_type.clone())
            .unwrap_or_else(|| DOCKER_MANIFEST_V2.to_owned());
        Ok(Fetched {
            digest,
            media_type,
            doc,
            bytes: body,
        })
    }

    /// Fetches the blobs, a few at once, each with its own bar; the total of bytes. With
    /// `keep_in`, each is kept there in a file named by its hex digest, else dropped once hashed.
    pub(crate) async fn blobs(
        &self,
        blobs: &[(Digest, u64)],
        keep_in: Option<&Path>,
    ) -> Result<u64, WarmError> {
        let style = ProgressStyle::with_template(
            "{prefix} {bar:30} {binary_bytes:>10}/{binary_total_bytes:<10}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        let permits = Arc::new(tokio::sync::Semaphore::new(PARALLEL_BLOBS));
        let mut tasks = tokio::task::JoinSet::new();
        for (digest, size) in blobs {
            let bar = self
                .bars
                .add(ProgressBar::new(*size).with_style(style.clone()));
            bar.set_prefix(digest.hex()[..12].to_owned());
            let url = self.url(&format!("{}/blobs/{digest}", self.image.repository));
            let blob = Blob {
                client: self.client.clone(),
                token: self.token.clone(),
                url,
                digest: digest.clone(),
                size: *size,
                bar,
                keep: keep_in.map(|dir| dir.join(digest.hex())),
            };
            let permits = permits.clone();
            tasks.spawn(async move {
                let _permit = permits.acquire_owned().await;
                let result = blob.fetch().await;
                blob.bar.finish_and_clear();
                result
            });
        }
        let mut total = 0;
        while let Some(joined) = tasks.join_next().await {
            let bytes =
                joined.map_err(|e| WarmError::Setup(format!("a download task failed: {e}")))??;
            total += bytes;
        }
        Ok(total)
    }
}

/// One blob to fetch, owned so that it can go to a task.
struct Blob {
    client: reqwest::Client,
    token: Option<String>,
    url: String,
    digest: Digest,
    size: u64,
    bar: ProgressBar,
    /// Where to keep the bytes, if anywhere.
    keep: Option<PathBuf>,
}

impl Blob {
    /// Streams the blob, hashing as it arrives; the bytes are dropped once hashed, or written to
    /// [`Blob::keep`].
    async fn fetch(&self) -> Result<u64, WarmError> {
        let url = &self.url;
        let mut request = self.client.get(url);
        if let Some(token) = &self.token {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let request_error = |source| WarmError::Request {
            url: url.clone(),
            source,
        };
        let response = request.send().await.map_err(request_error)?;
        let mut response = ensure_ok(url, response).await?;
        let mut hasher = self.digest.hasher();
        let mut got = 0u64;
        let mut file = match &self.keep {
            Some(path) => Some(
                tokio::fs::File::create(path)
                    .await
                    .map_err(keep_error(path))?,
            ),
            None => None,
        };
        while let Some(chunk) = response.chunk().await.map_err(request_error)? {
            got += chunk.len() as u64;
            if self.size > 0 && got > self.size {
                break;
            }
            hasher.update(&chunk);
            if let (Some(file), Some(path)) = (&mut file, &self.keep) {
                file.write_all(&chunk).await.map_err(keep_error(path))?;
            }
            self.bar.inc(chunk.len() as u64);
        }
        if let (Some(file), Some(path)) = (&mut file, &self.keep) {
            file.flush().await.map_err(keep_error(path))?;
        }
        if self.size > 0 && got != self.size {
            return Err(WarmError::Length {
                url: url.clone(),
                got,
                want: self.size,
            });
        }
        if !hasher.matches(&self.digest) {
            return Err(WarmError::Mismatch {
                url: url.clone(),
                digest: self.digest.clone(),
            });
        }
        Ok(got)
    }
}

/// A failure to keep a fetched blob in its file.
fn keep_error(path: &Path) -> impl FnOnce(std::io::Error) -> WarmError {
    let path = path.display().to_string();
    move |e| WarmError::Setup(format!("cannot write {path}: {e}"))
}
