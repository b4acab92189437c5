//! Fills are bounded: a blob without a `Content-Length`, or above `cache.max_blob_size`, is
//! streamed to its client and not kept, and evicts nothing; a body longer than its
//! `Content-Length` is cut there and not kept.

use super::*;

/// The `hoard_fills_skipped_total` line for `reason`, if the proxy has counted it.
async fn skipped(proxy: &Proxy, reason: &str) -> Option<String> {
    let metrics = proxy.admin("/metrics").await;
    let prefix = format!("hoard_fills_skipped_total{{reason=\"{reason}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&prefix).map(str::to_owned))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_and_too_long_blobs_evict_nothing_and_are_not_kept() {
    init();
    let registry = Registry::start().await;
    // Room for the cached entries and little more: a fill of 16 MiB would evict them all.
    let proxy = Proxy::builder(&registry)
        .cache("max_size = \"4MiB\"\nmin_free = \"0\"")
        .start()
        .await;
    let client = proxy.client(false);
    let mut cached = Vec::new();
    for _ in 0..3 {
        let bytes = fresh_blob(512 << 10);
        let digest = registry.add_blob(bytes.clone());
        let got = client.get(blob_url(&digest)).send().await.unwrap();
        assert_eq!(got.bytes().await.unwrap(), bytes);
        cached.push(digest);
    }
    proxy.settled().await;
    let still_cached = |proxy: &Proxy| {
        for digest in &cached {
            assert!(proxy.blob_path(digest).exists(), "{digest} was evicted");
        }
    };
    still_cached(&proxy);

    // An endless chunked blob: the client reads 16 MiB (4× max_size), then hangs up.
    registry.set_mode(Mode::Endless);
    let endless = registry.add_blob(fresh_blob(1 << 20));
    let mut response = client.get(blob_url(&endless)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("content-length").is_none());
    let mut read = 0usize;
    while read < 16 << 20 {
        let chunk = response.chunk().await.unwrap().expect("an endless body");
        read += chunk.len();
        assert_eq!(temp_files(&proxy), 0, "a temp file grows at {read} bytes");
    }
    drop(response);
    proxy.settled().await;
    assert!(registry.sent() >= 16 << 20);
    still_cached(&proxy);
    assert!(!proxy.blob_path(&endless).exists());
    assert_eq!(temp_files(&proxy), 0);
    assert_eq!(skipped(&proxy, "no_length").await.as_deref(), Some("1"));

    // A finite blob without a length: served whole, checked, not kept.
    registry.set_mode(Mode::NoLength);
    let bytes = fresh_blob(1 << 20);
    let no_length = registry.add_blob(bytes.clone());
    let got = client.get(blob_url(&no_length)).send().await.unwrap();
    assert!(got.headers().get("content-length").is_none());
    assert_eq!(got.bytes().await.unwrap(), bytes);
    proxy.settled().await;
    assert!(!proxy.blob_path(&no_length).exists());
    assert_eq!(skipped(&proxy, "no_length").await.as_deref(), Some("2"));

    // The whole blob under a Content-Length 1000 bytes short: cut there, so it cannot match
    // its digest; the client never gets the whole blob, and nothing is kept.
    registry.set_mode(Mode::TooLong { short: 1000 });
    let bytes = fresh_blob(1 << 20);
    let too_long = registry.add_blob(bytes.clone());
    let got = client.get(blob_url(&too_long)).send().await.unwrap();
    assert_eq!(got.status(), 200);
    let declared = (1 << 20) - 1000;
    assert_eq!(
        got.headers()["content-length"],
        declared.to_string().as_str()
    );
    match got.bytes().await {
        Ok(body) => panic!("a body of {} bytes for a cut blob", body.len()),
        Err(err) => eprintln!("the cut blob's body failed: {err}"),
    }
    proxy.settled().await;
    assert!(!proxy.blob_path(&too_long).exists());
    assert_eq!(temp_files(&proxy), 0);
    still_cached(&proxy);
    assert_eq!(
        registry.count("GET", &cached[0]),
        1,
        "the cached entries were served from the store"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_above_max_blob_size_is_served_whole_and_not_kept() {
    init();
    let (registry, proxy, bytes, digest) =
        cold_blob(SLOW, "max_blob_size = \"1MiB\"", 2 << 20).await; // ≈ 800 ms
    // Two clients at once: the second has no fill to follow and gets the same.
    let clients: Vec<_> = (0..2)
        .map(|i| {
            let request = proxy.client(i == 1).get(blob_url(&digest));
            tokio::spawn(async move {
                let response = request.send().await.unwrap();
                assert_eq!(response.status(), 200);
                response.bytes().await.unwrap()
            })
        })
        .collect();
    for client in clients {
        assert!(client.await.unwrap() == bytes, "served whole");
    }
    proxy.settled().await;
    assert!(!proxy.blob_path(&digest).exists(), "kept");
    assert_eq!(temp_files(&proxy), 0);
    assert_eq!(registry.count("GET", &digest), 2);
    assert_eq!(skipped(&proxy, "too_big").await.as_deref(), Some("2"));

    // At the limit, a blob is kept.
    registry.set_mode(Mode::Direct);
    let small = fresh_blob(1 << 20);
    let small_digest = registry.add_blob(small.clone());
    let got = proxy
        .client(false)
        .get(blob_url(&small_digest))
        .send()
        .await
        .unwrap();
    assert_eq!(got.bytes().await.unwrap(), small);
    proxy.settled().await;
    assert!(proxy.blob_path(&small_digest).exists());
}
