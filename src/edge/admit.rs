//! Who may ask, on every client listener: the client allow-list (`proxy.allow_clients`) and, with
//! `proxy.auth_file`, a login: in `Proxy-Authorization` on the proxy, in `Authorization` on the
//! mirror. An address with too many failed logins gets a 429 and when to retry.

use std::net::IpAddr;
use std::time::Duration;

use http::header::{
    AUTHORIZATION, HeaderName, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, RETRY_AFTER,
    WWW_AUTHENTICATE,
};
use http::{HeaderMap, HeaderValue, Response, StatusCode};

use crate::access::{AuthVerdict, User};
use crate::hoard::Hoard;
use crate::http::{Body, error};
use crate::telemetry::AuthFailure;

/// Which login a request must carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Login {
    /// A proxy login (`Proxy-Authorization`; 407 without one).
    Proxy,
    /// A login to the mirror (`Authorization: Basic`; 401 without one).
    Mirror,
    /// None: the request is open to every allowed client (`/ca.crt`, the setup scripts).
    Open,
}

impl Login {
    /// The header the login comes in, the refusal's status, the challenge header and what the
    /// refusal says.
    fn how(self) -> Option<(HeaderName, StatusCode, HeaderName, &'static str)> {
        match self {
            Login::Proxy => Some((
                PROXY_AUTHORIZATION,
                StatusCode::PROXY_AUTHENTICATION_REQUIRED,
                PROXY_AUTHENTICATE,
                "proxy authentication required (user:password in the proxy URL)",
            )),
            Login::Mirror => Some((
                AUTHORIZATION,
                StatusCode::UNAUTHORIZED,
                WWW_AUTHENTICATE,
                "log in to the mirror with a user of proxy.auth_file",
            )),
            Login::Open => None,
        }
    }

    /// What the 429 calls the failed logins.
    fn logins(self) -> &'static str {
        match self {
            Login::Proxy => "proxy logins",
            Login::Mirror | Login::Open => "logins",
        }
    }
}

/// `Ok` when `client` may ask with `headers`, with the user it logged in as (none without
/// `proxy.auth_file`, or for an open request); else the refusal: 403 off the allow-list, 407 or
/// 401 without a good login, 429 after too many bad ones.
pub(crate) async fn admit(
    headers: &HeaderMap,
    client: IpAddr,
    hoard: &Hoard,
    login: Login,
) -> Result<Option<User>, Response<Body>> {
    if !allowed(client, hoard) {
        hoard.metrics.auth_failure(AuthFailure::AllowList);
        return Err(error(
            StatusCode::FORBIDDEN,
            &format!("client address {client} is not in proxy.allow_clients"),
        ));
    }
    let (Some(users), Some((header, status, challenge, reason))) =
        (hoard.proxy_auth(), login.how())
    else {
        return Ok(None);
    };
    match users.check(headers.get(header), client).await {
        AuthVerdict::Allowed(user) => return Ok(Some(user)),
        AuthVerdict::Throttled(wait) => return Err(throttled(client, wait, hoard, login)),
        AuthVerdict::Denied => {}
    }
    hoard.metrics.auth_failure(AuthFailure::ProxyAuth);
    let mut refusal = error(status, reason);
    refusal
        .headers_mut()
        .insert(challenge, HeaderValue::from_static("Basic realm=\"hoard\""));
    Err(refusal)
}

/// Whether `client` may ask without a login: [`admit`] lets it in without reading one.
pub(crate) fn open_to(client: IpAddr, hoard: &Hoard) -> bool {
    allowed(client, hoard) && hoard.proxy_auth().is_none()
}

/// Whether `client` is on `proxy.allow_clients` (everyone is when it is empty).
fn allowed(client: IpAddr, hoard: &Hoard) -> bool {
    let config = hoard.config();
    let allow = &config.proxy.allow_clients;
    allow.is_empty() || allow.iter().any(|c| c.contains(client))
}

/// The answer to a login from an address with too many failed ones: 429 and when to retry.
fn throttled(client: IpAddr, wait: Duration, hoard: &Hoard, login: Login) -> Response<Body> {
    hoard.metrics.auth_failure(AuthFailure::Throttled);
    let seconds = wait.as_secs().max(1);
    let mut response = error(
        StatusCode::TOO_MANY_REQUESTS,
        &format!(
            "too many failed {} from {client}; try again in {seconds} s",
            login.logins()
        ),
    );
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(seconds));
    response
}
