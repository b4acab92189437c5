//! Tests of the copies of small entries in memory (`hot.rs`, served by `pins.rs`): a hit on a
//! copy reads no file, and no copy outlives the entry it was read from.

use std::time::SystemTime;

use super::test_util::put;
use super::*;
use crate::config::CacheLimits;

fn with_memory(dir: &tempfile::TempDir, memory: u64) -> Store {
    let limits = CacheLimits {
        max_size: u64::MAX,
        min_free: 0,
        memory,
    };
    Store::open(dir.path(), limits).unwrap_or_else(|e| panic!("{e}"))
}

fn remove(store: &Store, key: &Key) {
    std::fs::remove_file(store.path(key)).unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test]
async fn a_manifest_read_once_is_served_from_memory_until_its_entry_goes() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let store = with_memory(&dir, 1 << 20);
    let digest = put(&store, 300, 1).await;
    let key = Key::Manifest(digest.clone());
    let read = store.manifest(&digest).await.map(|m| m.bytes);
    assert_eq!(read.as_ref().map(|b| b.len()), Some(298));
    assert_eq!(
        store.usage().memory,
        300,
        "the file's bytes, media type line too"
    );

    // Gone behind hoard's back: the copy still answers, the file is not read.
    remove(&store, &key);
    assert_eq!(store.manifest(&digest).await.map(|m| m.bytes), read);

    // The reconcile takes the entry out of the index, and the copy is never served again.
    store.reconcile(&[]).await;
    assert!(store.manifest(&digest).await.is_none());
}

#[tokio::test]
async fn no_memory_keeps_no_copy() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let store = with_memory(&dir, 0);
    let digest = put(&store, 300, 1).await;
    assert!(store.manifest(&digest).await.is_some());
    assert_eq!(store.usage().memory, 0);
    remove(&store, &Key::Manifest(digest.clone()));
    assert!(
        store.manifest(&digest).await.is_none(),
        "read from the file"
    );
}

#[tokio::test]
async fn a_tag_record_copy_follows_its_rewrites_and_its_file() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let store = with_memory(&dir, 1 << 20);
    let host = HostKey::new("gcr.io", 443).unwrap_or_else(|| panic!("host key"));
    let entry = |fill: u8, media_type: &str| TagEntry {
        digest: crate::oci::Digest::sha256_of(&[fill]),
        size: 100,
        media_type: media_type.into(),
        fetched: SystemTime::now(),
    };
    let put_tag = |e: TagEntry| {
        let (store, host) = (store.clone(), host.clone());
        async move { store.put_tag(&host, "app", "v1", e).await }
    };
    put_tag(entry(1, "a"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let digests =
        |entries: Vec<TagEntry>| -> Vec<_> { entries.into_iter().map(|e| e.digest).collect() };
    assert_eq!(
        digests(store.tag(&host, "app", "v1").await),
        [entry(1, "a").digest]
    );
    assert!(store.usage().memory > 0, "the record is kept in memory");

    // Rewritten through the store: the copy of the old record is not served.
    put_tag(entry(2, "a"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        digests(store.tag(&host, "app", "v1").await),
        [entry(2, "a").digest]
    );
    assert_eq!(
        digests(store.tag(&host, "app", "v1").await),
        [entry(2, "a").digest]
    );

    // Removed behind hoard's back (`hoard cache rm`): known no more once the copy's file is
    // looked at again, within RECHECK.
    remove(&store, &Key::tag("gcr.io", "app", "v1"));
    tokio::time::sleep(super::hot::RECHECK + std::time::Duration::from_millis(100)).await;
    assert!(store.tag(&host, "app", "v1").await.is_empty());
}
