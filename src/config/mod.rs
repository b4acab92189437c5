//! Configuration: the TOML file and the command line, merged into one validated [`Config`].
//!
//! Two stages, as in ripgrep: [`FileConfig`] is what serde reads (unknown keys rejected), the CLI
//! flags override it, and [`Config::resolve`] turns both into typed values before any socket binds.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::net::{Cidr, HostPatterns, NoProxy, Parent, ParentUrl, is_dns_name};

mod htpasswd;
mod units;

pub use htpasswd::Htpasswd;
pub use units::{parse_duration, parse_size};

/// A configuration problem: reported as one line, exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{key}: {message}")]
    Invalid { key: &'static str, message: String },
}

/// The config file as written by a user. Every key is documented in `config.toml.example`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub proxy: ProxySection,
    #[serde(default)]
    pub ca: CaSection,
    #[serde(default)]
    pub cache: CacheSection,
    #[serde(default)]
    pub intercept: InterceptSection,
    #[serde(default)]
    pub upstream: UpstreamSection,
    #[serde(default)]
    pub admin: AdminSection,
    #[serde(default)]
    pub log: LogSection,
}

/// `[log]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    pub format: Option<String>,
    pub level: Option<String>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// `[admin]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    pub listen: Option<String>,
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

/// `[proxy]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxySection {
    pub listen: Option<String>,
    pub auth_file: Option<PathBuf>,
    #[serde(default)]
    pub allow_clients: Vec<String>,
    #[serde(default)]
    pub open: bool,
    pub connect_ports: Option<Vec<u16>>,
    pub forward_ports: Option<Vec<u16>>,
    #[serde(default)]
    pub allow_private_destinations: bool,
    pub max_connections: Option<usize>,
    pub max_connections_per_client: Option<usize>,
    pub max_header_size: Option<String>,
    pub header_read_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub shutdown_grace: Option<String>,
}

/// `[ca]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaSection {
    pub dir: Option<PathBuf>,
    pub name_constraints: Option<bool>,
}

/// `[cache]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSection {
    pub dir: Option<PathBuf>,
    pub max_size: Option<String>,
    pub min_free: Option<String>,
    pub tag_ttl: Option<String>,
    pub auth_on_hit: Option<String>,
    pub max_fills: Option<usize>,
    pub max_fills_per_client: Option<usize>,
    pub abandoned_fill_grace: Option<String>,
    #[serde(default)]
    pub finish_abandoned_fills: bool,
}

/// `[intercept]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterceptSection {
    pub hosts: Option<Vec<String>>,
}

/// `[upstream]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSection {
    #[serde(default)]
    pub extra_ca_files: Vec<PathBuf>,
    #[serde(default)]
    pub resolve: HashMap<String, String>,
    pub connect_timeout: Option<String>,
    pub read_timeout: Option<String>,
    #[serde(default)]
    pub credentials: Vec<CredentialSection>,
    pub proxy: Option<ParentUrl>,
    #[serde(default)]
    pub no_proxy: Vec<String>,
}

/// `[[upstream.credentials]]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialSection {
    pub host: String,
    pub username: String,
    pub password: Option<String>,
    pub password_file: Option<PathBuf>,
}

/// Credentials hoard uses for a registry when the client sends none.
#[derive(Clone)]
pub struct Credential {
    /// `host`, or `host:port` unless the port is 443, lowercase.
    pub host: String,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Credential({}@{}, password redacted)",
            self.username, self.host
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
}

/// Default intercepted registries.
pub const DEFAULT_INTERCEPT: [&str; 2] = ["gcr.io", "registry-1.docker.io"];

