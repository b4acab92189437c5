//! The last step of `hoard cache import`, once every entry of the tar is checked: each entry
//! renamed into the cache folder (manifests with their media-type line), its `imported` origins
//! recorded, then the tags written, fetched now. Files already there stay as they are.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use crate::oci::Digest;
use crate::ops::disk::{CacheDir, Kind};
use crate::ops::imageref::ImageRef;
use crate::ops::{OpsError, io_error};
use crate::store::{Key, Origin, TagEntry, add_origin, format_tag_line, write_file_atomically};

/// What the tar holds once every blob is staged and checked.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// Manifests and their media types.
    pub manifests: BTreeMap<Digest, String>,
    /// Configs and layers.
    pub blobs: BTreeSet<Digest>,
    /// Where each entry came from: the images' registries and repositories.
    pub origins: HashMap<Key, BTreeSet<(String, String)>>,
    /// Each image: its reference, its top manifest and what that is.
    pub images: Vec<(ImageRef, TagEntry, usize)>,
}

/// What the commit added.
#[derive(Debug, Default)]
pub(crate) struct Added {
    pub blobs: usize,
    pub manifests: usize,
    pub bytes: u64,
    pub present: usize,
}

/// Moves the checked entries into place (manifests with their media-type line), records their
/// imported origins, then writes the tags, fetched now.
pub(crate) fn commit(dir: &CacheDir, staging: &Path, plan: &Plan) -> Result<Added, OpsError> {
    let root = dir.root();
    let mut added = Added::default();
    let mut folders = BTreeSet::new();
    for (digest, media_type) in &plan.manifests {
        let dest = dir.path_of(Kind::Manifest, digest);
        if dest.is_file() {
            added.present += 1;
            continue;
        }
        let source = staging.join(digest.hex());
        let bytes = std::fs::read(&source).map_err(io_error("read", &source))?;
        let mut data = format!("{media_type}\n").into_bytes();
        data.extend_from_slice(&bytes);
        put(staging, &dest, &data)?;
        added.manifests += 1;
        added.bytes += bytes.len() as u64;
    }
    for digest in &plan.blobs {
        let dest = dir.path_of(Kind::Blob, digest);
        if dest.is_file() {
            added.present += 1;
            continue;
        }
        let source = staging.join(digest.hex());
        let size = std::fs::metadata(&source)
            .map_err(io_error("read", &source))?
            .len();
        rename_into(&source, &dest, &mut folders)?;
        added.blobs += 1;
        added.bytes += size;
    }
    for (key, origins) in &plan.origins {
        for (host, repository) in origins {
            let origin = Origin {
                host: host.clone(),
                repository: repository.clone(),
                imported: true,
            };
            add_origin(root, key, &origin)
                .map_err(|e| io_error("record the origin in", root)(std::io::Error::other(e)))?;
        }
    }
    for (image, entry, _) in &plan.images {
        let Some(tag) = &image.tag else {
            continue;
        };
        let dest = root
            .join("tags")
            .join(&image.registry)
            .join(&image.repository)
            .join("_tags")
            .join(tag);
        put(staging, &dest, format_tag_line(entry).as_bytes())?;
    }
    for folder in &folders {
        File::open(folder)
            .and_then(|f| f.sync_all())
            .map_err(io_error("sync", folder))?;
    }
    Ok(added)
}

/// Writes `data` to `dest` through a synced file in `staging` and a rename.
fn put(staging: &Path, dest: &Path, data: &[u8]) -> Result<(), OpsError> {
    write_file_atomically(staging, dest, data)
        .map_err(|e| io_error("write", dest)(std::io::Error::other(e)))
}

/// Renames `source` to `dest`, making `dest`'s folder; the folder is synced at the end.
fn rename_into(
    source: &Path,
    dest: &Path,
    folders: &mut BTreeSet<PathBuf>,
) -> Result<(), OpsError> {
    let folder = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(folder).map_err(io_error("create", folder))?;
    std::fs::rename(source, dest).map_err(io_error("rename into", dest))?;
    folders.insert(folder.to_owned());
    Ok(())
}
