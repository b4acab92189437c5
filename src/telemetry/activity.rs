//! What the status page and `GET /stats` show: requests and bytes by cache status, a
//! minute-by-minute history of the last hour, and the recent and most pulled images. Kept apart
//! from the Prometheus metrics, which the same [`super::Metrics::record`] feeds.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::Source;
use crate::http::CacheStatus;
use crate::oci::{Reference, Route};

/// Minutes of history kept for the status page's chart.
const HISTORY_MINUTES: usize = 60;

/// Pulls listed as "recent" on the status page.
const RECENT_PULLS: usize = 30;

/// Distinct images counted for "most pulled"; past it the least pulled half is forgotten.
const MAX_IMAGES: usize = 10_000;

/// Bytes served in one minute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Minute {
    /// Minutes since the Unix epoch.
    pub minute: u64,
    pub from_cache: u64,
    pub from_upstream: u64,
}

/// One pull of an image by tag, as the status page lists it.
#[derive(Debug, Clone)]
pub struct Pull {
    pub at: SystemTime,
    pub image: String,
    pub cache: CacheStatus,
}

/// Requests, bytes and pulls since start, for the status page.
#[derive(Debug)]
pub struct Activity {
    requests: [AtomicU64; CacheStatus::ALL.len()],
    bytes: [AtomicU64; CacheStatus::ALL.len()],
    history: Mutex<VecDeque<Minute>>,
    recent: Mutex<VecDeque<Pull>>,
    popular: Mutex<HashMap<String, u64>>,
}

impl Default for Activity {
    fn default() -> Activity {
        Activity {
            requests: Default::default(),
            bytes: Default::default(),
            history: Mutex::new(VecDeque::with_capacity(HISTORY_MINUTES + 1)),
            recent: Mutex::new(VecDeque::with_capacity(RECENT_PULLS + 1)),
            popular: Mutex::new(HashMap::new()),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn now_minute() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 60)
}

impl Activity {
    /// Counts one answered request and the body bytes it sent, in the current minute too.
    pub(super) fn record(&self, status: CacheStatus, bytes: u64) {
        let i = status as usize;
        self.requests[i].fetch_add(1, Ordering::Relaxed);
        self.bytes[i].fetch_add(bytes, Ordering::Relaxed);
        let minute = now_minute();
        let mut history = lock(&self.history);
        if history.back().is_none_or(|m| m.minute != minute) {
            history.push_back(Minute {
                minute,
                ..Minute::default()
            });
            while history.len() > HISTORY_MINUTES {
                history.pop_front();
            }
        }
        if let Some(current) = history.back_mut() {
            match Source::of(status) {
                Source::Cache => current.from_cache += bytes,
                Source::Upstream => current.from_upstream += bytes,
                Source::Tunnel | Source::Local => {}
            }
        }
    }

    /// Notes a pull when a request resolved a tag (`HEAD`/`GET` of `/v2/<repo>/manifests/<tag>`).
    pub fn note_request(&self, host: &str, path: &str, status: u16, cache: CacheStatus) {
        if status != 200 {
            return;
        }
        let Route::Manifest {
            repo,
            reference: Reference::Tag(tag),
        } = Route::parse(path)
        else {
            return;
        };
        let image = format!("{host}/{repo}:{tag}");
        {
            let mut popular = lock(&self.popular);
            if popular.len() >= MAX_IMAGES && !popular.contains_key(&image) {
                let mut counts: Vec<u64> = popular.values().copied().collect();
                counts.sort_unstable();
                let cutoff = counts[counts.len() / 2];
                popular.retain(|_, n| *n > cutoff);
            }
            *popular.entry(image.clone()).or_default() += 1;
        }
        let mut recent = lock(&self.recent);
        recent.push_front(Pull {
            at: SystemTime::now(),
            image,
            cache,
        });
        recent.truncate(RECENT_PULLS);
    }

    /// Requests and body bytes by cache status:
    /// `{"requests":{"HIT":n,…},"bytes":{"HIT":n,…}}`.
    pub fn to_json(&self) -> String {
        let map = |counters: &[AtomicU64; CacheStatus::ALL.len()]| {
            CacheStatus::ALL
                .iter()
                .map(|s| {
                    format!(
                        "\"{}\":{}",
                        s.as_str(),
                        counters[*s as usize].load(Ordering::Relaxed)
                    )
                })
                .collect::<Vec<_>>()
                .join(",")
        };
        format!(
            "{{\"requests\":{{{}}},\"bytes\":{{{}}}}}",
            map(&self.requests),
            map(&self.bytes)
        )
    }

    /// Requests and bytes for one status.
    pub fn count(&self, status: CacheStatus) -> (u64, u64) {
        let i = status as usize;
        (
            self.requests[i].load(Ordering::Relaxed),
            self.bytes[i].load(Ordering::Relaxed),
        )
    }

    /// The last hour, a minute at a time, oldest first, minutes without traffic included.
    pub fn history(&self) -> Vec<Minute> {
        let now = now_minute();
        let history = lock(&self.history);
        (0..HISTORY_MINUTES as u64)
            .rev()
            .map(|ago| {
                let minute = now.saturating_sub(ago);
                history
                    .iter()
                    .find(|m| m.minute == minute)
                    .copied()
                    .unwrap_or(Minute {
                        minute,
                        ..Minute::default()
                    })
            })
            .collect()
    }

    /// The most recent pulls, newest first.
    pub fn recent_pulls(&self) -> Vec<Pull> {
        lock(&self.recent).iter().cloned().collect()
    }

    /// The `n` most pulled images with their pull counts.
    pub fn most_pulled(&self, n: usize) -> Vec<(String, u64)> {
        let mut all: Vec<(String, u64)> = lock(&self.popular)
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        all.truncate(n);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_feed_the_counts_history_and_pull_lists() {
        let a = Activity::default();
        a.record(CacheStatus::Hit, 100);
        a.record(CacheStatus::Miss, 40);
        a.record(CacheStatus::Tunnel, 7);
        a.note_request("gcr.io", "/v2/p/app/manifests/v1", 200, CacheStatus::Hit);
        a.note_request(
            "gcr.io",
            "/v2/p/app/manifests/v1",
            200,
            CacheStatus::Revalidated,
        );
        a.note_request("gcr.io", "/v2/p/app/blobs/sha256:00", 200, CacheStatus::Hit);
        a.note_request(
            "gcr.io",
            "/v2/p/other/manifests/v1",
            404,
            CacheStatus::Bypass,
        );
        assert_eq!(a.count(CacheStatus::Hit), (1, 100));
        let last = a.history().last().copied().unwrap_or_default();
        assert_eq!((last.from_cache, last.from_upstream), (100, 40));
        assert_eq!(a.history().len(), HISTORY_MINUTES);
        assert_eq!(a.most_pulled(5), vec![("gcr.io/p/app:v1".to_owned(), 2)]);
        assert_eq!(a.recent_pulls().len(), 2);
        assert!(a.to_json().contains("\"HIT\":1"));
    }
}
