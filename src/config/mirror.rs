//! `[mirror]`: the registry-mirror listener, off unless `mirror.listen` is set.

use std::net::SocketAddr;
use std::path::PathBuf;

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

use super::check::{changed, guard_check};
use super::error::ConfigError;
use super::proxy::ProxyConfig;
use crate::net::HostPatterns;
use crate::oci::{DOCKER_HUB, registry_key};

/// `[mirror]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorSection {
    pub listen: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    #[serde(default)]
    pub names: Vec<String>,
    #[serde(default)]
    pub registries: Vec<String>,
    pub default_registry: Option<String>,
    #[serde(default)]
    pub forward_authorization: bool,
}

/// The registry-mirror listener: hoard's store served as a registry mirror, for hosts that do
/// not trust an intercepting CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorConfig {
    /// Where it listens.
    pub listen: SocketAddr,
    /// Plain HTTP, or TLS with which certificate.
    pub tls: MirrorTls,
    /// Registries reachable through the mirror beyond `intercept.hosts`.
    pub registries: HostPatterns,
    /// The registry key (lowercase `host[:port]`, Docker Hub as [`DOCKER_HUB`]) of requests
    /// that name none: dockerd's `registry-mirrors` are for Docker Hub only.
    pub default_registry: String,
    /// Whether a client's `Authorization` goes upstream; otherwise hoard's credentials do.
    pub forward_authorization: bool,
}

/// How the mirror listener speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MirrorTls {
    /// Plain HTTP (for the host itself, or behind a TLS-terminating load balancer).
    Plain,
    /// TLS with the operator's certificate chain and key (PEM files, read at start).
    Files { cert: PathBuf, key: PathBuf },
    /// TLS with a leaf minted by hoard's CA for these names (DNS names or IP addresses).
    Minted(Vec<String>),
}

impl MirrorConfig {
    /// The keys whose change only a restart puts in force (the listener and its certificate
    /// are set up at start); `None` is a mirror that is off.
    pub(super) fn restart_keys(
        old: Option<&MirrorConfig>,
        new: Option<&MirrorConfig>,
    ) -> Vec<&'static str> {
        changed([
            (
                "mirror.listen",
                old.map(|m| m.listen) != new.map(|m| m.listen),
            ),
            (
                "mirror.tls_cert, tls_key, names",
                old.map(|m| &m.tls) != new.map(|m| &m.tls),
            ),
        ])
    }
}

/// `[mirror]`, or `None` when `mirror.listen` is unset. A listener beyond loopback needs
/// `proxy.auth_file`, `proxy.allow_clients` or `proxy.open`, as the proxy's does.
pub(super) fn mirror(
    section: MirrorSection,
    proxy: &ProxyConfig,
) -> Result<Option<MirrorConfig>, ConfigError> {
    let invalid = |key, message: String| ConfigError::Invalid { key, message };
    let Some(listen) = section.listen else {
        return Ok(None);
    };
    let listen: SocketAddr = listen.parse().map_err(|_| {
        invalid(
            "mirror.listen",
            format!("{listen:?} is not an address like 127.0.0.1:5000"),
        )
    })?;
    open_mirror_check(listen, proxy.guarded())?;
    let tls = match (section.tls_cert, section.tls_key) {
        (Some(cert), Some(key)) if section.names.is_empty() => {
            check_pem(&cert, &key)?;
            MirrorTls::Files { cert, key }
        }
        (Some(_), Some(_)) => {
            return Err(invalid(
                "mirror.names",
                "give either mirror.names (a certificate from hoard's CA) or mirror.tls_cert \
                 and mirror.tls_key, not both"
                    .into(),
            ));
        }
        (Some(_), None) | (None, Some(_)) => {
            return Err(invalid(
                "mirror.tls_cert",
                "mirror.tls_cert and mirror.tls_key go together".into(),
            ));
        }
        (None, None) if section.names.is_empty() => MirrorTls::Plain,
        (None, None) => MirrorTls::Minted(names(section.names)?),
    };
    let registries = HostPatterns::new(&section.registries)
        .map_err(|message| invalid("mirror.registries", message))?;
    let default_registry = match section.default_registry {
        None => DOCKER_HUB.to_owned(),
        Some(text) => registry_key(&text).ok_or_else(|| {
            invalid(
                "mirror.default_registry",
                format!("{text:?} is not a registry host with an optional port"),
            )
        })?,
    };
    if section.forward_authorization && proxy.users.is_some() {
        return Err(invalid(
            "mirror.forward_authorization",
            "clients log in to the mirror with proxy.auth_file: their Authorization is \
             hoard's, not the registry's"
                .into(),
        ));
    }
    Ok(Some(MirrorConfig {
        listen,
        tls,
        registries,
        default_registry,
        forward_authorization: section.forward_authorization,
    }))
}

/// Refuses a mirror on `listen` beyond loopback with neither logins, nor an allow-list, nor
/// `proxy.open`: anyone who reached it would have the cache and hoard's registry credentials.
pub(super) fn open_mirror_check(listen: SocketAddr, guarded: bool) -> Result<(), ConfigError> {
    guard_check(
        "mirror.listen",
        listen,
        guarded,
        "open the cache to anyone who can reach it (set proxy.open = true if that is intended)",
    )
}

/// `mirror.names`, lowercase: DNS names or IP addresses a minted leaf can carry.
fn names(names: Vec<String>) -> Result<Vec<String>, ConfigError> {
    names
        .into_iter()
        .map(|name| {
            let name = name.to_ascii_lowercase();
            let ip = name.parse::<std::net::IpAddr>().is_ok();
            if ip || crate::net::is_dns_name(&name) {
                Ok(name)
            } else {
                Err(ConfigError::Invalid {
                    key: "mirror.names",
                    message: format!("{name:?} is neither a DNS name nor an IP address"),
                })
            }
        })
        .collect()
}

/// Reads the operator's certificate and key once, so that a bad file stops hoard at start.
fn check_pem(cert: &std::path::Path, key: &std::path::Path) -> Result<(), ConfigError> {
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|err| ConfigError::Invalid {
            key: "mirror.tls_cert",
            message: format!("{}: {err}", cert.display()),
        })?;
    if certs.is_empty() {
        return Err(ConfigError::Invalid {
            key: "mirror.tls_cert",
            message: format!("{} holds no certificate", cert.display()),
        });
    }
    PrivateKeyDer::from_pem_file(key).map_err(|err| ConfigError::Invalid {
        key: "mirror.tls_key",
        message: format!("{}: {err}", key.display()),
    })?;
    Ok(())
}
