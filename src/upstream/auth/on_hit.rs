//! `cache.auth_on_hit = "upstream"`: a client gets a cached manifest or blob only after the
//! registry accepted the client's own credentials for it (a HEAD), remembered for a while. The
//! registry's word comes back as a [`Verdict`]; what the client then sees is the caller's
//! business (`crate::registry`).

use std::time::{Duration, Instant};

use http::header::{AUTHORIZATION, HeaderValue, RANGE, WWW_AUTHENTICATE};
use http::{HeaderMap, Method, StatusCode, Uri};

use super::{Hops, Judged, RegistryAuth, Verdict, bounded, fingerprint, lock};
use crate::config::Credential;
use crate::oci::Route;
use crate::upstream::Upstream;

/// How long the registry's verdict on a client's credentials for an object is reused.
const VERDICT_TTL: Duration = Duration::from_secs(300);

/// The `Authorization` a client presented, as the key of what the registry said of it.
fn presented(client_headers: &HeaderMap) -> &[u8] {
    client_headers
        .get(AUTHORIZATION)
        .map_or(&b""[..], HeaderValue::as_bytes)
}

/// The repository of a blob or manifest route.
fn route_repo(route: &Route) -> Option<&str> {
    match route {
        Route::Blob { repo, .. } | Route::Manifest { repo, .. } => Some(repo),
        _ => None,
    }
}

fn repo_key(presented: &[u8], host: &str, repo: &str) -> [u8; 32] {
    fingerprint(&[presented, host.as_bytes(), repo.as_bytes()])
}

impl RegistryAuth {
    /// Whether this client may have the object at `uri` (a blob or manifest `route`) of the
    /// registry `host`. The registry is asked with a HEAD carrying the client's own credentials
    /// (or hoard's, when the client has none), and its redirects are not followed: its own 2xx
    /// or 3xx means yes. The answer is reused for [`VERDICT_TTL`].
    pub(crate) async fn check_access(
        &self,
        upstream: &Upstream,
        credential: Option<&Credential>,
        host: &str,
        route: &Route,
        uri: Uri,
        client_headers: &HeaderMap,
    ) -> Verdict {
        let presented = presented(client_headers);
        let key = fingerprint(&[presented, host.as_bytes(), uri.path().as_bytes()]);
        if let Some(judged) = lock(&self.verdicts).get(&key).cloned()
            && judged.at.elapsed() < VERDICT_TTL
        {
            return match judged.verdict {
                Verdict::Allowed { .. } => Verdict::Allowed { asked: false },
                verdict => verdict,
            };
        }
        let mut headers = crate::http::upstream_headers(client_headers);
        headers.remove(RANGE);
        // The registry's own answer is the verdict: where it redirects to (a presigned CDN URL
        // that answers a HEAD 403 while the GET works) is not asked.
        let result = self
            .send_authenticated(
                upstream,
                credential,
                Method::HEAD,
                uri,
                headers,
                Hops::OriginOnly,
            )
            .await;
        let status = match &result {
            Ok(response) => response.status(),
            Err(_) => StatusCode::BAD_GATEWAY,
        };
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            return Verdict::Unreachable;
        }
        let verdict = if status.is_success() || status.is_redirection() {
            if let Some(repo) = route_repo(route) {
                let mut allowed = lock(&self.allowed_repos);
                bounded(&mut allowed, |at| *at);
                allowed.insert(repo_key(presented, host, repo), Instant::now());
            }
            Verdict::Allowed { asked: true }
        } else {
            let challenge = result
                .as_ref()
                .ok()
                .and_then(|r| r.headers().get(WWW_AUTHENTICATE).cloned());
            Verdict::Refused { status, challenge }
        };
        let mut verdicts = lock(&self.verdicts);
        bounded(&mut verdicts, |j| j.at);
        verdicts.insert(
            key,
            Judged {
                verdict: verdict.clone(),
                at: Instant::now(),
            },
        );
        verdict
    }

    /// While the registry cannot be asked: whether the credential the client presented was
    /// accepted before, on `host`, for one of `repos`, the repositories the object is known to
    /// come from (for a tag, its own; for a blob or manifest, its origins as the store keeps
    /// them, which are none for entries stored before origins were kept: those wait for the
    /// registry).
    pub(crate) fn allowed_before(
        &self,
        client_headers: &HeaderMap,
        host: &str,
        repos: &[String],
    ) -> bool {
        let presented = presented(client_headers);
        let allowed = lock(&self.allowed_repos);
        repos
            .iter()
            .any(|repo| allowed.contains_key(&repo_key(presented, host, repo)))
    }
}
