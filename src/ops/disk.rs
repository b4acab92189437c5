//! The cache folder as the operator commands see it: entries by digest and tag files, with their
//! sizes and modification times (hoard sets an entry's mtime when it serves it).
//!
//! The layout is the store's (see [`crate::store`]). This module reads it without following
//! links, skips names that do not parse (they are not entries), and deletes only whole files,
//! after checking that the file is still the one it looked at.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::oci::{Digest, valid_repository, valid_tag};
use crate::ops::imageref::registry_key;
use crate::ops::manifest::Manifest;
use crate::ops::{OpsError, io_error};
use crate::store::{MAX_MANIFEST_SIZE, split_manifest_file};

/// Manifest files larger than this are not read: the largest manifest hoard stores plus its
/// media-type line.
const MAX_MANIFEST_FILE: u64 = MAX_MANIFEST_SIZE as u64 + 1024;

/// Tag files larger than this are not read (a line is about 200 bytes; one per media type).
const MAX_TAG_FILE: u64 = 64 << 10;

/// The two kinds of content-addressed entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Kind {
    Blob,
    Manifest,
}

impl Kind {
    /// The word used in reports.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::Blob => "blob",
            Kind::Manifest => "manifest",
        }
    }

    fn folder(self) -> &'static str {
        match self {
            Kind::Blob => "blobs",
            Kind::Manifest => "manifests",
        }
    }
}

/// A blob or manifest file.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub kind: Kind,
    pub digest: Digest,
    pub path: PathBuf,
    /// What the file was when it was listed (size, mtime, identity).
    pub meta: fs::Metadata,
}

impl Entry {
    /// Bytes on disk.
    pub(crate) fn size(&self) -> u64 {
        self.meta.len()
    }

    /// When hoard last wrote or served it.
    pub(crate) fn modified(&self) -> SystemTime {
        modified(&self.meta)
    }
}

/// One line of a tag file.
pub(crate) type TagLine = crate::store::TagEntry;

/// A tag file: which manifests `registry/repository:tag` pointed at, one per media type.
#[derive(Debug, Clone)]
pub(crate) struct TagFile {
    pub registry: String,
    pub repository: String,
    pub tag: String,
    pub path: PathBuf,
    pub meta: fs::Metadata,
    pub lines: Vec<TagLine>,
}

impl TagFile {
    /// `registry/repository:tag`
    pub(crate) fn name(&self) -> String {
        format!("{}/{}:{}", self.registry, self.repository, self.tag)
    }

    /// Whether any line points at `digest`.
    pub(crate) fn points_at(&self, digest: &Digest) -> bool {
        self.lines.iter().any(|l| l.digest == *digest)
    }
}

/// A manifest file of a cache directory, parsed (the store's own, served one is
/// `store::StoredManifest`).
#[derive(Debug)]
pub struct ManifestFile {
    pub media_type: String,
    /// The parsed body; empty if it is not JSON of a known shape.
    pub doc: Manifest,
}

impl ManifestFile {
    /// Whether it is an index or manifest list.
    pub(crate) fn is_index(&self) -> bool {
        self.doc.is_index(&self.media_type)
    }
}

/// What [`remove_if_unchanged`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Removal {
    Removed,
    /// The file was replaced or (with [`Guard::Unchanged`]) used since it was looked at.
    Changed,
    /// Someone else removed it first.
    Gone,
}

/// How sure [`remove_if_unchanged`] must be that a file is the one that was looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Guard {
    /// Same file (device and inode): hoard has not replaced it.
    SameFile,
    /// Same file, size and mtime: hoard has not replaced it nor served it since.
    Unchanged,
}

/// A cache folder.
#[derive(Debug, Clone)]
pub struct CacheDir {
    root: PathBuf,
}

impl CacheDir {
    /// Opens an existing cache folder (it is never created here).
    pub fn open(root: &Path) -> Result<CacheDir, OpsError> {
        let meta = fs::metadata(root).map_err(io_error("open the cache folder", root))?;
        if !meta.is_dir() {
            return Err(io_error("open the cache folder", root)(io::Error::other(
                "not a folder",
            )));
        }
        Ok(CacheDir {
            root: root.to_owned(),
        })
    }

