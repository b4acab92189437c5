//! `[access]`: which repositories the logged-in users may pull (`[[access.grants]]`). Without
//! grants every user who passes the proxy's (or mirror's) login pulls anything hoard serves; with
//! any, a user pulls only what a grant names them for.

use std::collections::BTreeSet;

use serde::Deserialize;

use super::error::ConfigError;
use super::groups::Groups;
use super::htpasswd::Htpasswd;
use crate::oci::RepoPattern;

/// `[access]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessSection {
    #[serde(default)]
    pub grants: Vec<GrantSection>,
}

/// `[[access.grants]]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantSection {
    /// Users of `proxy.auth_file` and `"@group"`s of `proxy.groups_file`.
    pub users: Vec<String>,
    /// Repository patterns (`registry/repo-path`, `*` one segment, `**` any depth).
    pub repositories: Vec<String>,
}

/// `[access]`, checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessConfig {
    /// The grants; none: every user pulls everything hoard serves.
    pub grants: Vec<Grant>,
}

/// One grant: these users may pull these repositories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The users (groups resolved).
    pub users: BTreeSet<String>,
    /// The repositories, as patterns.
    pub repositories: Vec<RepoPattern>,
}

impl AccessConfig {
    /// Whether `user` (the hoard login of the request, if any) may pull `repo` of `registry` (a
    /// registry key).
    pub fn allows(&self, user: Option<&str>, registry: &str, repo: &str) -> bool {
        if self.grants.is_empty() {
            return true;
        }
        let Some(user) = user else {
            return false;
        };
        self.grants.iter().any(|grant| {
            grant.users.contains(user)
                && grant
                    .repositories
                    .iter()
                    .any(|pattern| pattern.matches(registry, repo))
        })
    }
}

/// `[access]`, its names checked against the proxy's users and groups.
pub(super) fn access(
    section: AccessSection,
    users: Option<&Htpasswd>,
    groups: &Groups,
) -> Result<AccessConfig, ConfigError> {
    let invalid = |message: String| ConfigError::Invalid {
        key: "access.grants",
        message,
    };
    if !section.grants.is_empty() && users.is_none() {
        return Err(invalid(
            "grants name users, so they need proxy.auth_file (the proxy's and the mirror's logins)"
                .into(),
        ));
    }
    let grants = section
        .grants
        .into_iter()
        .map(|grant| {
            let users = groups.users_named(&grant.users, users).map_err(&invalid)?;
            let repositories = grant
                .repositories
                .iter()
                .map(|text| match RepoPattern::parse(text) {
                    Ok(pattern) if pattern.has_tag() => Err(format!(
                        "{text:?}: grants are by repository, without a :tag"
                    )),
                    parsed => parsed,
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(&invalid)?;
            Ok(Grant {
                users,
                repositories,
            })
        })
        .collect::<Result<Vec<_>, ConfigError>>()?;
    Ok(AccessConfig { grants })
}
