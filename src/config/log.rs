//! `[log]`: how log lines are written, and how many.

use serde::Deserialize;

use super::check::changed;
use super::error::ConfigError;

/// `[log]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    pub format: Option<String>,
    pub level: Option<String>,
}

/// `[log]`, checked (the logger is set up once, at start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Text or JSON log lines (`log.format`).
    pub format: LogFormat,
    /// The tracing filter when `RUST_LOG` is not set, e.g. `hoard=info` (`log.level`).
    pub filter: String,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogConfig {
    /// The keys whose change only a restart puts in force: all of them.
    pub(super) fn restart_keys(&self, new: &LogConfig) -> Vec<&'static str> {
        changed([
            ("log.format", self.format != new.format),
            ("log.level", self.filter != new.filter),
        ])
    }
}

/// `[log]`, checked: the line format and the tracing filter used when `RUST_LOG` is not set.
pub(super) fn log(section: LogSection) -> Result<LogConfig, ConfigError> {
    let format = match section.format.as_deref() {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            return Err(ConfigError::Invalid {
                key: "log.format",
                message: format!("{other:?} is not \"text\" or \"json\""),
            });
        }
    };
    let filter = match section.level.as_deref() {
        None => "hoard=info".to_owned(),
        Some(level @ ("error" | "warn" | "info" | "debug" | "trace")) => format!("hoard={level}"),
        Some(other) => {
            return Err(ConfigError::Invalid {
                key: "log.level",
                message: format!("{other:?} is not one of error, warn, info, debug, trace"),
            });
        }
    };
    Ok(LogConfig { format, filter })
}
