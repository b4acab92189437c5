//! Single flight: requests that would ask the upstream the same question (a manifest by digest, a
//! tag) wait for the first one to finish and then find its answer in the store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

/// Requests that would ask the upstream the same question (a manifest by digest, a tag) wait for
/// the first one to finish and then find its answer in the store: one upstream call, not one
/// per client, when a thousand nodes pull the same image at once.
#[derive(Debug, Default)]
pub struct Flights {
    map: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Held while a request asks the upstream on behalf of everyone waiting on the same key.
pub struct FlightGuard<'a> {
    flights: &'a Flights,
    key: String,
    guard: Option<OwnedMutexGuard<()>>,
}

impl Flights {
    /// Waits until no other request holds `key`, then holds it.
    pub async fn enter(&self, key: String) -> FlightGuard<'_> {
        let lock = {
            let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
            map.entry(key.clone()).or_default().clone()
        };
        let guard = lock.lock_owned().await;
        FlightGuard {
            flights: self,
            key,
            guard: Some(guard),
        }
    }
}

impl Drop for FlightGuard<'_> {
    fn drop(&mut self) {
        let mut map = self.flights.map.lock().unwrap_or_else(|e| e.into_inner());
        self.guard.take();
        // Only the map's own reference left: nobody waits, forget the key.
        if map
            .get(&self.key)
            .is_some_and(|l| Arc::strong_count(l) == 1)
        {
            map.remove(&self.key);
        }
    }
}
