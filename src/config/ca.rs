//! `[ca]`: where hoard's CA lives, and what a CA it creates may sign.

use std::path::PathBuf;

use serde::Deserialize;

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

/// `[ca]`, with `--ca-dir` over `ca.dir`.
pub(super) fn ca(section: CaSection, cli_dir: Option<PathBuf>) -> CaConfig {
    CaConfig {
        dir: cli_dir.or(section.dir).unwrap_or_else(|| "ca".into()),
        name_constraints: section.name_constraints.unwrap_or(true),
    }
}
