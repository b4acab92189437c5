//! Provenance: where the registry had an entry, as `<host> <repository>` lines in a small file
//! beside it, so that offline access checks know which credentials may see it; an entry that
//! `hoard cache import` brought in has lines ending ` imported`.

use std::path::Path;
use std::sync::Mutex;

use super::Store;
use super::error::{StoreError, blocking, io_error};
use super::key::{HostKey, Key};
use super::layout::{Origin, origin_path, origins_tmp, parse_origin_line, write_file_atomically};
use crate::oci::valid_repository;

/// Origins kept per entry; past it the oldest is dropped. 32 lines of at most ~520 bytes (a
/// host name and a 255-byte repository name) keep an origins file under 17 KiB.
const MAX_ORIGINS: usize = 32;

/// Locks for the read-modify-write of origins files, striped by the digest's first byte so that
/// the origins of different entries are written in parallel.
static ORIGIN_LOCKS: [Mutex<()>; 16] = [const { Mutex::new(()) }; 16];

impl Store {
    /// Where the registry had an entry, oldest first. Empty when nothing is known, as for
    /// entries stored by a hoard that did not record origins.
    pub(crate) async fn origins(&self, key: &Key) -> Vec<Origin> {
        let Some(path) = self.origin_path(key) else {
            return Vec::new();
        };
        match tokio::fs::read_to_string(path).await {
            Ok(text) => text.lines().filter_map(parse_origin_line).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Records, in the background, that the registry `host` has the entry `key` in repository
    /// `repo` (it served it or confirmed it there). Kept next to the entry, at most
    /// [`MAX_ORIGINS`] of them, and removed with it when it is evicted. Tag records have none.
    pub(crate) fn note_origin(&self, key: Key, host: &HostKey, repo: &str) {
        if matches!(key, Key::Tag(_)) || !valid_repository(repo) {
            return;
        }
        let origin = Origin {
            host: host.as_str().to_owned(),
            repository: repo.to_owned(),
            imported: false,
        };
        let (store, root) = (self.clone(), self.inner.root.clone());
        tokio::spawn(async move {
            let written = blocking(move || add_origin(&root, &key, &origin)).await;
            if let Err(err) = written {
                store.disk_warning("cannot record where an entry came from", &err);
            }
        });
    }
}

/// Adds `origin` to the origins of `key` in the store at `root` (once; at most [`MAX_ORIGINS`]),
/// on this thread: for the store's own writes and for `hoard cache import`. Tag records have no
/// origins: nothing is written for them.
pub(crate) fn add_origin(root: &Path, key: &Key, origin: &Origin) -> Result<(), StoreError> {
    let (Key::Blob(digest) | Key::Manifest(digest)) = key else {
        return Ok(());
    };
    let Some(path) = origin_path(root, key) else {
        return Ok(());
    };
    let stripe = usize::from(digest.hex().bytes().next().unwrap_or(0)) % ORIGIN_LOCKS.len();
    let _serial = ORIGIN_LOCKS[stripe]
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let tmp = origins_tmp(root);
    std::fs::create_dir_all(&tmp).map_err(io_error("create", &tmp))?;
    add_origin_line(&tmp, &path, &origin.line())
}

/// Adds `line` to the origins file at `path` unless it is there, dropping the oldest lines past
/// [`MAX_ORIGINS`]. The caller holds the file's lock.
fn add_origin_line(tmp: &Path, path: &Path, line: &str) -> Result<(), StoreError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(err) => return Err(io_error("read", path)(err)),
    };
    let mut lines: Vec<&str> = text
        .lines()
        .filter(|l| parse_origin_line(l).is_some())
        .collect();
    if lines.contains(&line) {
        return Ok(());
    }
    if lines.len() >= MAX_ORIGINS {
        lines.drain(..=lines.len() - MAX_ORIGINS);
    }
    lines.push(line);
    let mut data = lines.join("\n");
    data.push('\n');
    write_file_atomically(tmp, path, data.as_bytes())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant, SystemTime};

    use super::super::test_util::{limits, put, stored};
    use super::*;
    use crate::oci::Digest;

    #[tokio::test]
    async fn origins_are_bounded_survive_a_restart_and_go_with_their_entry() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let host = HostKey::new("gcr.io", 443).unwrap_or_else(|| panic!("host key"));
        let (a, b) = {
            let store = Store::open(dir.path(), limits(1000)).unwrap_or_else(|e| panic!("{e}"));
            let a = put(&store, 300, b'a').await;
            let b = put(&store, 300, b'b').await;
            let key = Key::Manifest(a.clone());
            assert!(store.origins(&key).await.is_empty(), "nothing known yet");
            let path = store
                .origin_path(&key)
                .unwrap_or_else(|| panic!("no origins"));
            let tmp = store.inner.tmp.clone();
            for i in 0..MAX_ORIGINS + 3 {
                add_origin_line(&tmp, &path, &format!("gcr.io team/repo{i}"))
                    .unwrap_or_else(|e| panic!("{e}"));
            }
            // Again: not twice. And what is not an origin line is dropped on the next write.
            add_origin_line(&tmp, &path, "gcr.io team/repo5").unwrap_or_else(|e| panic!("{e}"));
            store.note_origin(Key::Manifest(b.clone()), &host, "../../etc");
            store.note_origin(Key::Manifest(b.clone()), &host, "team/b");
            let deadline = Instant::now() + Duration::from_secs(10);
            while store.origins(&Key::Manifest(b.clone())).await.is_empty() {
                assert!(Instant::now() < deadline, "note_origin wrote nothing");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let past = SystemTime::now() - Duration::from_secs(86_400);
            std::fs::File::options()
                .write(true)
                .open(store.path(&Key::Manifest(a.clone())))
                .and_then(|f| f.set_modified(past))
                .unwrap_or_else(|e| panic!("{e}"));
            (a, b)
        };
        let store = Store::open(dir.path(), limits(1000)).unwrap_or_else(|e| panic!("{e}"));
        let origins = store.origins(&Key::Manifest(a.clone())).await;
        assert_eq!(origins.len(), MAX_ORIGINS, "bounded");
        let pair = |o: &Origin| (o.host.clone(), o.repository.clone());
        assert_eq!(
            pair(&origins[0]),
            ("gcr.io".into(), "team/repo3".into()),
            "oldest dropped"
        );
        assert_eq!(
            origins.last().map(pair),
            Some(("gcr.io".into(), format!("team/repo{}", MAX_ORIGINS + 2)))
        );
        assert_eq!(
            store.origins(&Key::Manifest(b.clone())).await,
            [origin("gcr.io", "team/b", false)],
            "an invalid repository is never recorded"
        );
        assert!(
            store.origins(&Key::Blob(a.clone())).await.is_empty(),
            "kinds apart"
        );
        // Evicting a (least recently used) takes its origins along.
        let _c = put(&store, 600, b'c').await;
        assert!(!stored(&store, &a));
        let origins_of = |d: &Digest| store.origin_path(&Key::Manifest(d.clone()));
        assert!(!origins_of(&a).is_some_and(|p| p.exists()));
        assert!(origins_of(&b).is_some_and(|p| p.exists()));
        assert_eq!(parse_origin_line("gcr.io a b"), None);
        assert_eq!(parse_origin_line("gcr.io a imported x"), None);
        assert_eq!(parse_origin_line("gcr.io/x a"), None);
        assert_eq!(
            parse_origin_line("localhost:5000 a/b"),
            Some(origin("localhost:5000", "a/b", false))
        );
    }

    fn origin(host: &str, repository: &str, imported: bool) -> Origin {
        Origin {
            host: host.into(),
            repository: repository.into(),
            imported,
        }
    }

    #[test]
    fn imported_origins_are_kept_apart_from_the_registrys() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let key = Key::Blob(crate::oci::Digest::sha256_of(b"x"));
        let imported = origin("gcr.io", "team/app", true);
        add_origin(dir.path(), &key, &imported).unwrap_or_else(|e| panic!("{e}"));
        add_origin(dir.path(), &key, &origin("gcr.io", "team/app", false))
            .unwrap_or_else(|e| panic!("{e}"));
        add_origin(dir.path(), &key, &imported).unwrap_or_else(|e| panic!("{e}"));
        let text = std::fs::read_to_string(origin_path(dir.path(), &key).unwrap_or_default())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(text, "gcr.io team/app imported\ngcr.io team/app\n");
        assert_eq!(
            parse_origin_line("gcr.io team/app imported"),
            Some(imported)
        );
    }
}
