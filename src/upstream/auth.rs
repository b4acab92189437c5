//! Authentication against registries, on two fronts:
//! - hoard's own credentials (`[[upstream.credentials]]`), used when a client sends no
//!   `Authorization`, and only to pull (GET and HEAD of the ping, manifests, blobs, tag lists and
//!   referrers): hoard answers the registry's own challenge itself (never a redirect target's),
//!   Basic or the Bearer token flow for a `pull` scope, and keeps tokens until they expire. A
//!   push, a tag change or a delete goes with the client's credentials or with none;
//! - `cache.auth_on_hit = "upstream"`: a client gets a cached manifest or blob only after the
//!   registry accepted the client's own credentials for it (a HEAD), remembered for a while.
//!   While the registry cannot be asked, an object is served only to a credential the registry
//!   accepted before for a repository the object is known to come from (its origins, kept by
//!   the store).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::header::{AUTHORIZATION, HeaderValue, WWW_AUTHENTICATE};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use sha2::Digest as _;

use crate::config::Credential;
use crate::http::Body;
use crate::oci::Challenge;
use crate::oci::{Digest, Reference, Route, valid_repository};
use crate::store::{HostKey, Key, Store};
use crate::upstream::{Origin, Upstream, UpstreamError};

/// Used when a token response says nothing of its lifetime (the spec's default).
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);

/// The longest a token is kept, whatever its `expires_in` says: a registry that claims "valid for
/// a century" must not make hoard hold a revoked token that long (Docker Hub's tokens last 300 s,
/// gcr.io's 3600 s).
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// Basic credentials need no refresh; an hour bounds how long a changed password goes unnoticed.
const BASIC_LIFETIME: Duration = Duration::from_secs(3600);

/// How long the registry's verdict on a client's credentials for an object is reused.
const VERDICT_TTL: Duration = Duration::from_secs(300);

/// Bound on remembered tokens and verdicts; past it the oldest half is dropped.
const MAX_REMEMBERED: usize = 10_000;

/// A token response larger than this is not a token response.
const MAX_TOKEN_RESPONSE: usize = 64 << 10;

/// How long to use a token whose response said `expires_in`: absent, zero, negative or not a
/// number means the spec's default; more than [`MAX_TOKEN_LIFETIME`] is capped. A tenth is
/// taken off, so a token does not expire between check and use.
fn token_lifetime(expires_in: Option<&serde_json::Value>) -> Duration {
    let lifetime = expires_in
        .and_then(serde_json::Value::as_f64)
        .filter(|secs| secs.is_finite() && *secs > 0.0)
        .map_or(DEFAULT_TOKEN_LIFETIME, |secs| {
            Duration::from_secs_f64(secs.min(MAX_TOKEN_LIFETIME.as_secs_f64()))
        });
    lifetime.saturating_sub(lifetime / 10)
}

/// `repository:<name>:pull` for a registry API path, or `None` (the `/v2/` ping, the catalog).
fn pull_scope(path: &str) -> Option<String> {
    let rest = path.strip_prefix("/v2/")?;
    let end = ["/manifests/", "/blobs/", "/tags/", "/referrers/"]
        .iter()
        .filter_map(|m| rest.find(m))
        .min()?;
    Some(format!("repository:{}:pull", &rest[..end]))
}

/// Whether hoard may lend its own credentials to a request: only reads of what a pull needs.
/// Everything else (uploads, manifest PUTs, DELETEs, the catalog) must carry the client's own.
pub fn lends_credentials(method: &Method, path: &str) -> bool {
    if !matches!(*method, Method::GET | Method::HEAD) {
        return false;
    }
    match Route::parse(path) {
        Route::Ping | Route::Blob { .. } | Route::Manifest { .. } => true,
        Route::Invalid(_) => false,
        Route::Other => {
            let Some(rest) = path.strip_prefix("/v2/") else {
                return false;
            };
            let tag_list = rest
                .strip_suffix("/tags/list")
                .is_some_and(valid_repository);
            let referrers = rest
                .rsplit_once("/referrers/")
                .is_some_and(|(repo, digest)| {
                    valid_repository(repo) && Digest::parse(digest).is_some()
                });
            tag_list || referrers
        }
    }
}

