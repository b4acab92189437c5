//! Who owns what: rendezvous (highest-random-weight) hashing. Each key goes to the peer whose
//! hash of (peer, key) is highest, so adding or removing one of N peers moves only the keys that
//! peer wins or held, about 1/N of them, and every node that knows the same peers agrees.

use sha2::{Digest as _, Sha256};

/// The peers, as the nodes name each other (`host:port`), sorted and without repeats.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Ring {
    peers: Vec<String>,
}

impl Ring {
    pub(crate) fn new(mut peers: Vec<String>) -> Ring {
        peers.sort();
        peers.dedup();
        Ring { peers }
    }

    pub(crate) fn peers(&self) -> &[String] {
        &self.peers
    }

    /// The peer that owns `key`; `None` when there is none.
    pub(crate) fn owner(&self, key: &str) -> Option<&str> {
        self.peers
            .iter()
            .max_by_key(|peer| (weight(peer, key), peer.as_str()))
            .map(String::as_str)
    }
}

/// The weight of `peer` for `key`: SHA-256, so that it is the same on every build and machine of
/// the fleet (std's hashers promise neither).
fn weight(peer: &str, key: &str) -> u64 {
    let mut hash = Sha256::new();
    hash.update(peer.as_bytes());
    hash.update([0]);
    hash.update(key.as_bytes());
    let hash = hash.finalize();
    let mut first = [0; 8];
    first.copy_from_slice(&hash[..8]);
    u64::from_be_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(n: usize) -> Ring {
        Ring::new((0..n).map(|i| format!("10.0.0.{i}:3129")).collect())
    }

    fn keys() -> impl Iterator<Item = String> {
        (0..10_000).map(|i| format!("sha256:{i:064x}"))
    }

    #[test]
    fn every_key_has_one_owner_and_the_load_is_even() {
        let ring = ring(3);
        let mut counts = [0usize; 3];
        for key in keys() {
            let owner = ring.owner(&key).unwrap_or_else(|| panic!("no owner"));
            let i = ring
                .peers()
                .iter()
                .position(|p| p == owner)
                .unwrap_or_else(|| panic!("not a peer"));
            counts[i] += 1;
        }
        for count in counts {
            assert!((3_000..3_700).contains(&count), "{counts:?}");
        }
        assert_eq!(Ring::default().owner("x"), None);
    }

    #[test]
    fn the_order_peers_are_listed_in_does_not_matter() {
        let a = Ring::new(vec!["b:1".into(), "a:1".into(), "c:1".into(), "a:1".into()]);
        let b = Ring::new(vec!["c:1".into(), "a:1".into(), "b:1".into()]);
        assert_eq!(a, b);
        for key in keys().take(100) {
            assert_eq!(a.owner(&key), b.owner(&key));
        }
    }

    #[test]
    fn a_fourth_peer_takes_about_a_quarter_of_the_keys_from_the_others_only() {
        let (three, four) = (ring(3), ring(4));
        let new = "10.0.0.3:3129";
        let mut moved = 0;
        for key in keys() {
            let (before, after) = (
                three.owner(&key).unwrap_or_else(|| panic!("no owner")),
                four.owner(&key).unwrap_or_else(|| panic!("no owner")),
            );
            if before != after {
                assert_eq!(after, new, "a key moved between old peers");
                moved += 1;
            }
        }
        assert!((2_100..2_900).contains(&moved), "{moved} of 10000 moved");
    }
}
