//! `upstream.max_rate` and `[[upstream.limits]]`: how fast hoard reads from registries, in all and
//! per registry, and how many blob fills run at once per registry.

use serde::Deserialize;

use super::error::ConfigError;
use super::units::parse_rate;
use crate::oci::registry_key;

/// `[[upstream.limits]]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSection {
    pub host: String,
    pub max_rate: Option<String>,
    pub max_fills: Option<usize>,
}

/// `upstream.max_rate` and `[[upstream.limits]]`, checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shaping {
    /// Bytes per second read from all registries and their redirect targets; `None`: no limit.
    pub max_rate: Option<u64>,
    /// Limits for single registries.
    pub limits: Vec<HostLimit>,
}

/// One `[[upstream.limits]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostLimit {
    /// `host`, or `host:port` unless the port is 443, lowercase (as `[[upstream.credentials]]`).
    pub host: String,
    /// Bytes per second read from this registry and its redirect targets.
    pub max_rate: Option<u64>,
    /// Blob fills from this registry at once; past it a fill waits for a slot.
    pub max_fills: Option<usize>,
}

impl Shaping {
    /// The `[[upstream.limits]]` entry for `host_key` (`host` or `host:port`), if any.
    pub fn limit_for(&self, host_key: &str) -> Option<&HostLimit> {
        self.limits.iter().find(|limit| limit.host == host_key)
    }
}

/// `upstream.max_rate` and the `[[upstream.limits]]` entries: every host a registry host, named
/// once; a rate like `40Mbit`; `max_fills` at least 1.
pub(super) fn shaping(
    max_rate: Option<String>,
    limits: Vec<LimitSection>,
) -> Result<Shaping, ConfigError> {
    let max_rate = rate_key("upstream.max_rate", max_rate)?;
    let mut checked: Vec<HostLimit> = Vec::new();
    for section in limits {
        let invalid = |message: String| ConfigError::Invalid {
            key: "upstream.limits",
            message,
        };
        let host = registry_key(section.host.trim())
            .ok_or_else(|| invalid(format!("{:?} is not a registry host", section.host)))?;
        if checked.iter().any(|limit| limit.host == host) {
            return Err(invalid(format!("{host} is named twice")));
        }
        let max_rate = rate_key("upstream.limits.max_rate", section.max_rate)?;
        if section.max_fills == Some(0) {
            return Err(invalid(format!("{host}: max_fills must be at least 1")));
        }
        checked.push(HostLimit {
            host,
            max_rate,
            max_fills: section.max_fills,
        });
    }
    Ok(Shaping {
        max_rate,
        limits: checked,
    })
}

/// A rate key in bytes per second; `None` when absent.
fn rate_key(key: &'static str, text: Option<String>) -> Result<Option<u64>, ConfigError> {
    text.map(|text| parse_rate(&text))
        .transpose()
        .map_err(|message| ConfigError::Invalid { key, message })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(host: &str, rate: Option<&str>, fills: Option<usize>) -> LimitSection {
        LimitSection {
            host: host.to_owned(),
            max_rate: rate.map(str::to_owned),
            max_fills: fills,
        }
    }

    #[test]
    fn limits_are_keyed_as_credentials_are() {
        let shaping = shaping(
            Some("40Mbit".into()),
            vec![
                limit("Docker.io", Some("8Mbit"), Some(2)),
                limit("registry.local:443", None, Some(1)),
            ],
        );
        let Ok(shaping) = shaping else {
            panic!("{shaping:?}");
        };
        assert_eq!(shaping.max_rate, Some(5_000_000));
        let hub = shaping.limit_for("registry-1.docker.io");
        assert_eq!(hub.and_then(|l| l.max_rate), Some(1_000_000));
        assert_eq!(hub.and_then(|l| l.max_fills), Some(2));
        let local = shaping.limit_for("registry.local");
        assert_eq!(local.and_then(|l| l.max_rate), None);
        assert_eq!(local.and_then(|l| l.max_fills), Some(1));
    }

    #[test]
    fn bad_limits_are_config_errors() {
        let message = |result: Result<Shaping, ConfigError>| match result {
            Err(err) => err.to_string(),
            Ok(shaping) => panic!("accepted: {shaping:?}"),
        };
        let rate = message(shaping(Some("40MB".into()), vec![]));
        assert!(
            rate.contains("upstream.max_rate") && rate.contains("Mbit"),
            "{rate}"
        );
        let twice = message(shaping(
            None,
            vec![limit("gcr.io", None, None), limit("GCR.io:443", None, None)],
        ));
        assert!(twice.contains("gcr.io is named twice"), "{twice}");
        let zero = message(shaping(None, vec![limit("gcr.io", None, Some(0))]));
        assert!(zero.contains("at least 1"), "{zero}");
        let host = message(shaping(None, vec![limit("a/b", None, None)]));
        assert!(host.contains("not a registry host"), "{host}");
    }
}
