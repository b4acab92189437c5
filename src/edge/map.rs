//! A registry-API request mapped to its registry, for the mirror and the fleet's peer endpoint
//! alike: pulls only, the registry named (`route.rs`) and served by this node
//! (`intercept.hosts`, `mirror.registries`), the path as that registry is to get it, and the
//! client's `Authorization` dropped where hoard logs in itself.

use http::header::{ALLOW, AUTHORIZATION};
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri};
use hyper::body::Incoming;

use super::route::{self, map};
use crate::access::User;
use crate::fleet::Mode;
use crate::hoard::Hoard;
use crate::http::{Body, error};
use crate::registry::Target;
use crate::registry::conn::Answered;

/// How a listener maps its requests.
#[derive(Debug, Clone)]
pub(crate) struct Mapping<'a> {
    /// The registry of a request that names none; empty: a request must name one (in `ns`).
    pub default_registry: &'a str,
    /// How the registry is reached: with hoard's credentials or anonymous (`Mirror`), or with
    /// the client's own (`Proxy`).
    pub mode: Mode,
    /// Whether the client's `Authorization` goes to the registry.
    pub keep_authorization: bool,
    /// A fleet peer asks: answered by this node, never by another peer, lending hoard's account
    /// only as far as the node did (`mode`).
    pub for_peer: bool,
    /// The hoard user a mirror client logged in as, for `lend_to`.
    pub user: Option<User>,
}

/// A request, mapped.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "made once per request and taken apart at once; a box would cost an allocation"
)]
pub(crate) enum Mapped {
    /// `/v2/`: answered by the listener itself.
    Ping,
    /// A registry read, and the request as that registry is to get it.
    Registry(Target, Request<Incoming>),
}

/// Why a request is refused (it cannot be mapped; on the peer endpoint, also a bad signature),
/// and with what status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rejection {
    /// The refusal's status.
    pub status: StatusCode,
    /// What the refusal says.
    pub reason: String,
}

impl Rejection {
    /// A refusal with `status`, saying `reason`.
    pub(crate) fn new(status: StatusCode, reason: impl Into<String>) -> Rejection {
        Rejection {
            status,
            reason: reason.into(),
        }
    }

    /// The refusal as a response (a 405 says what is allowed).
    pub(crate) fn response(&self) -> Response<Body> {
        let mut response = error(self.status, &self.reason);
        if self.status == StatusCode::METHOD_NOT_ALLOWED {
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        }
        response
    }
}

/// Maps `request` as `how` says, or says why not.
pub(crate) fn mapped(
    mut request: Request<Incoming>,
    hoard: &Hoard,
    how: Mapping<'_>,
) -> Result<Mapped, Rejection> {
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        let reason = if how.for_peer {
            "peers ask for pulls only (GET and HEAD)"
        } else {
            "a registry mirror serves pulls only (GET and HEAD)"
        };
        return Err(Rejection::new(StatusCode::METHOD_NOT_ALLOWED, reason));
    }
    let keep_authorization = how.keep_authorization;
    let uri = request.uri();
    let Some((target, path)) = registry_of(uri.path(), uri.query(), hoard, how)? else {
        return Ok(Mapped::Ping);
    };
    let Ok(uri) = path.parse::<Uri>() else {
        return Err(Rejection::new(
            StatusCode::BAD_REQUEST,
            "request path is not a valid URI",
        ));
    };
    *request.uri_mut() = uri;
    if !keep_authorization {
        request.headers_mut().remove(AUTHORIZATION);
    }
    Ok(Mapped::Registry(target, request))
}

/// The registry a pull's `path` and `query` name as `how` says, and the path and query to ask
/// it; `None` for `/v2/`.
pub(crate) fn registry_of(
    path: &str,
    query: Option<&str>,
    hoard: &Hoard,
    how: Mapping<'_>,
) -> Result<Option<(Target, String)>, Rejection> {
    let (registry, path) = match map(path, query, how.default_registry) {
        Ok(route::Routed::Ping) => return Ok(None),
        Ok(route::Routed::Registry { registry, .. }) if registry.is_empty() => {
            return Err(Rejection::new(
                StatusCode::BAD_REQUEST,
                "a peer names the registry in ns",
            ));
        }
        Ok(route::Routed::Registry { registry, path }) => (registry, path),
        Err(reason) if path.starts_with("/v2") => {
            return Err(Rejection::new(StatusCode::BAD_REQUEST, reason));
        }
        Err(reason) => return Err(Rejection::new(StatusCode::NOT_FOUND, reason)),
    };
    let (host, port) = match crate::net::split_authority(&registry) {
        Some(authority) => (authority.host, authority.port.unwrap_or(443)),
        None => (registry.as_str(), 443),
    };
    if !served(hoard, host, port) {
        let this = if how.for_peer { "node" } else { "mirror" };
        let reason = if port == 443 {
            format!(
                "registry {registry} is not served by this {this} (intercept.hosts, \
                 mirror.registries)"
            )
        } else {
            format!(
                "registry {registry} is not served by this {this}: it reaches port 443, or \
                 another port listed with the host (host:port) in mirror.registries or \
                 intercept.hosts"
            )
        };
        return Err(Rejection::new(StatusCode::FORBIDDEN, reason));
    }
    let target = match how.mode {
        Mode::Mirror { .. } => Target::mirrored(host, port),
        Mode::Proxy { .. } | Mode::Stats => Target::new(host, port),
    };
    let Some(target) = target else {
        return Err(Rejection::new(
            StatusCode::BAD_REQUEST,
            "not a registry host",
        ));
    };
    let target = if how.for_peer {
        target.for_peer(how.mode.lent())
    } else {
        target.borrowed_by(how.user)
    };
    Ok(Some((target, path)))
}

/// A mapped request answered by the registry rules, logged under its registry and the path the
/// registry got.
pub(crate) async fn answered(
    target: Target,
    request: Request<Incoming>,
    hoard: &Hoard,
) -> Answered {
    let (user, lent) = target.borrower(&hoard.config());
    Answered {
        host: target.authority().to_owned(),
        path: Some(request.uri().path().to_owned()),
        user,
        lent,
        response: crate::registry::handle(request, &target, hoard).await,
    }
}

/// Whether this node serves the registry at `host` and `port` through the mirror or to its
/// peers: on 443 if its name is listed, on another port if listed as `host:port`.
fn served(hoard: &Hoard, host: &str, port: u16) -> bool {
    let config = hoard.config();
    config.intercept.matches_at(host, port)
        || config
            .mirror
            .as_ref()
            .is_some_and(|m| m.registries.matches_at(host, port))
}
