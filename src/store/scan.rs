//! The store's files as found on disk: the scan of the folder (blobs, manifests, tag records),
//! and the index it builds at start.
//! The reconcile that brings the index in line with the disk while hoard runs is `reconcile.rs`.

use std::fs::DirEntry;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use super::index::Index;
use super::key::Key;
use crate::oci::{Algorithm, Digest, valid_repository, valid_tag};

/// Folders listed at once when scanning. With a cold page cache, a scan waits on one metadata
/// read per entry; 16 in flight let the disk work in parallel (100,000 entries: ~0.8 s cold
/// instead of ~1.9 s one by one, measured by `cargo bench --bench store_startup`).
const SCAN_THREADS: usize = 16;

/// A file of the store found by a scan.
#[derive(Debug)]
pub(crate) struct Found {
    pub key: Key,
    pub size: u64,
    pub modified: SystemTime,
}

/// The index of what is on disk at start: oldest modification time least recently used.
pub(super) fn index_at_start(root: &Path) -> Index {
    let mut found = scan(root);
    found.sort_by_key(|f| f.modified);
    Index::of_files(found.into_iter().map(|f| (f.key, f.size)))
}

/// Lists every entry file under `root` (blobs, manifests and tag records), ignoring anything
/// whose name is not a digest in its right folder or a valid tag in a `_tags` folder. Tag
/// records are sized from their metadata, never read.
pub(crate) fn scan(root: &Path) -> Vec<Found> {
    // The prefix folders (`blobs/sha256/ab`), each listed by one of the scanning threads.
    let mut folders = Vec::new();
    let kinds: [(KeyOf, PathBuf); 2] = [
        (Key::Blob, root.join("blobs")),
        (Key::Manifest, root.join("manifests")),
    ];
    for (kind, dir) in kinds {
        for algorithm in [Algorithm::Sha256, Algorithm::Sha512] {
            let Ok(prefixes) = std::fs::read_dir(dir.join(algorithm.as_str())) else {
                continue;
            };
            for prefix in prefixes.flatten() {
                if let Some(name) = prefix.file_name().to_str() {
                    folders.push((kind, algorithm, name.to_owned(), prefix.path()));
                }
            }
        }
    }
    let next = AtomicUsize::new(0);
    let found = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        // The tag records, meanwhile: far fewer than blobs, one walker is enough.
        scope.spawn(|| {
            let mut mine = Vec::new();
            walk_tags(root, &mut |file| {
                let Ok(meta) = file.entry.metadata() else {
                    return;
                };
                mine.push(Found {
                    key: Key::tag(file.host, file.repo, file.tag),
                    size: meta.len(),
                    modified: meta.modified().unwrap_or(UNIX_EPOCH),
                });
            });
            lock_found(&found).append(&mut mine);
        });
        for _ in 0..SCAN_THREADS.min(folders.len()) {
            scope.spawn(|| {
                let mut mine = Vec::new();
                while let Some((kind, algorithm, prefix, path)) =
                    folders.get(next.fetch_add(1, Ordering::Relaxed))
                {
                    scan_folder(*kind, *algorithm, prefix, path, &mut mine);
                }
                lock_found(&found).append(&mut mine);
            });
        }
    });
    found.into_inner().unwrap_or_else(|e| e.into_inner())
}

/// A tag record's file, as [`walk_tags`] finds it.
pub(super) struct TagFile<'a> {
    pub(super) host: &'a str,
    pub(super) repo: &'a str,
    pub(super) tag: &'a str,
    pub(super) entry: &'a DirEntry,
}