/// Whether a token scope asks for nothing but pulls: `repository:<name>:pull` items, space
/// separated. hoard fetches tokens with its credentials for such scopes only.
fn pull_only(scope: &str) -> bool {
    scope.split(' ').filter(|s| !s.is_empty()).all(|item| {
        item.strip_prefix("repository:")
            .and_then(|rest| rest.strip_suffix(":pull"))
            .is_some_and(valid_repository)
    })
}

#[derive(Debug)]
struct Remembered {
    header: HeaderValue,
    until: Instant,
}

#[derive(Debug, Clone)]
struct Verdict {
    /// `None`: allowed; else the registry's refusal to pass on.
    refusal: Option<(StatusCode, Option<HeaderValue>)>,
    at: Instant,
}

/// Tokens and verdicts, shared by all connections.
#[derive(Debug, Default)]
pub struct RegistryAuth {
    /// (registry host, scope) → `Authorization` value hoard uses.
    tokens: Mutex<HashMap<(String, String), Remembered>>,
    /// sha256(client credential, host, path) → the registry's answer.
    verdicts: Mutex<HashMap<[u8; 32], Verdict>>,
    /// sha256(client credential, host, repository name) → when last allowed, for offline
    /// serving.
    allowed_repos: Mutex<HashMap<[u8; 32], Instant>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn bounded<K, V>(map: &mut HashMap<K, V>, age: impl Fn(&V) -> Instant) {
    if map.len() >= MAX_REMEMBERED {
        let mut ages: Vec<Instant> = map.values().map(&age).collect();
        ages.sort();
        let cutoff = ages[ages.len() / 2];
        map.retain(|_, v| age(v) > cutoff);
    }
}

impl RegistryAuth {
    /// Sends a body-less request to a registry. When the client sent no `Authorization`, the
    /// request is a pull ([`lends_credentials`]) and hoard has `credential` for the registry,
    /// hoard authenticates: with a remembered token first, else by answering the registry's 401
    /// challenge and sending again. A 401 from a redirect target is passed on unanswered.
    pub async fn send_following(
        &self,
        upstream: &Upstream,
        credential: Option<&Credential>,
        method: Method,
        uri: Uri,
        mut headers: HeaderMap,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let Some(credential) = credential.filter(|_| {
            !headers.contains_key(AUTHORIZATION) && lends_credentials(&method, uri.path())
        }) else {
            return upstream.send_following(method, uri, headers).await;
        };
        let scope = pull_scope(uri.path()).unwrap_or_default();
        let key = (credential.host.clone(), scope.clone());
        if let Some(header) = self.remembered(&key) {
            headers.insert(AUTHORIZATION, header);
        }
        let response = upstream
            .send_following(method.clone(), uri.clone(), headers.clone())
            .await?;
        // Only the registry's own challenge is answered: a CDN host that a blob redirects to
        // gets neither hoard's credentials nor a token fetched on its say-so.
        let from_origin = response.extensions().get::<Origin>() == Some(&Origin(true));
        if response.status() != StatusCode::UNAUTHORIZED || !from_origin {
            return Ok(response);
        }
        let Some(challenge) = response
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(Challenge::parse)
        else {
            return Ok(response);
        };
        let answer = match challenge {
            Challenge::Basic => basic(credential).map(|h| (h, BASIC_LIFETIME)),
            Challenge::Bearer {
                realm,
                service,
                scope: asked,
            } => {
                // A challenge asking for more than a pull gets a pull token or nothing.
                let scope = asked.filter(|asked| pull_only(asked)).unwrap_or(scope);
                if !pull_only(&scope) {
                    return Ok(response);
                }
                self.fetch_token(upstream, credential, &realm, service.as_deref(), &scope)
                    .await
            }
        };
        let Some((header, lifetime)) = answer else {
            return Ok(response); // the client sees the registry's 401
        };
        if let Some(until) = Instant::now().checked_add(lifetime) {
            let mut tokens = lock(&self.tokens);
            bounded(&mut tokens, |r| r.until);
            tokens.insert(
                key,
                Remembered {
                    header: header.clone(),
                    until,
                },
            );
        }
        headers.insert(AUTHORIZATION, header);
        upstream.send_following(method, uri, headers).await
    }

