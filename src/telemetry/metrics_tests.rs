//! The exposition text and the counters `Metrics::record` feeds.

use super::*;

/// One event of every kind, each family with one series (so the text has one order).
fn one_of_each(m: &Metrics) {
    let patterns = ["gcr.io".to_owned(), "*.example.com".to_owned()];
    m.set_intercepted(crate::net::HostPatterns::new(&patterns).unwrap_or_default());
    m.record(Via::Proxy, CacheStatus::Hit, 100);
    let manifest = "/v2/p/app/manifests/v1";
    m.upstream_request("gcr.io", &http::Method::GET, manifest, 200);
    m.auth_failure(AuthFailure::ProxyAuth);
    m.connection_refused(ConnectionRefused::PerClient);
    m.fill_skipped(FillSkipped::FarRange);
    m.fill_abandoned();
    m.peer_read();
    m.duplicate_fetch(PeerFailure::Timeout);
    m.tier_read(TierRead::Hit);
    m.tier_write(TierWrite::Created);
    std::mem::forget(m.connection());
    for (gauge, value) in [
        (&m.store_bytes, 12345),
        (&m.store_entries, 3),
        (&m.store_reserved_bytes, 77),
        (&m.store_evictions, 2),
        (&m.fills_in_flight, 1),
        (&m.leaf_certificates, 4),
    ] {
        gauge.set(value);
    }
}

/// The exposition is the text hoard wrote before its labels were types
/// (`testdata/exposition.txt`, captured from that version with the same events), with the
/// `via` label of the request families since mirror mode and the fleet's families.
#[test]
fn the_exposition_text_is_unchanged() {
    let m = Metrics::new();
    one_of_each(&m);
    assert_eq!(m.encode(), include_str!("testdata/exposition.txt"));

    let m = Metrics::new();
    one_of_each(&m);
    for status in CacheStatus::ALL {
        m.record(Via::Proxy, status, 10);
    }
    for status in [CacheStatus::Hit, CacheStatus::Miss] {
        m.record(Via::Mirror, status, 1);
    }
    let digest = "/v2/x/manifests/sha256:00";
    m.upstream_request("a.example.com", &http::Method::GET, digest, 0);
    m.upstream_request("docker.io", &http::Method::HEAD, "/v2/x/manifests/v1", 404);
    m.upstream_request("gcr.io", &http::Method::GET, "/v2/x/blobs/sha256:00", 307);
    use AuthFailure::*;
    use ConnectionRefused::*;
    use FillSkipped::*;
    [ProxyAuth, Throttled, AllowList]
        .into_iter()
        .for_each(|r| m.auth_failure(r));
    [PerClient, Full, Evicted]
        .into_iter()
        .for_each(|r| m.connection_refused(r));
    [FarRange, MaxFills, MaxFillsPerClient, NoLength, TooBig]
        .into_iter()
        .for_each(|r| m.fill_skipped(r));
    PeerFailure::ALL
        .into_iter()
        .for_each(|r| m.duplicate_fetch(r));
    m.set_peers(2, 1);
    use TierRead::*;
    [Hit, Miss, TierRead::Error, Corrupt]
        .into_iter()
        .for_each(|r| m.tier_read(r));
    use TierWrite::*;
    [Created, AlreadyThere, TierWrite::Error]
        .into_iter()
        .for_each(|r| m.tier_write(r));
    // Series within a family come out in hash order: compare the sorted lines.
    let text = m.encode();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_unstable();
    assert_eq!(
        lines.join("\n"),
        include_str!("testdata/exposition_sorted.txt")
    );
}

#[test]
fn requests_feed_the_counters_by_listener() {
    let m = Metrics::new();
    m.record(Via::Proxy, CacheStatus::Hit, 100);
    m.record(Via::Proxy, CacheStatus::Miss, 40);
    m.record(Via::Proxy, CacheStatus::Tunnel, 7);
    m.record(Via::Mirror, CacheStatus::Hit, 30);
    m.record(Via::Mirror, CacheStatus::Hit, 2);
    assert_eq!(m.activity().count(CacheStatus::Hit), (3, 132));
    let [proxy, mirror, fleet] = m.activity().last_hour();
    assert_eq!((proxy.requests, proxy.from_cache), (3, 100));
    assert_eq!((mirror.requests, mirror.from_cache), (2, 32));
    assert_eq!(fleet.requests, 0);
    let text = m.encode();
    for line in [
        "hoard_requests_total{cache=\"HIT\",via=\"proxy\"} 1",
        "hoard_requests_total{cache=\"HIT\",via=\"mirror\"} 2",
        "hoard_requests_total{cache=\"TUNNEL\",via=\"proxy\"} 1",
        "hoard_response_bytes_total{source=\"cache\",via=\"proxy\"} 100",
        "hoard_response_bytes_total{source=\"cache\",via=\"mirror\"} 32",
        "hoard_response_bytes_total{source=\"upstream\",via=\"proxy\"} 40",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
    }
    // Only the listeners a request came through have series.
    assert!(!text.contains("cache=\"MISS\",via=\"mirror\""), "{text}");
}

#[test]
fn series_are_summed_by_name_and_labels() {
    let m = Metrics::new();
    m.record(Via::Fleet, CacheStatus::Hit, 10);
    m.record(Via::Fleet, CacheStatus::Hit, 10);
    m.record(Via::Fleet, CacheStatus::Miss, 10);
    m.record(Via::Proxy, CacheStatus::Hit, 10);
    m.peer_read();
    let text = m.encode();
    assert_eq!(
        sum_series(&text, "hoard_requests_total", &[("via", "fleet")]),
        3
    );
    let hits = [("via", "fleet"), ("cache", "HIT")];
    assert_eq!(sum_series(&text, "hoard_requests_total", &hits), 2);
    assert_eq!(sum_series(&text, "hoard_requests_total", &[]), 4);
    assert_eq!(sum_series(&text, "hoard_fleet_peer_reads_total", &[]), 1);
    assert_eq!(
        sum_series(&text, "hoard_fleet_peer_reads", &[]),
        0,
        "a name is whole"
    );
    assert_eq!(sum_series("garbage\n{}\n", "hoard_requests_total", &[]), 0);
}
