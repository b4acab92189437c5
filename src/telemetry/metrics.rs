//! What hoard counts: requests by cache status, bytes from cache and from upstream, upstream
//! requests, auth failures, connections, plus a minute-by-minute history of the last hour and
//! the recent and most pulled images for the status page. Exposed as Prometheus metrics on the
//! admin listener and as JSON at `GET /stats` (read by `hoard cache stats`).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::http::CacheStatus;
use crate::oci::{Reference, Route};

/// Minutes of history kept for the status page's chart.
const HISTORY_MINUTES: usize = 60;

/// Pulls listed as "recent" on the status page.
const RECENT_PULLS: usize = 30;

/// Distinct images counted for "most pulled"; past it the least pulled half is forgotten.
const MAX_IMAGES: usize = 10_000;

type Labels = Vec<(&'static str, String)>;

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

/// Everything counted since start.
#[derive(Debug)]
pub struct Metrics {
    requests: [AtomicU64; 7],
    bytes: [AtomicU64; 7],
    registry: Registry,
    requests_total: Family<Labels, Counter>,
    bytes_total: Family<Labels, Counter>,
    upstream_requests: Family<Labels, Counter>,
    manifest_gets: Family<Labels, Counter>,
    auth_failures: Family<Labels, Counter>,
    fills_skipped: Family<Labels, Counter>,
    fills_abandoned: Counter,
    connections_open: Gauge,
    connections_total: Counter,
    connections_refused: Family<Labels, Counter>,
    /// Set from the store, the CA and the fills just before each scrape.
    pub store_bytes: Gauge,
    pub store_entries: Gauge,
    pub store_reserved_bytes: Gauge,
    pub store_evictions: Gauge,
    pub fills_in_flight: Gauge,
    pub leaf_certificates: Gauge,
    history: Mutex<VecDeque<Minute>>,
    recent: Mutex<VecDeque<Pull>>,
    popular: Mutex<HashMap<String, u64>>,
    /// The intercepted host patterns: the only hosts named in a `host` label.
    intercepted: std::sync::RwLock<crate::net::HostPatterns>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
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

impl Metrics {
    /// Creates the counters and registers them.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("hoard");
        let m = Metrics {
            requests: Default::default(),
            bytes: Default::default(),
            requests_total: Family::default(),
            bytes_total: Family::default(),
            upstream_requests: Family::default(),
            manifest_gets: Family::default(),
            auth_failures: Family::default(),
            fills_skipped: Family::default(),
            fills_abandoned: Counter::default(),
            connections_open: Gauge::default(),
            connections_total: Counter::default(),
            connections_refused: Family::default(),
            store_bytes: Gauge::default(),
            store_entries: Gauge::default(),
            store_reserved_bytes: Gauge::default(),
            store_evictions: Gauge::default(),
            fills_in_flight: Gauge::default(),
            leaf_certificates: Gauge::default(),
            history: Mutex::new(VecDeque::with_capacity(HISTORY_MINUTES + 1)),
            recent: Mutex::new(VecDeque::with_capacity(RECENT_PULLS + 1)),
            popular: Mutex::new(HashMap::new()),
            intercepted: std::sync::RwLock::default(),
            registry: Registry::default(),
        };
        registry.register(
            "requests",
            "Requests answered, by cache status",
            m.requests_total.clone(),
        );
        registry.register(
            "response_bytes",
            "Body bytes sent to clients, by source (cache, upstream, tunnel, local)",
            m.bytes_total.clone(),
        );
        registry.register(
            "upstream_requests",
            "Requests sent to registries and CDNs, by host and status",
            m.upstream_requests.clone(),
        );
        registry.register(
            "registry_manifest_gets",
            "Manifest GETs sent to each registry (Docker Hub counts these against its pull limit)",
            m.manifest_gets.clone(),
        );
        registry.register(
            "auth_failures",
            "Requests refused by proxy authentication or the client allow-list",
            m.auth_failures.clone(),
        );
        registry.register(
            "connections_open",
            "Client connections open now",
            m.connections_open.clone(),
        );
        registry.register(
            "connections",
            "Client connections accepted",
            m.connections_total.clone(),
        );
        registry.register(
            "connections_refused",
            "Client connections refused or closed by the connection limits, by reason \
             (per_client: over proxy.max_connections_per_client; evicted: an idle connection \
             closed at proxy.max_connections to admit a new one)",
            m.connections_refused.clone(),
        );
        registry.register("store_bytes", "Bytes in the store", m.store_bytes.clone());
        registry.register(
            "store_entries",
            "Blobs and manifests in the store",
            m.store_entries.clone(),
        );
        registry.register(
            "store_reserved_bytes",
            "Bytes reserved by fills in progress",
            m.store_reserved_bytes.clone(),
        );
        registry.register(
            "store_evictions",
            "Entries evicted to stay within the size limit, since start",
            m.store_evictions.clone(),
        );
        registry.register(
            "fills_in_flight",
            "Blob downloads from upstreams in progress",
            m.fills_in_flight.clone(),
        );
        registry.register(
            "fills_skipped",
            "Blob misses not made into fills, by reason (far_range: the range went upstream as \
             a range; max_fills, max_fills_per_client: streamed to the client, not kept)",
            m.fills_skipped.clone(),
        );
        registry.register(
            "fills_abandoned",
            "Fills stopped because nobody read them for cache.abandoned_fill_grace",
            m.fills_abandoned.clone(),
        );
        registry.register(
            "leaf_certificates_minted",
            "Leaf certificates minted for intercepted hosts, since start",
            m.leaf_certificates.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Counts one answered request and the body bytes it sent.
    pub fn record(&self, status: CacheStatus, bytes: u64) {
        let i = status as usize;
        self.requests[i].fetch_add(1, Ordering::Relaxed);
        self.bytes[i].fetch_add(bytes, Ordering::Relaxed);
        self.requests_total
            .get_or_create(&vec![("cache", status.as_str().to_owned())])
            .inc();
        let source = source_of(status);
        self.bytes_total
            .get_or_create(&vec![("source", source.to_owned())])
            .inc_by(bytes);
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
            match source {
                "cache" => current.from_cache += bytes,
                "upstream" => current.from_upstream += bytes,
                _ => {}
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

    /// Sets the intercepted hosts (at start and on reload): `host` labels name these and
    /// call every other host `other`, so clients cannot grow the label set without bound.
    pub fn set_intercepted(&self, patterns: crate::net::HostPatterns) {
        *self.intercepted.write().unwrap_or_else(|e| e.into_inner()) = patterns;
    }

    /// The `host` label for `host`: an intercepted name, its `*.domain` pattern, or `other`.
    fn host_label(&self, host: &str) -> String {
        self.intercepted
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .pattern_for(host)
            .unwrap_or_else(|| "other".to_owned())
    }

    /// Counts a request hoard sent upstream and the status it got (0: no response).
    pub fn upstream_request(&self, host: &str, method: &http::Method, path: &str, status: u16) {
        let host = self.host_label(host);
        if method == http::Method::GET && path.contains("/manifests/") {
            self.manifest_gets
                .get_or_create(&vec![("host", host.clone())])
                .inc();
        }
        self.upstream_requests
            .get_or_create(&vec![("host", host), ("status", status.to_string())])
            .inc();
    }

    /// Counts a refused client: `reason` is `proxy_auth`, `throttled` (too many failed proxy
    /// logins from its address) or `allow_list`.
    pub fn auth_failure(&self, reason: &'static str) {
        self.auth_failures
            .get_or_create(&vec![("reason", reason.to_owned())])
            .inc();
    }

    /// Counts a connection refused or evicted by the connection limits: `reason` is
    /// `per_client`, `full` or `evicted`.
    pub fn connection_refused(&self, reason: &'static str) {
        self.connections_refused
            .get_or_create(&vec![("reason", reason.to_owned())])
            .inc();
    }

    /// Counts a blob miss that did not start a fill: `reason` is `far_range`, `max_fills` or
    /// `max_fills_per_client`.
    pub fn fill_skipped(&self, reason: &'static str) {
        self.fills_skipped
            .get_or_create(&vec![("reason", reason.to_owned())])
            .inc();
    }

    /// Counts a fill stopped because nobody read it.
    pub fn fill_abandoned(&self) {
        self.fills_abandoned.inc();
    }

    /// Counts a client connection for as long as the returned guard lives.
    pub fn connection(&self) -> ConnectionGuard<'_> {
        self.connections_total.inc();
        self.connections_open.inc();
        ConnectionGuard(self)
    }

    /// Counts a connection handed over from the proxy port (an intercepted or tunnelled
    /// CONNECT) as open while the guard lives; it was counted as accepted already.
    pub fn upgraded(&self) -> ConnectionGuard<'_> {
        self.connections_open.inc();
        ConnectionGuard(self)
    }

    /// Client connections open now.
    pub fn open_connections(&self) -> i64 {
        self.connections_open.get()
    }

    /// Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// Requests and body bytes by cache status:
    /// `{"requests":{"HIT":n,…},"bytes":{"HIT":n,…}}`.
    pub fn to_json(&self) -> String {
        let map = |counters: &[AtomicU64; 7]| {
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

/// Where the bytes of a response came from.
pub fn source_of(status: CacheStatus) -> &'static str {
    match status {
        CacheStatus::Hit | CacheStatus::Revalidated | CacheStatus::Stale => "cache",
        CacheStatus::Miss | CacheStatus::Bypass => "upstream",
        CacheStatus::Tunnel => "tunnel",
        CacheStatus::Local => "local",
    }
}

/// Decrements the open-connections gauge when dropped.
#[derive(Debug)]
pub struct ConnectionGuard<'a>(&'a Metrics);

impl Drop for ConnectionGuard<'_> {
    fn drop(&mut self) {
        self.0.connections_open.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_feed_the_counters_history_and_pull_lists() {
        let m = Metrics::new();
        m.record(CacheStatus::Hit, 100);
        m.record(CacheStatus::Miss, 40);
        m.record(CacheStatus::Tunnel, 7);
        m.note_request("gcr.io", "/v2/p/app/manifests/v1", 200, CacheStatus::Hit);
        m.note_request(
            "gcr.io",
            "/v2/p/app/manifests/v1",
            200,
            CacheStatus::Revalidated,
        );
        m.note_request("gcr.io", "/v2/p/app/blobs/sha256:00", 200, CacheStatus::Hit);
        m.note_request(
            "gcr.io",
            "/v2/p/other/manifests/v1",
            404,
            CacheStatus::Bypass,
        );
        assert_eq!(m.count(CacheStatus::Hit), (1, 100));
        let last = m.history().last().copied().unwrap_or_default();
        assert_eq!((last.from_cache, last.from_upstream), (100, 40));
        assert_eq!(m.history().len(), HISTORY_MINUTES);
        assert_eq!(m.most_pulled(5), vec![("gcr.io/p/app:v1".to_owned(), 2)]);
        assert_eq!(m.recent_pulls().len(), 2);
        let text = m.encode();
        assert!(
            text.contains("hoard_requests_total{cache=\"HIT\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("hoard_response_bytes_total{source=\"cache\"} 100"),
            "{text}"
        );
        assert!(m.to_json().contains("\"HIT\":1"));
    }
}
