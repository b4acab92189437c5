//! Single flight, one table for blobs, manifests and tags (as pingora-cache's `lock.rs`): of the
//! requests that would ask the upstream the same question, one leads and asks, the others follow.
//! A lookup gives a hit, a flight to follow, or the lead (a [`Permit`]); the permit marks the
//! flight abandoned when it is dropped unfinished, so no follower is left waiting on a leader that
//! is gone. A follower waits until the leader has its answer (a blob's followers: until the fill
//! starts, then they read the growing file), and no longer than its deadline: past it, it takes
//! the stalled leader's place. One upstream call, not one per client, when a thousand nodes pull
//! the same image at once; one silent upstream cannot stall everyone waiting on a tag.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::Store;
use super::in_flight::{Flight, FlightKey, FlightState, listed};
use super::key::Key;

/// Flights a request follows before it asks alone: a leader that stalls is taken over, and so
/// may be the one that took its place.
const FOLLOW_ROUNDS: usize = 3;

/// What a lookup found.
#[derive(Debug)]
pub(crate) enum Lookup<T, M = ()> {
    /// The answer: stored, there all along or left by a leader.
    Hit(T),
    /// Another request is asking: follow it.
    Follow(Follower),
    /// This request asks, for everyone; `seen` is what the lookup found short of an answer.
    Lead { permit: Permit, seen: M },
}

/// How a request's turn on a key ended ([`Store::single_flight`]).
#[derive(Debug)]
pub(crate) enum Turn<T, M> {
    /// The answer.
    Found(T),
    /// This request asks; `seen` is what its last look found short of an answer.
    Lead { permit: Permit, seen: M },
}

/// The right and duty to ask the upstream for a flight's key. Dropped unfinished (the upstream
/// failed, the request was cancelled), it marks the flight abandoned: its followers look again.
#[derive(Debug)]
pub(crate) struct Permit {
    pub(super) store: Store,
    pub(super) flight: Arc<Flight>,
    pub(super) done: bool,
}

impl Permit {
    /// The leader's answer is in the store: its followers look again and find it.
    pub(crate) fn finish(mut self) {
        self.done = true;
        end_flight(&self.store, &self.flight, FlightState::Done);
    }

    /// Whether the table still lists this flight: `false` once a follower took the place of a
    /// leader that stalled.
    pub(super) fn listed(&self) -> bool {
        listed(&self.store.lock().flights, &self.flight)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.done {
            end_flight(&self.store, &self.flight, FlightState::Abandoned);
        }
    }
}

/// Takes a flight out of the table (if it is still the one there) and publishes how it ended.
pub(super) fn end_flight(store: &Store, flight: &Arc<Flight>, state: FlightState) {
    {
        let mut guard = store.lock();
        if listed(&guard.flights, flight) {
            guard.flights.remove(&flight.key);
        }
    }
    flight.publish(|p| p.state = state);
}

/// A request following another's flight.
#[derive(Debug)]
pub(crate) struct Follower {
    pub(super) flight: Arc<Flight>,
}

/// What a request got from the table.
enum Entered {
    Lead(Permit),
    Follow(Follower),
    /// The store holds the entry now: look again.
    Stored,
}

/// How a follower's wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Waited {
    /// The flight moved on (`Running` for a blob: its file can be read; else done or gone).
    Moved(FlightState),
    /// The deadline passed with the leader still asking: [`Store::take_over`] its place.
    Stalled,
}

impl Follower {
    /// Waits until the flight leaves [`FlightState::Starting`], or `deadline` passes.
    pub(crate) async fn wait(&self, deadline: Instant) -> Waited {
        let mut progress = self.flight.progress.subscribe();
        let waited = tokio::time::timeout_at(
            deadline,
            progress.wait_for(|p| p.state != FlightState::Starting),
        )
        .await;
        match waited {
            Ok(Ok(progress)) => Waited::Moved(progress.state),
            // The sender lives in the flight this follower holds: it cannot be gone.
            Ok(Err(_)) => Waited::Moved(FlightState::Abandoned),
            Err(_) => Waited::Stalled,
        }
    }
}

