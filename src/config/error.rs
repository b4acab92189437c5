//! The one error type of configuration: a problem reported as one line, exit code 2.

use std::path::PathBuf;

use crate::error::{Classify, Side};

/// A configuration problem: reported as one line, exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{key}: {message}")]
    Invalid { key: &'static str, message: String },
}

/// A configuration is the operator's input: its errors are the client's side.
impl Classify for ConfigError {
    fn side(&self) -> Side {
        Side::Client
    }
}
