//! `[admin]`: where the admin listener (metrics, health, status page) binds, if anywhere, and
//! the names it answers to besides its address and loopback.

use std::net::SocketAddr;

use serde::Deserialize;

use super::check::changed;
use super::error::ConfigError;

/// `[admin]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    pub listen: Option<String>,
    #[serde(default)]
    pub names: Vec<String>,
}

/// `[admin]`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// Where the listener binds.
    pub listen: AdminListen,
    /// More names a request's `Host` may give (lowercase, each with or without a port), besides
    /// the address connected to and the loopback names.
    pub names: Vec<String>,
}

impl AdminConfig {
    /// The keys whose change only a restart puts in force: the listener binds at start.
    pub(super) fn restart_keys(&self, new: &AdminConfig) -> Vec<&'static str> {
        changed([("admin.listen", self.listen != new.listen)])
    }
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

/// `[admin]`, checked.
pub(super) fn admin(section: AdminSection) -> Result<AdminConfig, ConfigError> {
    let mut names = Vec::new();
    for name in section.names {
        let name = name.trim().to_ascii_lowercase();
        if name.is_empty() || name.contains(['/', ' ', '*']) {
            return Err(ConfigError::Invalid {
                key: "admin.names",
                message: format!(
                    "{name:?} is not a host name like hoard.internal or hoard.internal:9128"
                ),
            });
        }
        names.push(name);
    }
    Ok(AdminConfig {
        listen: listen(section.listen)?,
        names,
    })
}

fn listen(listen: Option<String>) -> Result<AdminListen, ConfigError> {
    Ok(match listen.as_deref().map(str::trim) {
        None => AdminListen::Default(SocketAddr::from(([127, 0, 0, 1], 9128))),
        Some("" | "off") => AdminListen::Off,
        Some(text) => AdminListen::Configured(text.parse().map_err(|_| ConfigError::Invalid {
            key: "admin.listen",
            message: format!("{text:?} is not an address like 127.0.0.1:9128 (or \"off\")"),
        })?),
    })
}
