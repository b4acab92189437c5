//! The signatures a peer endpoint has accepted lately, by nonce: a signed request is good once.
//! A nonce is kept as long as its signature's time could still pass the clock check, so the set
//! holds at most the last two minutes' requests.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Nonces kept at most: about 2,000 peer requests a second for two minutes. Past it, requests
/// are refused (the node then asks the registry itself) until old nonces expire.
const MAX_NONCES: usize = 1 << 18;

/// Nonces of accepted signatures, with their signed time (unix seconds).
#[derive(Debug, Default)]
pub(crate) struct Replays {
    seen: Mutex<HashMap<[u8; 16], u64>>,
}

impl Replays {
    /// Records `nonce` signed at `time` (unix seconds, `now` the receiver's clock), for a
    /// signature good within `window` of its time; `false` when it was used before, or when too
    /// many are kept to tell.
    pub(crate) fn first_use(&self, nonce: [u8; 16], time: u64, now: u64, window: Duration) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= MAX_NONCES / 2 {
            let oldest = now.saturating_sub(window.as_secs());
            seen.retain(|_, signed| *signed >= oldest);
        }
        if seen.len() >= MAX_NONCES {
            return false;
        }
        seen.insert(nonce, time).is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_is_good_once() {
        let replays = Replays::default();
        let window = Duration::from_secs(60);
        assert!(replays.first_use([1; 16], 100, 100, window));
        assert!(!replays.first_use([1; 16], 100, 100, window));
        assert!(replays.first_use([2; 16], 100, 100, window));
    }
}
