//! The proxy flavour of the setup scripts, and what both flavours are made of: the engine, the
//! address hoard is reached at, the CA as the script holds it, and `common.sh`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::config::Config;
use crate::net::{is_dns_name, split_authority};

const HEADER: &str = include_str!("header.sh");
pub(super) const COMMON: &str = include_str!("common.sh");
const DOCKER: &str = include_str!("docker.sh");
const CONTAINERD: &str = include_str!("containerd.sh");
const PODMAN: &str = include_str!("podman.sh");

/// NO_PROXY entries every script starts from; the proxy host is added after them.
const NO_PROXY_BASE: [&str; 3] = ["localhost", "127.0.0.0/8", "::1"];

/// The container engines a script is served for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Engine {
    Docker,
    Containerd,
    Podman,
}

impl Engine {
    /// The engine named by the last segment of `/setup/<name>`.
    pub(super) fn from_name(name: &str) -> Option<Engine> {
        match name {
            "docker" => Some(Engine::Docker),
            "containerd" => Some(Engine::Containerd),
            "podman" => Some(Engine::Podman),
            _ => None,
        }
    }

    /// The name in the URL and in the script's output.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Engine::Docker => "docker",
            Engine::Containerd => "containerd",
            Engine::Podman => "podman",
        }
    }

    fn body(self) -> &'static str {
        match self {
            Engine::Docker => DOCKER,
            Engine::Containerd => CONTAINERD,
            Engine::Podman => PODMAN,
        }
    }
}

/// Where clients reach hoard: a DNS name or an IP address, and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ProxyAddr {
    pub(super) host: String,
    pub(super) port: u16,
}

impl ProxyAddr {
    /// Parses a `Host` header value: `name`, `1.2.3.4` or `[::1]`, with an optional `:port`
    /// (80 without one, as for any `http://` URL). `None` for anything else.
    pub(super) fn parse(text: &str) -> Option<ProxyAddr> {
        let authority = split_authority(text)?;
        let host = authority.host.to_ascii_lowercase();
        let (valid, host) = match authority.bracketed {
            true => (host.parse::<Ipv6Addr>().is_ok(), format!("[{host}]")),
            false => (host.parse::<Ipv4Addr>().is_ok() || is_dns_name(&host), host),
        };
        let port = authority.port.unwrap_or(80);
        valid.then_some(ProxyAddr { host, port })
    }

    /// `proxy.listen`, when a request has no `Host` header; `None` for a wildcard address, which
    /// no client can use.
    pub(super) fn from_listen(listen: SocketAddr) -> Option<ProxyAddr> {
        let host = match listen.ip() {
            ip if ip.is_unspecified() => return None,
            IpAddr::V4(ip) => ip.to_string(),
            IpAddr::V6(ip) => format!("[{ip}]"),
        };
        Some(ProxyAddr {
            host,
            port: listen.port(),
        })
    }

    /// `host:port`, as in a URL.
    pub(super) fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The host as NO_PROXY names it: IPv6 without brackets.
    fn no_proxy_host(&self) -> &str {
        self.host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(&self.host)
    }
}

/// Everything a setup script is made from.
#[derive(Debug, Clone)]
pub(super) struct Script<'a> {
    pub engine: Engine,
    /// Where the host reaches hoard.
    pub proxy: ProxyAddr,
    /// hoard's CA certificate in PEM.
    pub ca_pem: &'a str,
    /// The intercepted host patterns (`intercept.hosts`): exact names and `*.domain`.
    pub patterns: Vec<String>,
    /// Whether hoard requires proxy authentication.
    pub auth_required: bool,
}

impl Script<'_> {
    /// The script for `engine` with `config`'s hosts and authentication.
    pub(super) fn new<'a>(
        engine: Engine,
        proxy: ProxyAddr,
        ca_pem: &'a str,
        config: &Config,
    ) -> Script<'a> {
        Script {
            engine,
            proxy,
            ca_pem,
            patterns: config.intercept.names().collect(),
            auth_required: config.proxy.users.is_some(),
        }
    }

    /// The shell script. Every value put into it is a validated host name, address or port, or
    /// the PEM inside a quoted heredoc.
    pub(super) fn render(&self) -> String {
        let (wildcards, hosts): (Vec<&str>, Vec<&str>) = self
            .patterns
            .iter()
            .map(String::as_str)
            .filter(|p| is_dns_name(p.strip_prefix("*.").unwrap_or(p)))
            .partition(|p| p.starts_with("*."));
        let mut no_proxy: Vec<&str> = NO_PROXY_BASE.to_vec();
        if !no_proxy.contains(&self.proxy.no_proxy_host()) {
            no_proxy.push(self.proxy.no_proxy_host());
        }
        let header = HEADER
            .replace("@ENGINE@", self.engine.as_str())
            .replace("@PROXY@", &self.proxy.authority())
            .replace("@NO_PROXY@", &no_proxy.join(","))
            .replace("@HOSTS@", &hosts.join(" "))
            .replace("@WILDCARDS@", &wildcards.join(" "))
            .replace(
                "@AUTH_REQUIRED@",
                if self.auth_required { "1" } else { "0" },
            )
            .replace("@CA_PEM@\n", &pem_text(self.ca_pem));
        [header.as_str(), COMMON, self.engine.body()].concat()
    }
}

/// A PEM as the script's heredoc holds it: no blank lines, no trailing spaces or `\r`.
pub(super) fn pem_text(pem: &str) -> String {
    pem.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| format!("{}\n", line.trim_end()))
        .collect()
}