impl Config {
    /// Reads `path` if given and merges the overrides into a validated config.
    pub fn load(path: Option<&Path>, overrides: Overrides) -> Result<Config, ConfigError> {
        let file = match path {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        Config::resolve(file, overrides)
    }

    /// Validates and types a parsed file plus command-line overrides.
    pub fn resolve(file: FileConfig, cli: Overrides) -> Result<Config, ConfigError> {
        let listen = cli
            .listen
            .or(file.proxy.listen.clone())
            .unwrap_or_else(|| "127.0.0.1:3128".to_owned());
        let listen: SocketAddr = listen.parse().map_err(|_| ConfigError::Invalid {
            key: "proxy.listen",
            message: format!("{listen:?} is not an address like 127.0.0.1:3128"),
        })?;

        let max_size = size_key("cache.max_size", file.cache.max_size, 20 << 30)?;
        let min_free = size_key("cache.min_free", file.cache.min_free, 1 << 30)?;
        let tag_ttl = duration_key("cache.tag_ttl", cli.tag_ttl.or(file.cache.tag_ttl), 600)?;
        let connect_timeout = duration_key(
            "upstream.connect_timeout",
            file.upstream.connect_timeout,
            10,
        )?;
        let read_timeout = duration_key("upstream.read_timeout", file.upstream.read_timeout, 30)?;

        let hosts = file
            .intercept
            .hosts
            .unwrap_or_else(|| DEFAULT_INTERCEPT.iter().map(|h| (*h).to_owned()).collect());
        let intercept = HostPatterns::new(&hosts).map_err(|message| ConfigError::Invalid {
            key: "intercept.hosts",
            message,
        })?;

        let mut resolve = HashMap::new();
        for (host, addr) in file.upstream.resolve {
            let parsed = addr.parse().map_err(|_| ConfigError::Invalid {
                key: "upstream.resolve",
                message: format!("{addr:?} for {host:?} is not an address like 10.1.2.3:443"),
            })?;
            resolve.insert(host.to_ascii_lowercase(), parsed);
        }

        let parent = file
            .upstream
            .proxy
            .as_ref()
            .map(|url| Parent::parse(&url.0))
            .transpose()
            .map_err(|message| ConfigError::Invalid {
                key: "upstream.proxy",
                message,
            })?;
        let no_proxy =
            NoProxy::parse(&file.upstream.no_proxy).map_err(|message| ConfigError::Invalid {
                key: "upstream.no_proxy",
                message,
            })?;

        let proxy = file.proxy;
        let users = match &proxy.auth_file {
            Some(path) => Some(Arc::new(Htpasswd::load(path).map_err(|message| {
                ConfigError::Invalid {
                    key: "proxy.auth_file",
                    message,
                }
            })?)),
            None => None,
        };
        let allow_clients = proxy
            .allow_clients
            .iter()
            .map(|c| Cidr::parse(c))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|message| ConfigError::Invalid {
                key: "proxy.allow_clients",
                message,
            })?;
        let listen_ip = listen.ip();
        open_proxy_check(
            listen,
            users.is_some(),
            !allow_clients.is_empty(),
            proxy.open,
        )?;
        let connect_ports = proxy.connect_ports.unwrap_or_else(|| vec![443]);
        let forward_ports = proxy.forward_ports.unwrap_or_else(|| vec![80]);
        let max_header_size = size_key("proxy.max_header_size", proxy.max_header_size, 64 << 10)?;
        let max_header_size = usize::try_from(max_header_size)
            .ok()
            .filter(|n| (8192..=16 << 20).contains(n))
            .ok_or_else(|| ConfigError::Invalid {
                key: "proxy.max_header_size",
                message: "must be between 8KiB and 16MiB".into(),
            })?;
        let max_connections = proxy.max_connections.unwrap_or(1024);
        if max_connections == 0 {
            return Err(ConfigError::Invalid {
                key: "proxy.max_connections",
                message: "must be at least 1".into(),
            });
        }
        let max_connections_per_client = proxy.max_connections_per_client.unwrap_or(256);
        if max_connections_per_client == 0 {
            return Err(ConfigError::Invalid {
                key: "proxy.max_connections_per_client",
                message: "must be at least 1".into(),
            });
        }
        let header_read_timeout =
            duration_key("proxy.header_read_timeout", proxy.header_read_timeout, 30)?;
        let idle_timeout = duration_key("proxy.idle_timeout", proxy.idle_timeout, 300)?;
        let shutdown_grace = duration_key("proxy.shutdown_grace", proxy.shutdown_grace, 30)?;

        // Shared (a listener others can reach) or holding an account of its own, hoard checks
        // with the registry before it hands a cached object to a client, unless told otherwise.
        let shared = !listen_ip.is_loopback() || !file.upstream.credentials.is_empty();
        let auth_on_hit = match file.cache.auth_on_hit.as_deref() {
            None if shared => AuthOnHit::Upstream,
            None | Some("none") => AuthOnHit::None,
            Some("upstream") => AuthOnHit::Upstream,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    key: "cache.auth_on_hit",
                    message: format!("{other:?} is not \"none\" or \"upstream\""),
                });
            }
        };
        let max_fills = count_key("cache.max_fills", file.cache.max_fills, 64)?;
        let max_fills_per_client = count_key(
            "cache.max_fills_per_client",
            file.cache.max_fills_per_client,
            16,
        )?;
        let abandoned_fill_grace = duration_key(
            "cache.abandoned_fill_grace",
            file.cache.abandoned_fill_grace,
            10,
        )?;
        let credentials = file
            .upstream
            .credentials
            .into_iter()
            .map(credential)
            .collect::<Result<Vec<_>, _>>()?;

        let admin = match file.admin.listen.as_deref().map(str::trim) {
            None => AdminListen::Default(SocketAddr::from(([127, 0, 0, 1], 9128))),
            Some("" | "off") => AdminListen::Off,
            Some(text) => {
                AdminListen::Configured(text.parse().map_err(|_| ConfigError::Invalid {
                    key: "admin.listen",
                    message: format!("{text:?} is not an address like 127.0.0.1:9128 (or \"off\")"),
                })?)
            }
        };

        let log_format = match file.log.format.as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    key: "log.format",
                    message: format!("{other:?} is not \"text\" or \"json\""),
                });
            }
        };
        let log_filter = match file.log.level.as_deref() {
            None => "hoard=info".to_owned(),
            Some(level @ ("error" | "warn" | "info" | "debug" | "trace")) => {
                format!("hoard={level}")
            }
            Some(other) => {
                return Err(ConfigError::Invalid {
                    key: "log.level",
                    message: format!("{other:?} is not one of error, warn, info, debug, trace"),
                });
            }
        };

        Ok(Config {
            listen,
            ca_dir: cli.ca_dir.or(file.ca.dir).unwrap_or_else(|| "ca".into()),
            cache_dir: cli
                .cache_dir
                .or(file.cache.dir)
                .unwrap_or_else(|| "cache".into()),
            max_size,
            min_free,
            tag_ttl,
            intercept,
            extra_ca_files: file.upstream.extra_ca_files,
            resolve,
            connect_timeout,
            read_timeout,
            parent,
            no_proxy,
            users,
            allow_clients,
            open: proxy.open,
            connect_ports,
            forward_ports,
            allow_private_destinations: proxy.allow_private_destinations,
            max_connections,
            max_connections_per_client,
            max_header_size,
            header_read_timeout,
            idle_timeout,
            shutdown_grace,
            name_constraints: file.ca.name_constraints.unwrap_or(true),
            auth_on_hit,
            max_fills,
            max_fills_per_client,
            abandoned_fill_grace,
            finish_abandoned_fills: file.cache.finish_abandoned_fills,
            credentials,
            admin,
            log_format,
            log_filter,
        })
    }

    /// Refuses this configuration on a listener bound to `bound` when that would make hoard an
    /// open proxy. A reload checks the address actually bound, not the one in the file (a changed
    /// `proxy.listen` takes effect only at a restart).
    pub fn check_open_proxy(&self, bound: SocketAddr) -> Result<(), ConfigError> {
        open_proxy_check(
            bound,
            self.users.is_some(),
            !self.allow_clients.is_empty(),
            self.open,
        )
    }

    /// hoard's credentials for `host_key` (`host` or `host:port`), if configured.
    pub fn credential_for(&self, host_key: &str) -> Option<&Credential> {
        self.credentials.iter().find(|c| c.host == host_key)
    }
}

