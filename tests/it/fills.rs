//! The store under load and under faults: one upstream fetch per blob for any number of
//! concurrent clients, ranges from a fill in progress, upstreams that stall, cut or lie, clients
//! that leave, a failing disk, and the size limit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use bytes::Bytes;

fn blob_url(digest: &str) -> String {
    url(&format!("/v2/p/app/blobs/{digest}"))
}

fn temp_files(proxy: &Proxy) -> usize {
    std::fs::read_dir(proxy.cache_dir().join(hoard::store::TMP_DIR))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name() != hoard::store::TMP_MARKER)
        .count()
}

const SLOW: Mode = Mode::Slow {
    chunk: 64 << 10,
    delay: Duration::from_millis(25),
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_fill_is_shared_by_concurrent_clients() {
    init();
    let registry = Registry::start().await;
    registry.set_mode(SLOW);
    let proxy = Proxy::start(&registry, "").await;
    let bytes = fresh_blob(1 << 20); // 16 pieces × 25 ms ≈ 400 ms of fill
    let digest = registry.add_blob(bytes.clone());

    let start = Instant::now();
    let mut clients = Vec::new();
    for i in 0..20 {
        let client = proxy.client(i % 2 == 0);
        let url = blob_url(&digest);
        clients.push(tokio::spawn(async move {
            // Spread the arrivals over the first part of the fill.
            tokio::time::sleep(Duration::from_millis(5 * i)).await;
            let response = client.get(url).send().await.unwrap();
            let headers_at = start.elapsed();
            assert_eq!(response.status(), 200);
            assert_eq!(response.headers()["content-length"], "1048576");
            let body = response.bytes().await.unwrap();
            (headers_at, start.elapsed(), body)
        }));
    }
    let mut results = Vec::new();
    for client in clients {
        results.push(client.await.unwrap());
    }
    let first_done = results.iter().map(|r| r.1).min().unwrap();
    for (headers_at, _, body) in &results {
        assert!(*body == bytes, "every client gets the right bytes");
        assert!(
            *headers_at < first_done,
            "headers at {headers_at:?}, before the fill ended at {first_done:?}"
        );
    }
    assert_eq!(
        registry.count("GET", "/blobs/"),
        1,
        "one upstream GET for 20 clients"
    );
    proxy.settled().await;
    assert!(proxy.blob_path(&digest).exists());
    assert_eq!(temp_files(&proxy), 0);
}

#[tokio::test]
async fn ranges_are_answered_from_a_fill_in_progress() {
    init();
    let registry = Registry::start().await;
    registry.set_mode(SLOW);
    let proxy = Proxy::start(&registry, "").await;
    let bytes = fresh_blob(1 << 20);
    let digest = registry.add_blob(bytes.clone());
    let client = proxy.client(false);

    let leader = tokio::spawn({
        let request = client.get(blob_url(&digest));
        async move { request.send().await.unwrap().bytes().await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(60)).await;
    // Already written, arriving later, and the tail.
    for (range, span) in [
        ("bytes=0-9999", 0..10_000),
        ("bytes=600000-700000", 600_000..700_001),
        ("bytes=-1000", (1 << 20) - 1000..1 << 20),
    ] {
        let response = get_range(&client, &digest, range).await;
        assert_eq!(
            response.bytes().await.unwrap(),
            bytes.slice(span),
            "{range}"
        );
    }
    assert_eq!(leader.await.unwrap(), bytes);
    assert_eq!(registry.count("GET", "/blobs/"), 1);
}

#[tokio::test]
async fn a_range_miss_starts_a_whole_fill_and_is_answered_from_it() {
    init();
    let registry = Registry::start().await;
    let proxy = Proxy::start(&registry, "").await;
    let bytes = fresh_blob(500_000);
    let digest = registry.add_blob(bytes.clone());
    let client = proxy.client(true);

    let response = client
        .get(blob_url(&digest))
        .header("range", "bytes=100-199")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 206);
    assert_eq!(response.headers()["content-range"], "bytes 100-199/500000");
    assert_eq!(response.bytes().await.unwrap(), bytes.slice(100..200));
    // The whole blob was fetched (without the client's Range) and kept.
    assert!(registry.seen()[0].headers.get("range").is_none());
    let whole = client.get(blob_url(&digest)).send().await.unwrap();
    assert_eq!(whole.bytes().await.unwrap(), bytes);
    assert_eq!(registry.count("GET", "/blobs/"), 1);
}

#[tokio::test]
async fn a_fill_goes_on_when_its_client_leaves() {
    init();
    let registry = Registry::start().await;
    registry.set_mode(SLOW);
    let proxy = Proxy::start(&registry, "").await;
    let bytes = fresh_blob(1 << 20);
    let digest = registry.add_blob(bytes.clone());

    {
        let mut response = proxy
            .client(false)
            .get(blob_url(&digest))
            .send()
            .await
            .unwrap();
        let first = response.chunk().await.unwrap().unwrap();
        assert!(!first.is_empty());
        // The client drops the response here, mid-body.
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !proxy.blob_path(&digest).exists() {
        assert!(
            Instant::now() < deadline,
            "the fill did not finish into the store"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    registry.set_mode(Mode::Direct);
    let again = proxy
        .client(true)
        .get(blob_url(&digest))
        .send()
        .await
        .unwrap();
    assert_eq!(again.bytes().await.unwrap(), bytes);
    assert_eq!(registry.count("GET", "/blobs/"), 1);
}

#[tokio::test]
async fn stalled_or_cut_upstreams_fail_cleanly_and_the_next_request_fills_anew() {
    init();
    for mode in [
        Mode::Stall { after: 100_000 },
        Mode::Truncate { after: 100_000 },
    ] {
        let registry = Registry::start().await;
        registry.set_mode(mode);
        let dir = tempfile::tempdir().unwrap();
        let proxy = Proxy::start_with(dir, &registry, "", "read_timeout = \"500ms\"").await;
        let bytes = fresh_blob(400_000);
        let digest = registry.add_blob(bytes.clone());
        let client = proxy.client(false);

        // A first client and a follower: both must fail, neither may hang.
        let first = client.get(blob_url(&digest)).send();
        let second = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            client.get(blob_url(&digest)).send().await
        };
        let (first, second) = tokio::time::timeout(Duration::from_secs(10), async {
            let (a, b) = tokio::join!(first, second);
            let a = match a {
                Ok(r) => r.bytes().await.is_err(),
                Err(_) => true,
            };
            let b = match b {
                Ok(r) if r.status() == 200 => r.bytes().await.is_err(),
                Ok(_) | Err(_) => true,
            };
            (a, b)
        })
        .await
        .expect("clients of a broken fill must not hang");
        assert!(first && second, "{mode:?}: both clients see the failure");
        assert!(!proxy.blob_path(&digest).exists(), "{mode:?}");
        assert_eq!(temp_files(&proxy), 0, "{mode:?}");

        let failed_fills = registry.count("GET", "/blobs/");
        if let Mode::Stall { .. } = mode {
            // The second client joined the stalled fill rather than asking again.
            assert_eq!(failed_fills, 1);
        }
        registry.set_mode(Mode::Direct);
        let again = client.get(blob_url(&digest)).send().await.unwrap();
        assert_eq!(again.bytes().await.unwrap(), bytes, "{mode:?}");
        assert_eq!(
            registry.count("GET", "/blobs/"),
            failed_fills + 1,
            "{mode:?}"
        );
        proxy.settled().await;
        assert!(proxy.blob_path(&digest).exists());
    }
}

#[tokio::test]
async fn no_room_on_disk_turns_caching_off_not_the_response() {
    init();
    let registry = Registry::start().await;
    // Asks for more free space than any disk has: every reservation fails.
    let proxy = Proxy::start(&registry, "min_free = \"100000TiB\"").await;
    let bytes = fresh_blob(300_000);
    let digest = registry.add_blob(bytes.clone());
    for h2 in [false, true] {
        let response = proxy
            .client(h2)
            .get(blob_url(&digest))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.bytes().await.unwrap(), bytes);
    }
    assert!(!proxy.blob_path(&digest).exists());
    assert_eq!(registry.count("GET", "/blobs/"), 2);
    let manifest = Registry::manifest_json(&[(&digest, 300_000)], "full");
    registry.add_manifest("p/app", "v1", DOCKER_V2, manifest.clone());
    let got = proxy
        .client(false)
        .get(url("/v2/p/app/manifests/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(got.bytes().await.unwrap(), manifest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_stays_under_max_size_and_keeps_what_is_used() {
    init();
    let registry = Registry::start().await;
    let proxy = Proxy::start(&registry, "max_size = \"1MiB\"\nmin_free = \"0\"").await;
    let limit = 1u64 << 20;
    let client = proxy.client(false);
    let hot = registry.add_blob(fresh_blob(150_000));

    // Sample the folder while blobs worth 3× the limit go through.
    let cache = proxy.cache_dir();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = tokio::task::spawn_blocking({
        let done = done.clone();
        move || {
            let mut peak = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(
                    disk_usage(&cache.join("blobs"))
                        + disk_usage(&cache.join(hoard::store::TMP_DIR)),
                );
                std::thread::sleep(Duration::from_millis(2));
            }
            peak
        }
    });
    let mut cold = Vec::new();
    for _ in 0..16 {
        let bytes = fresh_blob(200_000);
        let digest = registry.add_blob(bytes.clone());
        let got = client.get(blob_url(&digest)).send().await.unwrap();
        assert_eq!(got.bytes().await.unwrap(), bytes);
        proxy.settled().await;
        let got = client.get(blob_url(&hot)).send().await.unwrap();
        assert_eq!(got.bytes().await.unwrap().len(), 150_000);
        cold.push(digest);
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.await.unwrap();
    eprintln!("peak store size {peak} bytes, limit {limit}, 3x the limit pulled through");
    assert!(peak <= limit, "peak {peak} over the limit {limit}");
    assert!(peak > limit / 2, "the store was used ({peak} bytes)");

    assert!(proxy.blob_path(&hot).exists(), "the hot blob survived");
    assert_eq!(registry.count("GET", &hot), 1, "and was fetched once");
    assert!(
        !proxy.blob_path(&cold[0]).exists(),
        "the oldest cold blob went"
    );
    assert!(proxy.blob_path(&cold[15]).exists(), "the newest stayed");
}

#[tokio::test]
async fn a_blob_larger_than_the_limit_is_served_uncached() {
    init();
    let registry = Registry::start().await;
    let proxy = Proxy::start(&registry, "max_size = \"100KiB\"\nmin_free = \"0\"").await;
    let bytes = fresh_blob(300_000);
    let digest = registry.add_blob(bytes.clone());
    let got = proxy
        .client(false)
        .get(blob_url(&digest))
        .send()
        .await
        .unwrap();
    assert_eq!(got.bytes().await.unwrap(), bytes);
    assert!(!proxy.blob_path(&digest).exists());
    assert!(disk_usage(&proxy.cache_dir().join("blobs")) <= 100 << 10);
}

/// Waits until hoard has no fill in progress, for at most `limit`.
async fn fills_end(proxy: &Proxy, limit: Duration) {
    let deadline = Instant::now() + limit;
    while proxy.server.fills_in_progress() > 0 {
        assert!(
            Instant::now() < deadline,
            "fills still running after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// About 50 MiB/s: a big blob takes a while, a test does not.
const STEADY: Mode = Mode::Slow {
    chunk: 256 << 10,
    delay: Duration::from_millis(5),
};

/// A registry sending at `mode`, hoard with `cache_extra`, and a cold blob of `len` bytes.
async fn cold_blob(mode: Mode, cache_extra: &str, len: usize) -> (Registry, Proxy, Bytes, String) {
    let registry = Registry::start().await;
    registry.set_mode(mode);
    let proxy = Proxy::start(&registry, cache_extra).await;
    let bytes = fresh_blob(len);
    let digest = registry.add_blob(bytes.clone());
    (registry, proxy, bytes, digest)
}

/// Sends a GET for a blob, takes the first bytes of the body, and hangs up.
async fn get_and_abort(proxy: &Proxy, digest: &str, at_least: usize) {
    let mut response = proxy
        .client(false)
        .get(blob_url(digest))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut got = 0;
    while got < at_least {
        got += response.chunk().await.unwrap().unwrap().len();
    }
    // The client drops the response here, mid-body.
}

/// A GET of `range` of a blob, answered 206.
async fn get_range(client: &reqwest::Client, digest: &str, range: &str) -> reqwest::Response {
    let response = client
        .get(blob_url(digest))
        .header("range", range)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 206, "{range}");
    response
}

#[tokio::test]
async fn a_far_range_of_a_cold_blob_goes_upstream_as_a_range() {
    init();
    let (registry, proxy, bytes, digest) = cold_blob(Mode::Direct, "", 12 << 20).await;
    let client = proxy.client(false);

    // Straight from the registry, and through its redirects to the CDN (followed by hoard).
    for mode in [Mode::Direct, Mode::Redirect] {
        registry.set_mode(mode);
        for (range, span) in [
            ("bytes=10000000-10000000", 10_000_000..10_000_001),
            ("bytes=-10", (12 << 20) - 10..12 << 20),
        ] {
            registry.forget();
            let sent = registry.sent();
            let response = get_range(&client, &digest, range).await;
            let content_range = format!("bytes {}-{}/{}", span.start, span.end - 1, 12 << 20);
            assert_eq!(response.headers()["content-range"], content_range.as_str());
            assert_eq!(response.bytes().await.unwrap(), bytes.slice(span.clone()));
            let seen = registry.seen();
            let hops = if mode == Mode::Redirect { 4 } else { 1 };
            assert_eq!(seen.len(), hops, "{mode:?} {range}: one upstream request");
            for hop in &seen {
                assert_eq!(
                    hop.headers.get("range").map(|v| v.to_str().unwrap()),
                    Some(range),
                    "{mode:?}: the range went upstream as a range"
                );
            }
            assert_eq!(
                registry.sent() - sent,
                span.len() as u64,
                "{mode:?} {range}: the upstream sent only the range"
            );
        }
    }
    proxy.settled().await;
    assert!(!proxy.blob_path(&digest).exists());
    assert_eq!(temp_files(&proxy), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_nobody_reads_stops_after_the_grace_period() {
    init();
    let len = 64 << 20; // 1.3 s of download
    // A GET the client hangs up on, and one byte at the start (which starts a fill).
    for one_byte in [false, true] {
        let (registry, proxy, bytes, digest) =
            cold_blob(STEADY, "abandoned_fill_grace = \"300ms\"", len).await;
        let left = Instant::now();
        if one_byte {
            let response = get_range(&proxy.client(false), &digest, "bytes=0-0").await;
            assert_eq!(response.bytes().await.unwrap(), bytes.slice(0..1));
        } else {
            get_and_abort(&proxy, &digest, 1).await;
        }
        fills_end(&proxy, Duration::from_secs(10)).await;
        let stopped = left.elapsed();
        let sent = registry.sent();
        let way = if one_byte {
            "1-byte range"
        } else {
            "aborted GET"
        };
        eprintln!("{way}: fill stopped after {stopped:?}, upstream sent {sent} of {len} bytes");
        assert!(
            !proxy.blob_path(&digest).exists(),
            "{way}: a fill nobody read was finished and kept ({sent} of {len} bytes sent)"
        );
        assert!(
            stopped >= Duration::from_millis(300),
            "{way}: stopped before the grace period"
        );
        assert_eq!(temp_files(&proxy), 0, "{way}: the temp file is gone");
        assert!(
            sent < len as u64 / 2,
            "{way}: upstream sent {sent} of {len}"
        );
        // The upstream transfer has stopped, not only the writing.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(registry.sent(), sent, "{way}: the upstream went on sending");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_resumed_within_the_grace_period_goes_on() {
    init();
    let (registry, proxy, bytes, digest) =
        cold_blob(STEADY, "abandoned_fill_grace = \"2s\"", 32 << 20).await;

    get_and_abort(&proxy, &digest, 1 << 20).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // dockerd resumes an interrupted download with a Range from where it was.
    let rest = get_range(&proxy.client(false), &digest, "bytes=1048576-").await;
    assert_eq!(rest.bytes().await.unwrap(), bytes.slice(1 << 20..));
    proxy.settled().await;
    assert!(proxy.blob_path(&digest).exists());
    assert_eq!(registry.count("GET", "/blobs/"), 1, "one upstream download");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_fill_that_is_mostly_done_is_finished() {
    init();
    let (registry, proxy, _, digest) =
        cold_blob(STEADY, "abandoned_fill_grace = \"100ms\"", 16 << 20).await;

    // Past half the blob, the client leaves.
    get_and_abort(&proxy, &digest, 10 << 20).await;
    fills_end(&proxy, Duration::from_secs(10)).await;
    assert!(proxy.blob_path(&digest).exists(), "the fill was finished");
    assert_eq!(registry.count("GET", "/blobs/"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finish_abandoned_fills_keeps_fills_going_without_readers() {
    init();
    let len = 32 << 20;
    let cache = "abandoned_fill_grace = \"100ms\"\nfinish_abandoned_fills = true";
    let (registry, proxy, _, digest) = cold_blob(STEADY, cache, len).await;

    get_and_abort(&proxy, &digest, 1).await;
    fills_end(&proxy, Duration::from_secs(20)).await;
    assert!(proxy.blob_path(&digest).exists(), "the fill went on");
    assert_eq!(registry.sent(), len as u64);
}

/// A client through hoard whose connections come from `ip` (in 127.0.0.0/8).
fn client_from(proxy: &Proxy, ip: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(proxy.url()).unwrap())
        .tls_certs_only([reqwest::Certificate::from_pem(proxy.ca_pem.as_bytes()).unwrap()])
        .local_address(std::net::IpAddr::from(ip))
        .http1_only()
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_a_fill_limit_blobs_are_streamed_but_not_kept() {
    init();
    // (limits, the second client's address): the same client over its own limit, then another
    // client over the global one.
    for (cache, second) in [
        ("max_fills_per_client = 1", [127, 0, 0, 1]),
        ("max_fills = 1", [127, 0, 0, 2]),
    ] {
        let (registry, proxy, _, first) = cold_blob(SLOW, cache, 1 << 20).await; // ≈ 400 ms
        let over = fresh_blob(300_000);
        let over_digest = registry.add_blob(over.clone());

        let running = client_from(&proxy, [127, 0, 0, 1])
            .get(blob_url(&first))
            .send()
            .await
            .unwrap();
        let got = client_from(&proxy, second)
            .get(blob_url(&over_digest))
            .send()
            .await
            .unwrap();
        assert_eq!(got.status(), 200, "{cache}");
        assert_eq!(
            got.bytes().await.unwrap(),
            over,
            "{cache}: served all the same"
        );
        assert_eq!(running.bytes().await.unwrap().len(), 1 << 20);
        proxy.settled().await;
        assert!(proxy.blob_path(&first).exists(), "{cache}");
        assert!(
            !proxy.blob_path(&over_digest).exists(),
            "{cache}: a blob past the limit was kept"
        );
        let metrics = reqwest::get(format!(
            "http://{}/metrics",
            proxy.server.admin_addr().unwrap()
        ))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
        let reason = cache.split(' ').next().unwrap();
        let line = format!("hoard_fills_skipped_total{{reason=\"{reason}\"}} 1");
        assert!(metrics.contains(&line), "{line} not in\n{metrics}");

        // Once the limit has room, the blob is filled.
        let again = client_from(&proxy, second)
            .get(blob_url(&over_digest))
            .send()
            .await
            .unwrap();
        assert_eq!(again.bytes().await.unwrap(), over);
        proxy.settled().await;
        assert!(proxy.blob_path(&over_digest).exists(), "{cache}");
    }
}
