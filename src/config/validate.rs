//! Checks and types the file's sections, one function per section, each with its keys' defaults.
//! [`super::Config::resolve`] calls them in file order and assembles the [`super::Config`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::file::{
    AdminSection, CaSection, CacheSection, CredentialSection, InterceptSection, LogSection,
    ProxySection, UpstreamSection,
};
use super::{
    AdminListen, AuthOnHit, ConfigError, Credential, DEFAULT_INTERCEPT, Htpasswd, LogFormat,
    parse_duration, parse_size,
};
use crate::net::{Cidr, HostPatterns, NoProxy, Parent, is_dns_name};

/// `[proxy]`, checked: the listener, who may use it, where it may go, and its limits.
pub(super) struct Proxy {
    pub listen: SocketAddr,
    pub users: Option<Arc<Htpasswd>>,
    pub allow_clients: Vec<Cidr>,
    pub open: bool,
    pub connect_ports: Vec<u16>,
    pub forward_ports: Vec<u16>,
    pub allow_private_destinations: bool,
    pub max_connections: usize,
    pub max_connections_per_client: usize,
    pub max_header_size: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub shutdown_grace: Duration,
}

/// `[proxy]`, with `--listen` over `proxy.listen`. Refuses an open proxy.
pub(super) fn proxy(
    section: ProxySection,
    cli_listen: Option<String>,
) -> Result<Proxy, ConfigError> {
    let listen = cli_listen
        .or(section.listen)
        .unwrap_or_else(|| "127.0.0.1:3128".to_owned());
    let listen: SocketAddr = listen.parse().map_err(|_| ConfigError::Invalid {
        key: "proxy.listen",
        message: format!("{listen:?} is not an address like 127.0.0.1:3128"),
    })?;
    let users = match &section.auth_file {
        Some(path) => Some(Arc::new(Htpasswd::load(path).map_err(|message| {
            ConfigError::Invalid {
                key: "proxy.auth_file",
                message,
            }
        })?)),
        None => None,
    };
    let allow_clients = section
        .allow_clients
        .iter()
        .map(|c| Cidr::parse(c))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|message| ConfigError::Invalid {
            key: "proxy.allow_clients",
            message,
        })?;
    open_proxy_check(
        listen,
        users.is_some(),
        !allow_clients.is_empty(),
        section.open,
    )?;
    let max_header_size = size_key("proxy.max_header_size", section.max_header_size, 64 << 10)?;
    let max_header_size = usize::try_from(max_header_size)
        .ok()
        .filter(|n| (8192..=16 << 20).contains(n))
        .ok_or_else(|| ConfigError::Invalid {
            key: "proxy.max_header_size",
            message: "must be between 8KiB and 16MiB".into(),
        })?;
    Ok(Proxy {
        listen,
        users,
        allow_clients,
        open: section.open,
        connect_ports: section.connect_ports.unwrap_or_else(|| vec![443]),
        forward_ports: section.forward_ports.unwrap_or_else(|| vec![80]),
        allow_private_destinations: section.allow_private_destinations,
        max_connections: count_key("proxy.max_connections", section.max_connections, 1024)?,
        max_connections_per_client: count_key(
            "proxy.max_connections_per_client",
            section.max_connections_per_client,
            256,
        )?,
        max_header_size,
        header_read_timeout: duration_key(
            "proxy.header_read_timeout",
            section.header_read_timeout,
            30,
        )?,
        idle_timeout: duration_key("proxy.idle_timeout", section.idle_timeout, 300)?,
        shutdown_grace: duration_key("proxy.shutdown_grace", section.shutdown_grace, 30)?,
    })
}

/// Refuses a listener on `listen` beyond loopback with neither proxy logins, nor a client
/// allow-list, nor `proxy.open`: that would make hoard an open proxy.
pub(super) fn open_proxy_check(
    listen: SocketAddr,
    users: bool,
    allow_list: bool,
    open: bool,
) -> Result<(), ConfigError> {
    guard_check(
        "proxy.listen",
        listen,
        users || allow_list || open,
        "make hoard an open proxy; set one of them (or proxy.open = true)",
    )
}

/// Refuses a listener (`key`) on `listen` beyond loopback unless `guarded` (proxy logins, a
/// client allow-list, or `proxy.open` saying it is intended): it would `harm`.
pub(super) fn guard_check(
    key: &'static str,
    listen: SocketAddr,
    guarded: bool,
    harm: &str,
) -> Result<(), ConfigError> {
    if listen.ip().is_loopback() || guarded {
        return Ok(());
    }
    Err(ConfigError::Invalid {
        key,
        message: format!(
            "listening on {listen} without proxy.auth_file or proxy.allow_clients would {harm}"
        ),
    })
}

/// `[ca]`, checked: the CA's folder (`--ca-dir` over `ca.dir`) and whether a new CA is
/// constrained to the intercepted domains.
pub(super) fn ca(section: CaSection, cli_dir: Option<PathBuf>) -> (PathBuf, bool) {
    (
        cli_dir.or(section.dir).unwrap_or_else(|| "ca".into()),
        section.name_constraints.unwrap_or(true),
    )
}

/// `[cache]`, checked: the store and its fills.
pub(super) struct Cache {
    pub dir: PathBuf,
    pub max_size: u64,
    pub min_free: u64,
    pub tag_ttl: Duration,
    pub auth_on_hit: AuthOnHit,
    pub max_fills: usize,
    pub max_fills_per_client: usize,
    pub abandoned_fill_grace: Duration,
    pub finish_abandoned_fills: bool,
}

