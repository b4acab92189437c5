//! `cache.auth_on_hit = "upstream"`: a client gets a cached manifest or blob only after the
//! registry accepted the client's own credentials for it (a HEAD), remembered for a while. The
//! registry's word comes back as a [`Verdict`]; what the client then sees is the caller's
//! business (`crate::registry`).

use std::time::{Duration, Instant};

use http::header::{AUTHORIZATION, RANGE, WWW_AUTHENTICATE};
use http::{HeaderMap, Method, StatusCode, Uri};

use super::{Hops, Judged, RegistryAuth, Verdict, bounded, fingerprint, lock};
use crate::config::Credential;
use crate::oci::Route;
use crate::upstream::Upstream;

/// How long the registry's verdict on a client's credentials for an object is reused.
const VERDICT_TTL: Duration = Duration::from_secs(300);

/// Who asks, as the key of what the registry said of it: the client's own `Authorization`, or
/// else the account hoard lends it and the hoard user it lends it to, or else nobody. A verdict
/// for one asker is never another's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Asker(Vec<u8>);

impl Asker {
    /// The asker of a request with `client_headers`, lent `credential` (if any) as `user`.
    pub(crate) fn of(
        client_headers: &HeaderMap,
        credential: Option<&Credential>,
        user: Option<&str>,
    ) -> Asker {
        if let Some(own) = client_headers.get(AUTHORIZATION) {
            return Asker([b"own ", own.as_bytes()].concat());
        }
        match credential.filter(|c| !c.anonymous) {
            Some(lent) => Asker(
                format!(
                    "lent {} {} to {}",
                    lent.host,
                    lent.username,
                    user.unwrap_or("")
                )
                .into_bytes(),
            ),
            None => Asker(b"anonymous".to_vec()),
        }
    }
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
    /// (or the account hoard lends it, when it has none), and its redirects are not followed:
    /// its own 2xx or 3xx means yes. The answer is reused for [`VERDICT_TTL`] for the same
    /// `asker` (see [`Asker`]).
    #[expect(
        clippy::too_many_arguments,
        reason = "each is one fact of the question"
    )]
    pub(crate) async fn check_access(
        &self,
        upstream: &Upstream,
        credential: Option<&Credential>,
        host: &str,
        route: &Route,
        uri: Uri,
        client_headers: &HeaderMap,
        asker: &Asker,
    ) -> Verdict {
        let presented = asker.0.as_slice();
        let key = fingerprint(&[presented, host.as_bytes(), uri.path().as_bytes()]);
        if let Some(judged) = lock(&self.verdicts).get(&key).cloned()
            && judged.at.elapsed() < VERDICT_TTL
        {
            return match judged.verdict {
                Verdict::Allowed { .. } => Verdict::Allowed { asked: false },
                verdict => verdict,
            };
        }
        if upstream.down_for(&uri).is_some() {
            // It failed moments ago: the caller decides without a connect timeout per request.
            return Verdict::Unreachable;
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
    pub(crate) fn allowed_before(&self, asker: &Asker, host: &str, repos: &[String]) -> bool {
        let presented = asker.0.as_slice();
        let allowed = lock(&self.allowed_repos);
        repos
            .iter()
            .any(|repo| allowed.contains_key(&repo_key(presented, host, repo)))
    }
}
