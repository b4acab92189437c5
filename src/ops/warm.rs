//! `hoard warm`: pulls images through a running hoard so that later pulls are hits. A small
//! registry client: the `/v2/` ping and anonymous bearer tokens, the manifest by tag with the
//! usual `Accept` list, the platform's manifest out of an index, then the config and every layer
//! streamed and checked against its digest. Nothing is kept here: hoard keeps it.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};

use crate::config::Config;
use crate::error::Chain;
use crate::oci::{Challenge, DOCKER_MANIFEST_V2, Digest, Reference};
use crate::ops::imageref::ImageRef;
use crate::ops::manifest::{ACCEPT as MANIFEST_TYPES, Manifest, Platform};
use crate::ops::running::proxy_address;
use crate::ops::warm_error::{WarmError, ensure_ok, read_bounded};
use crate::ops::{Outcome, install_crypto_provider};

/// Layers fetched at once, as dockerd does by default.
const PARALLEL_BLOBS: usize = 3;

/// Longest silence while reading an answer: a cold layer of a slow registry still trickles.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What `hoard warm` pulls, and through which proxy.
#[derive(Debug, Clone, Default)]
pub struct WarmOptions {
    /// The proxy URL; when absent, `http://<proxy.listen>` of the config, or the address a
    /// running hoard noted in the cache folder ([`crate::ops::running`]).
    pub proxy: Option<String>,
    /// The platform picked out of an index.
    pub platform: Platform,
}

/// What a warmed image came to.
#[derive(Debug, Clone)]
pub(crate) struct Warmed {
    /// The digest the reference resolved to (the index's, for a multi-platform image).
    pub digest: Digest,
    pub blobs: usize,
    pub bytes: u64,
}

/// Warms each image in turn; a failed image is reported on stderr as one line and the others
/// still go. Progress bars are drawn on stderr when it is a terminal.
pub async fn run(config: &Config, images: &[ImageRef], options: &WarmOptions) -> Outcome {
    let client = match client(config, options.proxy.as_deref()).await {
        Ok(client) => client,
        Err(e) => {
            eprintln!("hoard: {}", Chain(&e));
            return Outcome::Trouble;
        }
    };
    let bars = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
    let mut trouble = false;
    for image in images {
        if !config
            .intercept
            .matches(image.registry.split(':').next().unwrap_or(""))
        {
            bars.suspend(|| {
                eprintln!(
                    "hoard: note: {} is not in intercept.hosts; hoard will not keep it",
                    image.registry
                );
            });
        }
        let result = Puller::new(&client, image, &bars)
            .warm(&options.platform)
            .await;
        // Lines go around the bars, so they stay readable on a terminal and plain in a pipe.
        bars.suspend(|| match result {
            Ok(w) => {
                let mut stdout = std::io::stdout().lock();
                let _ = writeln!(
                    stdout,
                    "warmed {image} {} ({} blobs, {})",
                    w.digest,
                    w.blobs,
                    HumanBytes(w.bytes)
                );
            }
            Err(e) => {
                trouble = true;
                eprintln!("hoard: warm {image}: {}", Chain(&e));
            }
        });
    }
    Outcome::from_trouble(trouble)
}

/// A client through the proxy (`proxy`, else the running hoard [`proxy_address`] finds),
/// trusting hoard's CA, the configured extra CAs, the webpki roots and the system's.
async fn client(config: &Config, proxy: Option<&str>) -> Result<reqwest::Client, WarmError> {
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
struct Fetched {
    digest: Digest,
    media_type: String,
    doc: Manifest,
}

/// One image's pull: the registry session (with its token) and the progress bars.
struct Puller<'a> {
    client: &'a reqwest::Client,
    image: &'a ImageRef,
    bars: &'a MultiProgress,
    token: Option<String>,
    tried_token: bool,
}

impl<'a> Puller<'a> {
    fn new(client: &'a reqwest::Client, image: &'a ImageRef, bars: &'a MultiProgress) -> Self {
        Puller {
            client,
            image,
            bars,
            token: None,
            tried_token: false,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://{}/v2/{path}", self.image.registry)
    }

    async fn warm(mut self, platform: &Platform) -> Result<Warmed, WarmError> {
        let ping = self.url("");
        let response = self.get(&ping, None).await?;
        ensure_ok(&ping, response).await?;

        let top = self.manifest(&self.image.reference()).await?;
        let image = if top.doc.is_index(&top.media_type) {
            let entry = top
                .doc
                .entry_for(platform)
                .ok_or_else(|| WarmError::NoPlatform {
                    platform: platform.to_string(),
                    available: top.doc.platforms().join(", "),
                })?;
            let url = self.url(&format!(
                "{}/manifests/{}",
                self.image.repository, entry.digest
            ));
            let digest = Digest::parse(&entry.digest).ok_or_else(|| WarmError::Manifest {
                url: url.clone(),
                reason: format!("the index lists a bad digest {:?}", entry.digest),
            })?;
            let child = self.manifest(&Reference::Digest(digest)).await?;
            if child.doc.is_index(&child.media_type) {
                return Err(WarmError::Manifest {
                    url,
                    reason: "an index inside an index".to_owned(),
                });
            }
            child.doc
        } else {
            top.doc
        };
        let blobs: Vec<(Digest, u64)> = image.blobs().collect();
        let bytes = self.blobs(&blobs).await?;
        Ok(Warmed {
            digest: top.digest,
            blobs: blobs.len(),
            bytes,
        })
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
    async fn manifest(&mut self, reference: &Reference) -> Result<Fetched, WarmError> {
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
        })
    }

    /// Fetches the blobs, a few at once, each with its own bar; the total of bytes.
    async fn blobs(&self, blobs: &[(Digest, u64)]) -> Result<u64, WarmError> {
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
}

impl Blob {
    /// Streams the blob, hashing as it arrives; the bytes are dropped once hashed.
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
        while let Some(chunk) = response.chunk().await.map_err(request_error)? {
            got += chunk.len() as u64;
            if self.size > 0 && got > self.size {
                break;
            }
            hasher.update(&chunk);
            self.bar.inc(chunk.len() as u64);
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
