//! Why `hoard warm` failed, as its answers tell it: a refusal carries the reason hoard gave (its
//! `hoard: …` line) or the registry's OCI error, not only a status; and small answers are read
//! whole within a bound.

use reqwest::StatusCode;

use crate::error::{Classify, Side};
use crate::oci::Digest;

/// Manifests and token answers larger than this are refused (registries cap manifests at 4 MiB).
const MAX_DOCUMENT: usize = 4 << 20;

/// The most of a refusal's body read for its reason: hoard's line and a registry's OCI error
/// take a few hundred bytes.
const MAX_REASON: usize = 4 << 10;

/// Why an image could not be warmed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WarmError {
    #[error("cannot set up the client: {0}")]
    Setup(String),
    #[error("GET {url}")]
    Request { url: String, source: reqwest::Error },
    #[error("{url}: {refusal}")]
    Status { url: String, refusal: String },
    #[error("{url}: {reason}")]
    Auth { url: String, reason: String },
    #[error("{url}: more than {limit} bytes")]
    TooLarge { url: String, limit: usize },
    #[error("{url}: the content does not match {digest}")]
    Mismatch { url: String, digest: Digest },
    #[error("{url}: got {got} bytes where the manifest says {want}")]
    Length { url: String, got: u64, want: u64 },
    #[error("{url}: {reason}")]
    Manifest { url: String, reason: String },
    #[error("no manifest for {platform} in the index (it has: {available})")]
    NoPlatform { platform: String, available: String },
}

/// A warm's failures are the registry's, except a client that cannot be set up or a platform
/// the image does not have, which are the operator's.
impl Classify for WarmError {
    fn side(&self) -> Side {
        match self {
            WarmError::Setup(_) | WarmError::NoPlatform { .. } => Side::Client,
            _ => Side::Upstream,
        }
    }
}

/// The response when it is a success; else the failure, with the reason its body gives.
pub(crate) async fn ensure_ok(
    url: &str,
    mut response: reqwest::Response,
) -> Result<reqwest::Response, WarmError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let mut body = Vec::new();
    while body.len() < MAX_REASON {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            // A body cut short still may name its reason; none is as good as a status.
            Ok(None) | Err(_) => break,
        }
    }
    Err(WarmError::Status {
        url: url.to_owned(),
        refusal: refusal(status, &body),
    })
}

/// `hoard answered 502 Bad Gateway: cannot connect to gcr.io:443 (…)` for hoard's own answer,
/// `the registry answered 404 Not Found: manifest unknown (MANIFEST_UNKNOWN)` for an OCI error,
/// the status alone otherwise.
fn refusal(status: StatusCode, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    if let Some(reason) = text.strip_prefix("hoard: ") {
        let reason = reason.lines().next().unwrap_or_default();
        return format!("hoard answered {status}: {reason}");
    }
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<OciError>,
    }
    #[derive(serde::Deserialize)]
    struct OciError {
        code: String,
        #[serde(default)]
        message: String,
    }
    let first = serde_json::from_slice::<Errors>(body)
        .ok()
        .and_then(|errors| errors.errors.into_iter().next());
    match first {
        Some(error) if error.message.is_empty() => {
            format!("the registry answered {status}: {}", error.code)
        }
        Some(error) => format!(
            "the registry answered {status}: {} ({})",
            error.message, error.code
        ),
        None => format!("the registry answered {status}"),
    }
}

/// Reads a small answer (a manifest, a token) whole, refusing more than [`MAX_DOCUMENT`].
pub(crate) async fn read_bounded(
    url: &str,
    mut response: reqwest::Response,
) -> Result<Vec<u8>, WarmError> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|source| WarmError::Request {
            url: url.to_owned(),
            source,
        })?
    {
        if body.len() + chunk.len() > MAX_DOCUMENT {
            return Err(WarmError::TooLarge {
                url: url.to_owned(),
                limit: MAX_DOCUMENT,
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_says_what_hoard_or_the_registry_gave_as_its_reason() {
        let hoard = refusal(
            StatusCode::BAD_GATEWAY,
            b"hoard: cannot connect to gcr.io:443 (hoard's log says why)\n",
        );
        assert_eq!(
            hoard,
            "hoard answered 502 Bad Gateway: cannot connect to gcr.io:443 (hoard's log says why)"
        );
        let registry = refusal(
            StatusCode::NOT_FOUND,
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#,
        );
        assert_eq!(
            registry,
            "the registry answered 404 Not Found: manifest unknown (MANIFEST_UNKNOWN)"
        );
        let bare = refusal(
            StatusCode::NOT_FOUND,
            br#"{"errors":[{"code":"NAME_UNKNOWN"}]}"#,
        );
        assert_eq!(bare, "the registry answered 404 Not Found: NAME_UNKNOWN");
        let html = refusal(StatusCode::SERVICE_UNAVAILABLE, b"<html>busy</html>");
        assert_eq!(html, "the registry answered 503 Service Unavailable");
    }
}
