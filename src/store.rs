//! The content store on disk: blobs and manifests by digest, and the tag map.
//!
//! Layout under `cache.dir`:
//! ```text
//! blobs/sha256/ab/ab12…        blob bytes, exactly as the registry sent them
//! manifests/sha256/ab/ab12…    "<media type>\n" then the manifest bytes
//! tags/<host>/<repo>/_tags/<tag>  lines "<fetched unix ms> <digest> <size> <media type>"
//! tmp/                         fills in progress; emptied at start
//! ```
//! Every write goes to a temp file in `tmp/`, is fsynced and renamed into place, so a reader
//! sees a whole verified entry or none. Paths are built only from parsed [`Digest`]s, validated
//! repository names and tags, and checked host names.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::io::AsyncWriteExt;

use crate::registry::{Digest, valid_repository, valid_tag};

/// Manifests larger than this are not cached (registries themselves refuse above 4 MiB).
pub const MAX_MANIFEST_SIZE: usize = 4 << 20;

/// Store errors: all internal (disk) problems.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("content does not match digest {0}")]
    DigestMismatch(Digest),
    #[error("{0:?} is not a usable cache key")]
    BadKey(String),
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.to_owned();
    move |source| StoreError::Io {
        action,
        path,
        source,
    }
}

/// The on-disk store.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    tmp: PathBuf,
}

/// A blob found in the store, open for reading.
#[derive(Debug)]
pub struct BlobHit {
    pub file: tokio::fs::File,
    pub len: u64,
}

/// A manifest found in the store.
#[derive(Debug, Clone)]
pub struct StoredManifest {
    pub media_type: String,
    pub bytes: Bytes,
}

/// One tag → digest mapping, as learned from the upstream at `fetched`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagEntry {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    pub fetched: SystemTime,
}

impl TagEntry {
    /// Whether the mapping may still be served without asking the upstream.
    pub fn is_fresh(&self, ttl: Duration) -> bool {
        SystemTime::now()
            .duration_since(self.fetched)
            .is_ok_and(|age| age < ttl)
    }
}

/// A registry host as used in tag paths: a DNS name or IP literal, with a port unless 443.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostKey(String);

