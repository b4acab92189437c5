//! What the store's entries and tag folders are named by: [`Key`] for a blob, a manifest or a
//! tag record, [`HostKey`] for a registry host.

use std::sync::Arc;

use crate::oci::Digest;

/// An entry of the store: a blob, a manifest, or a tag record.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Key {
    Blob(Digest),
    Manifest(Digest),
    /// A tag record, by its path under `tags/`: `<host>/<repo>/_tags/<tag>` (see [`Key::tag`]).
    /// Shared, so that the variant is no larger than a digest and a blob's or manifest's key
    /// costs no more for it.
    Tag(Arc<str>),
}

impl Key {
    /// The key of the tag record of `host`'s `repo:tag`. The caller has checked the names.
    pub(crate) fn tag(host: &str, repo: &str, tag: &str) -> Key {
        Key::Tag(format!("{host}/{repo}/_tags/{tag}").into())
    }
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
    fn tag_keys_make_blob_and_manifest_keys_no_larger() {
        /// The key as it was before tag records were entries.
        #[expect(dead_code, reason = "only its size is looked at")]
        enum BlobOrManifest {
            Blob(Digest),
            Manifest(Digest),
        }
        assert_eq!(
            std::mem::size_of::<Key>(),
            std::mem::size_of::<BlobOrManifest>()
        );
        assert_eq!(
            Key::tag("gcr.io", "team/app", "v1"),
            Key::Tag("gcr.io/team/app/_tags/v1".into())
        );
    }

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
