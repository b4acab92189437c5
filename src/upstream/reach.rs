//! What hoard remembers of an upstream it could not reach: the last time a connection to it
//! failed (or no answer came in time), forgotten at its next answer. Callers with something to
//! serve anyway (a stale tag, an object imported for offline use) ask here first, so that while a
//! registry is down a request costs no connect timeout; one request every [`RETRY_AFTER`] still
//! asks, and finds out when it is back.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::Uri;

/// How long a failure stands before a request that could do without the upstream asks it again.
pub(crate) const RETRY_AFTER: Duration = Duration::from_secs(30);

/// Upstreams remembered at most; past it the memory starts over (it is only a shortcut).
const MAX_REMEMBERED: usize = 4096;

/// The upstreams that failed lately, by URI authority, with when they last failed.
#[derive(Debug, Default)]
pub(crate) struct Reachability {
    failed: Mutex<HashMap<String, Instant>>,
}

impl Reachability {
    /// Records the outcome of a request to `uri`: `reached` when any answer came back.
    pub(super) fn note(&self, uri: &Uri, reached: bool) {
        let Some(authority) = uri.authority() else {
            return;
        };
        let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        if reached {
            if !failed.is_empty() {
                failed.remove(authority.as_str());
            }
            return;
        }
        if failed.len() >= MAX_REMEMBERED {
            failed.clear();
        }
        failed.insert(authority.as_str().to_owned(), Instant::now());
    }

    /// How long ago the upstream of `uri` last failed, when that was less than [`RETRY_AFTER`]
    /// ago and nothing answered since. A caller that gets `Some` and has something to serve does
    /// not ask; the first to come after [`RETRY_AFTER`] does.
    pub(crate) fn down_for(&self, uri: &Uri) -> Option<Duration> {
        let authority = uri.authority()?;
        let failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        let age = failed.get(authority.as_str())?.elapsed();
        (age < RETRY_AFTER).then_some(age)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_is_remembered_until_an_answer_or_the_retry_time() {
        let reach = Reachability::default();
        let a = Uri::from_static("https://registry.example:5000/v2/");
        let b = Uri::from_static("https://other.example/v2/");
        assert_eq!(reach.down_for(&a), None);
        reach.note(&a, false);
        assert!(reach.down_for(&a).is_some());
        assert_eq!(reach.down_for(&b), None, "per upstream");
        reach.note(&a, true);
        assert_eq!(reach.down_for(&a), None, "an answer clears it");
        reach.note(&a, false);
        let stale = Instant::now().checked_sub(RETRY_AFTER);
        if let Some(then) = stale {
            reach
                .failed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert("registry.example:5000".into(), then);
            assert_eq!(reach.down_for(&a), None, "asked again after RETRY_AFTER");
        }
    }
}
