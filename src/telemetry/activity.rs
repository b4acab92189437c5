//! What the status page and `GET /stats` show: requests and bytes by cache status, a
//! minute-by-minute history of the last hour per listener (proxy or mirror), and the recent and
//! most pulled images. Kept apart
//! from the Prometheus metrics, which the same [`super::Metrics::record`] feeds.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::labels::{BytesFrom, Via};
use crate::http::CacheStatus;
use crate::oci::{Reference, Route};

/// Minutes of history kept for the status page's chart.
const HISTORY_MINUTES: usize = 60;

/// Pulls listed as "recent" on the status page.
const RECENT_PULLS: usize = 30;

/// Distinct images counted for "most pulled"; past it the least pulled half is forgotten.
const MAX_IMAGES: usize = 10_000;

/// Requests answered and body bytes sent, from the store and from upstreams.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Traffic {
    pub requests: u64,
    pub from_cache: u64,
    pub from_upstream: u64,
}

impl Traffic {
    fn add(&mut self, status: CacheStatus, bytes: u64) {
        self.requests += 1;
        match BytesFrom::of(status) {
            BytesFrom::Cache => self.from_cache += bytes,
            BytesFrom::Upstream => self.from_upstream += bytes,
            BytesFrom::Tunnel | BytesFrom::Local => {}
        }
    }
}

impl std::iter::Sum for Traffic {
    fn sum<I: Iterator<Item = Traffic>>(iter: I) -> Traffic {
        iter.fold(Traffic::default(), |a, b| Traffic {
            requests: a.requests + b.requests,
            from_cache: a.from_cache + b.from_cache,
            from_upstream: a.from_upstream + b.from_upstream,
        })
    }
}

/// The traffic of one minute, per listener.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Minute {
    /// Minutes since the Unix epoch.
    pub minute: u64,
    /// Indexed by `Via as usize`.
    pub via: [Traffic; Via::ALL.len()],
}

impl Minute {
    /// Both listeners together.
    pub(crate) fn total(&self) -> Traffic {
        self.via.iter().copied().sum()
    }
}

/// One pull of an image by tag, as the status page lists it.
#[derive(Debug, Clone)]
pub(crate) struct Pull {
    pub at: SystemTime,
    pub image: String,
    pub cache: CacheStatus,
    pub via: Via,
}

/// Requests, bytes and pulls since start, for the status page.
#[derive(Debug)]
pub(crate) struct Activity {
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
    pub(super) fn record(&self, via: Via, status: CacheStatus, bytes: u64) {
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
            current.via[via as usize].add(status, bytes);
        }
    }

    /// Notes a pull when a request resolved a tag (`HEAD`/`GET` of `/v2/<repo>/manifests/<tag>`).
    pub(crate) fn note_request(
        &self,
        via: Via,
        host: &str,
        path: &str,
        status: u16,
        cache: CacheStatus,
    ) {
        // Only pulls by tag are noted: most requests (blobs) go without parsing the path.
        if status != 200 || !path.contains("/manifests/") {
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
            match popular.get_mut(&image) {
                Some(pulls) => *pulls += 1,
                None => {
                    popular.insert(image.clone(), 1);
                }
            }
        }
        let mut recent = lock(&self.recent);
        recent.push_front(Pull {
            at: SystemTime::now(),
            image,
            cache,
            via,
        });
        recent.truncate(RECENT_PULLS);
    }

    /// Requests and body bytes by cache status:
    /// `{"requests":{"HIT":n,…},"bytes":{"HIT":n,…}}`.
    pub(crate) fn to_json(&self) -> String {
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
    pub(crate) fn count(&self, status: CacheStatus) -> (u64, u64) {
        let i = status as usize;
        (
            self.requests[i].load(Ordering::Relaxed),
            self.bytes[i].load(Ordering::Relaxed),
        )
    }

    /// The last hour, a minute at a time, oldest first, minutes without traffic included.
    pub(crate) fn history(&self) -> Vec<Minute> {
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

    /// The last hour's traffic through each listener, indexed by `Via as usize`.
    pub(crate) fn last_hour(&self) -> [Traffic; Via::ALL.len()] {
        let since = now_minute().saturating_sub(HISTORY_MINUTES as u64 - 1);
        let history = lock(&self.history);
        let recent = history.iter().filter(|m| m.minute >= since);
        Via::ALL.map(|via| recent.clone().map(|m| m.via[via as usize]).sum())
    }

    /// The most recent pulls, newest first.
    pub(crate) fn recent_pulls(&self) -> Vec<Pull> {
        lock(&self.recent).iter().cloned().collect()
    }

    /// The `n` most pulled images with their pull counts.
    pub(crate) fn most_pulled(&self, n: usize) -> Vec<(String, u64)> {
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
        a.record(Via::Proxy, CacheStatus::Hit, 100);
        a.record(Via::Proxy, CacheStatus::Miss, 40);
        a.record(Via::Proxy, CacheStatus::Tunnel, 7);
        a.record(Via::Mirror, CacheStatus::Hit, 5);
        let pull = |via, path, status, cache| a.note_request(via, "gcr.io", path, status, cache);
        pull(Via::Proxy, "/v2/p/app/manifests/v1", 200, CacheStatus::Hit);
        pull(
            Via::Mirror,
            "/v2/p/app/manifests/v1",
            200,
            CacheStatus::Revalidated,
        );
        pull(
            Via::Proxy,
            "/v2/p/app/blobs/sha256:00",
            200,
            CacheStatus::Hit,
        );
        pull(
            Via::Proxy,
            "/v2/p/other/manifests/v1",
            404,
            CacheStatus::Bypass,
        );
        assert_eq!(a.count(CacheStatus::Hit), (2, 105));
        let last = a.history().last().copied().unwrap_or_default();
        let total = last.total();
        assert_eq!(
            (total.requests, total.from_cache, total.from_upstream),
            (4, 105, 40)
        );
        let [proxy, mirror, fleet] = a.last_hour();
        assert_eq!(
            (proxy.requests, proxy.from_cache, proxy.from_upstream),
            (3, 100, 40)
        );
        assert_eq!(
            (mirror.requests, mirror.from_cache, mirror.from_upstream),
            (1, 5, 0)
        );
        assert_eq!(fleet.requests, 0);
        assert_eq!(a.history().len(), HISTORY_MINUTES);
        // One image, pulled through either listener: one cache, one count.
        assert_eq!(a.most_pulled(5), vec![("gcr.io/p/app:v1".to_owned(), 2)]);
        let vias: Vec<Via> = a.recent_pulls().iter().map(|p| p.via).collect();
        assert_eq!(vias, [Via::Mirror, Via::Proxy]);
        assert!(a.to_json().contains("\"HIT\":2"));
    }
}
