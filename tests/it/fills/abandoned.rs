//! Fills whose clients leave or read only a part: far ranges go upstream as ranges, a fill nobody
//! reads stops after its grace period unless it is mostly done or configured to go on.

use super::*;

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
