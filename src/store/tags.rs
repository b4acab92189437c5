//! The tag map: which manifest a registry's `repository:tag` pointed at, per media type, and
//! when hoard learned it. One small file per tag, rewritten whole; each is an entry of the index
//! ([`Key::Tag`]) like a blob or a manifest: counted in `max_size`, marked used when read, and
//! evicted least recently used first.

use bytes::Bytes;

use super::Store;
use super::error::{StoreError, io_error};
use super::key::{HostKey, Key};
use super::layout::{TagEntry, format_tag_line, parse_tag_line};
use super::read::read_whole;
use crate::oci::{valid_repository, valid_tag};

/// The lines of a tag record; `None` if it is not text.
fn parse_tag_file(data: &[u8]) -> Option<Vec<TagEntry>> {
    let text = std::str::from_utf8(data).ok()?;
    Some(text.lines().filter_map(parse_tag_line).collect())
}

impl Store {
    fn tag_key(&self, host: &HostKey, repo: &str, tag: &str) -> Result<Key, StoreError> {
        // Checked again here so no caller can build a path from an unchecked name.
        if !valid_repository(repo) || !valid_tag(tag) {
            return Err(StoreError::BadKey(format!("{repo}:{tag}")));
        }
        Ok(Key::tag(host.as_str(), repo, tag))
    }

    /// The known mappings of a tag (one per media type); marks the tag record used. A record
    /// the index does not hold (yet: one written behind the store's back shows up at the next
    /// reconcile) is not known.
    pub(crate) async fn tag(&self, host: &HostKey, repo: &str, tag: &str) -> Vec<TagEntry> {
        let Ok(key) = self.tag_key(host, repo, tag) else {
            return Vec::new();
        };
        let text = match self.record_in_memory(&key) {
            Some(text) => text,
            None => {
                let Some(pin) = self.pin(&key) else {
                    return Vec::new();
                };
                let Ok(read) = read_whole(&self.path(&key)).await else {
                    self.forget(&key);
                    return Vec::new();
                };
                let text = Bytes::from(read.data);
                self.remember(&key, pin.id(), &text, Some(read.inode));
                text
            }
        };
        self.entries(&key, &text)
    }

    /// The known mappings of a tag, from memory alone (`cache.memory`), marked used; `None`
    /// when memory holds no copy of its record (or its file changed since).
    pub(crate) fn tag_in_memory(
        &self,
        host: &HostKey,
        repo: &str,
        tag: &str,
    ) -> Option<Vec<TagEntry>> {
        let key = self.tag_key(host, repo, tag).ok()?;
        let text = self.record_in_memory(&key)?;
        Some(self.entries(&key, &text))
    }

    /// The mappings of a tag record's bytes; a record that is not text is forgotten.
    fn entries(&self, key: &Key, text: &[u8]) -> Vec<TagEntry> {
        parse_tag_file(text).unwrap_or_else(|| {
            self.forget(key);
            Vec::new()
        })
    }

    /// The lines of a tag record's file; `None` if it cannot be read.
    async fn read_tag_file(&self, key: &Key) -> Option<Vec<TagEntry>> {
        parse_tag_file(&read_whole(&self.path(key)).await.ok()?.data)
    }

    /// Records a mapping, replacing an earlier one of the same media type. The record's bytes
    /// are reserved first, evicting the least recently used entries if the limit needs it.
    pub(crate) async fn put_tag(
        &self,
        host: &HostKey,
        repo: &str,
        tag: &str,
        entry: TagEntry,
    ) -> Result<(), StoreError> {
        let key = self.tag_key(host, repo, tag)?;
        if entry.media_type.contains(char::is_whitespace) {
            return Err(StoreError::BadKey(entry.media_type));
        }
        // From the file, known to the index or not (yet): no line of another media type is lost.
        let mut entries = self.read_tag_file(&key).await.unwrap_or_default();
        entries.retain(|e| e.media_type != entry.media_type);
        entries.push(entry);
        let text: String = entries.iter().map(format_tag_line).collect();
        let size = text.len() as u64;
        let reservation = self.reserve(size).await?;
        self.write_atomically(&self.path(&key), text.into_bytes())
            .await?;
        self.admit(key, size, reservation);
        Ok(())
    }

    /// Forgets a tag altogether (its upstream mapping changed through hoard, so the next pull
    /// must ask the upstream).
    pub(crate) async fn drop_tag(
        &self,
        host: &HostKey,
        repo: &str,
        tag: &str,
    ) -> Result<(), StoreError> {
        let key = self.tag_key(host, repo, tag)?;
        let path = self.path(&key);
        self.forget(&key);
        match tokio::fs::remove_file(&path).await {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                Err(io_error("remove", &path)(err))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
#[path = "tags_tests.rs"]
mod tests;
