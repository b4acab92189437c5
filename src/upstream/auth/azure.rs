//! `source = "azure-identity"`: an ACR refresh token for the VM's (or AKS node's) managed
//! identity, got as `az acr login --identity` gets it. IMDS gives the identity's Entra token
//! (`GET /metadata/identity/oauth2/token` with `Metadata: true`, asked straight: `metadata.rs`);
//! the registry's `POST /oauth2/exchange` trades it for a refresh token, which is the password of
//! the null-GUID user ACR takes refresh tokens with. The exchange goes to the registry the way
//! every registry call does.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Limited};
use serde::Deserialize;

use crate::config::AzureIdentity;
use crate::error::Chain;
use crate::http::percent_encode;
use crate::upstream::{RESPONSE_TIMEOUT, Upstream};

/// The user name ACR takes a refresh token with.
const TOKEN_USER: &str = "00000000-0000-0000-0000-000000000000";

/// What the Entra token is for: ACR's exchange takes an Azure Resource Manager token.
const RESOURCE: &str = "https://management.azure.com/";

/// The IMDS API version whose token answer has `access_token` and `expires_in`.
const IMDS_API_VERSION: &str = "2018-02-01";

/// An exchange answer larger than this is not one.
const MAX_EXCHANGE_ANSWER: usize = 64 << 10;

#[derive(Deserialize)]
struct EntraToken {
    access_token: String,
    /// Seconds: a string in IMDS's answers (`"86399"`), a number in some stand-ins'.
    expires_in: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Exchanged {
    refresh_token: String,
}

/// The user name and refresh token for the registry `host` (`host` or `host:port`), and how long
/// they are good for, when known. No error quotes either token.
pub(super) async fn account(
    upstream: &Upstream,
    identity: &AzureIdentity,
    host: &str,
) -> Result<(String, String, Option<Duration>), String> {
    let entra = entra_token(identity).await?;
    let refresh_token = exchange(upstream, identity, host, &entra.access_token).await?;
    let lifetime = lifetime(entra.expires_in.as_ref(), &refresh_token, unix_now());
    tracing::debug!(host, ?lifetime, "refresh token from the managed identity");
    Ok((TOKEN_USER.to_owned(), refresh_token, lifetime))
}

/// The identity's Entra token for Azure Resource Manager, from IMDS.
async fn entra_token(identity: &AzureIdentity) -> Result<EntraToken, String> {
    let mut url = format!(
        "http://{}/metadata/identity/oauth2/token?api-version={IMDS_API_VERSION}&resource={}",
        identity.endpoint,
        percent_encode(RESOURCE)
    );
    if let Some(client_id) = &identity.client_id {
        url.push_str(&format!("&client_id={}", percent_encode(client_id)));
    }
    let service = format!("IMDS at {}", identity.endpoint);
    let body = super::metadata::get(&url, ("metadata", "true"), &service).await?;
    serde_json::from_slice(&body).map_err(|_| format!("{service} gave no access_token"))
}

/// Trades the Entra token `entra` for a refresh token at the registry `host`.
async fn exchange(
    upstream: &Upstream,
    identity: &AzureIdentity,
    host: &str,
    entra: &str,
) -> Result<String, String> {
    let mut form = format!(
        "grant_type=access_token&service={}&access_token={}",
        percent_encode(host),
        percent_encode(entra)
    );
    if let Some(tenant) = &identity.tenant {
        form.push_str(&format!("&tenant={}", percent_encode(tenant)));
    }
    let mut request = Request::new(crate::http::full_body(form));
    *request.method_mut() = Method::POST;
    *request.uri_mut() = format!("https://{host}/oauth2/exchange")
        .parse()
        .map_err(|_| format!("{host:?} gives no token exchange address"))?;
    request.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-www-form-urlencoded"),
    );
    let response = upstream
        .send_guarded(request)
        .await
        .map_err(|err| format!("cannot reach {host}'s token exchange: {}", Chain(&err)))?;
    if response.status() != StatusCode::OK {
        return Err(format!(
            "{host}'s token exchange answered {}",
            response.status()
        ));
    }
    // A registry gone silent mid-answer must not hold the request that needs the account.
    let read = Limited::new(response.into_body(), MAX_EXCHANGE_ANSWER).collect();
    let body = tokio::time::timeout(RESPONSE_TIMEOUT, read)
        .await
        .map_err(|_| format!("{host}'s token exchange went silent"))?
        .map_err(|_| format!("cannot read {host}'s token exchange answer"))?
        .to_bytes();
    serde_json::from_slice::<Exchanged>(&body)
        .ok()
        .map(|exchanged| exchanged.refresh_token)
        .filter(|token| !token.is_empty())
        .ok_or_else(|| format!("{host}'s token exchange gave no refresh_token"))
}

/// How long the account is good for at `now` (Unix seconds): the Entra token's `expires_in`,
/// or the refresh token's own `exp` when it is a JWT and ends sooner; `None` when neither says.
fn lifetime(
    expires_in: Option<&serde_json::Value>,
    refresh_token: &str,
    now: u64,
) -> Option<Duration> {
    let entra = expires_in.and_then(seconds);
    let refresh = jwt_exp(refresh_token).map(|exp| exp.saturating_sub(now));
    entra
        .into_iter()
        .chain(refresh)
        .min()
        .map(Duration::from_secs)
}

/// Whole seconds from a JSON number or a string of digits.
fn seconds(value: &serde_json::Value) -> Option<u64> {
    value
        .as_u64()
        .or_else(|| value.as_str()?.trim().parse().ok())
}

/// The `exp` claim (Unix seconds) of a JWT's payload, read without checking the signature: it
/// only bounds how long hoard keeps the token, the registry judges it.
fn jwt_exp(token: &str) -> Option<u64> {
    let mut parts = token.split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&payload).ok()?;
    seconds(claims.get("exp")?)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A JWT-shaped token whose payload is `claims` (the signature is not looked at).
    fn jwt(claims: &str) -> String {
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims);
        format!("eyJhbGciOiJSUzI1NiJ9.{payload}.c2ln")
    }

    #[test]
    fn the_account_lasts_until_the_first_token_expires() {
        let now = 1_700_000_000;
        let life = |expires_in: &str, refresh: &str| {
            let value: Option<serde_json::Value> = serde_json::from_str(expires_in).ok();
            lifetime(value.as_ref(), refresh, now).map(|d| d.as_secs())
        };
        assert_eq!(life(r#""86399""#, "opaque"), Some(86399), "IMDS's string");
        assert_eq!(life("3599", "opaque"), Some(3599), "a number");
        let soon = jwt(&format!(r#"{{"exp":{}}}"#, now + 600));
        assert_eq!(life(r#""86399""#, &soon), Some(600), "the JWT ends first");
        let late = jwt(&format!(r#"{{"exp":{}}}"#, now + 90_000));
        assert_eq!(life(r#""86399""#, &late), Some(86399));
        assert_eq!(life("null", &soon), Some(600), "the JWT alone");
        let past = jwt(&format!(r#"{{"exp":{}}}"#, now - 5));
        assert_eq!(life("3599", &past), Some(0), "already expired");
        for garbage in ["null", r#""soon""#, "-5", "1.5", "{}"] {
            assert_eq!(life(garbage, "opaque"), None, "{garbage}");
            assert_eq!(life(garbage, "a.!!!.c"), None, "{garbage}");
            assert_eq!(life(garbage, &jwt(r#"{"sub":"x"}"#)), None, "{garbage}");
            assert_eq!(life(garbage, &jwt("not json")), None, "{garbage}");
        }
    }
}
