//! Configuration: the TOML file and the command line, merged into one validated [`Config`].
//!
//! Two stages, as in ripgrep: [`FileConfig`] is what serde reads (unknown keys rejected, in
//! `file.rs`), the CLI flags override it, and [`Config::resolve`] turns both into typed values
//! before any socket binds, one section at a time (`validate.rs`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Classify, Side};
use crate::net::{Cidr, HostPatterns, NoProxy, Parent};

mod file;
mod fleet;
mod htpasswd;
mod mirror;
mod s3;
mod units;
mod validate;

pub use file::{
    AdminSection, CaSection, CacheSection, CredentialSection, FileConfig, InterceptSection,
    LogSection, ProxySection, UpstreamSection,
};
pub use fleet::{Fleet, FleetSection, Peers, PeersSection, Secret};
pub use htpasswd::Htpasswd;
pub use mirror::{Mirror, MirrorSection, MirrorTls};
pub use s3::{S3Config, S3Credentials, S3Section, StoreSection};
pub use units::{parse_duration, parse_size};

/// A configuration problem: reported as one line, exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{key}: {message}")]
    Invalid { key: &'static str, message: String },
}

/// A configuration is the operator's input: its errors are the client's side.
impl Classify for ConfigError {
    fn side(&self) -> Side {
        Side::Client
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Where the admin listener (metrics, health, status page) binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminListen {
    /// Not started.
    Off,
    /// The default address: if it is taken, hoard says so and runs without it.
    Default(SocketAddr),
    /// Configured: failing to bind it stops hoard.
    Configured(SocketAddr),
}

/// Credentials hoard uses for a registry when the client sends none.
#[derive(Clone)]
pub struct Credential {
    /// `host`, or `host:port` unless the port is 443, lowercase.
    pub host: String,
    pub username: String,
    pub password: String,
    /// No account: hoard answers a registry's Bearer challenge with an anonymous pull token
    /// (as Docker Hub hands out), and a Basic one not at all. The mirror's stand-in for a
    /// client that logs in to no registry.
    pub anonymous: bool,
}

impl Credential {
    /// The anonymous stand-in for `host` (see [`Credential::anonymous`]).
    pub(crate) fn anonymous(host: &str) -> Credential {
        Credential {
            host: host.to_owned(),
            username: String::new(),
            password: String::new(),
            anonymous: true,
        }
    }
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Credential({}@{}, password redacted{})",
            self.username,
            self.host,
            if self.anonymous { ", anonymous" } else { "" }
        )
    }
}

/// Whether a cached object is served to any client, or only to clients the upstream accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthOnHit {
    /// Anyone who can reach hoard gets what is cached.
    None,
    /// A client gets a cached object only after the upstream accepted its credentials for it.
    Upstream,
}

/// Command-line values that override the file (all optional).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<String>,
    pub ca_dir: Option<PathBuf>,
    pub cache_dir: Option<PathBuf>,
    pub tag_ttl: Option<String>,
}