/// Calls `visit` for each tag record under `root/tags`: a plain file named by a valid tag in
/// `<host>/<repository>/_tags/`, the repository a valid name. Links are not followed.
pub(super) fn walk_tags(root: &Path, visit: &mut dyn FnMut(TagFile<'_>)) {
    for host in subfolders(&root.join("tags")) {
        if let Some(name) = host.file_name().to_str() {
            repositories(&host.path(), name, "", visit);
        }
    }
}

/// Walks the folder of repository `repo` (`""` at the registry's top): `_tags` holds its tags,
/// every other folder a deeper repository.
fn repositories(dir: &Path, host: &str, repo: &str, visit: &mut dyn FnMut(TagFile<'_>)) {
    // A repository name has at most 255 characters: nothing deeper is one.
    if repo.len() > 255 {
        return;
    }
    for folder in subfolders(dir) {
        let Some(name) = folder.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if name == "_tags" && valid_repository(repo) {
            tags(&folder, host, repo, visit);
        } else if name != "_tags" {
            let deeper = if repo.is_empty() {
                name
            } else {
                format!("{repo}/{name}")
            };
            repositories(&folder.path(), host, &deeper, visit);
        }
    }
}

fn tags(folder: &DirEntry, host: &str, repo: &str, visit: &mut dyn FnMut(TagFile<'_>)) {
    let Ok(files) = std::fs::read_dir(folder.path()) else {
        return;
    };
    for entry in files.flatten() {
        let name = entry.file_name();
        let Some(tag) = name.to_str().filter(|tag| valid_tag(tag)) else {
            continue;
        };
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            visit(TagFile {
                host,
                repo,
                tag,
                entry: &entry,
            });
        }
    }
}

/// The folders in `dir` (not links to folders).
fn subfolders(dir: &Path) -> impl Iterator<Item = DirEntry> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
}

fn lock_found(found: &Mutex<Vec<Found>>) -> MutexGuard<'_, Vec<Found>> {
    found.lock().unwrap_or_else(|e| e.into_inner())
}

/// Makes the key of an entry found in a folder: `Key::Blob` or `Key::Manifest`.
type KeyOf = fn(Digest) -> Key;

fn scan_folder(kind: KeyOf, algorithm: Algorithm, prefix: &str, path: &Path, out: &mut Vec<Found>) {
    let Ok(files) = std::fs::read_dir(path) else {
        return;
    };
    for file in files.flatten() {
        let name = file.file_name();
        let Some(digest) = name
            .to_str()
            .and_then(|hex| Digest::parse(&format!("{}:{hex}", algorithm.as_str())))
        else {
            continue;
        };
        if digest.hex()[..2] != *prefix {
            continue;
        }
        let Ok(meta) = file.metadata() else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        out.push(Found {
            key: kind(digest),
            size: meta.len(),
            modified: meta.modified().unwrap_or(UNIX_EPOCH),
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::test_util::{limits, put, stored};
    use super::super::{Store, TMP_DIR, TMP_MARKER};
    use super::*;

    #[tokio::test]
    async fn a_restart_rebuilds_the_index_in_mtime_order_and_clears_tmp() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (old, new) = {
            let store = Store::open(dir.path(), limits(1000)).unwrap_or_else(|e| panic!("{e}"));
            let new = put(&store, 300, b'n').await;
            let old = put(&store, 300, b'o').await;
            let path = store.path(&Key::Manifest(old.clone()));
            let file = std::fs::File::options().write(true).open(path);
            let past = SystemTime::now() - Duration::from_secs(86_400);
            file.and_then(|f| f.set_modified(past))
                .unwrap_or_else(|e| panic!("{e}"));
            (old, new)
        };
        std::fs::write(
            dir.path().join(TMP_DIR).join("fill-leftover"),
            b"half a blob",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.path().join("blobs/not-a-digest"), b"junk")
            .unwrap_or_else(|e| panic!("{e}"));

        let store = Store::open(dir.path(), limits(1000)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(store.usage().entries, 2);
        assert_eq!(store.usage().bytes, 600);
        let left: Vec<_> = std::fs::read_dir(dir.path().join(TMP_DIR))
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert_eq!(left, [TMP_MARKER], "only the marker stays");
        let _third = put(&store, 600, b't').await;
        assert!(
            !stored(&store, &old),
            "the entry unused for a day went first"
        );
        assert!(stored(&store, &new));
    }
}
