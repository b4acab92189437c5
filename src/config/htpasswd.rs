//! `proxy.auth_file`: the users allowed to use the proxy, from an htpasswd file with bcrypt
//! hashes (`htpasswd -B`).

use std::collections::HashMap;
use std::path::Path;

/// The password of the dummy hash an unknown user is checked against. Whatever matches it, an
/// unknown user is still refused.
pub(crate) const DUMMY_PASSWORD: &str = "hoard: no such user";

/// bcrypt cost of the dummy hash when no user's cost can be read.
const DEFAULT_COST: u32 = 10;

/// Users allowed to use the proxy, from an htpasswd file with bcrypt hashes (`htpasswd -B`).
pub struct Htpasswd {
    users: HashMap<String, String>,
    /// A hash at the users' highest cost: an unknown user is checked against it, so that a
    /// wrong user name costs the same time as a wrong password and names cannot be probed.
    dummy: String,
}

/// Two files are the same when they hold the same users with the same hashes (the dummy hash
/// is salted anew each time, so it is not compared).
impl PartialEq for Htpasswd {
    fn eq(&self, other: &Htpasswd) -> bool {
        self.users == other.users
    }
}

impl std::fmt::Debug for Htpasswd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Htpasswd({} users)", self.users.len())
    }
}

impl Htpasswd {
    /// Reads the file; every line must be `user:$2y$…` (or `$2b$`, `$2a$`). Comments (`#`) and
    /// blank lines are skipped. Errors name the line, never its hash.
    pub fn load(path: &Path) -> Result<Htpasswd, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Htpasswd::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses htpasswd text.
    pub fn parse(text: &str) -> Result<Htpasswd, String> {
        let mut users = HashMap::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((user, hash)) = line.split_once(':') else {
                return Err(format!("line {} is not user:hash", number + 1));
            };
            if !["$2y$", "$2b$", "$2a$"].iter().any(|p| hash.starts_with(p)) {
                return Err(format!(
                    "line {} ({user}) is not a bcrypt hash; make it with htpasswd -B",
                    number + 1
                ));
            }
            users.insert(user.to_owned(), hash.to_owned());
        }
        if users.is_empty() {
            return Err("no users in it".into());
        }
        let dummy = dummy_hash(users.values().filter_map(|hash| cost_of(hash)).max());
        Ok(Htpasswd { users, dummy })
    }
}

/// The cost in `$2y$10$…`.
fn cost_of(hash: &str) -> Option<u32> {
    hash.split('$').nth(2)?.parse().ok()
}

fn dummy_hash(cost: Option<u32>) -> String {
    let cost = cost
        .filter(|c| (4..=31).contains(c))
        .unwrap_or(DEFAULT_COST);
    bcrypt::hash(DUMMY_PASSWORD, cost).unwrap_or_default()
}

impl Htpasswd {
    /// The hash to check `user`'s password against, and whether `user` is known: an unknown
    /// user gets the dummy hash, so that a wrong name costs as much as a wrong password.
    /// Whether `user` is in the file.
    pub fn has(&self, user: &str) -> bool {
        self.users.contains_key(user)
    }

    pub(crate) fn hash_for(&self, user: &str) -> (&str, bool) {
        match self.users.get(user) {
            Some(hash) => (hash, true),
            None => (&self.dummy, false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn htpasswd_accepts_only_bcrypt() {
        assert!(Htpasswd::parse("alice:$2y$05$abcdefghijklmnopqrstuu\n# comment\n").is_ok());
        let err = Htpasswd::parse("bob:{SHA}secret").err().unwrap_or_default();
        assert!(err.contains("bob") && !err.contains("secret"), "{err}");
        assert!(Htpasswd::parse("").is_err());
    }
}
