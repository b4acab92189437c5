//! The registry a request goes to: its host, how it is reached (hoard's credentials, the
//! mirror's anonymous stand-in, or for a fleet peer), and the small answers every rule shares.

use http::{Request, Response, StatusCode, Uri};
use hyper::body::Incoming;

use crate::access::User;
use crate::config::{Config, Credential};
use crate::fleet::Mode;
use crate::http::{Body, error};
use crate::store::HostKey;

/// The intercepted registry a connection talks to.
#[derive(Debug)]
pub(crate) struct Target {
    /// The authority of an IPv6 address, in brackets; any other's is its key.
    bracketed: Option<String>,
    port: u16,
    pub(super) key: HostKey,
    /// For requests through the mirror: hoard stands in for a client that logs in nowhere.
    pub(super) anonymous: Option<Credential>,
    /// A fleet peer asks: this node answers it itself, never from another peer.
    pub(super) from_peer: bool,
    /// Who would borrow hoard's account for this registry.
    borrower: Borrower,
}

/// Who would borrow one of hoard's registry accounts for a request (`lend_to`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Borrower {
    /// A client of this node, logged in as this hoard user (none without `proxy.auth_file`).
    Client(Option<User>),
    /// A fleet node asks: it decided for its client, and says whether it lent the account.
    Node {
        /// Whether the node lent its client the account.
        lent: bool,
    },
}

impl Target {
    /// `None` when `host` is not a plain host name or IP address.
    pub(crate) fn new(host: &str, port: u16) -> Option<Target> {
        let key = HostKey::new(host, port)?;
        // The key is the authority but for an IPv6 address's brackets.
        let bracketed = host.contains(':').then(|| {
            let host = host.to_ascii_lowercase();
            match port {
                443 => format!("[{host}]"),
                _ => format!("[{host}]:{port}"),
            }
        });
        Some(Target {
            bracketed,
            port,
            key,
            anonymous: None,
            from_peer: false,
            borrower: Borrower::Client(None),
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
    pub(crate) fn for_peer(self, lent: bool) -> Target {
        Target {
            from_peer: true,
            borrower: Borrower::Node { lent },
            ..self
        }
    }

    /// The same registry, for the requests of the hoard user `user` (none: nobody logged in).
    pub(crate) fn borrowed_by(self, user: Option<User>) -> Target {
        Target {
            borrower: Borrower::Client(user),
            ..self
        }
    }

    /// How this registry is reached, as a fleet peer is told: with the client's own
    /// credentials (`proxy`) or with hoard's (`mirror`).
    pub(super) fn mode(&self, config: &Config) -> Mode {
        let lent = self.lent(config).is_some();
        if self.anonymous.is_some() {
            Mode::Mirror { lent }
        } else {
            Mode::Proxy { lent }
        }
    }

    /// hoard's account for this registry, if it is lent to this request's borrower.
    pub(super) fn lent<'a>(&self, config: &'a Config) -> Option<&'a Credential> {
        let host = self.key.as_str();
        match &self.borrower {
            Borrower::Client(user) => config
                .upstream
                .credential_for(host, user.as_ref().map(|User(name)| name.as_str())),
            Borrower::Node { lent: true } => config.upstream.any_credential_for(host),
            Borrower::Node { lent: false } => None,
        }
    }

    /// For the access log: the hoard user of the request (empty when none) and whether hoard's
    /// account was lent to it.
    pub(crate) fn borrower(&self, config: &Config) -> (String, bool) {
        let user = self.user().unwrap_or_default().to_owned();
        (user, self.lent(config).is_some())
    }

    /// The hoard user this request logged in as, if any.
    pub(super) fn user(&self) -> Option<&str> {
        match &self.borrower {
            Borrower::Client(Some(User(name))) => Some(name),
            _ => None,
        }
    }

    /// hoard's credentials for this registry, or the anonymous stand-in of a mirrored one.
    pub(super) fn credential<'a>(&'a self, config: &'a Config) -> Option<&'a Credential> {
        self.lent(config).or(self.anonymous.as_ref())
    }

    /// `host[:port]`, as the client named it.
    pub(crate) fn authority(&self) -> &str {
        self.bracketed.as_deref().unwrap_or(self.key.as_str())
    }

    /// `host:port` with the port always written, as a CONNECT names it: what an upstream
    /// failure's answer names (`cannot connect to gcr.io:443`).
    pub(crate) fn host_port(&self) -> String {
        match self.port {
            443 => format!("{}:443", self.authority()),
            _ => self.authority().to_owned(),
        }
    }

    pub(super) fn uri(&self, path_and_query: &str) -> Option<Uri> {
        format!("https://{}{path_and_query}", self.authority())
            .parse()
            .ok()
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
