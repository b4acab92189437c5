//! What the store's entries and tag folders are named by: [`Key`] for a blob or a manifest,
//! [`HostKey`] for a registry host.

use crate::oci::Digest;

/// An entry of the store: a blob or a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Key {
    Blob(Digest),
    Manifest(Digest),
}

/// A registry host as used in tag paths: a DNS name or IP literal, with a port unless 443.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostKey(String);

impl HostKey {
    /// The folder name under `tags/`: `host`, or `host:port` unless the port is 443.
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// Builds the key from a CONNECT authority's parts; `None` for anything not a plain host.
    pub(crate) fn new(host: &str, port: u16) -> Option<HostKey> {
        let host = host.to_ascii_lowercase();
        let valid = crate::net::is_dns_name(&host) || host.parse::<std::net::IpAddr>().is_ok();
        if !valid || host.contains('/') {
            return None;
        }
        Some(HostKey(if port == 443 {
            host
        } else {
            format!("{host}:{port}")
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_keys_reject_paths() {
        assert!(HostKey::new("gcr.io", 443).is_some());
        assert_eq!(
            HostKey::new("localhost", 5000).map(|h| h.0),
            Some("localhost:5000".into())
        );
        assert!(HostKey::new("../etc", 443).is_none());
        assert!(HostKey::new("a/b", 443).is_none());
    }
}
