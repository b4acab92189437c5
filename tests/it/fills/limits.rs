//! Limits on the store and on fills: no room on disk, `max_size`, and the fill limits past which
//! blobs are streamed but not kept.

use std::sync::Arc;

use super::*;

#[tokio::test]
async fn no_room_on_disk_turns_caching_off_not_the_response() {
    init();
    let registry = Registry::start().await;
    // Asks for more free space than any disk has: every reservation fails.
    let proxy = Proxy::builder(&registry)
        .cache("min_free = \"100000TiB\"")
        .start()
        .await;
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
    let proxy = Proxy::builder(&registry)
        .cache("max_size = \"1MiB\"\nmin_free = \"0\"")
        .start()
        .await;
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
    let proxy = Proxy::builder(&registry)
        .cache("max_size = \"100KiB\"\nmin_free = \"0\"")
        .start()
        .await;
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

/// A client through hoard whose connections come from `ip` (in 127.0.0.0/8).
fn client_from(proxy: &Proxy, ip: [u8; 4]) -> reqwest::Client {
    proxy
        .client_builder()
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
