//! Tests of fills: followers, commits and failures, through the store.

use std::sync::Arc;

use bytes::Bytes;

use super::super::test_util::limits;
use super::super::{TMP_DIR, TMP_MARKER, Usage, read_at};
use super::*;

fn content() -> (Vec<u8>, Digest) {
    let data: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
    let digest = Digest::sha256_of(&data);
    (data, digest)
}

/// Far enough that no test here waits for it.
fn deadline() -> Instant {
    Instant::now() + std::time::Duration::from_secs(60)
}

async fn permit(store: &Store, digest: &Digest) -> Permit {
    match store.lookup_blob(digest).await {
        Lookup::Lead { permit, .. } => permit,
        other => panic!("expected a miss, got {other:?}"),
    }
}

async fn follower(store: &Store, digest: &Digest) -> Follower {
    match store.lookup_blob(digest).await {
        Lookup::Follow(follower) => follower,
        other => panic!("expected a fill to follow, got {other:?}"),
    }
}

/// A store in `dir` with a fill of 600,000 bytes started and half written.
async fn half_written(dir: &tempfile::TempDir) -> (Store, Vec<u8>, Digest, BlobWriter) {
    let store = Store::open(dir.path(), limits(1 << 20)).unwrap_or_else(|e| panic!("{e}"));
    let (data, digest) = content();
    let mut writer = permit(&store, &digest)
        .await
        .start(Some(data.len() as u64))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    writer
        .write(Bytes::copy_from_slice(&data[..300_000]))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    (store, data, digest, writer)
}

#[tokio::test]
async fn followers_read_a_fill_through_its_commit_and_the_entry_is_admitted() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (store, data, digest, mut writer) = half_written(&dir).await;
    let early = follower(&store, &digest).await;
    let Joined::Reading {
        file,
        progress,
        length,
    } = early.join(deadline()).await
    else {
        panic!("the follower cannot read the fill");
    };
    assert_eq!(length, Some(600_000));
    writer
        .write(Bytes::copy_from_slice(&data[300_000..]))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let verified = writer.verify().await.unwrap_or_else(|e| panic!("{e}"));
    // Joins just before the commit, and is answered just after it.
    let late = follower(&store, &digest).await;
    let size = verified.commit().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(size, 600_000);
    let progress = progress.borrow().clone();
    assert_eq!(
        (progress.state, progress.visible),
        (FlightState::Done, 600_000)
    );
    let read = read_at(Arc::new(file), 0, 600_000).await;
    assert!(
        read.is_ok_and(|read| read == data),
        "the follower read it all"
    );
    assert!(matches!(late.join(deadline()).await, Joined::LookAgain));
    let usage = store.usage();
    let expected = Usage {
        entries: 1,
        bytes: 600_000,
        reserved: 0,
        fills: 0,
        memory: 0,
    };
    assert_eq!(usage, expected);
    match store.lookup_blob(&digest).await {
        Lookup::Hit(hit) => assert_eq!(hit.len, 600_000),
        other => panic!("expected a hit, got {other:?}"),
    }
    let left: Vec<_> = std::fs::read_dir(dir.path().join(TMP_DIR))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert_eq!(left, [TMP_MARKER], "the temp file was renamed");
}

#[tokio::test]
async fn a_fill_dropped_unfinished_fails_its_followers_and_gives_its_room_back() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (store, _, digest, writer) = half_written(&dir).await;
    let joined = follower(&store, &digest).await.join(deadline()).await;
    assert_eq!(store.usage().reserved, 600_000);
    let too_late = follower(&store, &digest).await;
    drop(writer);
    let Joined::Reading { progress, .. } = joined else {
        panic!("the follower cannot read the fill");
    };
    assert_eq!(progress.borrow().state, FlightState::Failed);
    assert!(matches!(too_late.join(deadline()).await, Joined::Failed));
    assert_eq!(store.usage().reserved, 0);
    assert_eq!(store.usage().fills, 0);
    // And the next request fills it anew.
    drop(permit(&store, &digest).await);
}
