//! The config file as written: one serde struct per `[section]`, unknown keys rejected, every
//! value still text. [`super::Config::resolve`] checks and types them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ConfigError;
use crate::net::ParentUrl;

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
    pub mirror: super::mirror::MirrorSection,
    #[serde(default)]
    pub fleet: super::fleet::FleetSection,
    #[serde(default)]
    pub store: super::s3::StoreSection,
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

/// `[proxy]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxySection {
    pub listen: Option<String>,
    pub auth_file: Option<PathBuf>,
    #[serde(default)]
    pub allow_clients: Vec<String>,
    #[serde(default)]
    pub open: bool,
    pub connect_ports: Option<Vec<u16>>,
    pub forward_ports: Option<Vec<u16>>,
    #[serde(default)]
    pub allow_private_destinations: bool,
    pub max_connections: Option<usize>,
    pub max_connections_per_client: Option<usize>,
    pub max_header_size: Option<String>,
    pub header_read_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub shutdown_grace: Option<String>,
}

/// `[ca]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaSection {
    pub dir: Option<PathBuf>,
    pub name_constraints: Option<bool>,
}

/// `[cache]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSection {
    pub dir: Option<PathBuf>,
    pub max_size: Option<String>,
    pub min_free: Option<String>,
    pub tag_ttl: Option<String>,
    pub auth_on_hit: Option<String>,
    pub max_fills: Option<usize>,
    pub max_fills_per_client: Option<usize>,
    pub abandoned_fill_grace: Option<String>,
    #[serde(default)]
    pub finish_abandoned_fills: bool,
}

/// `[intercept]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterceptSection {
    pub hosts: Option<Vec<String>>,
}

/// `[upstream]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSection {
    #[serde(default)]
    pub extra_ca_files: Vec<PathBuf>,
    #[serde(default)]
    pub resolve: HashMap<String, String>,
    pub connect_timeout: Option<String>,
    pub read_timeout: Option<String>,
    #[serde(default)]
    pub credentials: Vec<CredentialSection>,
    pub proxy: Option<ParentUrl>,
    #[serde(default)]
    pub no_proxy: Vec<String>,
}

/// `[[upstream.credentials]]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialSection {
    pub host: String,
    pub username: String,
    pub password: Option<String>,
    pub password_file: Option<PathBuf>,
}

/// `[admin]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    pub listen: Option<String>,
}

/// `[log]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    pub format: Option<String>,
    pub level: Option<String>,
}
