//! Where the store's files are and what they hold: the folder layout, claiming the folder at
//! start, atomic writes, and the line and file formats that `hoard cache` reads too.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::error::{StoreError, io_error};
use super::key::Key;
use crate::oci::{Digest, valid_repository};

/// The temp folder of fills in progress, under the store's root.
pub const TMP_DIR: &str = "hoard-tmp";

/// The file that marks a folder as hoard's cache (top level) or temp folder (in [`TMP_DIR`]).
pub(crate) const CACHE_MARKER: &str = ".hoard-cache";
/// The marker in [`TMP_DIR`]: hoard removes files there only when it is present.
pub const TMP_MARKER: &str = ".hoard-tmp";

/// Where a running `hoard serve` notes its listeners' addresses, for `hoard cache stats` and
/// `hoard warm` ([`crate::ops::running`]); left behind by a hoard that was killed.
pub const ADDRESSES_FILE: &str = ".hoard-addresses";

/// What may sit at the top of the store's root: hoard's own names, the `tmp/` of stores made
/// before [`TMP_DIR`], and a file system's `lost+found` (the root may be a mount point).
const OWN_NAMES: [&str; 9] = [
    "blobs",
    "manifests",
    "tags",
    "origins",
    TMP_DIR,
    CACHE_MARKER,
    ADDRESSES_FILE,
    "tmp",
    "lost+found",
];

/// Makes sure `root` is hoard's (or empty, then marks it), empties its temp folders of the
/// leftovers of unfinished writes, and makes its folders. Returns the temp folder.
pub(super) fn claim_root(root: &Path) -> Result<PathBuf, StoreError> {
    let not_ours = |why: String| StoreError::NotOurs {
        path: root.to_owned(),
        why,
    };
    std::fs::create_dir_all(root).map_err(io_error("create", root))?;
    let canonical = root.canonicalize().map_err(io_error("resolve", root))?;
    if canonical.parent().is_none() {
        return Err(not_ours("it is the file system's root".into()));
    }
    let entries = std::fs::read_dir(root).map_err(io_error("list", root))?;
    for entry in entries {
        let name = entry.map_err(io_error("list", root))?.file_name();
        if !OWN_NAMES.iter().any(|own| name == *own) {
            return Err(not_ours(format!(
                "it holds {name:?}, which hoard did not make"
            )));
        }
    }
    let marker = root.join(CACHE_MARKER);
    if !marker.exists() {
        std::fs::write(&marker, b"hoard's cache folder\n").map_err(io_error("mark", &marker))?;
    }
    // Stores made before hoard-tmp/ kept fills in tmp/: those files are leftovers too.
    let legacy = root.join("tmp");
    if legacy.is_dir() {
        remove_files_in(&legacy, None)?;
        let _ = std::fs::remove_dir(&legacy);
    }
    let tmp = root.join(TMP_DIR);
    std::fs::create_dir_all(&tmp).map_err(io_error("create", &tmp))?;
    let tmp_marker = tmp.join(TMP_MARKER);
    if !tmp_marker.exists() {
        let holds_files = std::fs::read_dir(&tmp)
            .map_err(io_error("list", &tmp))?
            .next()
            .is_some();
        if holds_files {
            return Err(not_ours(format!(
                "{TMP_DIR}/ holds files but not hoard's marker"
            )));
        }
        std::fs::write(&tmp_marker, b"").map_err(io_error("mark", &tmp_marker))?;
    }
    // Whatever is in the temp folder was being written when hoard stopped: never verified.
    remove_files_in(&tmp, Some(TMP_MARKER))?;
    for dir in [
        root.join("blobs"),
        root.join("manifests"),
        root.join("tags"),
    ] {
        std::fs::create_dir_all(&dir).map_err(io_error("create", &dir))?;
    }
    // Origins that were being rewritten when hoard stopped: leftovers, like unfinished fills.
    let origins_tmp = origins_tmp(root);
    if origins_tmp.is_dir() {
        remove_files_in(&origins_tmp, None)?;
    }
    Ok(tmp)
}

