//! `[intercept]`: the hosts whose TLS hoard terminates and whose registry traffic it caches.

use serde::Deserialize;

use super::error::ConfigError;
use crate::net::HostPatterns;

/// Default intercepted registries.
const DEFAULT_INTERCEPT: [&str; 2] = ["gcr.io", "registry-1.docker.io"];

/// `[intercept]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterceptSection {
    pub hosts: Option<Vec<String>>,
}

/// `[intercept]`, checked: the host patterns ([`DEFAULT_INTERCEPT`] if unset).
pub(super) fn intercept(section: InterceptSection) -> Result<HostPatterns, ConfigError> {
    let hosts = section
        .hosts
        .unwrap_or_else(|| DEFAULT_INTERCEPT.iter().map(|h| (*h).to_owned()).collect());
    HostPatterns::new(&hosts).map_err(|message| ConfigError::Invalid {
        key: "intercept.hosts",
        message,
    })
}
