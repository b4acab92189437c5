//! The tag map: which manifest a registry's `repository:tag` pointed at, per media type, and
//! when hoard learned it. One small file per tag, rewritten whole.

use std::path::PathBuf;
use std::time::SystemTime;

use super::layout::{format_tag_line, parse_tag_line};
use super::{Store, StoreError, io_error};
use crate::oci::{Digest, valid_repository, valid_tag};

/// One tag → digest mapping, as learned from the upstream at `fetched`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagEntry {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    pub fetched: SystemTime,
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

impl Store {
    fn tag_path(&self, host: &HostKey, repo: &str, tag: &str) -> Result<PathBuf, StoreError> {
        // Checked again here so no caller can build a path from an unchecked name.
        if !valid_repository(repo) || !valid_tag(tag) {
            return Err(StoreError::BadKey(format!("{repo}:{tag}")));
        }
        Ok(self
            .inner
            .root
            .join("tags")
            .join(&host.0)
            .join(repo)
            .join("_tags")
            .join(tag))
    }

    /// The known mappings of a tag (one per media type).
    pub(crate) async fn tag(&self, host: &HostKey, repo: &str, tag: &str) -> Vec<TagEntry> {
        let Ok(path) = self.tag_path(host, repo, tag) else {
            return Vec::new();
        };
        match tokio::fs::read_to_string(&path).await {
            Ok(text) => text.lines().filter_map(parse_tag_line).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Records a mapping, replacing an earlier one of the same media type.
    pub(crate) async fn put_tag(
        &self,
        host: &HostKey,
        repo: &str,
        tag: &str,
        entry: TagEntry,
    ) -> Result<(), StoreError> {
        let path = self.tag_path(host, repo, tag)?;
        if entry.media_type.contains(char::is_whitespace) {
            return Err(StoreError::BadKey(entry.media_type));
        }
        let mut entries = self.tag(host, repo, tag).await;
        entries.retain(|e| e.media_type != entry.media_type);
        entries.push(entry);
        let text: String = entries.iter().map(format_tag_line).collect();
        self.write_atomically(&path, text.into_bytes()).await
    }

    /// Forgets a tag altogether (its upstream mapping changed through hoard, so the next pull
    /// must ask the upstream).
    pub(crate) async fn drop_tag(
        &self,
        host: &HostKey,
        repo: &str,
        tag: &str,
    ) -> Result<(), StoreError> {
        let path = self.tag_path(host, repo, tag)?;
        match tokio::fs::remove_file(&path).await {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                Err(io_error("remove", &path)(err))
            }
            _ => Ok(()),
        }
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
