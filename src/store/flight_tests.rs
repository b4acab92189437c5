//! Tests of the single flight, through the store as production uses it.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::super::test_util::limits;
use super::super::{HostKey, Joined, StoreError};
use super::*;
use crate::oci::Digest;

const WAIT: Duration = Duration::from_secs(25);

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let store = Store::open(dir.path(), limits(1 << 20)).unwrap_or_else(|e| panic!("{e}"));
    (dir, store)
}

fn tag() -> FlightKey {
    let host = HostKey::new("registry.test", 443).unwrap_or_else(|| panic!("host key"));
    FlightKey::Tag(host, "a/b".to_owned(), "latest".to_owned())
}

/// A look that never finds anything, counting how often it was asked.
fn missing(looks: &AtomicUsize) -> impl FnMut() -> std::future::Ready<ControlFlow<(), ()>> {
    move || {
        looks.fetch_add(1, Ordering::Relaxed);
        std::future::ready(ControlFlow::Continue(()))
    }
}

async fn lead(store: &Store, key: FlightKey) -> Permit {
    let looks = AtomicUsize::new(0);
    match store.lookup(key, missing(&looks)).await {
        Lookup::Lead { permit, .. } => permit,
        other => panic!("expected to lead, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_dropped_leader_releases_its_followers_at_once() {
    let (_dir, store) = store();
    let permit = lead(&store, tag()).await;
    let looks = AtomicUsize::new(0);
    let started = Instant::now();
    let leader = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(permit); // a cancelled request: no answer, and no waiter left hanging
    };
    // Both followers take their turn again once the leader is gone: one leads, one follows it.
    let (_, first, second) = tokio::join!(
        leader,
        store.single_flight(tag(), WAIT, missing(&looks)),
        async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            store.lookup::<(), (), _>(tag(), missing(&looks)).await
        }
    );
    assert!(matches!(first, Turn::Lead { .. }), "{first:?}");
    assert!(matches!(second, Lookup::Follow(_)), "{second:?}");
    assert_eq!(started.elapsed(), Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn followers_find_the_leaders_answer() {
    let (_dir, store) = store();
    let answer = Mutex::new(None);
    let look = || {
        std::future::ready(match *answer.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(found) => ControlFlow::Break(found),
            None => ControlFlow::Continue(()),
        })
    };
    let Turn::Lead { permit, .. } = store.single_flight(tag(), WAIT, look).await else {
        panic!("the first request leads");
    };
    let leader = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        *answer.lock().unwrap_or_else(|e| e.into_inner()) = Some(7);
        permit.finish();
    };
    let (_, follower) = tokio::join!(leader, store.single_flight(tag(), WAIT, look));
    assert!(matches!(follower, Turn::Found(7)));
}

#[tokio::test(start_paused = true)]
async fn a_follower_takes_over_a_leader_stalled_past_the_deadline() {
    let (_dir, store) = store();
    let looks = AtomicUsize::new(0);
    let stalled = lead(&store, tag()).await;
    let started = Instant::now();
    let Turn::Lead { permit, .. } = store.single_flight(tag(), WAIT, missing(&looks)).await else {
        panic!("the follower takes the stalled leader's place");
    };
    assert_eq!(started.elapsed(), WAIT);
    assert!(!stalled.listed() && permit.listed());
    // The stalled leader going away later does not end its successor's flight.
    drop(stalled);
    let next = store.lookup::<(), (), _>(tag(), missing(&looks)).await;
    let Lookup::Follow(follower) = next else {
        panic!("a later request follows the new leader");
    };
    assert!(Arc::ptr_eq(&follower.flight, &permit.flight));
    // Other keys are not held up.
    let other = store.lookup::<(), (), _>(
        FlightKey::Manifest(Digest::sha256_of(b"{}")),
        missing(&looks),
    );
    assert!(matches!(other.await, Lookup::Lead { .. }));
}

#[tokio::test(start_paused = true)]
async fn a_blob_fill_taken_over_is_not_started_by_its_stalled_leader() {
    let (_dir, store) = store();
    let digest = Digest::sha256_of(b"blob");
    let stalled = match store.lookup_blob(&digest).await {
        Lookup::Lead { permit, .. } => permit,
        other => panic!("expected to lead, got {other:?}"),
    };
    let Lookup::Follow(follower) = store.lookup_blob(&digest).await else {
        panic!("the second request follows");
    };
    let Joined::Stalled(follower) = follower.join(Instant::now() + WAIT).await else {
        panic!("the fill never started");
    };
    let Some(taken) = store.take_over(follower) else {
        panic!("the follower takes the fill over");
    };
    let refused = stalled.start(Some(4)).await.err();
    assert!(
        matches!(refused, Some(StoreError::Superseded(_))),
        "{refused:?}"
    );
    let writer = taken.start(Some(4)).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(store.usage().fills, 1);
    drop(writer);
    assert_eq!(store.usage().fills, 0);
}

#[tokio::test(start_paused = true)]
async fn a_leader_dropped_mid_fill_leaves_no_waiter_hanging() {
    let (_dir, store) = store();
    let digest = Digest::sha256_of(b"a blob that never arrives");
    let permit = match store.lookup_blob(&digest).await {
        Lookup::Lead { permit, .. } => permit,
        other => panic!("expected to lead, got {other:?}"),
    };
    let mut writer = permit
        .start(Some(100))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    writer
        .write(bytes::Bytes::from_static(b"half"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let Lookup::Follow(reading) = store.lookup_blob(&digest).await else {
        panic!("a follower joins the running fill");
    };
    let Joined::Reading { progress, .. } = reading.join(Instant::now() + WAIT).await else {
        panic!("the follower reads the growing file");
    };
    let started = Instant::now();
    drop(writer);
    assert_eq!(progress.borrow().state, FlightState::Failed);
    assert_eq!(started.elapsed(), Duration::ZERO);
    // And the next request leads a new fill.
    assert!(matches!(
        store.lookup_blob(&digest).await,
        Lookup::Lead { .. }
    ));
}