    /// The remembered `Authorization` for a forwarded request that is a pull
    /// ([`lends_credentials`]): no retry is possible. Anything else goes with the client's own
    /// credentials or with none.
    pub fn preauthorize(
        &self,
        credential: Option<&Credential>,
        method: &Method,
        path: &str,
        headers: &mut HeaderMap,
    ) {
        let Some(credential) = credential
            .filter(|_| !headers.contains_key(AUTHORIZATION) && lends_credentials(method, path))
        else {
            return;
        };
        let key = (
            credential.host.clone(),
            pull_scope(path).unwrap_or_default(),
        );
        if let Some(header) = self.remembered(&key) {
            headers.insert(AUTHORIZATION, header);
        }
    }

    fn remembered(&self, key: &(String, String)) -> Option<HeaderValue> {
        let tokens = lock(&self.tokens);
        let remembered = tokens.get(key)?;
        (remembered.until > Instant::now()).then(|| remembered.header.clone())
    }

    async fn fetch_token(
        &self,
        upstream: &Upstream,
        credential: &Credential,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Option<(HeaderValue, Duration)> {
        let mut query = Vec::new();
        if let Some(service) = service {
            query.push(format!("service={}", encode(service)));
        }
        if !scope.is_empty() {
            query.push(format!("scope={}", encode(scope)));
        }
        let separator = if realm.contains('?') { '&' } else { '?' };
        let url = format!("{realm}{separator}{}", query.join("&"));
        let Ok(uri) = url.parse::<Uri>() else {
            tracing::warn!(host = %credential.host, "registry named an unusable token realm");
            return None;
        };
        let mut request = Request::new(crate::http::empty_body());
        *request.uri_mut() = uri;
        request
            .headers_mut()
            .insert(AUTHORIZATION, basic(credential)?);
        let response = match upstream.send_guarded(request).await {
            Ok(response) => response,
            Err(err) => {
                tracing::warn!(host = %credential.host, error = %err, "cannot reach the token service");
                return None;
            }
        };
        if response.status() != StatusCode::OK {
            tracing::warn!(host = %credential.host, status = %response.status(), "the token service refused hoard's credentials");
            return None;
        }
        let body = Limited::new(response.into_body(), MAX_TOKEN_RESPONSE)
            .collect()
            .await
            .ok()?
            .to_bytes();
        let parsed: serde_json::Value = serde_json::from_slice(&body).ok()?;
        let token = parsed
            .get("token")
            .or_else(|| parsed.get("access_token"))?
            .as_str()?;
        let lifetime = token_lifetime(parsed.get("expires_in"));
        tracing::debug!(host = %credential.host, scope, ?lifetime, "token obtained");
        Some((
            HeaderValue::from_str(&format!("Bearer {token}")).ok()?,
            lifetime,
        ))
    }

    /// With `auth_on_hit = "upstream"`: whether this client may have the object at `uri` (a
    /// blob or manifest `route`) of `host`. `None` means yes; otherwise the response to give. The
    /// registry is asked with a HEAD carrying the client's own credentials (or hoard's, when the
    /// client has none); its answer is reused for [`VERDICT_TTL`], and a yes adds the repository
    /// to the object's origins in `store`. When the registry cannot be asked, see
    /// [`RegistryAuth::allowed_offline`].
    #[expect(
        clippy::too_many_arguments,
        reason = "the request's parts, each needed"
    )]
    pub async fn check_access(
        &self,
        upstream: &Upstream,
        credential: Option<&Credential>,
        host: &HostKey,
        route: &Route,
        uri: Uri,
        client_headers: &HeaderMap,
        store: &Store,
    ) -> Option<Response<Body>> {
        let presented = client_headers
            .get(AUTHORIZATION)
            .map_or(&b""[..], HeaderValue::as_bytes);
        let key = fingerprint(&[presented, host.as_str().as_bytes(), uri.path().as_bytes()]);
        if let Some(verdict) = lock(&self.verdicts).get(&key).cloned()
            && verdict.at.elapsed() < VERDICT_TTL
        {
            return verdict.refusal.map(refusal_response);
        }
        let mut headers = crate::http::upstream_headers(client_headers);
        headers.remove(http::header::RANGE);
        let result = self
            .send_following(upstream, credential, Method::HEAD, uri, headers)
            .await;
        let status = match &result {
            Ok(response) => response.status(),
            Err(_) => StatusCode::BAD_GATEWAY,
        };
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            let known = self.allowed_offline(presented, host, route, store).await;
            return (!known).then(|| {
                crate::http::error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the registry cannot confirm access to this cached object right now",
                )
            });
        }
        let refusal = (!status.is_success() && !status.is_redirection()).then(|| {
            let challenge = result
                .as_ref()
                .ok()
                .and_then(|r| r.headers().get(WWW_AUTHENTICATE).cloned());
            (status, challenge)
        });
        if refusal.is_none()
            && let Some((repo, object)) = route_object(route)
        {
            let mut allowed = lock(&self.allowed_repos);
            bounded(&mut allowed, |at| *at);
            allowed.insert(repo_key(presented, host, repo), Instant::now());
            if let Some(object) = object {
                store.note_origin(object, host, repo);
            }
        }
        let mut verdicts = lock(&self.verdicts);
        bounded(&mut verdicts, |v| v.at);
        verdicts.insert(
            key,
            Verdict {
                refusal: refusal.clone(),
                at: Instant::now(),
            },
        );
        refusal.map(refusal_response)
    }

    /// While the registry cannot be asked: whether the credential `presented` was accepted
    /// before, on `host`, for a repository the object comes from. A blob's or manifest's origins
    /// are what the store recorded (none for entries stored before origins were kept: those
    /// wait for the registry); a tag comes from its own repository.
    async fn allowed_offline(
        &self,
        presented: &[u8],
        host: &HostKey,
        route: &Route,
        store: &Store,
    ) -> bool {
        let Some((repo, object)) = route_object(route) else {
            return false;
        };
        let repos = match object {
            Some(object) => store
                .origins(&object)
                .await
                .into_iter()
                .filter(|(h, _)| h == host.as_str())
                .map(|(_, repo)| repo)
                .collect(),
            None => vec![repo.to_owned()],
        };
        let allowed = lock(&self.allowed_repos);
        repos
            .iter()
            .any(|repo| allowed.contains_key(&repo_key(presented, host, repo)))
    }
}

