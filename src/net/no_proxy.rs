//! `upstream.no_proxy`: the destinations that skip the parent proxy, with curl's rules.

use std::net::IpAddr;

use super::addr::Cidr;
use super::host::{is_dns_name, unbracket};

/// Destinations that skip the parent (`upstream.no_proxy`), with curl's rules: a name matches
/// itself and its subdomains (a leading dot changes nothing), an address or address block
/// matches destinations given as literal addresses, and `*` matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NoProxy {
    all: bool,
    names: Vec<String>,
    blocks: Vec<Cidr>,
}

impl NoProxy {
    /// Parses the entries; an error names the entry.
    pub fn parse(entries: &[String]) -> Result<NoProxy, String> {
        let mut out = NoProxy::default();
        for entry in entries {
            let text = entry.trim().to_ascii_lowercase();
            let bare = unbracket(&text);
            let name = text.trim_start_matches('.');
            if text == "*" {
                out.all = true;
            } else if bare.parse::<IpAddr>().is_ok() || text.contains('/') {
                out.blocks.push(Cidr::parse(bare)?);
            } else if is_dns_name(name) {
                out.names.push(name.to_owned());
            } else {
                return Err(format!(
                    "{entry:?} is not a host name, address, address block or \"*\""
                ));
            }
        }
        Ok(out)
    }

    /// Whether connections to `host` (no port) go straight.
    pub fn matches(&self, host: &str) -> bool {
        if self.all {
            return true;
        }
        let host = unbracket(host);
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if let Ok(ip) = host.parse::<IpAddr>() {
            return self.blocks.iter().any(|block| block.contains(ip));
        }
        self.names.iter().any(|name| {
            host.strip_suffix(name.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.ends_with('.'))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_proxy_follows_curl() {
        let entries: Vec<String> = ["internal.example", ".corp.example", "10.0.0.0/8", "::1"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let list = NoProxy::parse(&entries).unwrap_or_default();
        assert!(list.matches("internal.example"));
        assert!(list.matches("registry.internal.example"));
        assert!(!list.matches("notinternal.example"));
        assert!(list.matches("corp.example"));
        assert!(list.matches("a.b.Corp.Example."));
        assert!(list.matches("10.1.2.3"));
        assert!(list.matches("[::1]"));
        assert!(!list.matches("11.1.2.3"));
        assert!(!list.matches("gcr.io"));
        let all = NoProxy::parse(&["*".to_owned()]).unwrap_or_default();
        assert!(all.matches("gcr.io") && all.matches("8.8.8.8"));
        assert!(NoProxy::parse(&["a/b".to_owned()]).is_err());
        assert!(NoProxy::parse(&["*.example".to_owned()]).is_err());
    }
}
