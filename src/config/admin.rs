//! `[admin]`: where the admin listener (metrics, health, status page) binds, if anywhere.

use std::net::SocketAddr;

use serde::Deserialize;

use super::check::changed;
use super::error::ConfigError;

/// `[admin]` as written.
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

impl AdminListen {
    /// The keys whose change only a restart puts in force: the listener binds at start.
    pub(super) fn restart_keys(&self, new: &AdminListen) -> Vec<&'static str> {
        changed([("admin.listen", self != new)])
    }
}

/// `[admin]`, checked.
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
