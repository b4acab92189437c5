//! Tests of reservations and eviction through the store.

use super::super::scan::scan;
use super::super::test_util::{limits, put, stored};
use super::super::{Key, Store, StoreError};

fn open(dir: &tempfile::TempDir, max_size: u64) -> Store {
    Store::open(dir.path(), limits(max_size)).unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn eviction_is_least_recently_used_first_and_spares_entries_being_read() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let store = open(&dir, 1000);
    let a = put(&store, 300, b'a').await;
    let b = put(&store, 300, b'b').await;
    let c = put(&store, 300, b'c').await;
    assert_eq!(store.usage().bytes, 900);
    let pin = store.pin(&Key::Manifest(a.clone())); // a is being read…
    assert!(store.manifest(&b).await.is_some());
    assert!(store.manifest(&c).await.is_some()); // …and is the least recently used
    let d = put(&store, 300, b'd').await;
    assert!(stored(&store, &a), "a is being read");
    assert!(
        !stored(&store, &b),
        "b was the least recently used entry not being read"
    );
    assert!(stored(&store, &c) && stored(&store, &d));
    assert_eq!(store.usage().bytes, 900);
    drop(pin);
    let e = put(&store, 300, b'e').await;
    assert!(!stored(&store, &a), "a went once nobody read it");
    assert!(stored(&store, &c) && stored(&store, &d) && stored(&store, &e));
}

#[tokio::test]
async fn many_entries_read_at_the_cold_end_are_skipped_and_the_accounting_stays_exact() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let store = open(&dir, 1000);
    // 30 entries of 20 bytes, all being read, the least recently used…
    let mut read = Vec::new();
    let mut pins = Vec::new();
    for fill in 0..30 {
        let digest = put(&store, 20, fill).await;
        pins.push(store.pin(&Key::Manifest(digest.clone())));
        read.push(digest);
    }
    // …then 10 of 30 bytes nobody reads.
    let mut idle = Vec::new();
    for fill in 100..110 {
        idle.push(put(&store, 30, fill).await);
    }
    assert_eq!(store.usage().bytes, 900);
    // 200 more bytes need 100 freed: the four coldest idle entries (120 bytes) go.
    let big = put(&store, 200, 200).await;
    assert!(read.iter().all(|d| stored(&store, d)), "nothing read went");
    assert!(idle[..4].iter().all(|d| !stored(&store, d)));
    assert!(idle[4..].iter().all(|d| stored(&store, d)) && stored(&store, &big));
    let on_disk = || scan(dir.path()).iter().map(|f| f.size).sum::<u64>();
    assert_eq!(store.usage().bytes, 980);
    assert_eq!(store.usage().bytes, on_disk());
    assert_eq!(store.evictions(), 4);

    // Read no more, they are the least recently used again, in the order they were read.
    drop(pins);
    let _more = put(&store, 100, 201).await;
    assert!(read[..4].iter().all(|d| !stored(&store, d)));
    assert!(read[4..].iter().all(|d| stored(&store, d)));
    assert_eq!(store.usage().bytes, 1000);
    assert_eq!(store.usage().bytes, on_disk());
    assert_eq!(store.usage().entries, 26 + 6 + 2);
    assert_eq!(store.usage().reserved, 0);
    assert_eq!(store.evictions(), 8);
}

#[tokio::test]
async fn a_reservation_that_cannot_fit_deletes_nothing() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let store = open(&dir, 1000);
    let a = put(&store, 400, b'a').await;
    let b = put(&store, 400, b'b').await;
    let _pin = store.pin(&Key::Manifest(a.clone()));
    assert!(matches!(
        store.reserve(700).await,
        Err(StoreError::Full(700))
    ));
    assert!(stored(&store, &a) && stored(&store, &b));
    // Fills in progress count: with 500 reserved, 200 more need b to go.
    let held = store.reserve(500).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(!stored(&store, &b));
    assert_eq!(store.usage().reserved, 500);
    assert!(matches!(
        store.reserve(200).await,
        Err(StoreError::Full(200))
    ));
    drop(held);
    assert_eq!(store.usage().reserved, 0);
}

#[tokio::test]
async fn a_reservation_near_u64_max_is_refused_not_wrapped() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let store = open(&dir, 1000);
    let a = put(&store, 400, b'a').await;
    let held = store.reserve(300).await.unwrap_or_else(|e| panic!("{e}"));
    // 400 stored + 300 reserved + this wraps to 99 in u64 arithmetic.
    let huge = u64::MAX - 600;
    assert!(matches!(store.reserve(huge).await, Err(StoreError::Full(n)) if n == huge));
    assert!(matches!(
        store.reserve(u64::MAX).await,
        Err(StoreError::Full(u64::MAX))
    ));
    assert_eq!(
        store.usage().reserved,
        300,
        "nothing reserved by the refusals"
    );
    assert!(stored(&store, &a), "and nothing evicted");
    drop(held);

    // The free-space floor is summed with the need too.
    let floor = crate::config::CacheLimits {
        max_size: u64::MAX,
        min_free: u64::MAX - 10,
        memory: 0,
    };
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let store = Store::open(dir.path(), floor).unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(
        store.reserve(100).await,
        Err(StoreError::Full(100))
    ));
    assert_eq!(store.usage().reserved, 0);
}