/// Removes the regular files directly in `dir` (not `keep`); folders and links stay.
fn remove_files_in(dir: &Path, keep: Option<&str>) -> Result<(), StoreError> {
    for entry in std::fs::read_dir(dir).map_err(io_error("list", dir))? {
        let entry = entry.map_err(io_error("list", dir))?;
        if keep.is_some_and(|keep| entry.file_name() == keep) {
            continue;
        }
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            let path = entry.path();
            std::fs::remove_file(&path).map_err(io_error("remove", &path))?;
        }
    }
    Ok(())
}

/// `dir/<algorithm>/<first two hex>/<hex>`
pub fn content_path(dir: &Path, digest: &Digest) -> PathBuf {
    let hex = digest.hex();
    dir.join(digest.algorithm().as_str())
        .join(&hex[..2])
        .join(hex)
}

/// Path of an entry's file in the store at `root`.
pub(super) fn entry_path(root: &Path, key: &Key) -> PathBuf {
    match key {
        Key::Blob(d) => content_path(&root.join("blobs"), d),
        Key::Manifest(d) => content_path(&root.join("manifests"), d),
        Key::Tag(path) => root.join("tags").join(&**path),
    }
}

/// Path of the file listing where an entry came from, in the store at `root`; tag records have
/// none.
pub(super) fn origin_path(root: &Path, key: &Key) -> Option<PathBuf> {
    let origins = root.join("origins");
    match key {
        Key::Blob(d) => Some(content_path(&origins.join("blobs"), d)),
        Key::Manifest(d) => Some(content_path(&origins.join("manifests"), d)),
        Key::Tag(_) => None,
    }
}

/// The temp folder of origins files being rewritten. Not the store's: that is for content, and a
/// test (or an operator) that finds it empty after a fill should not see an origins file there.
pub(super) fn origins_tmp(root: &Path) -> PathBuf {
    root.join("origins").join("tmp")
}

/// Writes `data` to `dest` through a synced temp file in `tmp`, then syncs `dest`'s folder.
pub(crate) fn write_file_atomically(
    tmp: &Path,
    dest: &Path,
    data: &[u8],
) -> Result<(), StoreError> {
    use std::io::Write;
    let mut temp = tempfile::Builder::new()
        .prefix("put-")
        .tempfile_in(tmp)
        .map_err(io_error("create temp file in", tmp))?;
    temp.write_all(data)
        .and_then(|()| temp.as_file().sync_all())
        .map_err(io_error("write", temp.path()))?;
    let parent = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io_error("create", parent))?;
    temp.into_temp_path()
        .persist(dest)
        .map_err(|e| io_error("rename into", dest)(e.error))?;
    sync_dir(parent)
}

pub(super) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error("sync", dir))
}

/// A manifest file: `"<media type>\n"` then the manifest bytes.
pub(super) fn manifest_file(media_type: &str, bytes: &[u8]) -> Result<Vec<u8>, StoreError> {
    if media_type.contains('\n') {
        return Err(StoreError::BadKey(media_type.to_owned()));
    }
    let mut data = Vec::with_capacity(media_type.len() + 1 + bytes.len());
    data.extend_from_slice(media_type.as_bytes());
    data.push(b'\n');
    data.extend_from_slice(bytes);
    Ok(data)
}

/// Splits a manifest file into its media type and the offset where the manifest starts. `None`
/// without a media-type line.
pub(crate) fn split_manifest_file(data: &[u8]) -> Option<(&str, usize)> {
    let newline = data.iter().position(|b| *b == b'\n')?;
    let media_type = std::str::from_utf8(&data[..newline]).ok()?;
    Some((media_type, newline + 1))
}

/// One tag → digest mapping, as learned from the upstream at `fetched`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagEntry {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    pub fetched: SystemTime,
}

/// Parses one line of a tag file: `<fetched unix ms> <digest> <size> <media type>`.
pub fn parse_tag_line(line: &str) -> Option<TagEntry> {
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

/// One line of a tag file, newline included.
pub(crate) fn format_tag_line(entry: &TagEntry) -> String {
    let millis = entry
        .fetched
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!(
        "{millis} {} {} {}\n",
        entry.digest, entry.size, entry.media_type
    )
}

/// Where an entry came from: the registry `host` had it in `repository`, as the registry itself
/// said, or as an archive said that `hoard cache import` took it from (`imported`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub host: String,
    pub repository: String,
    pub imported: bool,
}