/// `[cache]`, with `--cache-dir` and `--tag-ttl` over the file. `shared` (the listener is
/// beyond loopback or hoard holds registry credentials of its own) makes
/// `auth_on_hit = "upstream"` the default.
pub(super) fn cache(
    section: CacheSection,
    cli_dir: Option<PathBuf>,
    cli_tag_ttl: Option<String>,
    shared: bool,
) -> Result<Cache, ConfigError> {
    let max_size = size_key("cache.max_size", section.max_size, 20 << 30)?;
    let min_free = size_key("cache.min_free", section.min_free, 1 << 30)?;
    let tag_ttl = duration_key("cache.tag_ttl", cli_tag_ttl.or(section.tag_ttl), 600)?;
    let auth_on_hit = match section.auth_on_hit.as_deref() {
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
    Ok(Cache {
        dir: cli_dir.or(section.dir).unwrap_or_else(|| "cache".into()),
        max_size,
        min_free,
        tag_ttl,
        auth_on_hit,
        max_fills: count_key("cache.max_fills", section.max_fills, 64)?,
        max_fills_per_client: count_key(
            "cache.max_fills_per_client",
            section.max_fills_per_client,
            16,
        )?,
        abandoned_fill_grace: duration_key(
            "cache.abandoned_fill_grace",
            section.abandoned_fill_grace,
            10,
        )?,
        finish_abandoned_fills: section.finish_abandoned_fills,
    })
}

/// `[intercept]`, checked: the hosts whose TLS hoard terminates ([`DEFAULT_INTERCEPT`] if unset).
pub(super) fn intercept(section: InterceptSection) -> Result<HostPatterns, ConfigError> {
    let hosts = section
        .hosts
        .unwrap_or_else(|| DEFAULT_INTERCEPT.iter().map(|h| (*h).to_owned()).collect());
    HostPatterns::new(&hosts).map_err(|message| ConfigError::Invalid {
        key: "intercept.hosts",
        message,
    })
}

/// `[upstream]`, checked: how hoard reaches registries, and its own credentials for them.
pub(super) struct Upstream {
    pub extra_ca_files: Vec<PathBuf>,
    pub resolve: HashMap<String, SocketAddr>,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub parent: Option<Parent>,
    pub no_proxy: NoProxy,
    pub credentials: Vec<Credential>,
}

/// `[upstream]` and its `[[upstream.credentials]]`.
pub(super) fn upstream(section: UpstreamSection) -> Result<Upstream, ConfigError> {
    let connect_timeout = duration_key("upstream.connect_timeout", section.connect_timeout, 10)?;
    let read_timeout = duration_key("upstream.read_timeout", section.read_timeout, 30)?;
    let mut resolve = HashMap::new();
    for (host, addr) in section.resolve {
        let parsed = addr.parse().map_err(|_| ConfigError::Invalid {
            key: "upstream.resolve",
            message: format!("{addr:?} for {host:?} is not an address like 10.1.2.3:443"),
        })?;
        resolve.insert(host.to_ascii_lowercase(), parsed);
    }
    let parent = section
        .proxy
        .as_ref()
        .map(|url| Parent::parse(&url.0))
        .transpose()
        .map_err(|message| ConfigError::Invalid {
            key: "upstream.proxy",
            message,
        })?;
    let no_proxy = NoProxy::parse(&section.no_proxy).map_err(|message| ConfigError::Invalid {
        key: "upstream.no_proxy",
        message,
    })?;
    let credentials = section
        .credentials
        .into_iter()
        .map(credential)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Upstream {
        extra_ca_files: section.extra_ca_files,
        resolve,
        connect_timeout,
        read_timeout,
        parent,
        no_proxy,
        credentials,
    })
}

/// One `[[upstream.credentials]]`: a registry host and exactly one of a password or a file
/// holding it.
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
        anonymous: false,
    })
}

/// `[admin]`, checked: where the admin listener binds, if anywhere.
pub(super) fn admin(section: AdminSection) -> Result<AdminListen, ConfigError> {
    Ok(match section.listen.as_deref().map(str::trim) {
        None => AdminListen::Default(SocketAddr::from(([127, 0, 0, 1], 9128))),
        Some("" | "off") => AdminListen::Off,
        Some(text) => AdminListen::Configured(text.parse().map_err(|_| ConfigError::Invalid {
            key: "admin.listen",
            message: format!("{text:?} is not an address like 127.0.0.1:9128 (or \"off\")"),
        })?),
    })
}

/// `[log]`, checked: the line format and the tracing filter used when `RUST_LOG` is not set.
pub(super) fn log(section: LogSection) -> Result<(LogFormat, String), ConfigError> {
    let format = match section.format.as_deref() {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            return Err(ConfigError::Invalid {
                key: "log.format",
                message: format!("{other:?} is not \"text\" or \"json\""),
            });
        }
    };
    let filter = match section.level.as_deref() {
        None => "hoard=info".to_owned(),
        Some(level @ ("error" | "warn" | "info" | "debug" | "trace")) => format!("hoard={level}"),
        Some(other) => {
            return Err(ConfigError::Invalid {
                key: "log.level",
                message: format!("{other:?} is not one of error, warn, info, debug, trace"),
            });
        }
    };
    Ok((format, filter))
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
