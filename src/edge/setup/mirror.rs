//! The mirror flavour of the setup scripts (`/setup/<engine>?mode=mirror`): the engine pulls
//! through hoard's registry-mirror listener (`[mirror]`) instead of using hoard as its proxy, and
//! trusts hoard's CA for the mirror's name only, when the mirror's certificate comes from it.
//!
//! The script is the proxy flavour's `common.sh` (files, options, restarts) followed by
//! `mirror/common.sh`, which redefines what differs, and the engine's part.

use std::net::IpAddr;

use super::script::{COMMON, Engine, ProxyAddr, pem_text};
use crate::config::{Config, MirrorConfig, MirrorTls};
use crate::net::split_authority;
use crate::oci::registry_key;

const HEADER: &str = include_str!("mirror/header.sh");
const MIRROR_COMMON: &str = include_str!("mirror/common.sh");
const DOCKER: &str = include_str!("mirror/docker.sh");
const CONTAINERD: &str = include_str!("mirror/containerd.sh");
const PODMAN: &str = include_str!("mirror/podman.sh");

/// The answer to `?mode=mirror` when there is no mirror listener.
const MIRROR_OFF: &str =
    "mirror mode is off: set [mirror] listen in hoard's config to serve registries as a mirror";

/// The answer to `?mode=mirror` when the mirror's port is the system's pick, which no script
/// can name ahead of time.
const NO_PORT: &str = "mirror.listen has port 0 (any free port): give it a fixed port for the \
                       setup script to name";

/// Where a host reaches hoard's mirror listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MirrorUrl {
    tls: bool,
    /// A DNS name, an IPv4 address or a bracketed IPv6 address.
    host: String,
    port: u16,
}

impl MirrorUrl {
    /// The mirror's address for a host that fetched the script from `fetched`: the port is
    /// `mirror.listen`'s; the host is the first of `mirror.names` when hoard's CA signs the
    /// mirror's certificate (the name it is valid for), else the host the script was fetched by
    /// (`from_header`: a `Host` header named it), else `mirror.listen`'s address when it is not
    /// a wildcard, else the proxy's.
    pub(crate) fn new(mirror: &MirrorConfig, fetched: &ProxyAddr, from_header: bool) -> MirrorUrl {
        let port = mirror.listen.port();
        let host = match (&mirror.tls, ProxyAddr::from_listen(mirror.listen)) {
            (MirrorTls::Minted(names), _) if !names.is_empty() => url_host(&names[0]),
            (_, Some(listen)) if !from_header => listen.host,
            _ => fetched.host.clone(),
        };
        MirrorUrl {
            tls: mirror.tls != MirrorTls::Plain,
            host,
            port,
        }
    }

    /// `host:port`.
    pub(crate) fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// `http://host:port` or `https://host:port`.
    pub(crate) fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.authority())
    }
}

/// A name from `mirror.names` as a URL's host: IPv6 addresses in brackets.
fn url_host(name: &str) -> String {
    match name.parse::<IpAddr>() {
        Ok(IpAddr::V6(ip)) => format!("[{ip}]"),
        _ => name.to_owned(),
    }
}

/// Everything a mirror setup script is made from.
#[derive(Debug, Clone)]
pub(crate) struct MirrorScript<'a> {
    /// The engine it sets up.
    pub(crate) engine: Engine,
    /// Where the host fetched the script from.
    pub(crate) proxy: ProxyAddr,
    /// Where the host reaches the mirror.
    pub(crate) mirror: MirrorUrl,
    /// `plain`, `files` (the operator's certificate) or `minted` (from hoard's CA).
    pub(crate) tls: &'static str,
    /// hoard's CA certificate in PEM.
    pub(crate) ca_pem: &'a str,
    /// Registry keys served by name (Docker Hub as `registry-1.docker.io`), in config order.
    pub(crate) registries: Vec<String>,
    /// `*.domain` patterns served, which no engine's mirror config can list.
    pub(crate) wildcards: Vec<String>,
    /// `mirror.default_registry`: where dockerd's mirror requests go.
    pub(crate) default_registry: String,
    /// Whether `intercept.hosts` or `mirror.registries` match the default registry.
    pub(crate) default_served: bool,
    /// Whether hoard requires credentials (`proxy.auth_file`).
    pub(crate) auth_required: bool,
}

