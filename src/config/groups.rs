//! `proxy.groups_file`: groups of proxy users, in Apache's AuthGroupFile format
//! (`group: user1 user2`, one group a line), for `lend_to = ["@group"]`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::htpasswd::Htpasswd;

/// Groups of users by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Groups(BTreeMap<String, BTreeSet<String>>);

impl Groups {
    /// Reads the file; errors name the line.
    pub fn load(path: &Path) -> Result<Groups, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Groups::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses AuthGroupFile text. Comments (`#`) and blank lines are skipped; a group named
    /// twice gets the users of both lines.
    pub fn parse(text: &str) -> Result<Groups, String> {
        let mut groups: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((group, users)) = line.split_once(':') else {
                return Err(format!("line {} is not group: user1 user2", number + 1));
            };
            let group = group.trim();
            if group.is_empty() || group.contains(char::is_whitespace) {
                return Err(format!("line {} names no group", number + 1));
            }
            groups
                .entry(group.to_owned())
                .or_default()
                .extend(users.split_whitespace().map(str::to_owned));
        }
        Ok(Groups(groups))
    }

    /// The users `names` stand for: users of `users` (`proxy.auth_file`) and `"@group"`s of
    /// these groups. The error names the first name that is neither.
    pub(crate) fn users_named(
        &self,
        names: &[String],
        users: Option<&Htpasswd>,
    ) -> Result<BTreeSet<String>, String> {
        let mut named = BTreeSet::new();
        for name in names {
            if let Some(group) = name.strip_prefix('@') {
                let members = self
                    .members(group)
                    .ok_or_else(|| format!("no group {group:?} in proxy.groups_file"))?;
                named.extend(members.iter().cloned());
            } else if users.is_some_and(|users| users.has(name)) {
                named.insert(name.clone());
            } else {
                return Err(format!(
                    "{name:?} is not a user of proxy.auth_file (a group is \"@name\")"
                ));
            }
        }
        Ok(named)
    }

    /// The users of `group`, if it exists.
    pub fn members(&self, group: &str) -> Option<&BTreeSet<String>> {
        self.0.get(group)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_read_line_by_line() {
        let groups = Groups::parse("# team\nops: alice bob\n\ndev:carol\nops: dave\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let ops: Vec<_> = groups.members("ops").into_iter().flatten().collect();
        assert_eq!(ops, ["alice", "bob", "dave"]);
        assert_eq!(groups.members("dev").map(BTreeSet::len), Some(1));
        assert_eq!(groups.members("nobody"), None);
        for bad in ["ops alice", ": alice", "two words: alice"] {
            assert!(Groups::parse(bad).is_err(), "{bad}");
        }
    }
}