/// The validated configuration hoard runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address of the proxy listener.
    pub listen: SocketAddr,
    /// Folder holding `ca.crt` and `ca.key`.
    pub ca_dir: PathBuf,
    /// Folder of the content store and tag map.
    pub cache_dir: PathBuf,
    /// Size limit of the store in bytes, fills in progress included.
    pub max_size: u64,
    /// Free space the store leaves on its file system, in bytes.
    pub min_free: u64,
    /// How long a tag → digest mapping is served without asking the upstream.
    pub tag_ttl: Duration,
    /// Hosts whose TLS is terminated and whose registry traffic is cached.
    pub intercept: HostPatterns,
    /// PEM files trusted for upstream TLS in addition to the system and webpki roots.
    pub extra_ca_files: Vec<PathBuf>,
    /// Fixed upstream addresses by host name, instead of DNS.
    pub resolve: HashMap<String, SocketAddr>,
    /// Time allowed for an upstream TCP connect.
    pub connect_timeout: Duration,
    /// Longest silence allowed while reading an upstream body.
    pub read_timeout: Duration,
    /// The proxy upstream connections go through (`upstream.proxy`); `None`: straight.
    pub parent: Option<Parent>,
    /// Destinations reached straight even with a parent (`upstream.no_proxy`).
    pub no_proxy: NoProxy,
    /// Users who may use the proxy (`proxy.auth_file`); `None`: no proxy authentication.
    pub users: Option<Arc<Htpasswd>>,
    /// Client address blocks allowed (`proxy.allow_clients`); empty: everyone.
    pub allow_clients: Vec<Cidr>,
    /// Whether a listener beyond loopback may go without authentication and allow-list.
    pub open: bool,
    /// Ports CONNECT may reach.
    pub connect_ports: Vec<u16>,
    /// Ports plain `http://` forwards may reach.
    pub forward_ports: Vec<u16>,
    /// Whether tunnels and plain forwards may reach private and loopback addresses.
    pub allow_private_destinations: bool,
    /// Client connections held at once, tunnels and intercepted connections included. At the
    /// limit the oldest connection with no request in flight is closed to admit a new one; when
    /// there is none, new connections wait to be accepted.
    pub max_connections: usize,
    /// Client connections held at once from one client address (an IPv6 /64 counts as one).
    pub max_connections_per_client: usize,
    /// Largest request head accepted, in bytes.
    pub max_header_size: usize,
    /// Time a client has to send a request head.
    pub header_read_timeout: Duration,
    /// Time a client connection may stay silent both ways.
    pub idle_timeout: Duration,
    /// How long transfers in progress may go on after SIGTERM or SIGINT.
    pub shutdown_grace: Duration,
    /// Whether a new CA is limited to signing the intercepted domains.
    pub name_constraints: bool,
    /// Who gets cached objects.
    pub auth_on_hit: AuthOnHit,
    /// Blob fills running at once; past it a blob is streamed to its client without being kept.
    pub max_fills: usize,
    /// Blob fills one client address may have started that still run.
    pub max_fills_per_client: usize,
    /// How long a fill nobody reads waits for a reader before it stops.
    pub abandoned_fill_grace: Duration,
    /// Whether a fill nobody reads goes on to the end anyway.
    pub finish_abandoned_fills: bool,
    /// hoard's own credentials per registry host.
    pub credentials: Vec<Credential>,
    /// The admin listener.
    pub admin: AdminListen,
    /// Text or JSON log lines.
    pub log_format: LogFormat,
    /// The tracing filter when `RUST_LOG` is not set, e.g. `hoard=info`.
    pub log_filter: String,
    /// The registry-mirror listener (`[mirror]`); `None`: off.
    pub mirror: Option<Mirror>,
    /// The other hoards this one shares upstream fetches with (`[fleet]`); `None`: alone.
    pub fleet: Option<Fleet>,
    /// The S3-API tier the hoards of a fleet share (`[store.s3]`); `None`: off.
    pub s3: Option<S3Config>,
}

/// Default intercepted registries.
pub(crate) const DEFAULT_INTERCEPT: [&str; 2] = ["gcr.io", "registry-1.docker.io"];

impl Config {
    /// Reads `path` if given and merges the overrides into a validated config.
    pub fn load(path: Option<&Path>, overrides: Overrides) -> Result<Config, ConfigError> {
        let file = match path {
            Some(path) => FileConfig::read(path)?,
            None => FileConfig::default(),
        };
        Config::resolve(file, overrides)
    }

    /// Validates and types a parsed file plus command-line overrides, section by section in
    /// the order of the file; the first problem found is the error.
    pub fn resolve(file: FileConfig, cli: Overrides) -> Result<Config, ConfigError> {
        let proxy = validate::proxy(file.proxy, cli.listen)?;
        let (ca_dir, name_constraints) = validate::ca(file.ca, cli.ca_dir);
        let mirror = mirror::mirror(
            file.mirror,
            proxy.users.is_some(),
            !proxy.allow_clients.is_empty(),
            proxy.open,
        )?;
        // A listener others can reach, or an account of hoard's own at a registry, makes hoard
        // check with the registry before it hands out a cached object, unless told otherwise.
        let shared = !proxy.listen.ip().is_loopback()
            || mirror
                .as_ref()
                .is_some_and(|m| !m.listen.ip().is_loopback())
            || !file.upstream.credentials.is_empty();
        let cache = validate::cache(file.cache, cli.cache_dir, cli.tag_ttl, shared)?;
        let intercept = validate::intercept(file.intercept)?;
        let upstream = validate::upstream(file.upstream)?;
        let admin = validate::admin(file.admin)?;
        let (log_format, log_filter) = validate::log(file.log)?;
        let fleet = fleet::fleet(file.fleet)?;
        let s3 = s3::store(file.store, &|name| std::env::var(name).ok())?;
        Ok(Config {
            listen: proxy.listen,
            ca_dir,
            cache_dir: cache.dir,
            max_size: cache.max_size,
            min_free: cache.min_free,
            tag_ttl: cache.tag_ttl,
            intercept,
            extra_ca_files: upstream.extra_ca_files,
            resolve: upstream.resolve,
            connect_timeout: upstream.connect_timeout,
            read_timeout: upstream.read_timeout,
            parent: upstream.parent,
            no_proxy: upstream.no_proxy,
            users: proxy.users,
            allow_clients: proxy.allow_clients,
            open: proxy.open,
            connect_ports: proxy.connect_ports,
            forward_ports: proxy.forward_ports,
            allow_private_destinations: proxy.allow_private_destinations,
            max_connections: proxy.max_connections,
            max_connections_per_client: proxy.max_connections_per_client,
            max_header_size: proxy.max_header_size,
            header_read_timeout: proxy.header_read_timeout,
            idle_timeout: proxy.idle_timeout,
            shutdown_grace: proxy.shutdown_grace,
            name_constraints,
            auth_on_hit: cache.auth_on_hit,
            max_fills: cache.max_fills,
            max_fills_per_client: cache.max_fills_per_client,
            abandoned_fill_grace: cache.abandoned_fill_grace,
            finish_abandoned_fills: cache.finish_abandoned_fills,
            credentials: upstream.credentials,
            admin,
            log_format,
            log_filter,
            mirror,
            fleet,
            s3,
        })
    }

