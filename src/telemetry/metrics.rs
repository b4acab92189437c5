//! The Prometheus side: requests by cache status and bytes by source, each by listener (`via`:
//! proxy, mirror or fleet), upstream requests, auth failures, connections, fills, the shared tier
//! and store gauges, exposed on the admin listener at `/metrics`. Labels are types (`labels.rs`).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::activity::Activity;
use super::labels::{
    AuthFailure, AuthFailureLabel, BytesFrom, BytesLabels, ConnectionRefused,
    ConnectionRefusedLabel, CredentialSourceLabels, FillSkipped, FillSkippedLabel, HostLabel,
    PeerFailure, PeerFailureLabel, PeerStateLabel, RequestLabels, TierRead, TierReadLabel,
    TierWrite, TierWriteLabel, UpstreamLabels, Via,
};
use crate::http::CacheStatus;

/// A counter of seconds.
type Seconds = Counter<f64, std::sync::atomic::AtomicU64>;

/// Everything counted since start.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    requests_total: Family<RequestLabels, Counter>,
    bytes_total: Family<BytesLabels, Counter>,
    upstream_requests: Family<UpstreamLabels, Counter>,
    manifest_gets: Family<HostLabel, Counter>,
    auth_failures: Family<AuthFailureLabel, Counter>,
    credential_source_failures: Family<CredentialSourceLabels, Counter>,
    fills_skipped: Family<FillSkippedLabel, Counter>,
    fills_abandoned: Counter,
    upstream_throttled: Family<HostLabel, Seconds>,
    fill_waits: Family<HostLabel, Seconds>,
    connections_open: Gauge,
    connections_total: Counter,
    connections_refused: Family<ConnectionRefusedLabel, Counter>,
    peer_reads: Counter,
    duplicate_fetches: Family<PeerFailureLabel, Counter>,
    peers: Family<PeerStateLabel, Gauge>,
    tier_reads: Family<TierReadLabel, Counter>,
    tier_writes: Family<TierWriteLabel, Counter>,
    tier_use_records: Family<TierWriteLabel, Counter>,
    /// Set from the store, the CA and the fills just before each scrape.
    pub store_bytes: Gauge,
    pub store_entries: Gauge,
    pub store_reserved_bytes: Gauge,
    pub store_evictions: Gauge,
    pub fills_in_flight: Gauge,
    pub leaf_certificates: Gauge,
    /// When the CA expires (Unix seconds), and how many intercepted hosts it cannot sign for.
    pub ca_expiry: Gauge,
    pub ca_uncovered_hosts: Gauge,
    /// What the status page shows, fed by [`Metrics::record`] too.
    activity: Activity,
    /// The intercepted host patterns: the only hosts named in a `host` label.
    intercepted: std::sync::RwLock<crate::net::HostPatterns>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// Creates the counters and registers them.
    pub(crate) fn new() -> Metrics {
        let mut registry = Registry::with_prefix("hoard");
        let m = Metrics {
            requests_total: Family::default(),
            bytes_total: Family::default(),
            upstream_requests: Family::default(),
            manifest_gets: Family::default(),
            auth_failures: Family::default(),
            credential_source_failures: Family::default(),
            fills_skipped: Family::default(),
            fills_abandoned: Counter::default(),
            upstream_throttled: Family::default(),
            fill_waits: Family::default(),
            connections_open: Gauge::default(),
            connections_total: Counter::default(),
            connections_refused: Family::default(),
            peer_reads: Counter::default(),
            duplicate_fetches: Family::default(),
            peers: Family::default(),
            tier_reads: Family::default(),
            tier_writes: Family::default(),
            tier_use_records: Family::default(),
            store_bytes: Gauge::default(),
            store_entries: Gauge::default(),
            store_reserved_bytes: Gauge::default(),
            store_evictions: Gauge::default(),
            fills_in_flight: Gauge::default(),
            leaf_certificates: Gauge::default(),
            ca_expiry: Gauge::default(),
            ca_uncovered_hosts: Gauge::default(),
            activity: Activity::default(),
            intercepted: std::sync::RwLock::default(),
            registry: Registry::default(),
        };
        registry.register(
            "requests",
            "Requests answered, by cache status and listener (via: proxy, mirror, fleet)",
            m.requests_total.clone(),
        );
        registry.register(
            "response_bytes",
            "Body bytes sent to clients, by source (cache, upstream, tunnel, local) and listener \
             (via: proxy, mirror, fleet)",
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
            "credential_source_failures",
            "Times a source of hoard's registry accounts (docker-config, helper, gcp-metadata, \
             azure-identity) gave none, by registry host and source",
            m.credential_source_failures.clone(),
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
            "Blobs, manifests and tag records in the store",
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
             a range; max_fills, max_fills_per_client, no_length (no Content-Length), too_big \
             (above cache.max_blob_size): streamed to the client, not kept)",
            m.fills_skipped.clone(),
        );
        registry.register(
            "fills_abandoned",
            "Fills stopped because nobody read them for cache.abandoned_fill_grace",
            m.fills_abandoned.clone(),
        );
        registry.register(
            "upstream_throttled_seconds",
            "Time transfers from registries waited for upstream.max_rate and the registry's own \
             max_rate, summed over transfers, by registry host",
            m.upstream_throttled.clone(),
        );
        registry.register(
            "upstream_fill_wait_seconds",
            "Time blob fetches waited for a slot within the registry's max_fills \
             ([[upstream.limits]]), by registry host",
            m.fill_waits.clone(),
        );
        registry.register(
            "leaf_certificates_minted",
            "Leaf certificates minted for intercepted hosts, since start",
            m.leaf_certificates.clone(),
        );
        registry.register(
            "ca_expiry_timestamp_seconds",
            "When hoard's CA certificate expires, in seconds since the Unix epoch",
            m.ca_expiry.clone(),
        );
        registry.register(
            "ca_uncovered_hosts",
            "Intercepted host patterns the CA's name constraints leave out (tunnelled; run \
             hoard ca renew and restart)",
            m.ca_uncovered_hosts.clone(),
        );
        registry.register(
            "fleet_peer_reads",
            "Requests this node sent to the fleet peer that owns the object, answered by it",
            m.peer_reads.clone(),
        );
        registry.register(
            "fleet_duplicate_fetches",
            "Requests for an object a peer owns that this node sent the registry itself, by \
             reason (unreachable, timeout: fleet.peer_timeout passed, refused, broken: the owner's \
             answer broke off and the rest was asked for)",
            m.duplicate_fetches.clone(),
        );
        registry.register(
            "fleet_peers",
            "Fleet peers by state (up: its last answer came; down: its last request failed)",
            m.peers.clone(),
        );
        registry.register(
            "tier_reads",
            "Reads of the shared S3 tier ([store.s3]) on a local miss, by result (hit, miss, \
             error, corrupt: did not match its digest and was deleted)",
            m.tier_reads.clone(),
        );
        registry.register(
            "tier_writes",
            "Uploads to the shared S3 tier of what this node fetched from a registry, by result \
             (created, already_there, error)",
            m.tier_writes.clone(),
        );
        registry.register(
            "tier_use_records",
            "Use records written to the shared S3 tier, by result (created, error)",
            m.tier_use_records.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Counts one request answered through the listener `via` and the body bytes it sent (and
    /// shows it on the status page).
    pub(crate) fn record(&self, via: Via, status: CacheStatus, bytes: u64) {
        self.requests_total
            .get_or_create(&RequestLabels { cache: status, via })
            .inc();
        let source = BytesFrom::of(status);
        self.bytes_total
            .get_or_create(&BytesLabels { source, via })
            .inc_by(bytes);
        self.activity.record(via, status, bytes);
    }

    /// What the status page shows: the last hour, recent and most pulled images.
    pub(crate) fn activity(&self) -> &Activity {
        &self.activity
    }

    /// Sets the intercepted hosts (at start and on reload): `host` labels name these and
    /// call every other host `other`, so clients cannot grow the label set without bound.
    pub(crate) fn set_intercepted(&self, patterns: crate::net::HostPatterns) {
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
    pub(crate) fn upstream_request(
        &self,
        host: &str,
        method: &http::Method,
        path: &str,
        status: u16,
    ) {
        let host = self.host_label(host);
        if method == http::Method::GET && path.contains("/manifests/") {
            self.manifest_gets
                .get_or_create(&HostLabel { host: host.clone() })
                .inc();
        }
        self.upstream_requests
            .get_or_create(&UpstreamLabels { host, status })
            .inc();
    }

    /// Counts a source of hoard's registry accounts that gave none.
    pub(crate) fn credential_source_failure(&self, host: &str, source: &'static str) {
        self.credential_source_failures
            .get_or_create(&CredentialSourceLabels {
                host: host.to_owned(),
                source,
            })
            .inc();
    }

    /// Counts a refused client.
    pub(crate) fn auth_failure(&self, reason: AuthFailure) {
        self.auth_failures
            .get_or_create(&AuthFailureLabel { reason })
            .inc();
    }

    /// Counts a connection refused or evicted by the connection limits.
    pub(crate) fn connection_refused(&self, reason: ConnectionRefused) {
        self.connections_refused
            .get_or_create(&ConnectionRefusedLabel { reason })
            .inc();
    }

    /// Counts a blob miss that did not start a fill.
    pub(crate) fn fill_skipped(&self, reason: FillSkipped) {
        self.fills_skipped
            .get_or_create(&FillSkippedLabel { reason })
            .inc();
    }

    /// Adds time a transfer from the registry `host` waited for the rate limits.
    pub(crate) fn upstream_throttled(&self, host: &str, waited: std::time::Duration) {
        let host = self.host_label(host);
        let family = &self.upstream_throttled;
        family
            .get_or_create(&HostLabel { host })
            .inc_by(waited.as_secs_f64());
    }

    /// Adds time a blob fetch from the registry `host` waited for one of its fill slots.
    pub(crate) fn fill_wait(&self, host: &str, waited: std::time::Duration) {
        let host = self.host_label(host);
        let family = &self.fill_waits;
        family
            .get_or_create(&HostLabel { host })
            .inc_by(waited.as_secs_f64());
    }

    /// Counts a fill stopped because nobody read it.
    pub(crate) fn fill_abandoned(&self) {
        self.fills_abandoned.inc();
    }

    /// Counts a request a peer that owns the object answered.
    pub(crate) fn peer_read(&self) {
        self.peer_reads.inc();
    }

    /// Counts a request sent to the registry because the owner could not answer it.
    pub(crate) fn duplicate_fetch(&self, reason: PeerFailure) {
        self.duplicate_fetches
            .get_or_create(&PeerFailureLabel { reason })
            .inc();
    }

    /// Counts a read of the shared tier.
    pub(crate) fn tier_read(&self, result: TierRead) {
        self.tier_reads
            .get_or_create(&TierReadLabel { result })
            .inc();
    }

    /// Counts an upload to the shared tier.
    pub(crate) fn tier_write(&self, result: TierWrite) {
        self.tier_writes
            .get_or_create(&TierWriteLabel { result })
            .inc();
    }

    /// Counts a use record written to the shared tier, or not.
    pub(crate) fn tier_use_record(&self, result: TierWrite) {
        self.tier_use_records
            .get_or_create(&TierWriteLabel { result })
            .inc();
    }

    /// The shared tier's reads (hit, miss, error, corrupt) and writes (created, already there,
    /// error) since start, for the status page.
    pub(crate) fn tier_counts(&self) -> ([u64; 4], [u64; 3]) {
        use TierRead::{Corrupt, Hit, Miss};
        use TierWrite::{AlreadyThere, Created};
        let read = |result| {
            self.tier_reads
                .get_or_create(&TierReadLabel { result })
                .get()
        };
        let write = |result| {
            self.tier_writes
                .get_or_create(&TierWriteLabel { result })
                .get()
        };
        (
            [read(Hit), read(Miss), read(TierRead::Error), read(Corrupt)],
            [write(Created), write(AlreadyThere), write(TierWrite::Error)],
        )
    }

    /// What this node read from owners, and asked the registry for instead, since start.
    pub(crate) fn fleet_counts(&self) -> (u64, u64) {
        let duplicates = PeerFailure::ALL
            .into_iter()
            .map(|reason| {
                self.duplicate_fetches
                    .get_or_create(&PeerFailureLabel { reason })
                    .get()
            })
            .sum();
        (self.peer_reads.get(), duplicates)
    }

    /// Sets the number of peers up and down (before each scrape).
    pub(crate) fn set_peers(&self, up: usize, down: usize) {
        for (state, n) in [("up", up), ("down", down)] {
            let n = i64::try_from(n).unwrap_or(i64::MAX);
            self.peers.get_or_create(&PeerStateLabel { state }).set(n);
        }
    }

    /// Counts a client connection for as long as the returned guard lives.
    pub(crate) fn connection(&self) -> ConnectionGuard<'_> {
        self.connections_total.inc();
        self.connections_open.inc();
        ConnectionGuard(self)
    }

    /// Counts a connection handed over from the proxy port (an intercepted or tunnelled
    /// CONNECT) as open while the guard lives; it was counted as accepted already.
    pub(crate) fn upgraded(&self) -> ConnectionGuard<'_> {
        self.connections_open.inc();
        ConnectionGuard(self)
    }

    /// Client connections open now.
    pub(crate) fn open_connections(&self) -> i64 {
        self.connections_open.get()
    }

    /// Prometheus text exposition.
    pub(crate) fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// The sum of the series of `name` in a Prometheus text exposition whose labels include every
/// one of `labels` (a fleet peer's metrics, read for the fleet's figures on the status page).
pub(crate) fn sum_series(exposition: &str, name: &str, labels: &[(&str, &str)]) -> u64 {
    exposition
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (set, value) = match rest.strip_prefix('{') {
                Some(rest) => rest.split_once('}')?,
                None if rest.starts_with(' ') => ("", rest),
                None => return None,
            };
            let all = labels.iter().all(|(key, want)| {
                set.split(',').any(|pair| {
                    pair.strip_prefix(key).and_then(|p| p.strip_prefix("=\""))
                        == Some(&format!("{want}\""))
                })
            });
            let value = value.trim().parse::<f64>().ok()?;
            all.then_some(value as u64)
        })
        .sum()
}

/// Decrements the open-connections gauge when dropped.
#[derive(Debug)]
pub(crate) struct ConnectionGuard<'a>(&'a Metrics);

impl Drop for ConnectionGuard<'_> {
    fn drop(&mut self) {
        self.0.connections_open.dec();
    }
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "exported_tests.rs"]
mod exported_tests;
