//! Single flight: of the requests that would ask the upstream the same question (a blob, a
//! manifest by digest, a tag), one leads and asks; the others follow: they wait until it is done
//! and find its answer in the store. One upstream call, not one per client, when a thousand nodes
//! pull the same image at once. A follower waits a bounded time, then goes on alone: one silent
//! upstream cannot stall everyone waiting on a tag. A blob's leader is done as soon as its fill
//! is registered in the store (`Store::begin_fill`): its followers then read the growing file,
//! and wait no longer than [`Flights::wait`] for the fill to start.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::ops::ControlFlow;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::HostKey;
use crate::oci::Digest;

/// What a flight asks the upstream about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FlightKey {
    /// A blob: its leader starts the fill that the others then follow.
    Blob(Digest),
    /// A manifest by digest.
    Manifest(Digest),
    /// A tag: the registry host, the repository, the tag.
    Tag(HostKey, String, String),
}

impl Hash for FlightKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        std::mem::discriminant(self).hash(state);
        match self {
            FlightKey::Blob(digest) | FlightKey::Manifest(digest) => digest.hash(state),
            FlightKey::Tag(host, repo, tag) => (host.as_str(), repo, tag).hash(state),
        }
    }
}

/// The flights in progress: a leader per key, and how long its followers wait.
#[derive(Debug)]
pub(crate) struct Flights {
    /// Each leader's channel; its followers wait for the sender (in the leader's guard) to drop.
    map: Mutex<HashMap<FlightKey, watch::Receiver<()>>>,
    /// The longest a follower waits, in all, before it goes on alone.
    wait: Duration,
}

/// Held by a flight's leader while it asks the upstream. Dropping it, done, failed or cancelled,
/// releases the followers, which then look in the store.
#[derive(Debug)]
pub(crate) struct FlightGuard<'a> {
    flights: &'a Flights,
    key: FlightKey,
    _done: watch::Sender<()>,
}

/// Where a request's turn on a key ended.
#[derive(Debug)]
pub(crate) enum Flight<'a, T, M> {
    /// The answer was found (another request's, or there all along).
    Found(T),
    /// This request asks the upstream: for everyone while it holds the guard, or alone (`None`)
    /// after waiting as long as a follower may. `seen` is what the last look found.
    Ask {
        guard: Option<FlightGuard<'a>>,
        seen: M,
    },
}

/// What a request got from one go at a key.
enum Entered<'a> {
    Lead(FlightGuard<'a>),
    /// The leader it followed is done: look again.
    Followed,
    /// Waited until the deadline.
    Alone,
}

impl Flights {
    /// A table whose followers wait at most `wait` in all.
    pub(crate) fn new(wait: Duration) -> Flights {
        Flights {
            map: Mutex::default(),
            wait,
        }
    }

    /// The longest a follower waits for another request's answer.
    pub(crate) fn wait(&self) -> Duration {
        self.wait
    }

    /// Looks for the answer with `look` (`Break`: found), and when it is missing takes a turn on
    /// `key`: leads, or follows the leader and looks again when it is done. Gives up following
    /// after [`Flights::wait`] and asks alone.
    pub(crate) async fn join<T, M, F>(
        &self,
        key: FlightKey,
        mut look: impl FnMut() -> F,
    ) -> Flight<'_, T, M>
    where
        F: Future<Output = ControlFlow<T, M>>,
    {
        if let ControlFlow::Break(found) = look().await {
            return Flight::Found(found);
        }
        let deadline = Instant::now() + self.wait;
        loop {
            let entered = self.enter(&key, deadline).await;
            // Looked at again even by a new leader: the last one may have finished meanwhile.
            let seen = match look().await {
                ControlFlow::Break(found) => return Flight::Found(found),
                ControlFlow::Continue(seen) => seen,
            };
            let guard = match entered {
                Entered::Lead(guard) => Some(guard),
                Entered::Followed => continue,
                Entered::Alone => {
                    tracing::info!(?key, wait = ?self.wait, "no answer from the request asking the upstream; asking alone");
                    None
                }
            };
            return Flight::Ask { guard, seen };
        }
    }

    /// Leads `key` if nobody does, else waits until its leader is done or `deadline` passes.
    async fn enter(&self, key: &FlightKey, deadline: Instant) -> Entered<'_> {
        let mut done = {
            let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
            match map.get(key) {
                Some(done) => done.clone(),
                None => {
                    let (tx, rx) = watch::channel(());
                    map.insert(key.clone(), rx);
                    return Entered::Lead(FlightGuard {
                        flights: self,
                        key: key.clone(),
                        _done: tx,
                    });
                }
            }
        };
        // Nothing is ever sent: `changed` returns when the leader's guard drops its sender.
        match tokio::time::timeout_at(deadline, done.changed()).await {
            Ok(_) => Entered::Followed,
            Err(_) => Entered::Alone,
        }
    }
}

impl Drop for FlightGuard<'_> {
    fn drop(&mut self) {
        // Out of the map first, so that followers woken by the sender's drop (right after this)
        // find the key free.
        let mut map = self.flights.map.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

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

    #[tokio::test(start_paused = true)]
    async fn leader_drop_releases_followers() {
        let flights = Flights::new(Duration::from_secs(25));
        let looks = AtomicUsize::new(0);
        let Flight::Ask {
            guard: Some(guard), ..
        } = flights.join(tag(), missing(&looks)).await
        else {
            panic!("the first request leads");
        };
        let started = Instant::now();
        let leader = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            drop(guard);
        };
        // The follower takes the lead once the leader is gone: the key is free again.
        let (_, follower) = tokio::join!(leader, flights.join(tag(), missing(&looks)));
        assert!(matches!(follower, Flight::Ask { guard: Some(_), .. }));
        assert_eq!(started.elapsed(), Duration::from_secs(1));
        // Before entering, after entering as a follower, after the leader left, as new leader.
        assert_eq!(looks.load(Ordering::Relaxed), 2 + 3);
    }

    #[tokio::test(start_paused = true)]
    async fn followers_find_the_leaders_answer() {
        let flights = Flights::new(Duration::from_secs(25));
        let answer = Mutex::new(None);
        let look = || {
            std::future::ready(match *answer.lock().unwrap_or_else(|e| e.into_inner()) {
                Some(found) => ControlFlow::Break(found),
                None => ControlFlow::Continue(()),
            })
        };
        let Flight::Ask {
            guard: Some(guard), ..
        } = flights.join(tag(), look).await
        else {
            panic!("the first request leads");
        };
        let leader = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            *answer.lock().unwrap_or_else(|e| e.into_inner()) = Some(7);
            drop(guard);
        };
        let (_, follower) = tokio::join!(leader, flights.join(tag(), look));
        assert!(matches!(follower, Flight::Found(7)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_follower_goes_alone_after_the_wait() {
        let flights = Flights::new(Duration::from_secs(25));
        let looks = AtomicUsize::new(0);
        let Flight::Ask {
            guard: Some(_guard),
            ..
        } = flights.join(tag(), missing(&looks)).await
        else {
            panic!("the first request leads");
        };
        let started = Instant::now();
        let follower = flights.join(tag(), missing(&looks)).await;
        assert!(matches!(follower, Flight::Ask { guard: None, .. }));
        assert_eq!(started.elapsed(), Duration::from_secs(25));
        // Other keys are not held up.
        let digest = Digest::sha256_of(b"{}");
        let other = flights.join(FlightKey::Manifest(digest), missing(&looks));
        assert!(matches!(other.await, Flight::Ask { guard: Some(_), .. }));
    }
}
