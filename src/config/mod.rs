//! Configuration: the TOML file and the command line, merged into one validated [`Config`].
//!
//! Two stages, as in ripgrep: [`FileConfig`] is what serde reads (unknown keys rejected), the
//! CLI flags override it, and [`Config::resolve`] turns both into typed values before any socket
//! binds. One file per section (`proxy.rs`, `ca.rs`, `cache.rs`, `intercept.rs`, `upstream.rs`,
//! `admin.rs`, `log.rs`, `mirror.rs`, `fleet.rs`, `store.rs`) holds the section as written, its
//! checked form and the function from one to the other; [`Config`] has one field per section,
//! and a reload compares them with `PartialEq`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::net::HostPatterns;

mod access;
mod admin;
mod ca;
mod cache;
mod check;
mod error;
mod file;
mod fleet;
mod freshness;
mod groups;
mod htpasswd;
mod intercept;
mod log;
mod mirror;
mod proxy;
mod shaping;
mod store;
mod units;
mod upstream;

pub use access::{AccessConfig, AccessSection, Grant, GrantSection};
pub use admin::{AdminConfig, AdminListen, AdminSection};
pub use ca::{CaConfig, CaSection};
pub use cache::{AuthOnHit, CacheConfig, CacheLimits, CacheSection, FillLimits};
pub use error::ConfigError;
pub use file::FileConfig;
pub use fleet::{FleetConfig, FleetSection, Peers, PeersSection, Secret};
pub use freshness::{FreshnessRule, FreshnessSection, TagFreshness, TagTtl};
pub use groups::Groups;
pub use htpasswd::Htpasswd;
pub use intercept::InterceptSection;
pub use log::{LogConfig, LogFormat, LogSection};
pub use mirror::{MirrorConfig, MirrorSection, MirrorTls};
pub use proxy::{Connections, ProxyConfig, ProxySection};
pub use shaping::{HostLimit, LimitSection, Shaping};
pub use store::{S3Config, S3Credentials, S3Section, StoreConfig, StoreSection};
pub use units::{parse_duration, parse_rate, parse_size};
pub use upstream::{
    AzureIdentity, Credential, CredentialSection, CredentialSource, LendTo, UpstreamClients,
    UpstreamConfig, UpstreamSection, valid_helper_name,
};

/// Command-line values that override the file (all optional).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<String>,
    pub ca_dir: Option<PathBuf>,
    pub cache_dir: Option<PathBuf>,
    pub tag_ttl: Option<String>,
}

/// The validated configuration hoard runs with: one field per section of the file.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `[proxy]`: the proxy listener, who may use it, where it may go, and its limits.
    pub proxy: ProxyConfig,
    /// `[ca]`: the CA's folder and what a new CA may sign.
    pub ca: CaConfig,
    /// `[cache]`: the store, tag freshness, who gets cached objects, and the fill limits.
    pub cache: CacheConfig,
    /// `[intercept]`: hosts whose TLS is terminated and whose registry traffic is cached.
    pub intercept: HostPatterns,
    /// `[upstream]`: how registries are reached, and hoard's own credentials for them.
    pub upstream: UpstreamConfig,
    /// `[admin]`: the admin listener and the names it answers to.
    pub admin: AdminConfig,
    /// `[log]`: the log lines' format and level.
    pub log: LogConfig,
    /// `[mirror]`: the registry-mirror listener; `None`: off.
    pub mirror: Option<MirrorConfig>,
    /// `[fleet]`: the other hoards this one shares upstream fetches with; `None`: alone.
    pub fleet: Option<FleetConfig>,
    /// `[store]`: the S3-API tier the hoards of a fleet share.
    pub store: StoreConfig,
    /// `[access]`: which repositories the logged-in users may pull.
    pub access: AccessConfig,
}

