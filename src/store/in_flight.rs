//! The flights in progress, as the store's table holds them: what each asks the upstream about
//! ([`FlightKey`]), and the progress its leader publishes to its followers ([`Progress`]). How a
//! request leads or follows one is `flight.rs`.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use tokio::sync::watch;

use super::key::HostKey;
use crate::oci::Digest;

/// The flights in progress, by key.
pub(super) type Flights = HashMap<FlightKey, Arc<Flight>>;

/// What a flight asks the upstream about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FlightKey {
    /// A blob: its leader fills it, and the others read the growing file.
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

/// Where a flight is, as its followers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FlightState {
    /// The leader is asking (for a blob: waiting for the upstream's response headers).
    Starting,
    /// A blob's fill is writing; `visible` bytes of the temp file may be read.
    Running,
    /// The answer is in the store.
    Done,
    /// A blob's fill failed: the content is not coming.
    Failed,
    /// The leader went without an answer (an upstream error, a redirect to nowhere, a follower
    /// took its place…): look again.
    Abandoned,
}

/// The progress of a flight, published to its followers.
#[derive(Debug, Clone)]
pub(crate) struct Progress {
    pub state: FlightState,
    /// Bytes of a blob's temp file that are written and may be read.
    pub visible: u64,
    /// The blob's length, when the upstream said it.
    pub length: Option<u64>,
    /// The file being written, for followers to read by descriptor: it stays the same file
    /// when the fill is renamed into the store.
    pub(super) file: Option<Arc<std::fs::File>>,
}

/// A flight in progress, shared by its leader's permit (and a blob's writer), the store's table
/// and its followers.
#[derive(Debug)]
pub(super) struct Flight {
    pub(super) key: FlightKey,
    pub(super) progress: watch::Sender<Progress>,
}

impl Flight {
    pub(super) fn new(key: FlightKey) -> Flight {
        Flight {
            key,
            progress: watch::Sender::new(Progress {
                state: FlightState::Starting,
                visible: 0,
                length: None,
                file: None,
            }),
        }
    }

    pub(super) fn publish(&self, change: impl FnOnce(&mut Progress)) {
        self.progress.send_modify(change);
    }
}

/// Whether `flight` is the one the table lists for its key.
pub(super) fn listed(table: &Flights, flight: &Arc<Flight>) -> bool {
    table
        .get(&flight.key)
        .is_some_and(|listed| Arc::ptr_eq(listed, flight))
}
