//! Tests that must not overlap. All tests share one process and `--test-threads` (the number of
//! CPUs by default) run at once; the few that load the whole machine or measure time hold the
//! lock here, so no two of them run together. Each says in one line why it takes it.

use tokio::sync::{Mutex, MutexGuard};

/// A tokio mutex: it works from any test's runtime, and from plain `#[test]`s by
/// `blocking_lock`. A test that panics while holding it only drops its guard.
static HEAVY: Mutex<()> = Mutex::const_new(());

/// Waits until no other heavy test runs; the guard lets the next one go when dropped.
pub(crate) async fn heavy() -> MutexGuard<'static, ()> {
    HEAVY.lock().await
}

/// [`heavy`] for tests that are not async (the end-to-end tests).
pub(crate) fn heavy_blocking() -> MutexGuard<'static, ()> {
    HEAVY.blocking_lock()
}