impl HostKey {
    /// Builds the key from a CONNECT authority's parts; `None` for anything not a plain host.
    pub fn new(host: &str, port: u16) -> Option<HostKey> {
        let host = host.to_ascii_lowercase();
        let valid = crate::config::is_dns_name(&host) || host.parse::<std::net::IpAddr>().is_ok();
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
    /// Opens (creating if needed) the store at `root` and removes leftovers of unfinished fills.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        let tmp = root.join("tmp");
        for dir in [
            root.join("blobs"),
            root.join("manifests"),
            root.join("tags"),
        ] {
            std::fs::create_dir_all(&dir).map_err(io_error("create", &dir))?;
        }
        // Whatever is in tmp/ was being written when hoard stopped: it was never verified.
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io_error("clean", &tmp))?;
        }
        std::fs::create_dir_all(&tmp).map_err(io_error("create", &tmp))?;
        Ok(Store {
            root: root.to_owned(),
            tmp,
        })
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        content_path(&self.root.join("blobs"), digest)
    }

    fn manifest_path(&self, digest: &Digest) -> PathBuf {
        content_path(&self.root.join("manifests"), digest)
    }

    fn tag_path(&self, host: &HostKey, repo: &str, tag: &str) -> Result<PathBuf, StoreError> {
        // Checked again here so no caller can build a path from an unchecked name.
        if !valid_repository(repo) || !valid_tag(tag) {
            return Err(StoreError::BadKey(format!("{repo}:{tag}")));
        }
        Ok(self
            .root
            .join("tags")
            .join(&host.0)
            .join(repo)
            .join("_tags")
            .join(tag))
    }

    /// Opens a stored blob.
    pub async fn blob(&self, digest: &Digest) -> Option<BlobHit> {
        let file = tokio::fs::File::open(self.blob_path(digest)).await.ok()?;
        let len = file.metadata().await.ok()?.len();
        Some(BlobHit { file, len })
    }

    /// Starts writing a blob; nothing is visible until [`BlobWriter::commit`].
    pub async fn begin_blob(&self, digest: &Digest) -> Result<BlobWriter, StoreError> {
        let temp = tempfile::Builder::new()
            .prefix("fill-")
            .tempfile_in(&self.tmp)
            .map_err(io_error("create temp file in", &self.tmp))?;
        let (file, path) = temp.into_parts();
        Ok(BlobWriter {
            file: tokio::fs::File::from_std(file),
            temp: path,
            dest: self.blob_path(digest),
            written: 0,
        })
    }

    /// Reads a stored manifest.
    pub async fn manifest(&self, digest: &Digest) -> Option<StoredManifest> {
        let data = tokio::fs::read(self.manifest_path(digest)).await.ok()?;
        let newline = data.iter().position(|b| *b == b'\n')?;
        let media_type = std::str::from_utf8(&data[..newline]).ok()?.to_owned();
        let mut bytes = Bytes::from(data);
        Some(StoredManifest {
            media_type,
            bytes: bytes.split_off(newline + 1),
        })
    }

    /// Stores a manifest after checking it against `digest`.
    pub async fn put_manifest(
        &self,
        digest: &Digest,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        let mut hasher = digest.hasher();
        hasher.update(bytes);
        if !hasher.matches(digest) {
            return Err(StoreError::DigestMismatch(digest.clone()));
        }
        if media_type.contains('\n') {
            return Err(StoreError::BadKey(media_type.to_owned()));
        }
        let mut data = Vec::with_capacity(media_type.len() + 1 + bytes.len());
        data.extend_from_slice(media_type.as_bytes());
        data.push(b'\n');
        data.extend_from_slice(bytes);
        self.write_atomically(&self.manifest_path(digest), data)
            .await
    }

    /// The known mappings of a tag (one per media type).
    pub async fn tag(&self, host: &HostKey, repo: &str, tag: &str) -> Vec<TagEntry> {
        let Ok(path) = self.tag_path(host, repo, tag) else {
            return Vec::new();
        };
        match tokio::fs::read_to_string(&path).await {
            Ok(text) => text.lines().filter_map(parse_tag_line).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Records a mapping, replacing an earlier one of the same media type.
    pub async fn put_tag(
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

    async fn write_atomically(&self, dest: &Path, data: Vec<u8>) -> Result<(), StoreError> {
        let tmp = self.tmp.clone();
        let dest = dest.to_owned();
        let task = tokio::task::spawn_blocking(move || -> Result<(), StoreError> {
            use std::io::Write;
            let mut temp = tempfile::Builder::new()
                .prefix("put-")
                .tempfile_in(&tmp)
                .map_err(io_error("create temp file in", &tmp))?;
            temp.write_all(&data)
                .and_then(|()| temp.as_file().sync_all())
                .map_err(io_error("write", temp.path()))?;
            publish(temp.into_temp_path(), &dest)
        });
        task.await.map_err(|e| StoreError::Io {
            action: "finish write of",
            path: PathBuf::new(),
            source: std::io::Error::other(e),
        })?
    }
}

/// `dir/<algorithm>/<first two hex>/<hex>`
fn content_path(dir: &Path, digest: &Digest) -> PathBuf {
    let hex = digest.hex();
    dir.join(digest.algorithm().as_str())
        .join(&hex[..2])
        .join(hex)
}

/// Moves a synced temp file to `dest`, creating its folder and syncing the folder.
fn publish(temp: tempfile::TempPath, dest: &Path) -> Result<(), StoreError> {
    let parent = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io_error("create", parent))?;
    temp.persist(dest)
        .map_err(|e| io_error("rename into", dest)(e.error))?;
    std::fs::File::open(parent)
        .and_then(|dir| dir.sync_all())
        .map_err(io_error("sync", parent))
}

fn parse_tag_line(line: &str) -> Option<TagEntry> {
    let mut parts = line.split(' ');
    let fetched: u64 = parts.next()?.parse().ok()?;
    let digest = Digest::parse(parts.next()?)?;
    let size: u64 = parts.next()?.parse().ok()?;
    let media_type = parts.next()?.to_owned();
    Some(TagEntry {
        digest,
        size,
        media_type,
        fetched: UNIX_EPOCH + Duration::from_millis(fetched),
    })
}

fn format_tag_line(entry: &TagEntry) -> String {
    let millis = entry
        .fetched
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!(
        "{millis} {} {} {}\n",
        entry.digest, entry.size, entry.media_type
    )
}

/// A blob being written. Dropping it without [`commit`](BlobWriter::commit) deletes the temp file.
#[derive(Debug)]
pub struct BlobWriter {
    file: tokio::fs::File,
    temp: tempfile::TempPath,
    dest: PathBuf,
    written: u64,
}

impl BlobWriter {
    /// Appends bytes.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        self.file
            .write_all(bytes)
            .await
            .map_err(io_error("write", &self.temp))?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Syncs and renames the blob into the store. The caller has verified the digest.
    pub async fn commit(mut self) -> Result<(), StoreError> {
        self.file
            .flush()
            .await
            .map_err(io_error("write", &self.temp))?;
        let file = self.file.into_std().await;
        let temp = self.temp;
        let dest = self.dest;
        let task = tokio::task::spawn_blocking(move || {
            file.sync_all().map_err(io_error("sync", &temp))?;
            publish(temp, &dest)
        });
        task.await.map_err(|e| StoreError::Io {
            action: "finish write of",
            path: PathBuf::new(),
            source: std::io::Error::other(e),
        })?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_lines_round_trip() {
        let entry = TagEntry {
            digest: Digest::sha256_of(b"x"),
            size: 42,
            media_type: "application/vnd.oci.image.index.v1+json".into(),
            fetched: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
        };
        assert_eq!(
            parse_tag_line(format_tag_line(&entry).trim_end()),
            Some(entry)
        );
        assert_eq!(parse_tag_line("garbage"), None);
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
