//! In a fleet, what a node asks the peer that owns an object instead of the registry: blobs and
//! manifests by digest (owned by digest) and manifests by tag (owned by registry, repository
//! and tag, so that one node per tag revalidates it). The owner fetches each once for the
//! fleet; this node still verifies what it gets and keeps its own copy. When the owner cannot
//! answer in time, the registry is asked instead (see [`crate::fleet::Fleet::send`]). Only
//! `source.rs`, which decides where bytes come from, asks here.

use std::sync::Arc;

use http::header::{CONTENT_RANGE, HeaderValue, RANGE};
use http::{HeaderMap, Method, Response, StatusCode, Uri};
use hyper::body::Incoming;
use tracing::Instrument as _;

use super::target::Target;
use crate::config::Credential;
use crate::fleet::{TRACEPARENT, TraceParent};
use crate::hoard::Hoard;
use crate::oci::{Reference, Route};
use crate::telemetry::{Metrics, PeerFailure};
use crate::upstream::Upstream;
use crate::upstream::auth::RegistryAuth;

/// The owner's answer, when a peer owns what the request names and answers; `None`: ask the
/// registry. The request carries a `traceparent` whose trace id both nodes log.
pub(super) async fn ask_owner(
    hoard: &Hoard,
    target: &Target,
    route: &Route,
    uri: &Uri,
    method: &Method,
    headers: &HeaderMap,
) -> Option<Response<Incoming>> {
    if target.from_peer {
        return None; // a peer asked: this node answers, or there would be loops
    }
    let fleet = hoard.fleet.as_ref()?;
    let key = owner_key(target, route)?;
    let owner = fleet.owner(&key)?;
    let path = peer_path(uri, target.key.as_str());
    let trace = TraceParent::new();
    let mut headers = headers.clone();
    if let Ok(value) = HeaderValue::from_str(&trace.to_string()) {
        headers.insert(TRACEPARENT, value);
    }
    // The request's own span (and so its access log line) names the trace too.
    tracing::Span::current().record("trace_id", tracing::field::display(trace.trace_id()));
    let span = tracing::debug_span!("owner", %owner, key, trace_id = %trace.trace_id());
    let asked = fleet
        .send(
            &owner,
            method.clone(),
            &path,
            target.mode(&hoard.config()),
            headers,
        )
        .instrument(span)
        .await;
    match asked {
        Ok(response) => {
            tracing::debug!(%owner, key, trace_id = %trace.trace_id(), status = response.status().as_u16(), "asked the owner");
            Some(response)
        }
        Err(error) => {
            tracing::warn!(%error, key, trace_id = %trace.trace_id(), "the owner did not answer; asking the registry");
            None
        }
    }
}

/// What decides an object's owner: a digest, or `registry/repository:tag`.
fn owner_key(target: &Target, route: &Route) -> Option<String> {
    match route {
        Route::Blob { digest, .. }
        | Route::Manifest {
            reference: Reference::Digest(digest),
            ..
        } => Some(digest.to_string()),
        Route::Manifest {
            repo,
            reference: Reference::Tag(tag),
        } => Some(format!("{}/{repo}:{tag}", target.key.as_str())),
        _ => None,
    }
}

/// The registry path and query, with `ns=<registry>` for the peer endpoint.
fn peer_path(uri: &Uri, registry: &str) -> String {
    let mut path = match uri.query() {
        Some(query) => format!("{}?{query}&ns=", uri.path()),
        None => format!("{}?ns=", uri.path()),
    };
    for byte in registry.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'-' | b'_') {
            path.push(char::from(byte));
        } else {
            path.push_str(&format!("%{byte:02X}"));
        }
    }
    path
}

/// A fill that reads from the owner goes on from the registry when the owner's answer breaks off
/// (the owner stopped, say): its clients get the rest of the blob, still verified as a whole.
pub(super) struct Resume {
    owner: String,
    auth: Arc<RegistryAuth>,
    upstream: Arc<Upstream>,
    credential: Option<Credential>,
    uri: Uri,
    headers: HeaderMap,
    metrics: Arc<Metrics>,
}

impl Resume {
    /// The way to resume a fill of the blob `route` names, asked of its owner at `uri` with
    /// `headers`.
    pub(super) fn new(
        hoard: &Hoard,
        target: &Target,
        route: &Route,
        uri: Uri,
        headers: HeaderMap,
    ) -> Resume {
        let owner = match &hoard.fleet {
            Some(fleet) => owner_key(target, route)
                .and_then(|key| fleet.owner(&key))
                .unwrap_or_default(),
            None => String::new(),
        };
        Resume {
            owner,
            auth: hoard.registry_auth.clone(),
            upstream: hoard.upstream(),
            credential: target.credential(&hoard.config()).cloned(),
            uri,
            headers,
            metrics: hoard.metrics.clone(),
        }
    }

    /// The peer the fill read from.
    pub(super) fn owner(&self) -> &str {
        &self.owner
    }

    /// The rest of the blob from byte `offset`, from the registry: the body, and how many bytes
    /// at its start to skip (a registry that ignores `Range` sends it all).
    pub(super) async fn from(mut self, offset: u64) -> Result<(Incoming, u64), String> {
        self.metrics.duplicate_fetch(PeerFailure::Broken);
        if let Ok(range) = HeaderValue::from_str(&format!("bytes={offset}-")) {
            self.headers.insert(RANGE, range);
        }
        let response = self
            .auth
            .send_following(
                &self.upstream,
                self.credential.as_ref(),
                Method::GET,
                self.uri,
                self.headers,
            )
            .await
            .map_err(|err| err.to_string())?;
        let starts_at = |text: &str| {
            text.strip_prefix("bytes ")
                .and_then(|t| t.split_once('-'))
                .and_then(|(first, _)| first.parse::<u64>().ok())
        };
        match response.status() {
            StatusCode::OK => Ok((response.into_body(), offset)),
            StatusCode::PARTIAL_CONTENT
                if response
                    .headers()
                    .get(CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(starts_at)
                    == Some(offset) =>
            {
                Ok((response.into_body(), 0))
            }
            status => Err(format!(
                "the registry answered {status} to the rest of the blob"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peer_is_told_the_registry_in_ns() {
        let uri: Uri = "https://r:5000/v2/a/b/blobs/sha256:00"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            peer_path(&uri, "127.0.0.1:5000"),
            "/v2/a/b/blobs/sha256:00?ns=127.0.0.1%3A5000"
        );
        let uri: Uri = "https://gcr.io/v2/a/manifests/v1?x=1"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            peer_path(&uri, "gcr.io"),
            "/v2/a/manifests/v1?x=1&ns=gcr.io"
        );
    }

    #[test]
    fn digests_own_blobs_and_manifests_and_tags_own_by_name() {
        let target = Target::new("gcr.io", 443).unwrap_or_else(|| panic!("a host"));
        let digest = format!("sha256:{}", "a".repeat(64));
        let blob = Route::parse(&format!("/v2/p/app/blobs/{digest}"));
        let manifest = Route::parse(&format!("/v2/q/manifests/{digest}"));
        assert_eq!(owner_key(&target, &blob), Some(digest.clone()));
        assert_eq!(owner_key(&target, &manifest), Some(digest));
        let tag = Route::parse("/v2/p/app/manifests/v1");
        assert_eq!(owner_key(&target, &tag), Some("gcr.io/p/app:v1".into()));
        assert_eq!(owner_key(&target, &Route::parse("/v2/")), None);
        assert_eq!(owner_key(&target, &Route::parse("/v2/p/tags/list")), None);
    }
}
