//! The registry cache: what hoard does with each OCI call on an intercepted host, one file per
//! rule:
//! - `ping.rs`: the `/v2/` version check, forwarded, or answered locally when the upstream is
//!   unusable;
//! - `manifests.rs`: manifests by digest, served from the store or fetched once for everyone
//!   who asks, verified before they are kept;
//! - `tags.rs`: manifests by tag: the tag map, fresh for `cache.tag_ttl`, then revalidated with a
//!   HEAD, and served stale while the upstream is unusable;
//! - `blobs.rs`: blobs by digest, served from the store or from a fill in progress, whole or by
//!   range;
//! - `fill.rs`: a blob fill, one upstream GET streamed to its first client and into the store
//!   while the others follow the temp file, verified before it is kept;
//! - `forward.rs`: what goes upstream unchanged, what goes with hoard's credentials, and the
//!   registry's word on access to cached objects (`cache.auth_on_hit`);
//! - `referrers.rs`: the referrers API, cached like a tag;
//! - `shared.rs`: the shared S3 tier (`[store.s3]`), asked on a local miss and given what came
//!   from a registry;
//! - `peer.rs`: in a fleet, what is asked of the peer that owns an object instead of the
//!   registry;
//! - `conn.rs`: a registry connection served, for the intercept and the mirror alike;
//! - everything else (pushes, tag lists, the catalog…): forwarded unchanged.

use http::{Method, Request, Response, StatusCode, Uri};
use hyper::body::Incoming;

use crate::config::{Config, Credential};
use crate::hoard::Hoard;
use crate::http::{Body, error};
use crate::oci::{Reference, Route};
use crate::store::HostKey;
use forward::{access_refused, forward};

mod blobs;
pub(crate) mod conn;
mod fill;
mod forward;
mod manifests;
mod peer;
mod ping;
mod referrers;
mod shared;
mod tags;

/// The intercepted registry a connection talks to.
#[derive(Debug)]
pub struct Target {
    authority: String,
    base: String,
    key: HostKey,
    /// For requests through the mirror: hoard stands in for a client that logs in nowhere.
    anonymous: Option<Credential>,
    /// A fleet peer asks: this node answers it itself, never from another peer.
    from_peer: bool,
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
            anonymous: None,
            from_peer: false,
        })
    }

    /// A registry reached through the mirror: with no `[[upstream.credentials]]` for it, hoard
    /// pulls anonymously, answering the registry's token challenge itself.
    pub fn mirrored(host: &str, port: u16) -> Option<Target> {
        let mut target = Target::new(host, port)?;
        target.anonymous = Some(Credential::anonymous(target.key.as_str()));
        Some(target)
    }

    /// The same registry, asked for by a fleet peer: answered here, whoever owns the object, and
    /// without `cache.auth_on_hit` (the peer asked the registry for its client already).
    pub fn for_peer(self) -> Target {
        Target {
            from_peer: true,
            ..self
        }
    }

    /// How this registry is reached, as a fleet peer is told: with the client's own
    /// credentials (`proxy`) or with hoard's (`mirror`).
    fn mode(&self) -> crate::fleet::Mode {
        if self.anonymous.is_some() {
            crate::fleet::Mode::Mirror
        } else {
            crate::fleet::Mode::Proxy
        }
    }

    /// hoard's credentials for this registry, or the anonymous stand-in of a mirrored one.
    fn credential<'a>(&'a self, config: &'a Config) -> Option<&'a Credential> {
        config
            .credential_for(self.key.as_str())
            .or(self.anonymous.as_ref())
    }

    /// `host[:port]`, as the client named it.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    fn uri(&self, path_and_query: &str) -> Option<Uri> {
        format!("{}{path_and_query}", self.base).parse().ok()
    }
}

/// An intercepted connection's requests all go to its one registry.
impl conn::Answer for Target {
    async fn answer(
        &self,
        request: Request<Incoming>,
        hoard: std::sync::Arc<Hoard>,
    ) -> conn::Answered {
        conn::Answered {
            host: self.authority.clone(),
            path: None,
            response: handle(request, self, &hoard).await,
        }
    }
}

/// Answers one request on an intercepted connection.
pub async fn handle(request: Request<Incoming>, target: &Target, hoard: &Hoard) -> Response<Body> {
    let route = Route::parse(request.uri().path());
    if let Route::Invalid(reason) = route {
        return error(StatusCode::BAD_REQUEST, reason);
    }
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        return write(request, target, hoard, route).await;
    }
    if matches!(route, Route::Blob { .. } | Route::Manifest { .. })
        && !target.from_peer
        && let Some(refusal) = access_refused(&request, target, hoard, &route).await
    {
        return refusal;
    }
    match route {
        Route::Ping => ping::ping(request, target, hoard).await,
        Route::Blob { digest, .. } => blobs::blob(request, target, hoard, digest).await,
        Route::Manifest {
            reference: Reference::Digest(digest),
            ..
        } => manifests::by_digest(request, target, hoard, digest).await,
        Route::Manifest {
            repo,
            reference: Reference::Tag(tag),
        } => tags::by_tag(request, target, hoard, &repo, &tag).await,
        Route::Referrers { repo, subject } => {
            referrers::referrers(request, target, hoard, &repo, &subject).await
        }
        Route::Other => uncached(request, target, hoard).await,
        Route::Invalid(reason) => error(StatusCode::BAD_REQUEST, reason),
    }
}

/// A read nothing is kept of (a tag list, the catalog): forwarded. A mirror client cannot log in
/// upstream, so for it hoard does.
async fn uncached(request: Request<Incoming>, target: &Target, hoard: &Hoard) -> Response<Body> {
    if target.anonymous.is_some() {
        forward::pull(request, target, hoard).await
    } else {
        forward(request, target, hoard).await
    }
}

/// A push, a tag change, a delete: forwarded with the client's own credentials (hoard lends
/// none, see [`crate::upstream::auth::lends_credentials`]). A manifest PUT or DELETE by tag that
/// the registry took drops the cached tag, so the next pull asks the registry.
async fn write(
    request: Request<Incoming>,
    target: &Target,
    hoard: &Hoard,
    route: Route,
) -> Response<Body> {
    let retag = matches!(*request.method(), Method::PUT | Method::DELETE);
    let response = forward(request, target, hoard).await;
    if let Route::Manifest {
        repo,
        reference: Reference::Tag(tag),
    } = route
        && retag
        && response.status().is_success()
        && let Err(err) = hoard.store.drop_tag(&target.key, &repo, &tag).await
    {
        hoard.store.disk_warning("cannot drop a changed tag", &err);
    }
    response
}

/// Whether an upstream answer means "use the cache instead": overloaded, rate-limited, broken.
fn unusable(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS
}

fn path_and_query(request: &Request<Incoming>) -> &str {
    request.uri().path_and_query().map_or("/", |p| p.as_str())
}

/// The answer when a request's path makes no upstream URI.
fn invalid_path() -> Response<Body> {
    error(StatusCode::BAD_REQUEST, "request path is not a valid URI")
}
