//! The registry a request goes to: its host, how it is reached (hoard's credentials, the
//! mirror's anonymous stand-in, or for a fleet peer), and the small answers every rule shares.

use http::{Request, Response, StatusCode, Uri};
use hyper::body::Incoming;

use crate::config::{Config, Credential};
use crate::fleet::Mode;
use crate::http::{Body, error};
use crate::store::HostKey;

/// The intercepted registry a connection talks to.
#[derive(Debug)]
pub(crate) struct Target {
    authority: String,
    base: String,
    pub(super) key: HostKey,
    /// For requests through the mirror: hoard stands in for a client that logs in nowhere.
    pub(super) anonymous: Option<Credential>,
    /// A fleet peer asks: this node answers it itself, never from another peer.
    pub(super) from_peer: bool,
}

impl Target {
    /// `None` when `host` is not a plain host name or IP address.
    pub(crate) fn new(host: &str, port: u16) -> Option<Target> {
        let key = HostKey::new(host, port)?;
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_ascii_lowercase()
        };
        let authority = if port == 443 {
            host
        } else {
            format!("{host}:{port}")
        };
        Some(Target {
            base: format!("https://{authority}"),
            authority,
            key,
            anonymous: None,
            from_peer: false,
        })
    }

    /// A registry reached through the mirror: with no `[[upstream.credentials]]` for it, hoard
    /// pulls anonymously, answering the registry's token challenge itself.
    pub(crate) fn mirrored(host: &str, port: u16) -> Option<Target> {
        let mut target = Target::new(host, port)?;
        target.anonymous = Some(Credential::anonymous(target.key.as_str()));
        Some(target)
    }

    /// The same registry, asked for by a fleet peer: answered here, whoever owns the object, and
    /// without `cache.auth_on_hit` (the peer asked the registry for its client already).
    pub(crate) fn for_peer(self) -> Target {
        Target {
            from_peer: true,
            ..self
        }
    }

    /// How this registry is reached, as a fleet peer is told: with the client's own
    /// credentials (`proxy`) or with hoard's (`mirror`).
    pub(super) fn mode(&self) -> Mode {
        if self.anonymous.is_some() {
            Mode::Mirror
        } else {
            Mode::Proxy
        }
    }

    /// hoard's credentials for this registry, or the anonymous stand-in of a mirrored one.
    pub(super) fn credential<'a>(&'a self, config: &'a Config) -> Option<&'a Credential> {
        config
            .upstream
            .credential_for(self.key.as_str())
            .or(self.anonymous.as_ref())
    }

    /// `host[:port]`, as the client named it.
    pub(crate) fn authority(&self) -> &str {
        &self.authority
    }

    pub(super) fn uri(&self, path_and_query: &str) -> Option<Uri> {
        format!("{}{path_and_query}", self.base).parse().ok()
    }
}

/// Whether an upstream answer means "use the cache instead": overloaded, rate-limited, broken.
pub(super) fn unusable(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS
}

pub(super) fn path_and_query(request: &Request<Incoming>) -> &str {
    request.uri().path_and_query().map_or("/", |p| p.as_str())
}

/// The answer when a request's path makes no upstream URI.
pub(super) fn invalid_path() -> Response<Body> {
    error(StatusCode::BAD_REQUEST, "request path is not a valid URI")
}
