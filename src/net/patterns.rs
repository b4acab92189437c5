//! Host patterns: the hosts hoard intercepts, as exact names and `*.domain` wildcards, and the
//! `host:port` entries that let the mirror and the peer endpoint reach a registry on another
//! port than 443.

use std::borrow::Cow;

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
    /// `host:port` entries: that host on that port only.
    with_port: Vec<(String, u16)>,
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
            } else if let Some((host, port)) = pattern.rsplit_once(':')
                && is_dns_name(host)
                && let Ok(port) = port.parse::<u16>()
            {
                out.with_port.push((host.to_owned(), port));
            } else {
                return Err(format!(
                    "{pattern:?} is not a host name, *.domain pattern or host:port"
                ));
            }
        }
        Ok(out)
    }

    /// Whether the registry at `host` and `port` is listed: on 443 as a name or pattern, on
    /// another port as `host:port` exactly.
    pub fn matches_at(&self, host: &str, port: u16) -> bool {
        let host = lowercase(host);
        (port == 443 && self.matching(&host).is_some())
            || self
                .with_port
                .iter()
                .any(|(h, p)| *h == *host && *p == port)
    }

    /// Whether `host` (no port) is intercepted (`host:port` entries aside).
    pub fn matches(&self, host: &str) -> bool {
        self.matching(&lowercase(host)).is_some()
    }

    /// The pattern `host` (no port) matches: the name itself when listed, else `*.domain`.
    pub(crate) fn pattern_for(&self, host: &str) -> Option<String> {
        match self.matching(&lowercase(host))? {
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

/// `host` in lowercase, copied only when it is not already (it is, as a rule: every request
/// asks whether its host is listed).
fn lowercase(host: &str) -> Cow<'_, str> {
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
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

    #[test]
    fn a_host_is_reached_on_443_or_on_the_port_it_is_listed_with() {
        let p = HostPatterns::new(&["gcr.io".into(), "r.example:5000".into()]).unwrap_or_default();
        assert!(p.matches_at("gcr.io", 443));
        assert!(!p.matches_at("gcr.io", 5000));
        assert!(p.matches_at("R.example", 5000));
        assert!(!p.matches_at("r.example", 443));
        assert!(
            !p.matches("r.example"),
            "a host:port entry intercepts nothing"
        );
        assert!(HostPatterns::new(&["r.example:x".into()]).is_err());
    }
}
