//! Checks the section files share: sizes, counts and durations with their defaults, and the
//! guard on listeners beyond loopback.

use std::net::SocketAddr;
use std::time::Duration;

use super::error::ConfigError;
use super::units::{parse_duration, parse_size};

/// A size key (`20GiB`), or `default` bytes when unset.
pub(super) fn size_key(
    key: &'static str,
    text: Option<String>,
    default: u64,
) -> Result<u64, ConfigError> {
    text.map_or(Ok(default), |text| {
        parse_size(&text).map_err(|message| ConfigError::Invalid { key, message })
    })
}

/// A count that must be at least 1.
pub(super) fn count_key(
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

/// A duration key (`10m`), or `default_secs` when unset.
pub(super) fn duration_key(
    key: &'static str,
    text: Option<String>,
    default_secs: u64,
) -> Result<Duration, ConfigError> {
    text.map_or(Ok(Duration::from_secs(default_secs)), |text| {
        parse_duration(&text).map_err(|message| ConfigError::Invalid { key, message })
    })
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

/// The keys of `settings` whose old and new values differ: `(key, old != new)` pairs, so that a
/// section names what a reload changed by comparing its parts.
pub(super) fn changed<const N: usize>(settings: [(&'static str, bool); N]) -> Vec<&'static str> {
    settings
        .into_iter()
        .filter_map(|(key, changed)| changed.then_some(key))
        .collect()
}
