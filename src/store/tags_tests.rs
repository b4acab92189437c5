//! Tests of tag records as entries of the index: counted in `max_size`, marked used when read,
//! evicted least recently used first, found again at start and by a reconcile, kept by a pin.

use std::time::{Duration, SystemTime};

use super::super::scan::scan;
use super::super::test_util::{limits, put, stored};
use super::*;
use crate::oci::{Digest, RepoPattern};

fn gcr() -> HostKey {
    HostKey::new("gcr.io", 443).unwrap_or_else(|| panic!("host key"))
}

/// Records `repo:tag` → the manifest `digest`; the record's size on disk.
async fn put_tag(store: &Store, repo: &str, tag: &str, digest: &Digest) -> u64 {
    let entry = TagEntry {
        digest: digest.clone(),
        size: 100,
        media_type: "t".into(),
        fetched: SystemTime::now(),
    };
    store
        .put_tag(&gcr(), repo, tag, entry)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    record_size(store, repo, tag)
}

fn record_path(store: &Store, repo: &str, tag: &str) -> std::path::PathBuf {
    store.path(&Key::tag("gcr.io", repo, tag))
}

fn record_size(store: &Store, repo: &str, tag: &str) -> u64 {
    std::fs::metadata(record_path(store, repo, tag)).map_or(0, |m| m.len())
}

fn on_disk(dir: &tempfile::TempDir) -> u64 {
    scan(dir.path()).iter().map(|f| f.size).sum()
}

#[tokio::test]
async fn tag_records_count_toward_max_size_and_the_least_recently_used_goes_first() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let store = Store::open(dir.path(), limits(1000)).unwrap_or_else(|e| panic!("{e}"));
    let m = put(&store, 500, b'm').await;
    let old = put_tag(&store, "team/app", "old", &m).await;
    let read = put_tag(&store, "team/app", "read", &m).await;
    assert!(old > 80 && read > 80, "a line is ~90 bytes: {old}, {read}");
    assert_eq!(store.usage().entries, 3);
    assert_eq!(store.usage().bytes, 500 + old + read);
    assert_eq!(store.usage().bytes, on_disk(&dir));

    // `old` was written first, but `read` is read now: `old` is the least recently used record.
    assert!(store.manifest(&m).await.is_some());
    assert_eq!(store.tag(&gcr(), "team/app", "read").await.len(), 1);
    // Room for 1000 - 500 - read: `old` must go, `read` and the manifest stay.
    let filler = put(&store, (1000 - 500 - read) as usize, b'f').await;
    assert!(!record_path(&store, "team/app", "old").exists(), "old went");
    assert!(store.tag(&gcr(), "team/app", "old").await.is_empty());
    assert_eq!(store.tag(&gcr(), "team/app", "read").await.len(), 1);
    assert!(stored(&store, &m) && stored(&store, &filler));
    assert_eq!(store.usage().bytes, 1000);
    assert_eq!(store.usage().bytes, on_disk(&dir));
    assert_eq!(store.evictions(), 1);

    // A new record needs room too: the coldest entry (the manifest, read before the tag) goes.
    let new = put_tag(&store, "team/app", "new", &filler).await;
    assert!(!stored(&store, &m));
    assert!(store.usage().bytes <= 1000);
    assert_eq!(store.usage().bytes, on_disk(&dir));
    assert_eq!(store.usage().bytes, read + (1000 - 500 - read) + new);
}

#[tokio::test]
async fn rewriting_and_dropping_a_tag_record_keeps_the_accounting_exact() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let store = Store::open(dir.path(), limits(10_000)).unwrap_or_else(|e| panic!("{e}"));
    let a = Digest::sha256_of(b"a");
    let one = put_tag(&store, "team/app", "v1", &a).await;
    // A second media type: one more line in the same record, which replaces the first.
    let entry = TagEntry {
        digest: a.clone(),
        size: 100,
        media_type: "u".into(),
        fetched: SystemTime::now(),
    };
    store
        .put_tag(&gcr(), "team/app", "v1", entry)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let two = record_size(&store, "team/app", "v1");
    assert!(two > one);
    assert_eq!((store.usage().entries, store.usage().bytes), (1, two));
    assert_eq!(store.usage().reserved, 0);
    store
        .drop_tag(&gcr(), "team/app", "v1")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((store.usage().entries, store.usage().bytes), (0, 0));
    assert!(!record_path(&store, "team/app", "v1").exists());
}

#[tokio::test]
async fn tag_records_are_found_at_start_and_by_a_reconcile() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (a, b) = {
        let store = Store::open(dir.path(), limits(1000)).unwrap_or_else(|e| panic!("{e}"));
        let digest = Digest::sha256_of(b"x");
        let a = put_tag(&store, "team/app", "a", &digest).await;
        let b = put_tag(&store, "deep/er/app", "b", &digest).await;
        // `b` was used a day ago, `a` now: at start `b` is the least recently used.
        let past = SystemTime::now() - Duration::from_secs(86_400);
        std::fs::File::options()
            .write(true)
            .open(record_path(&store, "deep/er/app", "b"))
            .and_then(|f| f.set_modified(past))
            .unwrap_or_else(|e| panic!("{e}"));
        (a, b)
    };
    // Not tag records: a bad tag name, a file where a repository folder should be.
    let junk = dir.path().join("tags/gcr.io/team/app/_tags");
    std::fs::write(junk.join(".hidden"), b"junk").unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.path().join("tags/gcr.io/stray"), b"junk").unwrap_or_else(|e| panic!("{e}"));

    let store = Store::open(dir.path(), limits(1000)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((store.usage().entries, store.usage().bytes), (2, a + b));
    assert_eq!(store.tag(&gcr(), "deep/er/app", "b").await.len(), 1);

    // Removed behind the store's back (`hoard cache rm`), and one written by another hoard.
    std::fs::remove_file(record_path(&store, "team/app", "a")).unwrap_or_else(|e| panic!("{e}"));
    let other = Store::open(dir.path(), limits(1000)).unwrap_or_else(|e| panic!("{e}"));
    let c = put_tag(&other, "team/app", "c", &Digest::sha256_of(b"y")).await;
    assert!(
        store.tag(&gcr(), "team/app", "c").await.is_empty(),
        "unknown until the next reconcile"
    );
    store.reconcile(&[]).await;
    assert_eq!((store.usage().entries, store.usage().bytes), (2, b + c));
    assert_eq!(store.tag(&gcr(), "team/app", "c").await.len(), 1);
}

#[tokio::test]
async fn a_pinned_tag_keeps_its_record_and_its_manifest() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let store = Store::open(dir.path(), limits(1000)).unwrap_or_else(|e| panic!("{e}"));
    let kept = put(&store, 300, b'k').await;
    let loose = put(&store, 300, b'l').await;
    put_tag(&store, "team/keep", "v1", &kept).await;
    put_tag(&store, "team/loose", "v1", &loose).await;
    let pin = RepoPattern::parse("gcr.io/team/keep").unwrap_or_else(|e| panic!("{e}"));
    store.retain(&[pin]).await;
    for fill in 0..3 {
        put(&store, 300, fill).await;
    }
    assert!(
        record_path(&store, "team/keep", "v1").exists(),
        "pinned record kept"
    );
    assert!(stored(&store, &kept), "and its manifest");
    assert!(!record_path(&store, "team/loose", "v1").exists());
    assert!(!stored(&store, &loose));
    assert!(store.usage().bytes <= 1000);
    assert_eq!(store.usage().bytes, on_disk(&dir));
}
