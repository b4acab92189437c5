//! Upstream shaping (`upstream.max_rate`, `[[upstream.limits]]`): token buckets that pace the
//! bytes hoard reads from registries and their redirect targets, in all and per registry. A
//! transfer takes its bytes in quanta of [`QUANTUM`], each queued in turn behind the others (the
//! bucket's lock is first come, first served), so concurrent transfers share the rate evenly and
//! none starves. Only what `registry::source` reads from a registry goes through here: hits,
//! tunnels, the S3 tier and fleet peers are never paced.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body::Frame;
use http_body_util::{BodyExt as _, StreamBody};
use tokio::time::Instant;

use crate::config::Shaping;
use crate::http::{Body, BoxError};

/// The most a transfer takes from a bucket at once: one TLS record, so that a transfer waits
/// behind at most one record of each other transfer (4 × 16 KiB at 40 Mbit/s is 13 ms).
pub(crate) const QUANTUM: usize = 16 << 10;

/// How long a full bucket lets bytes through unpaced: 20 ms of the rate, at least four quanta.
/// Larger than a timer tick (1 ms) many times over, so a sleep that ends late costs no rate.
const BURST: Duration = Duration::from_millis(20);

/// A token bucket of bytes.
#[derive(Debug)]
pub(crate) struct Bucket {
    /// Bytes per second.
    rate: u64,
    /// The most tokens it holds.
    burst: f64,
    /// First come, first served: waiting transfers take their turns in order.
    state: tokio::sync::Mutex<Tokens>,
}

#[derive(Debug)]
struct Tokens {
    available: f64,
    at: Instant,
}

impl Bucket {
    /// A bucket of `rate` bytes per second with the default burst.
    pub(crate) fn new(rate: u64) -> Bucket {
        let burst = (rate as f64 * BURST.as_secs_f64()).max((4 * QUANTUM) as f64);
        Bucket::with_burst(rate, burst)
    }

    /// A bucket of `rate` bytes per second holding at most `burst` bytes, full.
    pub(crate) fn with_burst(rate: u64, burst: f64) -> Bucket {
        Bucket {
            rate: rate.max(1),
            burst,
            state: tokio::sync::Mutex::new(Tokens {
                available: burst,
                at: Instant::now(),
            }),
        }
    }

    /// Waits until `bytes` may pass, in turn behind the transfers already waiting; returns how
    /// long it waited.
    pub(crate) async fn take(&self, bytes: usize) -> Duration {
        let start = Instant::now();
        let mut tokens = self.state.lock().await;
        // A take larger than the burst fills the bucket that far for itself.
        let cap = self.burst.max(bytes as f64);
        self.refill(&mut tokens, cap);
        let short = bytes as f64 - tokens.available;
        if short > 0.0 {
            // The lock is held while sleeping: the next transfer's turn comes after this one.
            tokio::time::sleep(Duration::from_secs_f64(short / self.rate as f64)).await;
            self.refill(&mut tokens, cap);
        }
        tokens.available = (tokens.available - bytes as f64).max(0.0);
        start.elapsed()
    }

    fn refill(&self, tokens: &mut Tokens, cap: f64) {
        let now = Instant::now();
        let earned = now.duration_since(tokens.at).as_secs_f64() * self.rate as f64;
        tokens.available = (tokens.available + earned).min(cap);
        tokens.at = now;
    }
}

/// The buckets of the configured rates, kept across requests; a bucket is made anew when its
/// rate changes (a reload).
#[derive(Debug, Default)]
pub(crate) struct Shaper {
    global: Mutex<Option<Arc<Bucket>>>,
    hosts: Mutex<HashMap<String, Arc<Bucket>>>,
}

impl Shaper {
    /// The buckets a transfer from the registry `host_key` goes through under `shaping`: its
    /// own limit's, then the global one. Empty: not paced.
    pub(crate) fn buckets(&self, shaping: &Shaping, host_key: &str) -> Vec<Arc<Bucket>> {
        let mut buckets = Vec::new();
        if let Some(rate) = shaping.limit_for(host_key).and_then(|l| l.max_rate) {
            let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
            let bucket = hosts
                .entry(host_key.to_owned())
                .or_insert_with(|| Arc::new(Bucket::new(rate)));
            if bucket.rate != rate {
                *bucket = Arc::new(Bucket::new(rate));
            }
            buckets.push(bucket.clone());
        }
        if let Some(rate) = shaping.max_rate {
            let mut global = self.global.lock().unwrap_or_else(|e| e.into_inner());
            let bucket = match global.as_ref() {
                Some(bucket) if bucket.rate == rate => bucket.clone(),
                _ => global.insert(Arc::new(Bucket::new(rate))).clone(),
            };
            buckets.push(bucket);
        }
        buckets
    }
}

/// `body`, paced by `buckets`: each frame passes in quanta, each taken from every bucket in turn.
/// `waited` hears each wait. Frames come out at most [`QUANTUM`] long, so a reader's read timeout
/// covers one turn, not a whole frame's worth of others' turns. `keep` lives as long as the body
/// (a registry's fill slot).
pub(crate) fn paced<K: Send + Sync + 'static>(
    body: Body,
    buckets: Vec<Arc<Bucket>>,
    waited: impl Fn(Duration) + Send + Sync + 'static,
    keep: K,
) -> Body {
    struct State<W, K> {
        body: Body,
        rest: Bytes,
        buckets: Vec<Arc<Bucket>>,
        waited: W,
        _keep: K,
    }
    let state = State {
        body,
        rest: Bytes::new(),
        buckets,
        waited,
        _keep: keep,
    };
    let frames = futures_util::stream::unfold(state, |mut state| async move {
        while state.rest.is_empty() {
            let frame = match state.body.frame().await? {
                Ok(frame) => frame,
                Err(err) => return Some((Err::<Frame<Bytes>, BoxError>(err), state)),
            };
            match frame.into_data() {
                Ok(data) => state.rest = data,
                Err(frame) => return Some((Ok(frame), state)),
            }
        }
        let quantum = state.rest.split_to(state.rest.len().min(QUANTUM));
        let mut waited = Duration::ZERO;
        for bucket in &state.buckets {
            waited += bucket.take(quantum.len()).await;
        }
        if !waited.is_zero() {
            (state.waited)(waited);
        }
        Some((Ok(Frame::data(quantum)), state))
    });
    StreamBody::new(frames).boxed()
}

#[cfg(test)]
#[path = "shape_tests.rs"]
mod tests;
