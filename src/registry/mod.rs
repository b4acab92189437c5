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
//! - everything else (pushes, tag lists, the catalog…): forwarded unchanged.

use http::{Method, Request, Response, StatusCode, Uri};
use hyper::body::Incoming;

use crate::hoard::Hoard;
use crate::http::{Body, error};
use crate::oci::{Reference, Route};
use crate::store::HostKey;
use forward::{access_refused, forward};

mod blobs;
mod fill;
mod forward;
mod manifests;
mod ping;
mod tags;

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
    let route = Route::parse(request.uri().path());
    if let Route::Invalid(reason) = route {
        return error(StatusCode::BAD_REQUEST, reason);
    }
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        return write(request, target, hoard, route).await;
    }
    if matches!(route, Route::Blob { .. } | Route::Manifest { .. })
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
        Route::Other => forward(request, target, hoard).await,
        Route::Invalid(reason) => error(StatusCode::BAD_REQUEST, reason),
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
