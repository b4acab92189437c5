//! One request on the mirror: who may ask (the proxy's allow-list and logins, with
//! `Authorization` instead of `Proxy-Authorization`), which registry it is for and whether hoard
//! serves it, then the registry rules every intercepted request goes through. And the
//! mirror-mode setup scripts, open to every allowed client.

use std::sync::Arc;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::access::ClientAddr;
use crate::access::User;
use crate::config::MirrorConfig;
use crate::edge::admit::{Login, admit, open_to};
use crate::edge::map::{Mapped, Mapping, answered, mapped, registry_of};
use crate::fleet::Mode;
use crate::hoard::Hoard;
use crate::http::{API_VERSION, Body, error, full_body};
use crate::registry::conn::{Answer, Answered};
use crate::registry::quick::{self, Ask};

/// Mirror requests, each to the registry it names.
#[derive(Debug)]
pub(crate) struct Mirrored;

impl Answer for Mirrored {
    async fn answer(&self, request: Request<Incoming>, hoard: Arc<Hoard>) -> Answered {
        if crate::edge::setup::asks_for_mirror_script(&request) {
            return Answered::here(setup_script(&request, &hoard).await);
        }
        match mirrored(request, &hoard).await {
            Ok(Mapped::Registry(target, request)) => answered(target, request, &hoard).await,
            Ok(Mapped::Ping) => Answered::here(ping()),
            Err(refusal) => Answered::here(refusal),
        }
    }

    fn quick(&self, ask: &Ask<'_>, hoard: &Hoard) -> Option<Answered<Bytes>> {
        if !open_to(ask.client, hoard) {
            return None;
        }
        let (target, path) = {
            let config = hoard.config();
            let how = mapping(config.mirror.as_ref()?, None);
            registry_of(ask.get.path, ask.get.query, hoard, how).ok()??
        };
        let path = path.split_once('?').map_or(path.as_str(), |(path, _)| path);
        let mut answered = quick::answer(&target, path, ask, hoard)?;
        answered.path = Some(path.to_owned());
        Some(answered)
    }
}

/// How the mirror maps the requests of `user`.
fn mapping(mirror: &MirrorConfig, user: Option<User>) -> Mapping<'_> {
    Mapping {
        default_registry: &mirror.default_registry,
        // Whether the account is lent is decided by the target, which knows the user.
        mode: Mode::Mirror { lent: false },
        keep_authorization: mirror.forward_authorization,
        for_peer: false,
        user,
    }
}

/// `/setup/<engine>?mode=mirror`: open to every allowed client, as on the proxy port, so a host
/// that reaches only the mirror can be set up before it has credentials.
async fn setup_script(request: &Request<Incoming>, hoard: &Hoard) -> Response<Body> {
    match admit(request.headers(), client(request), hoard, Login::Open).await {
        Ok(_) => crate::edge::setup::respond(request, hoard),
        Err(refusal) => refusal,
    }
}

/// The client's address, as the listener recorded it.
fn client(request: &Request<Incoming>) -> std::net::IpAddr {
    request
        .extensions()
        .get::<ClientAddr>()
        .map(|ClientAddr(ip)| *ip)
        .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into())
}

/// The request admitted and mapped to its registry, or hoard's refusal.
async fn mirrored(request: Request<Incoming>, hoard: &Hoard) -> Result<Mapped, Response<Body>> {
    let config = hoard.config();
    let Some(mirror) = config.mirror.as_ref() else {
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "mirror mode was turned off by a reload; the listener closes at the next restart",
        ));
    };
    let user = admit(request.headers(), client(&request), hoard, Login::Mirror).await?;
    mapped(request, hoard, mapping(mirror, user)).map_err(|rejection| rejection.response())
}

/// `/v2/`: hoard answers for every registry behind it.
fn ping() -> Response<Body> {
    let mut response = Response::new(full_body("{}"));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(API_VERSION.0, HeaderValue::from_static(API_VERSION.1));
    response
}
