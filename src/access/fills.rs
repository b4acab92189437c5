//! Fill slots: how many blob fills run at once, in all (`cache.max_fills`) and per client address
//! (`cache.max_fills_per_client`), where a miss past a limit is streamed and verified but not
//! kept; and per registry (`[[upstream.limits]]` `max_fills`), where a fill past the limit waits
//! for a slot.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::telemetry::FillSkipped;

/// The address a request came from, put in its extensions by the intercepting server; fills
/// are counted against it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClientAddr(pub IpAddr);

/// Fills running now, in all and per client address, within `cache.max_fills` and
/// `cache.max_fills_per_client`.
#[derive(Debug, Default)]
pub(crate) struct FillSlots {
    running: Arc<Mutex<Running>>,
}

#[derive(Debug, Default)]
struct Running {
    total: usize,
    /// Only addresses with a fill running: at most `max_fills` entries.
    per_client: HashMap<IpAddr, usize>,
}

/// Which limit kept a miss from becoming a fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FillLimit {
    /// `cache.max_fills`
    Global,
    /// `cache.max_fills_per_client`
    PerClient,
}

impl FillLimit {
    /// The config key's last part, for logs and the metric label.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            FillLimit::Global => "max_fills",
            FillLimit::PerClient => "max_fills_per_client",
        }
    }
}

impl From<FillLimit> for FillSkipped {
    fn from(limit: FillLimit) -> FillSkipped {
        match limit {
            FillLimit::Global => FillSkipped::MaxFills,
            FillLimit::PerClient => FillSkipped::MaxFillsPerClient,
        }
    }
}

/// One running fill, counted until dropped.
#[derive(Debug)]
pub(crate) struct FillSlot {
    running: Arc<Mutex<Running>>,
    client: IpAddr,
}

fn lock_running(running: &Mutex<Running>) -> std::sync::MutexGuard<'_, Running> {
    running.lock().unwrap_or_else(|e| e.into_inner())
}

impl FillSlots {
    /// Fills holding a slot now.
    pub(crate) fn running(&self) -> usize {
        lock_running(&self.running).total
    }

    /// A slot for one more fill by `client`, unless a limit is reached.
    pub(crate) fn take(
        &self,
        client: IpAddr,
        max_total: usize,
        max_per_client: usize,
    ) -> Result<FillSlot, FillLimit> {
        let mut running = lock_running(&self.running);
        if running.total >= max_total {
            return Err(FillLimit::Global);
        }
        let mine = running.per_client.entry(client).or_default();
        if *mine >= max_per_client {
            return Err(FillLimit::PerClient);
        }
        *mine += 1;
        running.total += 1;
        Ok(FillSlot {
            running: self.running.clone(),
            client,
        })
    }
}

impl Drop for FillSlot {
    fn drop(&mut self) {
        let mut running = lock_running(&self.running);
        running.total = running.total.saturating_sub(1);
        if let Some(mine) = running.per_client.get_mut(&self.client) {
            *mine = mine.saturating_sub(1);
            if *mine == 0 {
                running.per_client.remove(&self.client);
            }
        }
    }
}

/// Blob fetches from each registry running now, within its `max_fills`. A fetch past it waits
/// for a slot, first come first served.
#[derive(Debug, Default)]
pub(crate) struct HostSlots {
    /// By registry key: the `max_fills` a semaphore was made for, and the semaphore. A reload
    /// that changes `max_fills` makes a new one; slots of the old one end with their fetches.
    hosts: Mutex<HashMap<String, (usize, Arc<Semaphore>)>>,
}

/// A registry's fill slot, held while its fetch runs; `None` when the registry has no limit.
pub(crate) type HostSlot = Option<OwnedSemaphorePermit>;

impl HostSlots {
    /// A slot for one more fetch from `host_key`, within `max` at once: waits for one past it.
    /// Returns the slot and how long it waited.
    pub(crate) async fn take(&self, host_key: &str, max: usize) -> (HostSlot, Duration) {
        let semaphore = {
            let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
            let entry = hosts
                .entry(host_key.to_owned())
                .or_insert_with(|| (max, Arc::new(Semaphore::new(max))));
            if entry.0 != max {
                *entry = (max, Arc::new(Semaphore::new(max)));
            }
            entry.1.clone()
        };
        let start = Instant::now();
        // The semaphore is never closed.
        let slot = semaphore.acquire_owned().await.ok();
        (slot, start.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_slots_count_per_client_and_in_all() {
        let slots = FillSlots::default();
        let (a, b, c) = (
            IpAddr::from([10, 0, 0, 1]),
            IpAddr::from([10, 0, 0, 2]),
            IpAddr::from([10, 0, 0, 3]),
        );
        let first = slots.take(a, 2, 1);
        assert!(first.is_ok());
        assert_eq!(slots.take(a, 2, 1).err(), Some(FillLimit::PerClient));
        let second = slots.take(b, 2, 1);
        assert!(second.is_ok());
        assert_eq!(slots.take(c, 2, 1).err(), Some(FillLimit::Global));
        drop(first);
        assert!(slots.take(a, 2, 1).is_ok(), "a dropped slot is free again");
        drop(second);
        assert!(lock_running(&slots.running).per_client.is_empty());
        assert_eq!(lock_running(&slots.running).total, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_fetch_past_a_registrys_max_fills_waits_for_a_slot() {
        let slots = Arc::new(HostSlots::default());
        let (first, waited) = slots.take("gcr.io", 1).await;
        assert!(first.is_some());
        assert_eq!(waited, Duration::ZERO);
        assert!(
            slots.take("quay.io", 1).await.0.is_some(),
            "another registry's slots"
        );
        let waiting = tokio::spawn({
            let slots = slots.clone();
            async move { slots.take("gcr.io", 1).await }
        });
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(!waiting.is_finished(), "waits while the slot is taken");
        drop(first);
        let Ok((second, waited)) = waiting.await else {
            panic!("the waiting task failed");
        };
        assert!(second.is_some());
        assert_eq!(waited, Duration::from_secs(3));
    }
}
