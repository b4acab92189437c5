//! `[proxy]`: the proxy listener, who may use it, where it may go, and its limits.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::check::{changed, count_key, duration_key, guard_check, size_key};
use super::error::ConfigError;
use super::groups::Groups;
use super::htpasswd::Htpasswd;
use crate::net::Cidr;

/// `[proxy]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxySection {
    pub listen: Option<String>,
    pub auth_file: Option<PathBuf>,
    pub groups_file: Option<PathBuf>,
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

/// `[proxy]`, checked. (`proxy.allow_private_destinations` is in
/// [`super::upstream::UpstreamClients`]: the upstream clients are built with it.)
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyConfig {
    /// Address of the proxy listener.
    pub listen: SocketAddr,
    /// Users who may use the proxy (`proxy.auth_file`); `None`: no proxy authentication.
    pub users: Option<Arc<Htpasswd>>,
    /// Groups of those users (`proxy.groups_file`), for `lend_to = ["@group"]`.
    pub groups: Groups,
    /// Client address blocks allowed (`proxy.allow_clients`); empty: everyone.
    pub allow_clients: Vec<Cidr>,
    /// Whether a listener beyond loopback may go without authentication and allow-list.
    pub open: bool,
    /// Ports CONNECT may reach.
    pub connect_ports: Vec<u16>,
    /// Ports plain `http://` forwards may reach.
    pub forward_ports: Vec<u16>,
    /// Client connections held at once, in all and per client.
    pub connections: Connections,
    /// Largest request head accepted, in bytes.
    pub max_header_size: usize,
    /// Time a client has to send a request head.
    pub header_read_timeout: Duration,
    /// Time a client connection may stay silent both ways.
    pub idle_timeout: Duration,
    /// How long transfers in progress may go on after SIGTERM or SIGINT.
    pub shutdown_grace: Duration,
}

/// Client connections held at once, tunnels and intercepted connections included (a listener's
/// limits are set when it starts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connections {
    /// `proxy.max_connections`: at the limit the oldest connection with no request in flight is
    /// closed to admit a new one; when there is none, new connections wait to be accepted.
    pub max: usize,
    /// `proxy.max_connections_per_client`: from one client address (an IPv6 /64 counts as one).
    pub per_client: usize,
}

impl ProxyConfig {
    /// Whether a listener beyond loopback is guarded: by logins, an allow-list, or `proxy.open`
    /// saying an open one is intended.
    pub(super) fn guarded(&self) -> bool {
        self.users.is_some() || !self.allow_clients.is_empty() || self.open
    }

    /// The keys whose change only a restart puts in force (the listener and its limits are set
    /// when it binds).
    pub(super) fn restart_keys(&self, new: &ProxyConfig) -> Vec<&'static str> {
        let (old_limits, new_limits) = (self.connections, new.connections);
        changed([
            ("proxy.listen", self.listen != new.listen),
            ("proxy.max_connections", old_limits.max != new_limits.max),
            (
                "proxy.max_connections_per_client",
                old_limits.per_client != new_limits.per_client,
            ),
        ])
    }
}

/// `[proxy]`, with `--listen` over `proxy.listen`. Refuses an open proxy.
pub(super) fn proxy(
    section: ProxySection,
    cli_listen: Option<String>,
) -> Result<ProxyConfig, ConfigError> {
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
    let groups = match &section.groups_file {
        Some(path) => Groups::load(path).map_err(|message| ConfigError::Invalid {
            key: "proxy.groups_file",
            message,
        })?,
        None => Groups::default(),
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
        users.is_some() || !allow_clients.is_empty() || section.open,
    )?;
    let max_header_size = size_key("proxy.max_header_size", section.max_header_size, 64 << 10)?;
    let max_header_size = usize::try_from(max_header_size)
        .ok()
        .filter(|n| (8192..=16 << 20).contains(n))
        .ok_or_else(|| ConfigError::Invalid {
            key: "proxy.max_header_size",
            message: "must be between 8KiB and 16MiB".into(),
        })?;
    Ok(ProxyConfig {
        listen,
        users,
        groups,
        allow_clients,
        open: section.open,
        connect_ports: section.connect_ports.unwrap_or_else(|| vec![443]),
        forward_ports: section.forward_ports.unwrap_or_else(|| vec![80]),
        connections: Connections {
            max: count_key("proxy.max_connections", section.max_connections, 1024)?,
            per_client: count_key(
                "proxy.max_connections_per_client",
                section.max_connections_per_client,
                256,
            )?,
        },
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

/// Refuses a listener on `listen` beyond loopback unless `guarded` (proxy logins, a client
/// allow-list, or `proxy.open`): that would make hoard an open proxy.
pub(super) fn open_proxy_check(listen: SocketAddr, guarded: bool) -> Result<(), ConfigError> {
    guard_check(
        "proxy.listen",
        listen,
        guarded,
        "make hoard an open proxy; set one of them (or proxy.open = true)",
    )
}