impl Config {
    /// The names a new CA is limited to signing (`ca.name_constraints`): the intercepted hosts
    /// and the mirror's own minted names. `None`: unconstrained.
    pub(crate) fn ca_constraints(&self) -> Option<Vec<String>> {
        let mirror_names = match self.mirror.as_ref().map(|m| &m.tls) {
            Some(MirrorTls::Minted(names)) => names.as_slice(),
            _ => &[],
        };
        self.ca.name_constraints.then(|| {
            self.intercept
                .names()
                .chain(mirror_names.iter().cloned())
                .collect()
        })
    }

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
        let allow_private_destinations = file.proxy.allow_private_destinations;
        let proxy = proxy::proxy(file.proxy, cli.listen)?;
        let ca = ca::ca(file.ca, cli.ca_dir);
        let mirror = mirror::mirror(file.mirror, &proxy)?;
        // A listener others can reach, or an account of hoard's own at a registry, makes hoard
        // check with the registry before it hands out a cached object, unless told otherwise.
        let shared = !proxy.listen.ip().is_loopback()
            || mirror
                .as_ref()
                .is_some_and(|m| !m.listen.ip().is_loopback())
            || !file.upstream.credentials.is_empty();
        let cache = cache::cache(file.cache, cli.cache_dir, cli.tag_ttl, shared)?;
        let intercept = intercept::intercept(file.intercept)?;
        // hoard's accounts are lent to everyone only on a hoard nobody else reaches and nobody
        // logs in to; elsewhere `lend_to` says to whom.
        let lenders = upstream::Lenders {
            users: proxy.users.as_deref(),
            groups: &proxy.groups,
            default_everyone: proxy.listen.ip().is_loopback()
                && mirror.as_ref().is_none_or(|m| m.listen.ip().is_loopback())
                && proxy.users.is_none(),
        };
        let upstream = upstream::upstream(file.upstream, allow_private_destinations, &lenders)?;
        if cache.auth_on_hit == AuthOnHit::None
            && let Some(narrow) = upstream
                .credentials
                .iter()
                .find(|c| c.lend_to != LendTo::Everyone)
        {
            return Err(ConfigError::Invalid {
                key: "cache.auth_on_hit",
                message: format!(
                    "\"none\" serves cached objects to everyone, but the account for {} is not \
                     lent to everyone (lend_to); use \"upstream\"",
                    narrow.host
                ),
            });
        }
        let admin = admin::admin(file.admin)?;
        let log = log::log(file.log)?;
        let fleet = fleet::fleet(file.fleet)?;
        let store = store::store(file.store, &|name| std::env::var(name).ok())?;
        let access = access::access(file.access, proxy.users.as_deref(), &proxy.groups)?;
        Ok(Config {
            proxy,
            ca,
            cache,
            intercept,
            upstream,
            admin,
            log,
            mirror,
            fleet,
            store,
            access,
        })
    }

    /// Refuses this configuration on a listener bound to `bound` when that would make hoard an
    /// open proxy. A reload checks the address actually bound, not the one in the file (a changed
    /// `proxy.listen` takes effect only at a restart).
    pub(crate) fn check_open_proxy(&self, bound: SocketAddr) -> Result<(), ConfigError> {
        proxy::open_proxy_check(bound, self.proxy.guarded())
    }

    /// Refuses this configuration for a mirror listener bound to `bound` when that would open
    /// the cache to anyone (a reload is judged by the listener that is open, as for the proxy).
    pub(crate) fn check_open_mirror(&self, bound: SocketAddr) -> Result<(), ConfigError> {
        mirror::open_mirror_check(bound, self.proxy.guarded())
    }

    /// The keys of settings that differ in `new` but take effect only at a restart: what is
    /// bound or opened at start (listeners and their limits, the CA, the store, the logger).
    pub(crate) fn restart_keys(&self, new: &Config) -> Vec<&'static str> {
        let mut keys = self.proxy.restart_keys(&new.proxy);
        keys.extend(self.ca.restart_keys(&new.ca));
        keys.extend(self.cache.restart_keys(&new.cache));
        keys.extend(self.admin.restart_keys(&new.admin));
        keys.extend(MirrorConfig::restart_keys(
            self.mirror.as_ref(),
            new.mirror.as_ref(),
        ));
        keys.extend(FleetConfig::restart_keys(
            self.fleet.as_ref(),
            new.fleet.as_ref(),
        ));
        keys.extend(self.log.restart_keys(&new.log));
        keys
    }
}

#[cfg(test)]
mod tests;