    /// Refuses this configuration on a listener bound to `bound` when that would make hoard an
    /// open proxy. A reload checks the address actually bound, not the one in the file (a changed
    /// `proxy.listen` takes effect only at a restart).
    pub(crate) fn check_open_proxy(&self, bound: SocketAddr) -> Result<(), ConfigError> {
        validate::open_proxy_check(
            bound,
            self.users.is_some(),
            !self.allow_clients.is_empty(),
            self.open,
        )
    }

    /// Refuses this configuration for a mirror listener bound to `bound` when that would open
    /// the cache to anyone (a reload is judged by the listener that is open, as for the proxy).
    pub(crate) fn check_open_mirror(&self, bound: SocketAddr) -> Result<(), ConfigError> {
        mirror::open_mirror_check(
            bound,
            self.users.is_some(),
            !self.allow_clients.is_empty(),
            self.open,
        )
    }

    /// hoard's credentials for `host_key` (`host` or `host:port`), if configured.
    pub(crate) fn credential_for(&self, host_key: &str) -> Option<&Credential> {
        self.credentials.iter().find(|c| c.host == host_key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_limits_must_allow_a_fill() {
        let resolve = |cache: &str| {
            let file = toml::from_str::<FileConfig>(&format!("[cache]\n{cache}\n"))
                .unwrap_or_else(|e| panic!("{e}"));
            Config::resolve(file, Overrides::default())
        };
        for (cache, key) in [
            ("max_fills = 0", "cache.max_fills"),
            ("max_fills_per_client = 0", "cache.max_fills_per_client"),
            (
                "abandoned_fill_grace = \"soon\"",
                "cache.abandoned_fill_grace",
            ),
        ] {
            let err = resolve(cache)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.starts_with(key), "{cache}: {err}");
        }
        let config = resolve("").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((config.max_fills, config.max_fills_per_client), (64, 16));
        assert_eq!(config.abandoned_fill_grace, Duration::from_secs(10));
        assert!(!config.finish_abandoned_fills);
    }

    #[test]
    fn unknown_keys_are_rejected_by_name() {
        let err = toml::from_str::<FileConfig>("[cache]\nmax_sise = \"1GiB\"\n")
            .err()
            .map(|e| e.message().to_owned())
            .unwrap_or_default();
        assert!(err.contains("max_sise"), "{err}");
    }

    fn config_from(text: &str) -> Result<Config, ConfigError> {
        let file: FileConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: "test".into(),
            message: e.message().to_owned(),
        })?;
        Config::resolve(file, Overrides::default())
    }

    #[test]
    fn shared_deployments_default_to_safer_settings() {
        let auth_on_hit = |text: &str| config_from(text).map(|c| c.auth_on_hit).ok();
        let credentials =
            "[[upstream.credentials]]\nhost = \"gcr.io\"\nusername = \"u\"\npassword = \"p\"\n";
        let wide = "[proxy]\nlisten = \"0.0.0.0:3128\"\nallow_clients = [\"10.0.0.0/8\"]\n";
        assert_eq!(auth_on_hit(""), Some(AuthOnHit::None));
        assert_eq!(auth_on_hit(credentials), Some(AuthOnHit::Upstream));
        assert_eq!(auth_on_hit(wide), Some(AuthOnHit::Upstream));
        let explicit = format!("{wide}[cache]\nauth_on_hit = \"none\"\n");
        assert_eq!(auth_on_hit(&explicit), Some(AuthOnHit::None));

        let constrained = |text: &str| config_from(text).map(|c| c.name_constraints).ok();
        assert_eq!(constrained(""), Some(true));
        assert_eq!(constrained("[ca]\nname_constraints = false\n"), Some(false));
        assert_eq!(
            config_from("").map(|c| c.forward_ports).ok(),
            Some(vec![80])
        );
    }

    #[test]
    fn a_parent_url_in_the_file_shows_no_password() {
        let text = "http://alice:hunter2@proxy:3128";
        let file: Result<FileConfig, _> =
            toml::from_str(&format!("[upstream]\nproxy = \"{text}\"\n"));
        let shown = format!("{file:?}");
        assert!(
            shown.contains("proxy:3128") && !shown.contains("hunter2"),
            "{shown}"
        );
    }
}