impl MirrorScript<'_> {
    /// The script for `engine` with `config`'s mirror; the reason there is none when the mirror
    /// is off or has no fixed port.
    pub(crate) fn new<'a>(
        engine: Engine,
        proxy: ProxyAddr,
        from_header: bool,
        ca_pem: &'a str,
        config: &Config,
    ) -> Result<MirrorScript<'a>, &'static str> {
        let mirror = config.mirror.as_ref().ok_or(MIRROR_OFF)?;
        if mirror.listen.port() == 0 {
            return Err(NO_PORT);
        }
        let (registries, wildcards) = served(config, mirror);
        let default_host = split_authority(&mirror.default_registry).map(|a| a.host);
        let default_served = default_host
            .is_some_and(|host| config.intercept.matches(host) || mirror.registries.matches(host));
        Ok(MirrorScript {
            engine,
            mirror: MirrorUrl::new(mirror, &proxy, from_header),
            proxy,
            tls: match mirror.tls {
                MirrorTls::Plain => "plain",
                MirrorTls::Files { .. } => "files",
                MirrorTls::Minted(_) => "minted",
            },
            ca_pem,
            registries,
            wildcards,
            default_registry: mirror.default_registry.clone(),
            default_served,
            auth_required: config.proxy.users.is_some(),
        })
    }

    /// The shell script. Every value put into it is a validated host name, address, port or
    /// registry key, or the PEM inside a quoted heredoc.
    pub(crate) fn render(&self) -> String {
        let header = HEADER
            .replace("@ENGINE@", self.engine.as_str())
            .replace("@PROXY@", &self.proxy.authority())
            .replace("@MIRROR_URL@", &self.mirror.url())
            .replace("@MIRROR_HOSTPORT@", &self.mirror.authority())
            .replace("@MIRROR_TLS@", self.tls)
            .replace("@REGISTRIES@", &self.registries.join(" "))
            .replace("@WILDCARDS@", &self.wildcards.join(" "))
            .replace("@DEFAULT_REGISTRY@", &self.default_registry)
            .replace("@DEFAULT_SERVED@", flag(self.default_served))
            .replace("@AUTH_REQUIRED@", flag(self.auth_required))
            .replace("@CA_PEM@\n", &pem_text(self.ca_pem));
        let body = match self.engine {
            Engine::Docker => DOCKER,
            Engine::Containerd => CONTAINERD,
            Engine::Podman => PODMAN,
        };
        [header.as_str(), COMMON, MIRROR_COMMON, body].concat()
    }
}

fn flag(on: bool) -> &'static str {
    if on { "1" } else { "0" }
}

/// The registries the mirror serves: exact hosts of `intercept.hosts` then `mirror.registries`
/// as registry keys, each once; and the wildcard patterns among them.
fn served(config: &Config, mirror: &MirrorConfig) -> (Vec<String>, Vec<String>) {
    let (mut registries, mut wildcards) = (Vec::new(), Vec::new());
    for name in config.intercept.names().chain(mirror.registries.names()) {
        let (list, item) = match name.strip_prefix("*.") {
            Some(_) => (&mut wildcards, Some(name)),
            None => (&mut registries, registry_key(&name)),
        };
        if let Some(item) = item.filter(|item| !list.contains(item)) {
            list.push(item);
        }
    }
    (registries, wildcards)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mirror(listen: &str, tls: MirrorTls) -> MirrorConfig {
        MirrorConfig {
            listen: listen.parse().unwrap_or(([0; 4], 0).into()),
            tls,
            registries: Default::default(),
            default_registry: crate::oci::DOCKER_HUB.into(),
            forward_authorization: false,
        }
    }

    fn url(listen: &str, tls: MirrorTls, fetched: &str, from_header: bool) -> String {
        let fetched = ProxyAddr::parse(fetched).unwrap_or(ProxyAddr {
            host: String::new(),
            port: 0,
        });
        MirrorUrl::new(&mirror(listen, tls), &fetched, from_header).url()
    }

    #[test]
    fn the_mirror_url_takes_the_port_of_the_mirror_and_the_host_the_host_knows() {
        let plain = || MirrorTls::Plain;
        assert_eq!(
            url("0.0.0.0:5000", plain(), "hoard.example:3128", true),
            "http://hoard.example:5000"
        );
        // A specific listener names the host when the request did not.
        assert_eq!(
            url("10.0.0.5:5000", plain(), "10.0.0.6:3128", false),
            "http://10.0.0.5:5000"
        );
        assert_eq!(
            url("0.0.0.0:5000", plain(), "10.0.0.6:3128", false),
            "http://10.0.0.6:5000"
        );
        let files = MirrorTls::Files {
            cert: "c".into(),
            key: "k".into(),
        };
        assert_eq!(
            url("0.0.0.0:5443", files, "hoard:3128", true),
            "https://hoard:5443"
        );
        // A certificate from hoard's CA is valid for mirror.names only.
        let minted = MirrorTls::Minted(vec!["fd00::1".into(), "hoard".into()]);
        assert_eq!(
            url("0.0.0.0:5443", minted, "hoard:3128", true),
            "https://[fd00::1]:5443"
        );
    }
}
