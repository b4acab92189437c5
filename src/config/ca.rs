//! `[ca]`: where hoard's CA lives, and what a CA it creates may sign.

use std::path::PathBuf;

use serde::Deserialize;

use super::check::changed;

/// `[ca]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaSection {
    pub dir: Option<PathBuf>,
    pub name_constraints: Option<bool>,
}

/// `[ca]`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaConfig {
    /// Folder holding `ca.crt` and `ca.key` (loaded at start).
    pub dir: PathBuf,
    /// Whether a new CA is limited to signing the intercepted domains (an existing CA keeps
    /// what it was made with).
    pub name_constraints: bool,
}

impl CaConfig {
    /// The keys whose change only a restart puts in force (the CA is loaded at start).
    /// `ca.name_constraints` is not one of them: a restart does not remake an existing CA.
    pub(super) fn restart_keys(&self, new: &CaConfig) -> Vec<&'static str> {
        changed([("ca.dir", self.dir != new.dir)])
    }
}

/// `[ca]`, with `--ca-dir` over `ca.dir`.
pub(super) fn ca(section: CaSection, cli_dir: Option<PathBuf>) -> CaConfig {
    CaConfig {
        dir: cli_dir.or(section.dir).unwrap_or_else(|| "ca".into()),
        name_constraints: section.name_constraints.unwrap_or(true),
    }
}