/// The repository of a blob or manifest route, and the store entry it names (`None` for a tag).
fn route_object(route: &Route) -> Option<(&str, Option<Key>)> {
    match route {
        Route::Blob { repo, digest } => Some((repo, Some(Key::Blob(digest.clone())))),
        Route::Manifest {
            repo,
            reference: Reference::Digest(digest),
        } => Some((repo, Some(Key::Manifest(digest.clone())))),
        Route::Manifest {
            repo,
            reference: Reference::Tag(_),
        } => Some((repo, None)),
        _ => None,
    }
}

fn repo_key(presented: &[u8], host: &HostKey, repo: &str) -> [u8; 32] {
    fingerprint(&[presented, host.as_str().as_bytes(), repo.as_bytes()])
}

fn refusal_response((status, challenge): (StatusCode, Option<HeaderValue>)) -> Response<Body> {
    let mut response =
        crate::http::error(status, "the registry did not grant access to this object");
    if let Some(challenge) = challenge {
        response.headers_mut().insert(WWW_AUTHENTICATE, challenge);
    }
    response
}

fn fingerprint(parts: &[&[u8]]) -> [u8; 32] {
    let mut hasher = sha2::Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hasher.finalize().into()
}

fn basic(credential: &Credential) -> Option<HeaderValue> {
    let mut value = HeaderValue::from_str(&crate::http::basic_header(
        &credential.username,
        &credential.password,
    ))
    .ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// Percent-encodes a query value.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_lifetimes_are_clamped() {
        let lifetime = |json: &str| {
            let value: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
            token_lifetime(value.get("expires_in"))
        };
        let default = DEFAULT_TOKEN_LIFETIME - DEFAULT_TOKEN_LIFETIME / 10;
        let longest = MAX_TOKEN_LIFETIME - MAX_TOKEN_LIFETIME / 10;
        assert_eq!(lifetime(r#"{"expires_in":300}"#), Duration::from_secs(270));
        assert_eq!(lifetime("{}"), default);
        assert_eq!(lifetime(r#"{"expires_in":-5}"#), default);
        assert_eq!(lifetime(r#"{"expires_in":0}"#), default);
        assert_eq!(lifetime(r#"{"expires_in":"300"}"#), default);
        assert_eq!(lifetime(r#"{"expires_in":18446744073709551615}"#), longest);
        assert_eq!(lifetime(r#"{"expires_in":1e300}"#), longest);
        assert!(Instant::now().checked_add(longest).is_some());
    }

    #[test]
    fn scopes_come_from_registry_paths() {
        assert_eq!(
            pull_scope("/v2/library/alpine/manifests/latest").as_deref(),
            Some("repository:library/alpine:pull")
        );
        assert_eq!(
            pull_scope("/v2/a/b/blobs/sha256:00").as_deref(),
            Some("repository:a/b:pull")
        );
        assert_eq!(pull_scope("/v2/"), None);
        assert_eq!(encode("repository:a/b:pull"), "repository%3Aa%2Fb%3Apull");
    }

    #[test]
    fn credentials_are_lent_to_pulls_only() {
        let digest = format!("sha256:{}", "a".repeat(64));
        for (method, path) in [
            (Method::GET, "/v2/".to_owned()),
            (Method::HEAD, "/v2/a/b/manifests/v1".to_owned()),
            (Method::GET, format!("/v2/a/b/manifests/{digest}")),
            (Method::GET, format!("/v2/a/blobs/{digest}")),
            (Method::GET, "/v2/a/b/tags/list".to_owned()),
            (Method::GET, format!("/v2/a/referrers/{digest}")),
        ] {
            assert!(lends_credentials(&method, &path), "{method} {path}");
        }
        for (method, path) in [
            (Method::POST, "/v2/a/blobs/uploads/".to_owned()),
            (Method::GET, "/v2/a/blobs/uploads/1234".to_owned()),
            (Method::PATCH, "/v2/a/blobs/uploads/1234".to_owned()),
            (
                Method::PUT,
                format!("/v2/a/blobs/uploads/1234?digest={digest}"),
            ),
            (Method::PUT, "/v2/a/manifests/v1".to_owned()),
            (Method::DELETE, format!("/v2/a/manifests/{digest}")),
            (Method::DELETE, format!("/v2/a/blobs/{digest}")),
            (Method::GET, "/v2/_catalog".to_owned()),
            (Method::OPTIONS, "/v2/".to_owned()),
            (Method::GET, "/v2/a/%2e%2e/manifests/v1".to_owned()),
        ] {
            assert!(!lends_credentials(&method, &path), "{method} {path}");
        }
    }

    #[test]
    fn tokens_are_fetched_for_pull_scopes_only() {
        assert!(pull_only("repository:library/alpine:pull"));
        assert!(pull_only("repository:a:pull repository:b/c:pull"));
        assert!(pull_only(""), "the ping's token names no repository");
        assert!(!pull_only("repository:library/alpine:pull,push"));
        assert!(!pull_only("repository:library/alpine:push"));
        assert!(!pull_only("repository:library/alpine:*"));
        assert!(!pull_only("registry:catalog:*"));
        assert!(!pull_only("repository:a:pull registry:catalog:*"));
    }
}
