//! hoard's own credentials for a registry: which requests may borrow them (pulls only), and the
//! Basic header or Bearer token that answers the registry's challenge.

use std::time::Duration;

use http::header::{AUTHORIZATION, HeaderValue};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Limited};

use crate::error::Chain;
use crate::http::percent_encode;
use crate::oci::{Route, valid_repository};
use crate::upstream::{RESPONSE_TIMEOUT, Upstream};

/// Used when a token response says nothing of its lifetime (the spec's default).
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);

/// The longest a token is kept, whatever its `expires_in` says: a registry that claims "valid for
/// a century" must not make hoard hold a revoked token that long (Docker Hub's tokens last 300 s,
/// gcr.io's 3600 s).
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

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
pub(super) fn pull_scope(path: &str) -> Option<String> {
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
        Route::Ping | Route::Blob { .. } | Route::Manifest { .. } | Route::Referrers { .. } => true,
        Route::Invalid(_) => false,
        Route::Other => path
            .strip_prefix("/v2/")
            .and_then(|rest| rest.strip_suffix("/tags/list"))
            .is_some_and(valid_repository),
    }
}

/// Whether a token scope asks for nothing but pulls: `repository:<name>:pull` items, space
/// separated. hoard fetches tokens with its credentials for such scopes only.
pub(super) fn pull_only(scope: &str) -> bool {
    scope.split(' ').filter(|s| !s.is_empty()).all(|item| {
        item.strip_prefix("repository:")
            .and_then(|rest| rest.strip_suffix(":pull"))
            .is_some_and(valid_repository)
    })
}

/// Why a token service gave no token.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum NoToken {
    /// It refused the login (401 or 403): a sourced account may be stale, worth one fresh ask.
    Refused,
    /// Anything else (unreachable, a bad answer): logged.
    Failed,
}

/// Asks the token service at `realm` for a token for `scope` for the registry `host`, logged in
/// with `login` (anonymously when `None`): the `Authorization` value to send and how long to
/// use it.
pub(super) async fn fetch_token(
    upstream: &Upstream,
    host: &str,
    login: Option<HeaderValue>,
    realm: &str,
    service: Option<&str>,
    scope: &str,
) -> Result<(HeaderValue, Duration), NoToken> {
    let mut query = Vec::new();
    if let Some(service) = service {
        query.push(format!("service={}", percent_encode(service)));
    }
    if !scope.is_empty() {
        query.push(format!("scope={}", percent_encode(scope)));
    }
    let separator = if realm.contains('?') { '&' } else { '?' };
    let url = format!("{realm}{separator}{}", query.join("&"));
    let Ok(uri) = url.parse::<Uri>() else {
        tracing::warn!(host, "registry named an unusable token realm");
        return Err(NoToken::Failed);
    };
    let mut request = Request::new(crate::http::empty_body());
    *request.uri_mut() = uri;
    if let Some(login) = login {
        request.headers_mut().insert(AUTHORIZATION, login);
    }
    let response = match upstream.send_guarded(request).await {
        Ok(response) => response,
        Err(err) => {
            tracing::warn!(host, error = %Chain(&err), "cannot reach the token service");
            return Err(NoToken::Failed);
        }
    };
    match response.status() {
        StatusCode::OK => {}
        status @ (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) => {
            tracing::warn!(host, %status, "the token service refused hoard's credentials");
            return Err(NoToken::Refused);
        }
        status => {
            tracing::warn!(host, %status, "the token service gave no token");
            return Err(NoToken::Failed);
        }
    }
    // A token answer (64 KiB at most) still unread after the response timeout is not coming; a
    // token service that goes silent must not hold the request (and those waiting on it).
    let read = Limited::new(response.into_body(), MAX_TOKEN_RESPONSE).collect();
    let Ok(read) = tokio::time::timeout(RESPONSE_TIMEOUT, read).await else {
        tracing::warn!(host, "the token service went silent");
        return Err(NoToken::Failed);
    };
    let token = read
        .ok()
        .and_then(|body| serde_json::from_slice::<serde_json::Value>(&body.to_bytes()).ok())
        .and_then(|parsed| {
            let token = parsed.get("token").or_else(|| parsed.get("access_token"))?;
            let header = HeaderValue::from_str(&format!("Bearer {}", token.as_str()?)).ok()?;
            Some((header, token_lifetime(parsed.get("expires_in"))))
        });
    let Some((mut header, lifetime)) = token else {
        tracing::warn!(host, "the token service's answer holds no token");
        return Err(NoToken::Failed);
    };
    header.set_sensitive(true);
    tracing::debug!(host, scope, ?lifetime, "token obtained");
    Ok((header, lifetime))
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

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