/// The word that ends the line of an imported origin.
const IMPORTED: &str = "imported";

impl Origin {
    /// The line of an origins file: `<host> <repository>`, then ` imported` for an import.
    pub fn line(&self) -> String {
        let (host, repo) = (&self.host, &self.repository);
        match self.imported {
            true => format!("{host} {repo} {IMPORTED}"),
            false => format!("{host} {repo}"),
        }
    }
}

/// One line of an origins file, `<host> <repository>[ imported]`: a host key's characters (name
/// or address, `:port`) and a valid repository name. Anything else is `None`, and ignored.
pub fn parse_origin_line(line: &str) -> Option<Origin> {
    let (host, rest) = line.split_once(' ')?;
    let (repo, imported) = match rest.split_once(' ') {
        Some((repo, IMPORTED)) => (repo, true),
        Some(_) => return None,
        None => (rest, false),
    };
    let host_ok = !host.is_empty()
        && host.len() <= 300
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
    (host_ok && valid_repository(repo)).then(|| Origin {
        host: host.to_owned(),
        repository: repo.to_owned(),
        imported,
    })
}

#[cfg(test)]
mod tests {
    use super::super::Store;
    use super::super::test_util::limits;
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
        assert_eq!(parse_tag_line("1 sha256:../../x 1 a/b"), None);
    }

    #[test]
    fn manifest_files_round_trip_and_need_a_media_type_line() {
        let data = manifest_file("t/x", b"{}\n").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(split_manifest_file(&data), Some(("t/x", 4)));
        assert_eq!(&data[4..], b"{}\n");
        assert!(manifest_file("a\nb", b"{}").is_err());
        assert_eq!(split_manifest_file(b"no line"), None);
    }

    #[test]
    fn a_folder_of_other_files_or_the_root_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let home = dir.path().join("home");
        std::fs::create_dir_all(home.join("tmp")).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(home.join("notes.txt"), b"mine").unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(home.join("tmp/work"), b"mine too").unwrap_or_else(|e| panic!("{e}"));
        let refused = Store::open(&home, limits(1000))
            .err()
            .map(|e| e.to_string());
        assert!(
            refused.as_deref().is_some_and(|e| e.contains("notes.txt")),
            "{refused:?}"
        );
        assert!(home.join("tmp/work").exists() && home.join("notes.txt").exists());
        assert!(!home.join(CACHE_MARKER).exists() && !home.join(TMP_DIR).exists());

        let root = Store::open(Path::new("/"), limits(1000))
            .err()
            .map(|e| e.to_string());
        assert!(
            root.as_deref().is_some_and(|e| e.contains("root")),
            "{root:?}"
        );

        // A temp folder without hoard's marker is not emptied either.
        let odd = dir.path().join("odd");
        std::fs::create_dir_all(odd.join(TMP_DIR)).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(odd.join(TMP_DIR).join("x"), b"?").unwrap_or_else(|e| panic!("{e}"));
        assert!(Store::open(&odd, limits(1000)).is_err());
        assert!(odd.join(TMP_DIR).join("x").exists());
    }

    #[test]
    fn a_store_from_before_hoard_tmp_opens_and_its_leftovers_go() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        for folder in ["blobs", "manifests", "tags", "tmp"] {
            std::fs::create_dir_all(dir.path().join(folder)).unwrap_or_else(|e| panic!("{e}"));
        }
        std::fs::write(dir.path().join("tmp/.tmpAbc"), b"half").unwrap_or_else(|e| panic!("{e}"));
        let store = Store::open(dir.path(), limits(1000));
        assert!(store.is_ok(), "{:?}", store.err());
        assert!(!dir.path().join("tmp").exists());
        assert!(dir.path().join(CACHE_MARKER).exists());
        // Opened again: marked now, so it opens as hoard's.
        assert!(Store::open(dir.path(), limits(1000)).is_ok());
    }
}