impl Store {
    /// Looks for the answer to `key` with `look` (`Break`: found); when it is missing, leads the
    /// key's flight if nobody does, else follows it. Looked at again by a new leader: the last
    /// one may have finished in between.
    pub(crate) async fn lookup<T, M, F>(
        &self,
        key: FlightKey,
        mut look: impl FnMut() -> F,
    ) -> Lookup<T, M>
    where
        F: Future<Output = ControlFlow<T, M>>,
    {
        // An entry can be stored between looking and entering, or vanish from the disk after;
        // a few rounds always settle it.
        for _ in 0..3 {
            if let ControlFlow::Break(found) = look().await {
                return Lookup::Hit(found);
            }
            let permit = match self.enter(&key) {
                Entered::Lead(permit) => permit,
                Entered::Follow(follower) => return Lookup::Follow(follower),
                Entered::Stored => continue,
            };
            return match look().await {
                ControlFlow::Break(found) => {
                    permit.finish();
                    Lookup::Hit(found)
                }
                ControlFlow::Continue(seen) => Lookup::Lead { permit, seen },
            };
        }
        // The entry is listed but its file keeps vanishing: ask without followers.
        let seen = match look().await {
            ControlFlow::Break(found) => return Lookup::Hit(found),
            ControlFlow::Continue(seen) => seen,
        };
        let permit = self.permit(Arc::new(Flight::new(key)));
        Lookup::Lead { permit, seen }
    }

    /// Leads `key`'s flight if nobody does and the store does not hold it, else follows.
    fn enter(&self, key: &FlightKey) -> Entered {
        let mut state = self.lock();
        let stored = match key {
            FlightKey::Blob(digest) => state.index.contains(&Key::Blob(digest.clone())),
            FlightKey::Manifest(digest) => state.index.contains(&Key::Manifest(digest.clone())),
            FlightKey::Tag(..) => false,
        };
        if stored {
            return Entered::Stored;
        }
        if let Some(flight) = state.flights.get(key) {
            return Entered::Follow(Follower {
                flight: flight.clone(),
            });
        }
        let flight = Arc::new(Flight::new(key.clone()));
        state.flights.insert(key.clone(), flight.clone());
        drop(state);
        Entered::Lead(self.permit(flight))
    }

    /// The lead of a flight whose leader stalled past a follower's deadline; `None` when the
    /// flight has moved on or another follower took it over first (look again). The stalled
    /// leader's flight is marked abandoned, so its other followers look again and follow this
    /// one; a fill it still starts is not kept.
    pub(crate) fn take_over(&self, stalled: Follower) -> Option<Permit> {
        let flight = Arc::new(Flight::new(stalled.flight.key.clone()));
        {
            let mut state = self.lock();
            let starting = stalled.flight.progress.borrow().state == FlightState::Starting;
            if !starting || !listed(&state.flights, &stalled.flight) {
                return None;
            }
            state.flights.insert(flight.key.clone(), flight.clone());
        }
        tracing::info!(key = ?flight.key, "the request asking the upstream is stalled; another takes its place");
        stalled.flight.publish(|p| p.state = FlightState::Abandoned);
        Some(self.permit(flight))
    }

    /// A request's whole turn on `key`: looks, then leads, or follows until the leader is done
    /// and looks again. A follower waits at most `wait` for its leader to move on; past it, it
    /// takes the stalled leader's place. After a few rounds it asks alone, followed by nobody.
    pub(crate) async fn single_flight<T, M, F>(
        &self,
        key: FlightKey,
        wait: Duration,
        mut look: impl FnMut() -> F,
    ) -> Turn<T, M>
    where
        F: Future<Output = ControlFlow<T, M>>,
    {
        for _ in 0..FOLLOW_ROUNDS {
            let follower = match self.lookup(key.clone(), &mut look).await {
                Lookup::Hit(found) => return Turn::Found(found),
                Lookup::Lead { permit, seen } => return Turn::Lead { permit, seen },
                Lookup::Follow(follower) => follower,
            };
            if follower.wait(Instant::now() + wait).await != Waited::Stalled {
                continue;
            }
            let Some(permit) = self.take_over(follower) else {
                continue;
            };
            return match look().await {
                ControlFlow::Break(found) => {
                    permit.finish();
                    Turn::Found(found)
                }
                ControlFlow::Continue(seen) => Turn::Lead { permit, seen },
            };
        }
        tracing::info!(
            ?key,
            "no answer from the requests asking the upstream; asking alone"
        );
        match look().await {
            ControlFlow::Break(found) => Turn::Found(found),
            ControlFlow::Continue(seen) => Turn::Lead {
                permit: self.permit(Arc::new(Flight::new(key))),
                seen,
            },
        }
    }

    fn permit(&self, flight: Arc<Flight>) -> Permit {
        Permit {
            store: self.clone(),
            flight,
            done: false,
        }
    }
}

#[cfg(test)]
#[path = "flight_tests.rs"]
mod tests;
