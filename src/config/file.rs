//! The config file as written: one serde struct per `[section]` (each in its section's file),
//! unknown keys rejected, every value still text. [`super::Config::resolve`] checks and types
//! them.

use std::path::Path;

use serde::Deserialize;

use super::access::AccessSection;
use super::admin::AdminSection;
use super::ca::CaSection;
use super::cache::CacheSection;
use super::error::ConfigError;
use super::fleet::FleetSection;
use super::intercept::InterceptSection;
use super::log::LogSection;
use super::mirror::MirrorSection;
use super::proxy::ProxySection;
use super::store::StoreSection;
use super::upstream::UpstreamSection;

/// The config file as written by a user. Every key is documented in `config.toml.example`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub proxy: ProxySection,
    #[serde(default)]
    pub ca: CaSection,
    #[serde(default)]
    pub cache: CacheSection,
    #[serde(default)]
    pub intercept: InterceptSection,
    #[serde(default)]
    pub upstream: UpstreamSection,
    #[serde(default)]
    pub admin: AdminSection,
    #[serde(default)]
    pub log: LogSection,
    #[serde(default)]
    pub mirror: MirrorSection,
    #[serde(default)]
    pub fleet: FleetSection,
    #[serde(default)]
    pub store: StoreSection,
    #[serde(default)]
    pub access: AccessSection,
}

impl FileConfig {
    /// Reads and parses the file at `path`.
    pub(super) fn read(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_owned(),
            error,
        })?;
        toml::from_str(&text).map_err(|err| ConfigError::Parse {
            path: path.to_owned(),
            // toml's message spans several lines with a source excerpt; keep the one line that
            // says why.
            message: err.message().replace('\n', " "),
        })
    }
}
