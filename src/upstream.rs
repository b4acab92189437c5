//! The upstream side: one pooled HTTPS client (h1 and h2) verifying against webpki roots, the system
//! store and configured extra CAs, with name overrides, timeouts, and redirect following for blobs.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{AUTHORIZATION, HOST, LOCATION};
use http::{HeaderMap, Method, Request, Response, Uri};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::TokioExecutor;
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::Body;
use crate::config::Config;

/// How long hoard waits for an upstream's response headers before calling it unreachable.
/// containerd gives up after 30 s without headers, so hoard must decide well before that.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(20);

/// Redirect hops followed for one blob (Docker Hub uses 1, GCR up to 2; 5 leaves room).
const MAX_REDIRECTS: usize = 5;

/// Errors setting up the client.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("cannot read extra CA file {path}: {message}")]
    ExtraCa { path: String, message: String },
    #[error("tls setup failed: {0}")]
    Tls(#[from] rustls::Error),
}

/// Why an upstream request produced no response. All of these count as "upstream unreachable"
/// for serving stale content.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream request failed: {0}")]
    Request(#[from] hyper_util::client::legacy::Error),
    #[error("upstream sent no response headers within {0:?}")]
    Timeout(Duration),
    #[error("upstream redirected more than {MAX_REDIRECTS} times")]
    TooManyRedirects,
    #[error("upstream redirected to an unusable location {0:?}")]
    BadRedirect(String),
}

/// The pooled upstream client.
#[derive(Clone, Debug)]
pub struct Upstream {
    client: Client<HttpsConnector<HttpConnector<Resolver>>, Body>,
    resolver: Resolver,
}

impl Upstream {
    /// Builds the client from the config's trust and resolve settings.
    pub fn new(config: &Config, provider: Arc<CryptoProvider>) -> Result<Upstream, SetupError> {
        let roots = root_store(&config.extra_ca_files)?;
        let tls = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let resolver = Resolver {
            overrides: Arc::new(config.resolve.clone()),
        };
        let mut http = HttpConnector::new_with_resolver(resolver.clone());
        http.enforce_http(false);
        http.set_connect_timeout(Some(config.connect_timeout));
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .http2_adaptive_window(true)
            .build(https);
        Ok(Upstream { client, resolver })
    }

    /// Sends one request and waits for its response headers.
    pub async fn send(
        &self,
        mut request: Request<Body>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        // hyper sets Host (h1) or :authority (h2) from the URI, and picks the version per
        // connection; an h2 client's request may well go out over h1.
        request.headers_mut().remove(HOST);
        *request.version_mut() = http::Version::HTTP_11;
        match tokio::time::timeout(RESPONSE_TIMEOUT, self.client.request(request)).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(UpstreamError::Timeout(RESPONSE_TIMEOUT)),
        }
    }

    /// Sends a body-less request (GET or HEAD), following redirects itself. `Authorization` is
    /// dropped as soon as a hop leads to another host.
    pub async fn send_following(
        &self,
        method: Method,
        uri: Uri,
        mut headers: HeaderMap,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let origin = uri.authority().cloned();
        let mut uri = uri;
        for _ in 0..=MAX_REDIRECTS {
            let mut request = Request::new(crate::empty_body());
            *request.method_mut() = method.clone();
            *request.uri_mut() = uri.clone();
            *request.headers_mut() = headers.clone();
            let response = self.send(request).await?;
            if !response.status().is_redirection() || response.status().as_u16() == 304 {
                return Ok(response);
            }
            let Some(location) = response
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
            else {
                return Ok(response);
            };
            let next = join_location(&uri, location)
                .ok_or_else(|| UpstreamError::BadRedirect(location.to_owned()))?;
            if next.authority() != origin.as_ref() {
                headers.remove(AUTHORIZATION);
            }
            tracing::debug!(from = %uri, to = %next, "following upstream redirect");
            uri = next;
        }
        Err(UpstreamError::TooManyRedirects)
    }

    /// Resolves `host:port` for a tunnel, honouring the configured overrides.
    pub async fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
        self.resolver.lookup(host, port).await
    }
}

/// DNS with the config's `upstream.resolve` overrides in front.
#[derive(Clone, Debug)]
struct Resolver {
    overrides: Arc<HashMap<String, SocketAddr>>,
}

impl Resolver {
    async fn lookup(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
        if let Some(addr) = self.overrides.get(&host.to_ascii_lowercase()) {
            return Ok(vec![*addr]);
        }
        Ok(tokio::net::lookup_host((host, port)).await?.collect())
    }
}

impl tower_service::Service<Name> for Resolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let resolver = self.clone();
        // Port 0: the connector puts the URI's port on addresses that have none, and keeps the
        // port of an override when the URI names no port of its own.
        Box::pin(async move { Ok(resolver.lookup(name.as_str(), 0).await?.into_iter()) })
    }
}

/// The roots hoard trusts: the compiled-in Mozilla roots, the system store, and `extra` PEM files.
pub fn root_store(extra: &[std::path::PathBuf]) -> Result<RootCertStore, SetupError> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let native = rustls_native_certs::load_native_certs();
    let (added, _ignored) = roots.add_parsable_certificates(native.certs);
    tracing::debug!(added, "system roots loaded");
    for path in extra {
        let error = |message: String| SetupError::ExtraCa {
            path: path.display().to_string(),
            message,
        };
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| error(e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| error(e.to_string()))?;
        if certs.is_empty() {
            return Err(error("no certificate in it".into()));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| error(e.to_string()))?;
        }
    }
    Ok(roots)
}

/// Resolves a `Location` header against the URI it came from: absolute, scheme-relative,
/// path-absolute or relative.
pub fn join_location(base: &Uri, location: &str) -> Option<Uri> {
    let scheme = base.scheme_str()?;
    let authority = base.authority()?;
    let text = if location.starts_with("https://") || location.starts_with("http://") {
        location.to_owned()
    } else if let Some(rest) = location.strip_prefix("//") {
        format!("{scheme}://{rest}")
    } else if location.starts_with('/') {
        format!("{scheme}://{authority}{location}")
    } else {
        let path = base.path();
        let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
        let dir = if dir.is_empty() { "/" } else { dir };
        format!("{scheme}://{authority}{dir}{location}")
    };
    let uri: Uri = text.parse().ok()?;
    uri.authority()?;
    Some(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_resolve_against_the_request() {
        let base: Uri = "https://gcr.io/v2/p/i/blobs/sha256:00?x=1"
            .parse()
            .unwrap_or_default();
        let join = |l| join_location(&base, l).map(|u| u.to_string());
        assert_eq!(
            join("https://cdn.example/a?sig=1").as_deref(),
            Some("https://cdn.example/a?sig=1")
        );
        assert_eq!(
            join("//cdn.example/a").as_deref(),
            Some("https://cdn.example/a")
        );
        assert_eq!(
            join("/storage/x").as_deref(),
            Some("https://gcr.io/storage/x")
        );
        assert_eq!(
            join("other").as_deref(),
            Some("https://gcr.io/v2/p/i/blobs/other")
        );
        assert_eq!(join("https://"), None);
    }
}
