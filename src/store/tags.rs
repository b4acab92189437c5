//! The tag map: which manifest a registry's `repository:tag` pointed at, per media type, and
//! when hoard learned it. One small file per tag, rewritten whole.

use std::path::PathBuf;

use super::Store;
use super::error::{StoreError, io_error};
use super::key::HostKey;
use super::layout::{TagEntry, format_tag_line, parse_tag_line};
use super::read::read_whole;
use crate::oci::{valid_repository, valid_tag};

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
            .join(host.as_str())
            .join(repo)
            .join("_tags")
            .join(tag))
    }

    /// The known mappings of a tag (one per media type).
    pub(crate) async fn tag(&self, host: &HostKey, repo: &str, tag: &str) -> Vec<TagEntry> {
        let Ok(path) = self.tag_path(host, repo, tag) else {
            return Vec::new();
        };
        match read_whole(&path).await.map(String::from_utf8) {
            Ok(Ok(text)) => text.lines().filter_map(parse_tag_line).collect(),
            _ => Vec::new(),
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
