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
//! - `referrers.rs`: the referrers API, cached like a tag;
//! - `forward.rs`: what goes upstream unchanged or uncached, and the registry's word on access to
//!   cached objects (`cache.auth_on_hit`);
//!
//! and what they share:
//! - `source.rs`: where bytes come from, in one place: the shared tier (`bucket.rs`), the fleet
//!   peer that owns the object (`peer.rs`), then the registry, and what follows from each;
//! - `target.rs`: the registry a request goes to, and how it is reached;
//! - `quick.rs`: hits answered whole from memory, asked first on every listener;
//! - `conn.rs`: a registry connection served, for the intercept and the mirror alike, its
//!   answers shaped as `answered.rs` says; `h1.rs`, its HTTP/1.1 requests, answered from memory
//!   on the connection itself (`http/plain_get.rs`) or in hyper turns that hold no hyper state while
//!   the connection is idle; `h2/`, a frame layer in front of hyper's h2 server that answers
//!   those hits itself.
//!
//! Everything else (pushes, tag lists, the catalog…) is forwarded unchanged. A request's route is
//! parsed once, in [`handle`]; the local store is looked in first, under the store's single
//! flight, and only the request that leads a flight asks the sources.

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::hoard::Hoard;
use crate::http::{Body, error};
use crate::oci::{Reference, Route};
use forward::{access_refused, forward};
use source::Sources;
use target::{invalid_path, path_and_query};

mod answered;
mod blobs;
mod bucket;
pub(crate) mod conn;
mod fill;
mod forward;
mod h1;
mod h2;
mod manifests;
mod peer;
mod ping;
pub(crate) mod quick;
mod referrers;
mod source;
mod tags;
mod target;

pub(crate) use target::Target;

/// An intercepted connection's requests all go to its one registry.
impl conn::Answer for Target {
    async fn answer(
        &self,
        request: Request<Incoming>,
        hoard: std::sync::Arc<Hoard>,
    ) -> conn::Answered {
        let (user, lent) = self.borrower(&hoard.config());
        conn::Answered {
            host: self.authority().to_owned(),
            path: None,
            user,
            lent,
            response: handle(request, self, &hoard).await,
        }
    }

    fn quick(&self, ask: &quick::Ask<'_>, hoard: &Hoard) -> Option<conn::Answered<bytes::Bytes>> {
        quick::answer(self, ask.get.path, ask, hoard)
    }
}

/// Answers one request on an intercepted connection. The route is parsed here, once.
pub(crate) async fn handle(
    request: Request<Incoming>,
    target: &Target,
    hoard: &Hoard,
) -> Response<Body> {
    let route = Route::parse(request.uri().path());
    if let Route::Invalid(reason) = route {
        return error(StatusCode::BAD_REQUEST, reason);
    }
    // A blob or manifest answer is cached for every client: it is asked for by its path alone, so
    // no client's query string shapes what the others get.
    let asked = match route {
        Route::Blob { .. } | Route::Manifest { .. } => request.uri().path(),
        _ => path_and_query(&request),
    };
    let Some(sources) = Sources::new(hoard, target, route, asked) else {
        return invalid_path();
    };
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        return write(request, &sources).await;
    }
    if !target.from_peer
        && let Some(refusal) = not_granted(request.uri().path(), &sources)
    {
        return refusal;
    }
    if matches!(sources.route, Route::Blob { .. } | Route::Manifest { .. })
        && !target.from_peer
        && let Some(refusal) = access_refused(&request, &sources).await
    {
        return refusal;
    }
    match &sources.route {
        Route::Ping => ping::ping(request, &sources).await,
        Route::Blob { digest, .. } => blobs::blob(request, &sources, digest).await,
        Route::Manifest {
            reference: Reference::Digest(digest),
            ..
        } => manifests::by_digest(request, &sources, digest).await,
        Route::Manifest {
            reference: Reference::Tag(tag),
            ..
        } => tags::by_tag(request, &sources, tag).await,
        Route::Referrers { subject, .. } => referrers::referrers(request, &sources, subject).await,
        Route::Other => forward::uncached(request, &sources).await,
        Route::Invalid(reason) => error(StatusCode::BAD_REQUEST, reason),
    }
}

/// With `[[access.grants]]`, the refusal of a pull the grants do not give the request's user
/// (hits included); `None` when it may pull. A fleet peer's request was judged by its node.
fn not_granted(path: &str, sources: &Sources<'_>) -> Option<Response<Body>> {
    let access = &sources.hoard.config().access;
    if access.grants.is_empty() {
        return None;
    }
    let target = sources.target;
    let repo = match &sources.route {
        Route::Ping => return None,
        Route::Other => match path
            .strip_prefix("/v2/")
            .and_then(|p| p.strip_suffix("/tags/list"))
        {
            Some(repo) if crate::oci::valid_repository(repo) => repo,
            _ => {
                return Some(error(
                    StatusCode::FORBIDDEN,
                    "with access.grants, only repositories a grant names are served",
                ));
            }
        },
        route => route.repo()?,
    };
    let registry = target.key.as_str();
    if access.allows(target.user(), registry, repo) {
        return None;
    }
    let who = target.user().unwrap_or("a client that logged in as nobody");
    Some(error(
        StatusCode::FORBIDDEN,
        &format!("no grant lets {who} pull {registry}/{repo} (access.grants)"),
    ))
}

/// A push, a tag change, a delete: forwarded with the client's own credentials (hoard lends
/// none, see [`crate::upstream::auth::lends_credentials`]). A manifest PUT or DELETE by tag that
/// the registry took drops the cached tag, so the next pull asks the registry.
async fn write(request: Request<Incoming>, sources: &Sources<'_>) -> Response<Body> {
    let (target, hoard) = (sources.target, sources.hoard);
    let retag = matches!(*request.method(), Method::PUT | Method::DELETE);
    let response = forward(request, target, hoard).await;
    if let Route::Manifest {
        repo,
        reference: Reference::Tag(tag),
    } = &sources.route
        && retag
        && response.status().is_success()
        && let Err(err) = hoard.store.drop_tag(&target.key, repo, tag).await
    {
        hoard.store.disk_warning("cannot drop a changed tag", &err);
    }
    response
}