    /// The folder.
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/<blobs|manifests>/<algorithm>/<first two hex>/<hex>`
    pub(crate) fn path_of(&self, kind: Kind, digest: &Digest) -> PathBuf {
        crate::store::content_path(&self.root.join(kind.folder()), digest)
    }

    /// The entry of `digest`, if stored.
    pub(crate) fn entry(&self, kind: Kind, digest: &Digest) -> Option<Entry> {
        let path = self.path_of(kind, digest);
        let meta = fs::symlink_metadata(&path).ok().filter(|m| m.is_file())?;
        Some(Entry {
            kind,
            digest: digest.clone(),
            path,
            meta,
        })
    }

    /// Every entry of one kind.
    pub(crate) fn entries(&self, kind: Kind) -> Result<Vec<Entry>, OpsError> {
        let mut out = Vec::new();
        for (algorithm, algorithm_dir, _) in children(&self.root.join(kind.folder()), true)? {
            for (prefix, prefix_dir, _) in children(&algorithm_dir, true)? {
                for (name, path, meta) in children(&prefix_dir, false)? {
                    let Some(digest) = Digest::parse(&format!("{algorithm}:{name}")) else {
                        continue;
                    };
                    if digest.hex().get(..2) == Some(prefix.as_str()) {
                        out.push(Entry {
                            kind,
                            digest,
                            path,
                            meta,
                        });
                    }
                }
            }
        }
        Ok(out)
    }

    /// Every blob and manifest.
    pub(crate) fn all_entries(&self) -> Result<Vec<Entry>, OpsError> {
        let mut entries = self.entries(Kind::Blob)?;
        entries.extend(self.entries(Kind::Manifest)?);
        Ok(entries)
    }

    /// Reads a stored manifest; `None` if it is missing or has no media-type line.
    pub fn manifest(&self, digest: &Digest) -> Option<ManifestFile> {
        let (media_type, bytes) = self.manifest_bytes(digest)?;
        Some(ManifestFile {
            media_type,
            doc: Manifest::parse(&bytes).unwrap_or_default(),
        })
    }

    /// A stored manifest's media type and bytes; `None` if it is missing or has no media-type
    /// line.
    pub(crate) fn manifest_bytes(&self, digest: &Digest) -> Option<(String, Vec<u8>)> {
        let mut data = read_bounded(&self.path_of(Kind::Manifest, digest), MAX_MANIFEST_FILE)?;
        let (media_type, start) = split_manifest_file(&data)?;
        let media_type = media_type.to_owned();
        Some((media_type, data.split_off(start)))
    }

    /// The lines of the tag file of `registry/repository:tag`; none when it is not stored.
    pub(crate) fn tag_lines(&self, registry: &str, repository: &str, tag: &str) -> Vec<TagLine> {
        let host_ok = registry_key(registry).as_deref() == Some(registry);
        if !host_ok || !valid_repository(repository) || !valid_tag(tag) {
            return Vec::new();
        }
        let path = self.root.join("tags").join(registry).join(repository);
        let Some(text) = read_bounded(&path.join("_tags").join(tag), MAX_TAG_FILE) else {
            return Vec::new();
        };
        String::from_utf8_lossy(&text)
            .lines()
            .filter_map(crate::store::parse_tag_line)
            .collect()
    }

    /// Every tag file, sorted by name.
    pub(crate) fn tags(&self) -> Result<Vec<TagFile>, OpsError> {
        let mut out = Vec::new();
        for (host, host_dir, _) in children(&self.root.join("tags"), true)? {
            if registry_key(&host).as_deref() == Some(host.as_str()) {
                collect_tags(&host, &host_dir, &mut Vec::new(), &mut out)?;
            }
        }
        out.sort_by_key(TagFile::name);
        Ok(out)
    }
}

/// Walks `<repo path>/_tags/<tag>` below a host folder. `repo` holds the components so far.
fn collect_tags(
    registry: &str,
    dir: &Path,
    repo: &mut Vec<String>,
    out: &mut Vec<TagFile>,
) -> Result<(), OpsError> {
    // A repository name has at most 255 characters, so at most 128 components.
    if repo.len() > 128 {
        return Ok(());
    }
    for (name, path, _) in children(dir, true)? {
        if name != "_tags" {
            repo.push(name);
            collect_tags(registry, &path, repo, out)?;
            repo.pop();
            continue;
        }
        let repository = repo.join("/");
        if !valid_repository(&repository) {
            continue;
        }
        for (tag, path, meta) in children(&path, false)? {
            if !valid_tag(&tag) {
                continue;
            }
            let Some(text) = read_bounded(&path, MAX_TAG_FILE) else {
                continue;
            };
            let lines = String::from_utf8_lossy(&text)
                .lines()
                .filter_map(crate::store::parse_tag_line)
                .collect();
            out.push(TagFile {
                registry: registry.to_owned(),
                repository: repository.clone(),
                tag,
                path,
                meta,
                lines,
            });
        }
    }
    Ok(())
}

/// The folders (`dirs`) or plain files in `dir` with UTF-8 names, as (name, path, metadata of
/// the name itself, links not followed). A missing folder has none; entries that vanish while
/// listing are left out.
fn children(dir: &Path, dirs: bool) -> Result<Vec<(String, PathBuf, fs::Metadata)>, OpsError> {
    let listing = match fs::read_dir(dir) {
        Ok(listing) => listing,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error("list", dir)(e)),
    };
    let mut out = Vec::new();
    for item in listing {
        let item = item.map_err(io_error("list", dir))?;
        let Ok(meta) = item.metadata() else {
            continue;
        };
        let wanted = if dirs { meta.is_dir() } else { meta.is_file() };
        if let (true, Ok(name)) = (wanted, item.file_name().into_string()) {
            out.push((name, item.path(), meta));
        }
    }
    Ok(out)
}

/// Reads a plain file (not a link) of at most `limit` bytes.
fn read_bounded(path: &Path, limit: u64) -> Option<Vec<u8>> {
    let meta = fs::symlink_metadata(path).ok()?;
    if !meta.is_file() || meta.len() > limit {
        return None;
    }
    fs::read(path).ok()
}

/// The mtime, or the epoch where the file system keeps none.
pub(crate) fn modified(meta: &fs::Metadata) -> SystemTime {
    meta.modified().unwrap_or(UNIX_EPOCH)
}

/// Deletes `path` if it is still the file `seen` describes (see [`Guard`]).
pub(crate) fn remove_if_unchanged(
    path: &Path,
    seen: &fs::Metadata,
    guard: Guard,
) -> Result<Removal, OpsError> {
    let now = match fs::symlink_metadata(path) {
        Ok(now) => now,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Removal::Gone),
        Err(e) => return Err(io_error("look at", path)(e)),
    };
    let same_file = now.dev() == seen.dev() && now.ino() == seen.ino();
    let unchanged = now.len() == seen.len() && modified(&now) == modified(seen);
    if !same_file || (guard == Guard::Unchanged && !unchanged) {
        return Ok(Removal::Changed);
    }
    match fs::remove_file(path) {
        Ok(()) => {
            remove_origins_of(path)?;
            Ok(Removal::Removed)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Removal::Gone),
        Err(e) => Err(io_error("remove", path)(e)),
    }
}

/// Removes the origins file of a removed blob or manifest, `<root>/origins/<kind>/<alg>/<xx>/<hex>`
/// beside `<root>/<kind>/<alg>/<xx>/<hex>`, so that no provenance outlives its entry. Any other
/// path (a tag file) has none.
fn remove_origins_of(entry: &Path) -> Result<(), OpsError> {
    let mut parts = entry.iter().rev();
    let (Some(hex), Some(prefix), Some(alg), Some(kind)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Ok(());
    };
    if kind != "blobs" && kind != "manifests" {
        return Ok(());
    }
    let Some(root) = entry.ancestors().nth(4) else {
        return Ok(());
    };
    let origins = root
        .join("origins")
        .join(kind)
        .join(alg)
        .join(prefix)
        .join(hex);
    match fs::remove_file(&origins) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_error("remove", &origins)(e)),
        _ => Ok(()),
    }
}
