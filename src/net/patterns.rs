//! Host patterns: the hosts hoard intercepts, as exact names and `*.domain` wildcards.

use super::host::is_dns_name;

/// What an intercepted host matched in [`HostPatterns`].
enum Pattern<'a> {
    Exact(&'a str),
    Suffix(&'a str),
}

/// Host names to intercept: exact names and `*.suffix` wildcards, compared case-insensitively.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostPatterns {
    exact: Vec<String>,
    suffixes: Vec<String>,
}

impl HostPatterns {
    /// Parses patterns; a wildcard is only allowed as the whole first label.
    pub(crate) fn new(patterns: &[String]) -> Result<HostPatterns, String> {
        let mut out = HostPatterns::default();
        for pattern in patterns {
            let pattern = pattern.trim().to_ascii_lowercase();
            if let Some(suffix) = pattern.strip_prefix("*.") {
                if !is_dns_name(suffix) {
                    return Err(format!(
                        "{pattern:?} is not a host name or *.domain pattern"
                    ));
                }
                out.suffixes.push(format!(".{suffix}"));
            } else if is_dns_name(&pattern) {
                out.exact.push(pattern);
            } else {
                return Err(format!(
                    "{pattern:?} is not a host name or *.domain pattern"
                ));
            }
        }
        Ok(out)
    }

    /// Whether `host` (no port) is intercepted.
    pub fn matches(&self, host: &str) -> bool {
        self.matching(&host.to_ascii_lowercase()).is_some()
    }

    /// The pattern `host` (no port) matches: the name itself when listed, else `*.domain`.
    pub(crate) fn pattern_for(&self, host: &str) -> Option<String> {
        match self.matching(&host.to_ascii_lowercase())? {
            Pattern::Exact(name) => Some(name.to_owned()),
            Pattern::Suffix(suffix) => Some(format!("*{suffix}")),
        }
    }

    /// The listed name or `.domain` suffix a lowercase `host` matches.
    fn matching(&self, host: &str) -> Option<Pattern<'_>> {
        if let Some(name) = self.exact.iter().find(|name| *name == host) {
            return Some(Pattern::Exact(name));
        }
        self.suffixes
            .iter()
            .find(|s| host.ends_with(s.as_str()) && host.len() > s.len())
            .map(|s| Pattern::Suffix(s))
    }

    /// The patterns as configured, for the CA's name constraints and logs.
    pub(crate) fn names(&self) -> impl Iterator<Item = String> + '_ {
        self.exact
            .iter()
            .cloned()
            .chain(self.suffixes.iter().map(|s| format!("*{s}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_hosts_match_subdomains_only() {
        let p = HostPatterns::new(&["*.pkg.dev".into(), "gcr.io".into()]).unwrap_or_default();
        assert!(p.matches("europe-docker.pkg.dev"));
        assert!(p.matches("GCR.IO"));
        assert!(!p.matches("pkg.dev"));
        assert!(!p.matches("evilgcr.io"));
        assert!(HostPatterns::new(&["a/b".into()]).is_err());
        assert_eq!(p.pattern_for("eu.pkg.dev").as_deref(), Some("*.pkg.dev"));
        assert_eq!(p.pattern_for("Gcr.io").as_deref(), Some("gcr.io"));
        assert_eq!(p.pattern_for("cdn.example"), None);
    }
}