fn open_proxy_check(
    listen: SocketAddr,
    users: bool,
    allow_list: bool,
    open: bool,
) -> Result<(), ConfigError> {
    if listen.ip().is_loopback() || users || allow_list || open {
        return Ok(());
    }
    Err(ConfigError::Invalid {
        key: "proxy.listen",
        message: format!(
            "listening on {listen} without proxy.auth_file or proxy.allow_clients would \
             make hoard an open proxy; set one of them (or proxy.open = true)"
        ),
    })
}

fn credential(section: CredentialSection) -> Result<Credential, ConfigError> {
    let invalid = |message: String| ConfigError::Invalid {
        key: "upstream.credentials",
        message,
    };
    let host = section.host.trim().to_ascii_lowercase();
    let bare = host.rsplit_once(':').map_or(host.as_str(), |(h, _)| h);
    if !is_dns_name(bare) && bare.parse::<std::net::IpAddr>().is_err() {
        return Err(invalid(format!(
            "{:?} is not a registry host",
            section.host
        )));
    }
    let host = host.strip_suffix(":443").unwrap_or(&host).to_owned();
    let password = match (section.password, section.password_file) {
        (Some(password), None) => password,
        (None, Some(path)) => std::fs::read_to_string(&path)
            .map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?
            .trim_end_matches(['\n', '\r'])
            .to_owned(),
        _ => {
            return Err(invalid(format!(
                "{host}: give exactly one of password and password_file"
            )));
        }
    };
    Ok(Credential {
        host,
        username: section.username,
        password,
    })
}

fn size_key(key: &'static str, text: Option<String>, default: u64) -> Result<u64, ConfigError> {
    text.map_or(Ok(default), |text| {
        parse_size(&text).map_err(|message| ConfigError::Invalid { key, message })
    })
}

/// A count that must be at least 1.
fn count_key(
    key: &'static str,
    value: Option<usize>,
    default: usize,
) -> Result<usize, ConfigError> {
    match value.unwrap_or(default) {
        0 => Err(ConfigError::Invalid {
            key,
            message: "must be at least 1".into(),
        }),
        n => Ok(n),
    }
}

fn duration_key(
    key: &'static str,
    text: Option<String>,
    default_secs: u64,
) -> Result<Duration, ConfigError> {
    text.map_or(Ok(Duration::from_secs(default_secs)), |text| {
        parse_duration(&text).map_err(|message| ConfigError::Invalid { key, message })
    })
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|err| ConfigError::Parse {
        path: path.to_owned(),
        // toml's message spans several lines with a source excerpt; keep the one line that says why.
        message: err.message().replace('\n', " "),
    })
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
