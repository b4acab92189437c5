//! One request on the mirror: who may ask (the proxy's allow-list and logins, with
//! `Authorization` instead of `Proxy-Authorization`), which registry it is for and whether hoard
//! serves it, then the registry rules every intercepted request goes through.

use std::sync::Arc;

use http::header::{ALLOW, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri};
use hyper::body::Incoming;

use super::route::{Mapped, map};
use crate::access::{AuthVerdict, ClientAddr};
use crate::config::Config;
use crate::hoard::Hoard;
use crate::http::{API_VERSION, Body, error, full_body};
use crate::registry::Target;
use crate::registry::conn::{Answer, Answered};
use crate::telemetry::AuthFailure;

/// Mirror requests, each to the registry it names.
#[derive(Debug)]
pub(super) struct Mirrored;

impl Answer for Mirrored {
    async fn answer(&self, request: Request<Incoming>, hoard: Arc<Hoard>) -> Answered {
        match mapped(request, &hoard).await {
            Ok((target, request)) => Answered {
                host: target.authority().to_owned(),
                path: Some(request.uri().path().to_owned()),
                response: crate::registry::handle(request, &target, &hoard).await,
            },
            Err(refusal) => Answered {
                host: String::new(),
                path: None,
                response: refusal,
            },
        }
    }
}

/// The registry a request is for, and the request as that registry is to get it; or hoard's own
/// answer (`/v2/`, a refusal).
async fn mapped(
    mut request: Request<Incoming>,
    hoard: &Hoard,
) -> Result<(Target, Request<Incoming>), Response<Body>> {
    let config = hoard.config();
    let Some(mirror) = config.mirror.as_ref() else {
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "mirror mode was turned off by a reload; the listener closes at the next restart",
        ));
    };
    admit(&request, &config, hoard).await?;
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        let mut refusal = error(
            StatusCode::METHOD_NOT_ALLOWED,
            "a registry mirror serves pulls only (GET and HEAD)",
        );
        refusal
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Err(refusal);
    }
    let uri = request.uri();
    let (registry, path) = match map(uri.path(), uri.query(), &mirror.default_registry) {
        Ok(Mapped::Ping) => return Err(ping()),
        Ok(Mapped::Registry { registry, path }) => (registry, path),
        Err(reason) if uri.path().starts_with("/v2") => {
            return Err(error(StatusCode::BAD_REQUEST, &reason));
        }
        Err(reason) => return Err(error(StatusCode::NOT_FOUND, &reason)),
    };
    let (host, port) = match crate::net::split_authority(&registry) {
        Some(authority) => (authority.host, authority.port.unwrap_or(443)),
        None => (registry.as_str(), 443),
    };
    if !config.intercept.matches(host) && !mirror.registries.matches(host) {
        return Err(error(
            StatusCode::FORBIDDEN,
            &format!(
                "registry {registry} is not served by this mirror (intercept.hosts, \
                 mirror.registries)"
            ),
        ));
    }
    let Some(target) = Target::mirrored(host, port) else {
        return Err(error(StatusCode::BAD_REQUEST, "not a registry host"));
    };
    let Ok(uri) = path.parse::<Uri>() else {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "request path is not a valid URI",
        ));
    };
    *request.uri_mut() = uri;
    if !mirror.forward_authorization {
        request.headers_mut().remove(AUTHORIZATION);
    }
    Ok((target, request))
}

/// The allow-list and, with `proxy.auth_file`, a login in `Authorization: Basic`.
async fn admit(
    request: &Request<Incoming>,
    config: &Config,
    hoard: &Hoard,
) -> Result<(), Response<Body>> {
    let client = request
        .extensions()
        .get::<ClientAddr>()
        .map(|ClientAddr(ip)| *ip)
        .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
    if !config.proxy.allow_clients.is_empty()
        && !config
            .proxy
            .allow_clients
            .iter()
            .any(|c| c.contains(client))
    {
        hoard.metrics.auth_failure(AuthFailure::AllowList);
        return Err(error(
            StatusCode::FORBIDDEN,
            &format!("client address {client} is not in proxy.allow_clients"),
        ));
    }
    let Some(users) = hoard.proxy_auth() else {
        return Ok(());
    };
    match users
        .check(request.headers().get(AUTHORIZATION), client)
        .await
    {
        AuthVerdict::Allowed => Ok(()),
        AuthVerdict::Throttled(wait) => {
            hoard.metrics.auth_failure(AuthFailure::Throttled);
            let seconds = wait.as_secs().max(1);
            let mut refusal = error(
                StatusCode::TOO_MANY_REQUESTS,
                &format!("too many failed logins from {client}; try again in {seconds} s"),
            );
            refusal
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(seconds));
            Err(refusal)
        }
        AuthVerdict::Denied => {
            hoard.metrics.auth_failure(AuthFailure::ProxyAuth);
            let mut refusal = error(
                StatusCode::UNAUTHORIZED,
                "log in to the mirror with a user of proxy.auth_file",
            );
            refusal.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"hoard\""),
            );
            Err(refusal)
        }
    }
}

/// `/v2/`: hoard answers for every registry behind it.
fn ping() -> Response<Body> {
    let mut response = Response::new(full_body("{}"));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(API_VERSION.0, HeaderValue::from_static(API_VERSION.1));
    response
}
